//! SMTP receiving, end to end: the real binary over TCP and TLS.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn started(name: &str) -> Instance {
    let mut i = Instance::new(name, |t| t);
    i.start();
    i
}

#[test]
fn delivers_and_stores_byte_for_byte() {
    let inst = started("deliver");
    let mut c = Smtp::connect(inst.smtp_addr());
    let ehlo = c.expect("EHLO client.example", 250);
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(ehlo.lines().any(|l| l == ext), "EHLO lacks {ext}: {ehlo}");
    }
    let content = b"From: a@other.example\r\nSubject: hello\r\n\r\nfirst line\r\n.leading dot\r\n..two dots\r\n".to_vec();
    let (code, text) = c.send_mail("a@other.example", &[USER], &content);
    assert_eq!(code, 250, "{text}");
    assert!(text.starts_with("2.0.0"), "{text}");
    c.expect("QUIT", 221);
    assert_eq!(inst.uids(USER, "INBOX"), vec![1]);
    let stored = inst.show(USER, 1);
    let text = String::from_utf8_lossy(&stored);
    assert!(text.starts_with("Return-Path: <a@other.example>\r\nReceived: from client.example ([127.0.0.1])\r\n\tby mail.example.test (pimail) with ESMTP id "), "{text}");
    assert!(text.contains(&format!("\tfor <{USER}>;")), "{text}");
    assert_eq!(strip_trace(&stored), content);
}

#[test]
fn one_copy_per_user_for_aliases_plus_and_catch_all() {
    let inst = started("aliases");
    let out = inst.cli_stdin(
        &["user", "add", "bob@example.test", "--password-stdin"],
        "pw\n",
    );
    assert!(out.status.success());
    assert!(
        inst.cli(&[
            "alias",
            "add",
            "team@example.test",
            USER,
            "bob@example.test"
        ])
        .status
        .success()
    );
    assert!(
        inst.cli(&["alias", "add", "@example.test", "bob@example.test"])
            .status
            .success()
    );
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    // alice directly, alice via plus-addressing and via the team alias: one copy.
    let (code, _) = c.send_mail(
        "x@other.example",
        &[USER, "alice+news@example.test", "team@example.test"],
        &message("m1", 100),
    );
    assert_eq!(code, 250);
    // An unknown name goes to the catch-all (bob).
    let (code, _) = c.send_mail(
        "x@other.example",
        &["whoever@example.test"],
        &message("m2", 100),
    );
    assert_eq!(code, 250);
    assert_eq!(inst.uids(USER, "INBOX"), vec![1]);
    assert_eq!(inst.uids("bob@example.test", "INBOX"), vec![1, 2]);
    let aliases = String::from_utf8(inst.cli(&["alias", "list"]).stdout).unwrap();
    assert!(
        aliases.contains("team@example.test -> alice@example.test, bob@example.test"),
        "{aliases}"
    );
}

