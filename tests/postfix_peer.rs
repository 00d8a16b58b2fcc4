//! Postfix (Debian's package) as the receiving MTA of a test domain: pimail
//! finds it through MX (a fake DNS server on loopback), delivers over SMTP
//! with STARTTLS offered or not, and the file Postfix writes carries a DKIM
//! signature that dkimpy accepts. Skipped where Postfix is not installed
//! (.ci/run installs it) or when not root (Postfix's master needs root).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fakedns::{FakeDns, FakeRecord};
use common::*;

fn postfix_installed() -> bool {
    Path::new("/usr/sbin/postfix").exists() && nix::unistd::getuid().is_root()
}

struct Postfix {
    data: std::path::PathBuf,
    port: u16,
}

impl Postfix {
    fn script(&self, action: &str) -> std::process::Output {
        Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/benches/postfix/postfix.sh"
            ))
            .arg(action)
            .env("PF_DATA", &self.data)
            .env("PF_SMTP_PORT", self.port.to_string())
            .output()
            .unwrap()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.script("stop");
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[test]
fn delivers_dkim_signed_mail_to_postfix_through_mx() {
    if !postfix_installed() {
        eprintln!("SKIP: postfix not installed or not root (CI installs it)");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pf = Postfix {
        data: std::env::temp_dir().join(format!("pimail-test-postfix-{}", std::process::id())),
        port,
    };
    let out = pf.script("start");
    assert!(
        out.status.success(),
        "postfix start: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (dns, _dns) = FakeDns::start(vec![
        FakeRecord::mx("bench.local", 10, "mx.bench.local"),
        FakeRecord::a("mx.bench.local", "127.0.0.1"),
    ]);
    let mut inst = Instance::new("postfix", |t| {
        t.replace("dns_servers = []", &format!("dns_servers = [\"{dns}\"]"))
            .replace("mx_port = 25", &format!("mx_port = {port}"))
    });
    let out = inst.cli(&[
        "dkim",
        "keygen",
        "--domain",
        "example.test",
        "--selector",
        "pf",
        "--algorithm",
        "rsa",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    inst.start();
    let mut c = Smtp::connect(SocketAddr::from(([127, 0, 0, 1], inst.port_base + 587)));
    c.expect("EHLO client.example", 250);
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0secret"));
    c.expect(&format!("AUTH PLAIN {token}"), 235);
    let body = format!(
        "From: Alice <{USER}>\r\nTo: <bench@bench.local>\r\nSubject: to postfix\r\nMessage-ID: <pf1@example.test>\r\n\r\nHello Postfix.\r\n.a dotted line\r\n"
    );
    assert_eq!(
        c.send_mail(USER, &["bench@bench.local"], body.as_bytes()).0,
        250
    );
    // Postfix writes it into the Maildir.
    let new = pf.data.join("mail/bench/Maildir/new");
    let deadline = Instant::now() + Duration::from_secs(60);
    let file = loop {
        if let Some(f) = std::fs::read_dir(&new)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
        {
            break f.path();
        }
        assert!(
            Instant::now() < deadline,
            "Postfix did not deliver; pimail queue: {}\n{}",
            String::from_utf8_lossy(&inst.cli(&["queue", "list"]).stdout),
            inst.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let delivered = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&delivered);
    assert!(
        text.contains("DKIM-Signature: v=1; a=rsa-sha256;") && text.contains(".a dotted line"),
        "{text}"
    );
    // Postfix's Maildir has LF line ends; dkimpy canonicalizes either way.
    let key = pimail::dkim::keys::load(&inst.dir.join("dkim/example.test.pf.key")).unwrap();
    let python = "python3";
    let importable = || {
        Command::new(python)
            .args(["-c", "import dkim"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !importable() {
        let _ = Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "dkimpy", "pynacl"])
            .status();
    }
    if !importable() {
        eprintln!("SKIP: dkimpy not available; signature not verified");
        return;
    }
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let signed = inst.dir.join("postfix-delivered.eml");
    std::fs::write(&signed, crlf).unwrap();
    let out = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dkim_verify.py"))
        .arg(&signed)
        .arg(format!("pf._domainkey.example.test={}", key.txt_record()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dkimpy: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
