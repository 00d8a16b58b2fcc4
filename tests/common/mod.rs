//! End-to-end harness: a real `pimail` binary in a temporary data
//! directory, on free loopback ports, and small SMTP clients over TCP and
//! TLS.

#![allow(dead_code)]

pub mod fakedns;
pub mod sink;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pimail");
pub const DOMAIN: &str = "example.test";
pub const USER: &str = "alice@example.test";

/// Port bases handed out to tests of this process, spaced 1000 apart so a
/// dev instance's seven ports never collide.
fn next_port_base() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed);
        // Spread processes too: each test binary starts at a pid-derived slot.
        let base = 20000 + ((std::process::id() as u16 % 40 + slot) % 40) * 1000;
        // All seven dev ports must be free (other test processes may run).
        if [25, 110, 143, 465, 587, 993, 995]
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", base + p)).is_ok())
        {
            return base;
        }
    }
}

/// Sender authentication (src/authres) queries the DNS for every inbound
/// message; an instance has no DNS of its own unless its test gives it a
/// fake one, so it is off here: a test turns it on by replacing
/// `AUTH_RESULTS_OFF` with `AUTH_RESULTS_ON` in the config text.
pub const AUTH_RESULTS_ON: &str = "header.\nenabled = true\n";
pub const AUTH_RESULTS_OFF: &str = "header.\nenabled = false\n";

pub struct Instance {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port_base: u16,
    pub child: Option<Child>,
}

impl Instance {
    /// `init --dev` plus a user `alice@example.test` (password "secret");
    /// `edit` may change the config text before the server starts.
    pub fn new(name: &str, edit: impl FnOnce(String) -> String) -> Instance {
        let dir = std::env::temp_dir().join(format!(
            "pimail-e2e-{name}-{}-{}",
            std::process::id(),
            rand_u64()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let port_base = next_port_base();
        let out = Command::new(BIN)
            .args(["init", "--data-dir"])
            .arg(&dir)
            .args([
                "--domain",
                DOMAIN,
                "--dev",
                "--port-base",
                &port_base.to_string(),
            ])
            .output()
            .expect("run pimail init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.join("pimail.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            edit(text.replace(AUTH_RESULTS_ON, AUTH_RESULTS_OFF)),
        )
        .unwrap();
        let inst = Instance {
            dir,
            config,
            port_base,
            child: None,
        };
        let out = inst.cli_stdin(&["user", "add", USER, "--password-stdin"], "secret\n");
        assert!(
            out.status.success(),
            "user add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        inst
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port_base + 25))
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pimail serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.smtp_addr()).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited at start ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The probe connection above is a session too; wait until the
        // control socket exists so CLI calls go through the server.
        while !self.dir.join("control.sock").exists() {
            assert!(Instant::now() < deadline, "no control socket");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the server to exit and returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, "")
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The command may exit before reading its input (a refused address).
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    /// UIDs in a user's mailbox, via `pimail message list`.
    pub fn uids(&self, user: &str, mailbox: &str) -> Vec<u32> {
        let out = self.cli(&["message", "list", user, "--mailbox", mailbox]);
        assert!(
            out.status.success(),
            "message list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap().parse().unwrap())
            .collect()
    }

    /// A stored message, byte for byte, via `pimail message show`.
    pub fn show(&self, user: &str, uid: u32) -> Vec<u8> {
        let out = self.cli(&["message", "show", user, &uid.to_string()]);
        assert!(
            out.status.success(),
            "message show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The stored message without the trace headers we prepend.
    pub fn show_content(&self, user: &str, uid: u32) -> Vec<u8> {
        strip_trace(&self.show(user, uid))
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls/cert.pem")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "kept {} for inspection; server log:\n{}",
                self.dir.display(),
                self.log()
            );
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

/// Removes the Return-Path: and Received: headers pimail prepends.
pub fn strip_trace(msg: &[u8]) -> Vec<u8> {
    let mut rest = msg;
    loop {
        let starts = |p: &[u8]| rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p);
        if !(starts(b"Return-Path:") || starts(b"Received:")) {
            return rest.to_vec();
        }
        // Skip the field with its folded continuation lines.
        let mut i = 0;
        loop {
            let Some(lf) = rest[i..].iter().position(|&b| b == b'\n') else {
                return Vec::new();
            };
            i += lf + 1;
            if i >= rest.len() || !(rest[i] == b' ' || rest[i] == b'\t') {
                break;
            }
        }
        rest = &rest[i..];
    }
}

/// A blocking SMTP client over any stream.
pub struct Smtp<S: Read + Write> {
    reader: BufReader<S>,
}

pub type Reply = (u16, String);

impl Smtp<TcpStream> {
    pub fn connect(addr: SocketAddr) -> Smtp<TcpStream> {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Smtp {
            reader: BufReader::new(s),
        };
        let (code, text) = c.read_reply();
        assert_eq!(code, 220, "greeting: {text}");
        c
    }

    pub fn into_stream(self) -> TcpStream {
        assert!(self.reader.buffer().is_empty(), "unread input before TLS");
        self.reader.into_inner()
    }
}

impl<S: Read + Write> Smtp<S> {
    pub fn new(stream: S) -> Smtp<S> {
        Smtp {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let s = self.reader.get_mut();
        s.write_all(bytes).unwrap();
        s.flush().unwrap();
    }

    /// Reads one reply, joining multi-line replies' text with '\n'. A
    /// closed connection reads as code 0.
    pub fn read_reply(&mut self) -> Reply {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return (0, text.join("\n")),
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']);
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return (code, text.join("\n"));
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    /// Asserts a command's reply code (and, if given, the enhanced code).
    pub fn expect(&mut self, line: &str, code: u16) -> String {
        let (c, text) = self.cmd(line);
        assert_eq!(c, code, "{line} -> {c} {text}");
        text
    }

    /// A whole transaction with DATA; returns the reply to the final dot.
    pub fn send_mail(&mut self, from: &str, to: &[&str], content: &[u8]) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for t in to {
            self.expect(&format!("RCPT TO:<{t}>"), 250);
        }
        self.expect("DATA", 354);
        self.send(&dot_stuff(content));
        self.send(b".\r\n");
        self.read_reply()
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.reader.get_mut()
    }
}

/// Dot-stuffs content for DATA and makes sure it ends with CRLF.
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 16);
    let mut at_line_start = true;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A TLS client that trusts exactly the instance's certificate.
pub fn tls_client(
    cert: &Path,
    tcp: TcpStream,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("mail.example.test").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// A test message of about `size` bytes with a unique token in it.
pub fn message(token: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Sender <sender@other.example>\r\nTo: {USER}\r\nSubject: test {token}\r\nMessage-ID: <{token}@other.example>\r\n\r\n"
    )
    .into_bytes();
    let mut i = 0;
    while m.len() < size {
        let line =
            format!("{token} line {i} .......................................................\r\n");
        m.extend_from_slice(line.as_bytes());
        i += 1;
    }
    m
}