#[test]
fn refusals() {
    let inst = started("refusals");
    let mut c = Smtp::connect(inst.smtp_addr());
    assert!(
        c.expect("MAIL FROM:<a@other.example>", 503)
            .starts_with("5.5.1")
    );
    c.expect("EHLO client.example", 250);
    c.expect("RCPT TO:<alice@example.test>", 503);
    c.expect("DATA", 503);
    c.expect("MAIL FROM:<a@other.example>", 250);
    c.expect("MAIL FROM:<a@other.example>", 503);
    c.expect("DATA", 554);
    let cases: &[(&str, u16, &str)] = &[
        ("RCPT TO:<nobody@example.test>", 550, "5.1.1"),
        ("RCPT TO:<victim@elsewhere.example>", 554, "5.7.1"),
        (
            "RCPT TO:<victim%elsewhere.example@example.test>",
            550,
            "5.7.1",
        ),
        (
            "RCPT TO:<\"victim@elsewhere.example\"@example.test>",
            550,
            "5.7.1",
        ),
        (
            "RCPT TO:<@example.test:victim@elsewhere.example>",
            550,
            "5.7.1",
        ),
        (
            "RCPT TO:<@elsewhere.example:alice@example.test>",
            550,
            "5.7.1",
        ),
        (
            "RCPT TO:<elsewhere.example!victim@example.test>",
            550,
            "5.7.1",
        ),
        ("RCPT TO:<elsewhere.example!victim>", 501, "5.1.3"),
        ("RCPT TO:<victim@[192.0.2.1]>", 554, "5.7.1"),
        ("RCPT TO:<alice@example.test> NOTIFY=NEVER", 555, "5.5.4"),
    ];
    c.expect("QUIT", 221);
    // One session per case, so the error limit (10) does not end the test.
    for (cmd, code, enhanced) in cases {
        let mut c = Smtp::connect(inst.smtp_addr());
        c.expect("EHLO client.example", 250);
        c.expect("MAIL FROM:<a@other.example>", 250);
        let text = c.expect(cmd, *code);
        assert!(text.starts_with(enhanced), "{cmd} -> {code} {text}");
        c.expect("RSET", 250);
    }
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<a@other.example>", 250);
    let text = c.expect("RCPT TO:<Postmaster>", 550);
    assert!(
        text.starts_with("5.1.1"),
        "no postmaster account or alias yet: {text}"
    );
    c.expect("RSET", 250);
    c.expect("VRFY alice", 252);
    c.expect("HELP", 214);
    c.expect("NOOP", 250);
    c.expect("QUIT", 221);
    assert!(inst.uids(USER, "INBOX").is_empty());
    // New connection: the error counter starts again.
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    c.expect("AUTH PLAIN AGFsaWNlAHNlY3JldA==", 502);
    c.expect("XYZZY", 500);
    c.expect("MAIL FROM:<a@other.example> BODY=BINARYMIME", 555);
    c.expect("MAIL FROM:<a@other.example> SIZE=999999999999", 552);
    let text = c.expect("MAIL FROM:<jörg@other.example>", 553);
    assert!(text.starts_with("5.6.7"), "{text}");
    c.expect("MAIL FROM:<jörg@other.example> SMTPUTF8", 250);
}

