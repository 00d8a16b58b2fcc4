//! POP3 end to end: Python's poplib, fetchmail and getmail when installed,
//! raw protocol checks, and consistency with the store.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const DOTTED: &[u8] = b"From: a@other.example\r\nSubject: dots\r\n\r\nbody one\r\n.leading dot\r\n.\r\n..two\r\nlast\r\n";

fn instance(name: &str, edit: impl FnOnce(String) -> String) -> Instance {
    let mut inst = Instance::new(name, |t| {
        edit(t.replace("failure_delay_ms = 2000", "failure_delay_ms = 300"))
    });
    inst.start();
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    assert_eq!(
        c.send_mail("a@other.example", &[USER], &message("one", 300))
            .0,
        250
    );
    assert_eq!(c.send_mail("a@other.example", &[USER], DOTTED).0, 250);
    assert_eq!(
        c.send_mail("a@other.example", &[USER], &message("three", 200_000))
            .0,
        250
    );
    inst
}

fn pop3_addr(inst: &Instance) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], inst.port_base + 110))
}

struct Pop {
    r: BufReader<TcpStream>,
}

impl Pop {
    fn connect(addr: SocketAddr) -> Pop {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut p = Pop {
            r: BufReader::new(s),
        };
        assert!(p.line().starts_with("+OK"));
        p
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim_end_matches(['\r', '\n']).to_string()
    }
    fn cmd(&mut self, c: &str) -> String {
        self.r
            .get_mut()
            .write_all(format!("{c}\r\n").as_bytes())
            .unwrap();
        self.line()
    }
    /// Reads a multi-line response body up to the "." line, raw.
    fn multiline(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut l = Vec::new();
            self.r.read_until(b'\n', &mut l).unwrap();
            if l == b".\r\n" || l.is_empty() {
                return out;
            }
            out.extend_from_slice(&l);
        }
    }
}

#[test]
fn poplib_end_to_end() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 missing; skipped");
        return;
    }
    let inst = instance("poplib", |t| t);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/poplib_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg((inst.port_base + 110).to_string())
        .arg((inst.port_base + 995).to_string())
        .arg(inst.cert())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "poplib: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The QUIT in UPDATE state removed message 3 from the store.
    assert_eq!(inst.uids(USER, "INBOX"), vec![1, 2]);
}

#[test]
fn raw_protocol_stuffing_sizes_and_states() {
    let inst = instance("pop3raw", |t| t);
    let mut p = Pop::connect(pop3_addr(&inst));
    assert!(p.cmd("STAT").starts_with("-ERR"));
    assert!(p.cmd("PASS x").starts_with("-ERR"));
    assert!(p.cmd("FROB").starts_with("-ERR"));
    assert!(p.cmd(&format!("USER {USER}")).starts_with("+OK"));
    assert!(p.cmd("PASS secret").starts_with("+OK"));
    let stat = p.cmd("STAT");
    let total: u64 = stat.split(' ').nth(2).unwrap().parse().unwrap();
    // Sizes are the stored octets, which is what RETR sends before stuffing.
    let stored: Vec<Vec<u8>> = (1..=3).map(|uid| inst.show(USER, uid)).collect();
    assert_eq!(total, stored.iter().map(|m| m.len() as u64).sum::<u64>());
    let resp = p.cmd("RETR 2");
    assert_eq!(resp, format!("+OK {} octets", stored[1].len()));
    let raw = p.multiline();
    let expected = String::from_utf8(stored[1].clone())
        .unwrap()
        .replace("\r\n.", "\r\n..");
    assert_eq!(String::from_utf8(raw).unwrap(), expected, "byte stuffing");
    // The large message streams whole.
    assert!(p.cmd("RETR 3").starts_with("+OK"));
    let raw = p.multiline();
    assert_eq!(raw, stored[2]);
    assert!(p.cmd("LIST 4").starts_with("-ERR"));
    assert!(p.cmd("RETR 0").starts_with("-ERR"));
    assert!(p.cmd("TOP 1").starts_with("-ERR"));
    let long = format!("NOOP {}", "x".repeat(2000));
    assert!(p.cmd(&long).starts_with("-ERR"));
    assert_eq!(p.cmd("NOOP"), "+OK");
    // Pipelined commands get their answers in order.
    p.r.get_mut()
        .write_all(b"LIST 1\r\nUIDL 1\r\nNOOP\r\n")
        .unwrap();
    assert!(p.line().starts_with("+OK 1 "));
    assert!(p.line().starts_with("+OK 1 "));
    assert_eq!(p.line(), "+OK");
    // Dropping the connection without QUIT applies nothing.
    assert!(p.cmd("DELE 1").starts_with("+OK"));
    drop(p);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(inst.uids(USER, "INBOX"), vec![1, 2, 3]);
}

