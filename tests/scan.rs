//! Attachment scanning, end to end: the real binary refusing, quarantining
//! and reloading signatures over SMTP, and `pimail scan`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fn base64(data: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    b.as_bytes()
        .chunks(76)
        .map(|l| format!("{}\r\n", std::str::from_utf8(l).unwrap()))
        .collect()
}

fn with_attachment(token: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "From: a@other.example\r\nTo: {USER}\r\nSubject: {token}\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
hello\r\n--b\r\nContent-Type: application/octet-stream; name=\"f.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}--b--\r\n",
        base64(data)
    )
    .into_bytes()
}

fn wait_for_log(inst: &Instance, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !inst.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in log: {}",
            inst.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn infected_mail_is_refused_and_a_large_clean_attachment_delivered() {
    let mut inst = Instance::new("scan-reject", |t| t);
    inst.start();
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    let (code, text) = c.send_mail(
        "a@other.example",
        &[USER],
        &with_attachment("bad", EICAR.as_bytes()),
    );
    assert_eq!(code, 554, "{text}");
    assert!(text.starts_with("5.7.1"), "{text}");
    assert!(text.contains("Eicar-Test-Signature"), "{text}");
    // The session goes on; a 3 MB attachment (past spool_memory, so partly
    // in the spool file) is scanned and delivered.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (code, text) = c.send_mail("a@other.example", &[USER], &with_attachment("good", &big));
    assert_eq!(code, 250, "{text}");
    c.expect("QUIT", 221);
    assert_eq!(inst.uids(USER, "INBOX"), vec![1]);
    assert!(
        String::from_utf8_lossy(&inst.show(USER, 1)).contains("Subject: good"),
        "the clean one is stored"
    );
    let log = inst.log();
    assert!(
        log.contains("infected: Eicar-Test-Signature; refused"),
        "{log}"
    );
}

#[test]
fn quarantine_and_reload_on_sighup() {
    let mut inst = Instance::new("scan-quarantine", |t| {
        t.replace("action = \"reject\"", "action = \"quarantine\"")
    });
    inst.start();
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    let (code, text) = c.send_mail(
        "a@other.example",
        &[USER],
        &with_attachment("eicar", EICAR.as_bytes()),
    );
    assert_eq!(code, 250, "{text}");
    assert_eq!(inst.uids(USER, "Junk"), vec![1]);
    assert!(inst.uids(USER, "INBOX").is_empty());
    let out = inst.cli(&["message", "show", USER, "1", "--mailbox", "Junk"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("X-Pimail-Scan: infected; Eicar-Test-Signature; quarantined\r\n"),
        "{shown}"
    );

    // A new signature file, picked up on SIGHUP while this session stays open.
    let marker = b"pimail-custom-marker";
    let hex: String = marker.iter().map(|b| format!("{b:02x}")).collect();
    let sigs = inst.dir.join("signatures");
    std::fs::create_dir_all(&sigs).unwrap();
    std::fs::write(sigs.join("local.ndb"), format!("Local.Marker:0:*:{hex}\n")).unwrap();
    let (code, _) = c.send_mail(
        "a@other.example",
        &[USER],
        &with_attachment("before", b"has pimail-custom-marker in it"),
    );
    assert_eq!(code, 250);
    assert_eq!(
        inst.uids(USER, "INBOX"),
        vec![1],
        "not known before the reload"
    );
    inst.signal("HUP");
    wait_for_log(&inst, "scan: loaded 2 body");
    let (code, text) = c.send_mail(
        "a@other.example",
        &[USER],
        &with_attachment("after", b"has pimail-custom-marker in it"),
    );
    assert_eq!(code, 250, "{text}");
    assert_eq!(inst.uids(USER, "Junk"), vec![1, 2]);
    c.expect("QUIT", 221);
}

#[test]
fn cli_prints_clamscan_lines_and_exit_codes() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scan/testdata");
    let run = |args: &[&Path]| {
        let out = Command::new(BIN)
            .args(["scan", "--signatures", "/nonexistent"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let clean = data.join("clean-text.eml");
    let bad = data.join("eicar-zip-deflated.eml");
    assert_eq!(
        run(&[&clean]),
        (Some(0), format!("{}: OK\n", clean.display()))
    );
    let (code, out) = run(&[&clean, &bad]);
    assert_eq!(code, Some(1));
    assert!(
        out.ends_with(&format!("{}: Eicar-Test-Signature FOUND\n", bad.display())),
        "{out}"
    );
    let (code, out) = run(&[Path::new("/nonexistent/file")]);
    assert_eq!(code, Some(2), "{out}");
    // A directory is walked.
    let (code, out) = run(&[&data]);
    assert_eq!(code, Some(1));
    assert!(out.lines().count() >= 10, "{out}");
    // No path: a usage error.
    let out = Command::new(BIN)
        .args(["scan", "--signatures", "/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