#[test]
fn postmaster_without_domain_reaches_its_alias() {
    let inst = started("postmaster");
    assert!(
        inst.cli(&["alias", "add", "postmaster@example.test", USER])
            .status
            .success()
    );
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<>", 250);
    c.expect("RCPT TO:<Postmaster>", 250);
    c.expect("DATA", 354);
    c.send(b"Subject: bounce\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.read_reply().0, 250);
    assert_eq!(inst.uids(USER, "INBOX"), vec![1]);
    assert!(inst.show(USER, 1).starts_with(b"Return-Path: <>\r\n"));
}

#[test]
fn pipelining_in_one_write() {
    let inst = started("pipelining");
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    let mut batch = Vec::new();
    for i in 0..3 {
        batch.extend_from_slice(b"MAIL FROM:<a@other.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n");
        batch.extend_from_slice(&dot_stuff(&message(&format!("p{i}"), 300)));
        batch.extend_from_slice(b".\r\n");
    }
    batch.extend_from_slice(b"QUIT\r\n");
    c.send(&batch);
    for _ in 0..3 {
        for expected in [250, 250, 550, 354, 250] {
            let (code, text) = c.read_reply();
            assert_eq!(code, expected, "{text}");
        }
    }
    assert_eq!(c.read_reply().0, 221);
    assert_eq!(inst.uids(USER, "INBOX"), vec![1, 2, 3]);
    for uid in 1..=3 {
        assert_eq!(
            inst.show_content(USER, uid),
            message(&format!("p{}", uid - 1), 300)
        );
    }
}

#[test]
fn bdat_chunking() {
    let inst = started("bdat");
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    // BDAT with no transaction: the chunk is consumed, then refused.
    c.send(b"BDAT 5\r\nhello");
    assert_eq!(c.read_reply().0, 503);
    c.expect("NOOP", 250);
    let content = message("bdat", 200_000);
    c.expect("MAIL FROM:<a@other.example>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    let (a, b) = content.split_at(70_001);
    c.send(format!("BDAT {}\r\n", a.len()).as_bytes());
    c.send(a);
    assert_eq!(c.read_reply().0, 250);
    // The last chunk and a pipelined command in one write.
    let mut last = format!("BDAT {} LAST\r\n", b.len()).into_bytes();
    last.extend_from_slice(b);
    last.extend_from_slice(b"NOOP\r\n");
    c.send(&last);
    assert_eq!(c.read_reply().0, 250);
    assert_eq!(c.read_reply().0, 250);
    // BDAT 0 LAST with a previous chunk; and lines starting with "." are not unstuffed.
    c.expect("MAIL FROM:<a@other.example>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    let dotted = b"Subject: d\r\n\r\n.not stuffed\r\n";
    c.send(format!("BDAT {}\r\n", dotted.len()).as_bytes());
    c.send(dotted);
    assert_eq!(c.read_reply().0, 250);
    c.send(b"BDAT 0 LAST\r\n");
    assert_eq!(c.read_reply().0, 250);
    // DATA after BDAT in one transaction is refused.
    c.expect("MAIL FROM:<a@other.example>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    c.send(b"BDAT 3\r\nabc");
    assert_eq!(c.read_reply().0, 250);
    c.expect("DATA", 503);
    c.expect("RSET", 250);
    assert_eq!(inst.uids(USER, "INBOX"), vec![1, 2]);
    assert_eq!(inst.show_content(USER, 1), content);
    assert_eq!(inst.show_content(USER, 2), dotted);
}

#[test]
fn smuggling_and_bare_line_endings_are_refused() {
    let inst = started("smuggling");
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    for smuggle in [&b"\n.\n"[..], b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"] {
        c.expect("MAIL FROM:<a@other.example>", 250);
        c.expect("RCPT TO:<alice@example.test>", 250);
        c.expect("DATA", 354);
        let mut data = b"Subject: outer\r\n\r\nbody".to_vec();
        data.extend_from_slice(smuggle);
        data.extend_from_slice(b"MAIL FROM:<evil@other.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n");
        c.send(&data);
        let (code, text) = c.read_reply();
        assert_eq!(code, 550, "{smuggle:?}: {text}");
        assert!(text.starts_with("5.6.0"), "{text}");
        // Nothing of the "smuggled" commands ran: the session is idle.
        c.expect("NOOP", 250);
    }
    // Bare LF in BDAT content is refused too.
    c.expect("MAIL FROM:<a@other.example>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    c.send(b"BDAT 5 LAST\r\na\nb\r\n");
    assert_eq!(c.read_reply().0, 550);
    assert!(inst.uids(USER, "INBOX").is_empty());
}

#[test]
fn limits_lines_size_recipients_errors() {
    let mut inst = Instance::new("limits", |t| {
        t.replace("max_message_size = 26214400", "max_message_size = 10000")
            .replace("max_recipients = 100", "max_recipients = 2")
            .replace("max_errors = 10", "max_errors = 3")
    });
    inst.start();
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    // A command line over 512 bytes: 500 5.5.2, the session goes on.
    let long = format!("MAIL FROM:<{}@other.example>", "a".repeat(600));
    let text = c.expect(&long, 500);
    assert!(text.starts_with("5.5.2"), "{text}");
    c.expect("MAIL FROM:<a@other.example>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    c.expect("RCPT TO:<alice+2@example.test>", 250);
    let text = c.expect("RCPT TO:<alice+3@example.test>", 452);
    assert!(text.starts_with("4.5.3"), "{text}");
    c.expect("DATA", 354);
    c.send(&dot_stuff(&message("big", 20_000)));
    c.send(b".\r\n");
    let (code, text) = c.read_reply();
    assert_eq!((code, &text[..5]), (552, "5.3.4"));
    // The third error closes the session with 421.
    let (code, _) = c.cmd("BOGUS");
    assert_eq!(code, 421);
    assert!(inst.uids(USER, "INBOX").is_empty());
    // A megabyte without a newline is refused without being buffered.
    let mut c = Smtp::connect(inst.smtp_addr());
    let mut junk = vec![b'x'; 1 << 20];
    junk.extend_from_slice(b"\r\n");
    c.send(&junk);
    assert_eq!(c.read_reply().0, 500);
    c.expect("NOOP", 250);
    drop(c);
    inst.signal("TERM");
    assert_eq!(inst.wait(Duration::from_secs(20)), Some(0));
}

#[test]
fn connection_limits_and_idle_timeout() {
    let mut inst = Instance::new("connlimits", |t| {
        t.replace("max_connections_per_ip = 20", "max_connections_per_ip = 2")
            .replace("command_timeout = 300", "command_timeout = 1")
    });
    inst.start();
    let a = Smtp::connect(inst.smtp_addr());
    let b = Smtp::connect(inst.smtp_addr());
    let mut third = Smtp::new(std::net::TcpStream::connect(inst.smtp_addr()).unwrap());
    let (code, text) = third.read_reply();
    assert_eq!(code, 421, "{text}");
    // Idle sessions are closed after the command timeout.
    let mut a = a;
    let (code, text) = a.read_reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("4.4.2"), "{text}");
    drop(b);
    std::thread::sleep(Duration::from_millis(1500));
    let mut again = Smtp::connect(inst.smtp_addr());
    again.expect("NOOP", 250);
}

#[test]
fn starttls_then_mail_and_no_injection() {
    let inst = started("starttls");
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    // A command pipelined after STARTTLS in the clear must be discarded
    // (RFC 3207 4.2), not answered inside TLS.
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@other.example>\r\n");
    let (code, _) = c.read_reply();
    assert_eq!(code, 220);
    let tcp = c.into_stream();
    let tls = tls_client(&inst.cert(), tcp);
    let mut c = Smtp::new(tls);
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.expect("STARTTLS", 503);
    let (code, _) = c.send_mail("a@other.example", &[USER], &message("tls", 5000));
    assert_eq!(code, 250);
    c.expect("QUIT", 221);
    let stored = String::from_utf8(inst.show(USER, 1)).unwrap();
    assert!(stored.contains("with ESMTPS id"), "{stored}");
    assert!(!stored.contains("injected"), "{stored}");
}

#[test]
fn sigterm_finishes_the_transaction_in_flight() {
    let mut inst = started("sigterm");
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<a@other.example>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    c.expect("DATA", 354);
    let content = message("inflight", 50_000);
    let stuffed = dot_stuff(&content);
    c.send(&stuffed[..20_000]);
    inst.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // No new sessions once shutdown began.
    assert!(
        std::net::TcpStream::connect(inst.smtp_addr())
            .map(|s| {
                let mut s = Smtp::new(s);
                s.read_reply().0
            })
            .map_or(true, |code| code == 421 || code == 0),
        "a new session was accepted during shutdown"
    );
    c.send(&stuffed[20_000..]);
    c.send(b".\r\n");
    let (code, text) = c.read_reply();
    assert_eq!(code, 250, "{text}");
    // Then the session is told the service is going away.
    let (code, _) = c.cmd("NOOP");
    assert!(code == 421 || code == 0, "{code}");
    assert_eq!(
        inst.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        inst.log()
    );
    assert_eq!(inst.uids(USER, "INBOX"), vec![1]);
    assert_eq!(inst.show_content(USER, 1), content);
}

#[test]
fn swaks_if_installed() {
    if std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("swaks not installed; skipped (CI installs it)");
        return;
    }
    let inst = started("swaks");
    let port = inst.smtp_addr().port().to_string();
    for extra in [&[][..], &["--tls"][..], &["--pipeline"][..]] {
        let out = std::process::Command::new("swaks")
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &port,
                "--to",
                USER,
                "--from",
                "s@other.example",
                "--helo",
                "swaks.example",
                "--header",
                "Subject: via swaks",
                "--body",
                "swaks body",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "swaks {extra:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(inst.uids(USER, "INBOX"), vec![1, 2, 3]);
    let stored = String::from_utf8(inst.show(USER, 2)).unwrap();
    assert!(
        stored.contains("Subject: via swaks") && stored.contains("swaks body"),
        "{stored}"
    );
}

#[test]
fn python_smtplib_if_present() {
    let Ok(out) = std::process::Command::new("python3")
        .arg("--version")
        .output()
    else {
        eprintln!("python3 missing; skipped");
        return;
    };
    assert!(out.status.success());
    let inst = started("smtplib");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtplib_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(inst.smtp_addr().port().to_string())
        .arg(inst.cert())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "smtplib: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The script sends three messages: plain, STARTTLS, and SMTPUTF8 + 8BITMIME.
    let uids = inst.uids(USER, "INBOX");
    assert_eq!(uids, vec![1, 2, 3]);
    let utf8 = inst.show_content(USER, 3);
    assert!(String::from_utf8(utf8).unwrap().contains("Grüße"));
    let _ = std::io::stdout().flush();
}