#[test]
fn plaintext_refused_without_tls_and_failed_login_delayed() {
    let inst = instance("pop3tls", |t| {
        t.replace(
            "allow_plaintext_on_loopback = true",
            "allow_plaintext_on_loopback = false",
        )
    });
    let mut p = Pop::connect(pop3_addr(&inst));
    p.r.get_mut().write_all(b"CAPA\r\n").unwrap();
    assert!(p.line().starts_with("+OK"));
    let caps = String::from_utf8(p.multiline()).unwrap();
    assert!(
        caps.contains("STLS") && !caps.contains("USER") && !caps.contains("SASL"),
        "{caps}"
    );
    assert!(p.cmd(&format!("USER {USER}")).contains("TLS"));
    assert!(
        p.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=")
            .starts_with("-ERR")
    );
    // Over TLS, a wrong password takes the configured delay.
    let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], inst.port_base + 995))).unwrap();
    let mut tls = tls_client(&inst.cert(), tcp);
    let mut r = BufReader::new(&mut tls);
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("+OK"));
    let started = Instant::now();
    r.get_mut()
        .write_all(format!("USER {USER}\r\nPASS wrong\r\n").as_bytes())
        .unwrap();
    l.clear();
    r.read_line(&mut l).unwrap();
    l.clear();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("-ERR [AUTH]"), "{l}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    r.get_mut()
        .write_all(format!("USER {USER}\r\nPASS secret\r\nSTAT\r\n").as_bytes())
        .unwrap();
    for _ in 0..3 {
        l.clear();
        r.read_line(&mut l).unwrap();
        assert!(l.starts_with("+OK"), "{l}");
    }
}

fn installed(cmd: &str) -> bool {
    std::process::Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok()
}

#[test]
fn fetchmail_keep_and_delete() {
    if !installed("fetchmail") {
        eprintln!("fetchmail not installed; skipped (CI installs it)");
        return;
    }
    let inst = instance("fetchmail", |t| t);
    let dir = inst.dir.join("fetch");
    std::fs::create_dir_all(&dir).unwrap();
    let mbox = dir.join("mbox");
    let rc = dir.join("fetchmailrc");
    let run = |keep: bool| {
        std::fs::write(
            &rc,
            format!(
                "poll 127.0.0.1 service {} protocol pop3 user \"{USER}\" password \"secret\" {} sslproto '' mda \"cat >> {}\"\n",
                inst.port_base + 110,
                if keep { "keep" } else { "nokeep" },
                mbox.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::process::Command::new("fetchmail")
            .args(["-f"])
            .arg(&rc)
            .args(["--nodetach", "--nosyslog", "--all", "--idfile"])
            .arg(dir.join("ids"))
            .env("HOME", &dir)
            .output()
            .unwrap()
    };
    let out = run(true);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(inst.uids(USER, "INBOX"), vec![1, 2, 3]);
    let fetched = std::fs::read(&mbox).unwrap();
    let text = String::from_utf8_lossy(&fetched);
    assert!(
        text.contains("\n.leading dot\n") || text.contains("\r\n.leading dot\r\n"),
        "dot-stuffing round trip"
    );
    assert!(text.contains("three line 10 "));
    let out = run(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(inst.uids(USER, "INBOX").is_empty());
}

#[test]
fn getmail_keep_and_delete() {
    if !installed("getmail6") && !installed("getmail") {
        eprintln!("getmail not installed; skipped (CI installs it)");
        return;
    }
    let inst = instance("getmail", |t| t);
    let dir = inst.dir.join("getmail");
    let maildir = dir.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    // getmail refuses to deliver as root; as root (CI) it delivers as
    // `nobody`, so the Maildir must be writable for it.
    use std::os::unix::fs::PermissionsExt;
    for d in [
        dir.clone(),
        maildir.clone(),
        maildir.join("cur"),
        maildir.join("new"),
        maildir.join("tmp"),
    ] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let run = |delete: bool| {
        std::fs::write(
            dir.join("getmailrc"),
            format!(
                "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {}\nusername = {USER}\npassword = secret\n[destination]\ntype = Maildir\npath = {}/\nuser = nobody\n[options]\nread_all = true\ndelete = {}\n",
                inst.port_base + 110,
                maildir.display(),
                if delete { "true" } else { "false" }
            ),
        )
        .unwrap();
        let bin = if installed("getmail6") {
            "getmail6"
        } else {
            "getmail"
        };
        std::process::Command::new(bin)
            .arg(format!("--getmaildir={}", dir.display()))
            .arg("--rcfile=getmailrc")
            .output()
            .unwrap()
    };
    let out = run(false);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 3);
    // Byte for byte: getmail stores what RETR sent, un-stuffed, plus its own
    // Delivered-To/Return-Path lines at the top at most.
    let dotted = files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .find(|m| m.windows(11).any(|w| w == b"Subject: do"))
        .unwrap();
    let got = String::from_utf8_lossy(&dotted).replace("\r\n", "\n");
    let want = String::from_utf8_lossy(DOTTED).replace("\r\n", "\n");
    assert!(
        got.ends_with(&format!("\n{want}")),
        "{got:?} does not end with {want:?}"
    );
    assert_eq!(inst.uids(USER, "INBOX").len(), 3);
    let out = run(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(inst.uids(USER, "INBOX").is_empty());
}

#[test]
fn failed_logins_are_limited_per_address() {
    let inst = instance("pop3limit", |t| {
        t.replace("max_failures_per_ip = 10", "max_failures_per_ip = 2")
    });
    let mut p = Pop::connect(pop3_addr(&inst));
    for _ in 0..2 {
        assert!(p.cmd(&format!("USER {USER}")).starts_with("+OK"));
        assert!(p.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    }
    // Now even the right password is refused from this address.
    assert!(p.cmd(&format!("USER {USER}")).starts_with("+OK"));
    let reply = p.cmd("PASS secret");
    assert!(
        reply.starts_with("-ERR [AUTH] Too many failed logins"),
        "{reply}"
    );
}
