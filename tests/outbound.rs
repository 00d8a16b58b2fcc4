//! Submission and outbound delivery end to end: AUTH and sender checks on
//! the submission port, the queue, the SMTP client against a scripted sink
//! as smarthost, retries, bounces, restarts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::sink::{Script, Sink};
use common::*;

fn submission(inst: &Instance) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], inst.port_base + 587))
}

fn auth_plain(c: &mut Smtp<std::net::TcpStream>, user: &str, password: &str) -> u16 {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    c.cmd(&format!("AUTH PLAIN {token}")).0
}

/// An instance whose outbound mail goes to `sink` as a plain smarthost,
/// retrying after one second.
fn with_smarthost(name: &str, sink: SocketAddr, extra: impl FnOnce(String) -> String) -> Instance {
    let mut inst = Instance::new(name, |t| {
        extra(
            t.replace("smarthost = \"\"", &format!("smarthost = \"{sink}\""))
                .replace("smarthost_tls = \"starttls\"", "smarthost_tls = \"none\"")
                .replace(
                    "retry_schedule = [300, 900, 1800, 3600, 7200, 14400]",
                    "retry_schedule = [1]",
                )
                .replace("failure_delay_ms = 2000", "failure_delay_ms = 200"),
        )
    });
    inst.start();
    inst
}

fn mail_from(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!("From: Alice <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nHello from {subject}.\r\n.dot line\r\n").into_bytes()
}

fn queue_len(inst: &Instance) -> usize {
    let out = inst.cli(&["queue", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn wait_queue_empty(inst: &Instance, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while queue_len(inst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "queue not empty: {}",
            String::from_utf8_lossy(&inst.cli(&["queue", "list"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn submission_requires_auth_and_owned_sender() {
    let sink = Sink::start(Script::default());
    let inst = with_smarthost("subauth", sink.addr, |t| t);
    assert!(
        inst.cli(&["alias", "add", "sales@example.test", USER])
            .status
            .success()
    );
    let mut c = Smtp::connect(submission(&inst));
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    // No mail without AUTH, not even to a local user.
    assert!(
        c.expect("MAIL FROM:<alice@example.test>", 530)
            .starts_with("5.7.0")
    );
    let started = std::time::Instant::now();
    assert_eq!(auth_plain(&mut c, USER, "wrong"), 535);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "failed AUTH is delayed"
    );
    assert_eq!(auth_plain(&mut c, USER, "secret"), 235);
    assert!(
        c.expect("MAIL FROM:<bob@example.test>", 553)
            .starts_with("5.7.1")
    );
    assert!(
        c.expect("MAIL FROM:<someone@elsewhere.example>", 553)
            .starts_with("5.7.1")
    );
    c.expect("MAIL FROM:<>", 553);
    // An alias of the user is fine as sender; a forged From: is not.
    c.expect("MAIL FROM:<sales@example.test>", 250);
    c.expect("RCPT TO:<bob@remote.example>", 250);
    c.expect("DATA", 354);
    c.send(&dot_stuff(&mail_from(
        "ceo@example.test",
        "bob@remote.example",
        "forged",
    )));
    c.send(b".\r\n");
    let (code, text) = c.read_reply();
    assert_eq!(code, 553, "{text}");
    // A proper message: one local recipient, one remote.
    let (code, text) = c.send_mail(
        "alice+sent@example.test",
        &[USER, "bob@remote.example"],
        &mail_from(USER, "bob@remote.example", "hello"),
    );
    assert_eq!(code, 250, "{text}");
    c.expect("QUIT", 221);
    assert_eq!(inst.uids(USER, "INBOX"), vec![1]);
    let got = sink.wait_for(1, 20);
    assert_eq!(got[0].from, "alice+sent@example.test");
    assert_eq!(got[0].rcpts, vec!["bob@remote.example".to_string()]);
    let data = String::from_utf8_lossy(&got[0].data);
    assert!(
        data.contains("Subject: hello") && data.contains("\r\n.dot line\r\n"),
        "{data}"
    );
    assert!(data.contains("with ESMTPA id"), "{data}");
    wait_queue_empty(&inst, 10);
    // The MX port never relays, even for a user who could authenticate.
    let mut mx = Smtp::connect(inst.smtp_addr());
    mx.expect("EHLO client.example", 250);
    mx.expect("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=", 502);
}

#[test]
fn plaintext_auth_refused_without_tls_and_failures_limited_per_ip() {
    let sink = Sink::start(Script::default());
    let inst = with_smarthost("subtls", sink.addr, |t| {
        t.replace(
            "allow_plaintext_on_loopback = true",
            "allow_plaintext_on_loopback = false",
        )
        .replace("max_failures_per_ip = 10", "max_failures_per_ip = 2")
    });
    let mut c = Smtp::connect(submission(&inst));
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(auth_plain(&mut c, USER, "secret"), 538);
    // Over implicit TLS (465) AUTH works; two failures block the address.
    let tcp =
        std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], inst.port_base + 465)))
            .unwrap();
    let mut t = Smtp::new(tls_client(&inst.cert(), tcp));
    assert_eq!(t.read_reply().0, 220);
    assert!(
        t.expect("EHLO client.example", 250)
            .contains("AUTH PLAIN LOGIN")
    );
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(
        t.cmd(&format!("AUTH PLAIN {}", b64(&format!("\0{USER}\0bad1"))))
            .0,
        535
    );
    assert_eq!(
        t.cmd(&format!("AUTH PLAIN {}", b64(&format!("\0{USER}\0bad2"))))
            .0,
        535
    );
    assert_eq!(
        t.cmd(&format!("AUTH PLAIN {}", b64(&format!("\0{USER}\0secret"))))
            .0,
        421
    );
}

#[test]
fn temporary_failure_is_retried_and_permanent_one_bounces() {
    let sink = Sink::start(Script {
        rcpt_replies: vec![(
            "nobody@remote.example".into(),
            "550 5.1.1 <nobody@remote.example>: user unknown".into(),
        )],
        data_replies: vec!["451 4.3.0 try again later".into()],
        ..Script::default()
    });
    let inst = with_smarthost("retry", sink.addr, |t| t);
    let mut c = Smtp::connect(submission(&inst));
    c.expect("EHLO client.example", 250);
    assert_eq!(auth_plain(&mut c, USER, "secret"), 235);
    let (code, _) = c.send_mail(
        USER,
        &["bob@remote.example", "nobody@remote.example"],
        &mail_from(USER, "bob@remote.example", "retry"),
    );
    assert_eq!(code, 250);
    // First attempt: 451 for the message (bob deferred), 550 for nobody
    // (bounced at once). One second later bob's copy goes through.
    let got = sink.wait_for(1, 20);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, vec!["bob@remote.example".to_string()]);
    wait_queue_empty(&inst, 10);
    // The bounce is in alice's INBOX, a multipart/report about nobody.
    let uids = inst.uids(USER, "INBOX");
    assert_eq!(uids.len(), 1, "one bounce");
    let dsn = String::from_utf8(inst.show(USER, uids[0])).unwrap();
    assert!(dsn.starts_with("Return-Path: <>\r\n"), "{dsn}");
    assert!(
        dsn.contains("Content-Type: multipart/report; report-type=delivery-status;"),
        "{dsn}"
    );
    assert!(
        dsn.contains(
            "Final-Recipient: rfc822; nobody@remote.example\r\nAction: failed\r\nStatus: 5.1.1"
        ),
        "{dsn}"
    );
    assert!(
        dsn.contains("Diagnostic-Code: smtp; ") && dsn.contains("user unknown"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Content-Type: text/rfc822-headers\r\n\r\n") && dsn.contains("Subject: retry"),
        "{dsn}"
    );
    assert!(
        !dsn.contains("Hello from retry"),
        "the body is not returned"
    );
    assert_eq!(sink.messages().len(), 1, "never sent twice");
}

#[test]
fn dropped_connection_mid_data_is_retried_once() {
    let sink = Sink::start(Script {
        drop_in_data: vec![0],
        ..Script::default()
    });
    let inst = with_smarthost("dropped", sink.addr, |t| t);
    let mut c = Smtp::connect(submission(&inst));
    c.expect("EHLO client.example", 250);
    assert_eq!(auth_plain(&mut c, USER, "secret"), 235);
    let big = message("dropped", 300_000);
    let mut content = format!("From: {USER}\r\n").into_bytes();
    content.extend_from_slice(&big);
    assert_eq!(c.send_mail(USER, &["bob@remote.example"], &content).0, 250);
    let got = sink.wait_for(1, 20);
    wait_queue_empty(&inst, 10);
    assert_eq!(sink.messages().len(), 1);
    assert!(got[0].data.ends_with(&big), "whole message after the retry");
}

#[test]
fn queue_survives_a_restart_and_cli_manages_it() {
    // Nothing listens on the smarthost port at first.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut inst = with_smarthost("restart", port, |t| {
        t.replace("retry_schedule = [1]", "retry_schedule = [3600]")
    });
    let mut c = Smtp::connect(submission(&inst));
    c.expect("EHLO client.example", 250);
    assert_eq!(auth_plain(&mut c, USER, "secret"), 235);
    for i in 0..3 {
        assert_eq!(
            c.send_mail(
                USER,
                &[&format!("r{i}@remote.example")],
                &mail_from(USER, "r@remote.example", &format!("q{i}"))
            )
            .0,
            250
        );
    }
    drop(c);
    // Each is tried once, fails to connect and waits an hour.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = String::from_utf8(inst.cli(&["queue", "list"]).stdout).unwrap();
        if list.lines().count() == 3 && list.lines().all(|l| l.split('\t').nth(4) == Some("1")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = String::from_utf8(inst.cli(&["queue", "list"]).stdout).unwrap();
    let first_id = list
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    let show = String::from_utf8(inst.cli(&["queue", "show", &first_id]).stdout).unwrap();
    assert!(
        show.contains("to: <r0@remote.example>") && show.contains("Subject: q0"),
        "{show}"
    );
    assert!(inst.cli(&["queue", "drop", &first_id]).status.success());
    assert_eq!(queue_len(&inst), 2);
    // kill -9, then the peer comes up, then pimail again: `queue retry`
    // makes the entries due and they go out exactly once.
    inst.kill9();
    let sink = Sink::start_on(&port.to_string(), Script::default());
    inst.start();
    assert!(inst.cli(&["queue", "retry"]).status.success());
    let got = sink.wait_for(2, 20);
    wait_queue_empty(&inst, 10);
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpts.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec![
            "r1@remote.example".to_string(),
            "r2@remote.example".to_string()
        ]
    );
    assert_eq!(sink.messages().len(), 2);
}

#[test]
fn smarthost_with_starttls_and_auth() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let sink = Sink::start(Script {
        tls: Some((
            cert_pem.clone().into_bytes(),
            ck.signing_key.serialize_pem().into_bytes(),
        )),
        auth: Some(("relayuser".into(), "relaypass".into())),
        ..Script::default()
    });
    let ca = std::env::temp_dir().join(format!("pimail-sink-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, &cert_pem).unwrap();
    let port = sink.addr.port();
    let inst = with_smarthost("smarthost", sink.addr, |t| {
        t.replace(
            &format!("smarthost = \"127.0.0.1:{port}\""),
            &format!("smarthost = \"localhost:{port}\""),
        )
        .replace("smarthost_tls = \"none\"", "smarthost_tls = \"starttls\"")
        .replace("smarthost_user = \"\"", "smarthost_user = \"relayuser\"")
        .replace(
            "smarthost_password = \"\"",
            "smarthost_password = \"relaypass\"",
        )
        .replace(
            "ca_file = \"/etc/ssl/certs/ca-certificates.crt\"",
            &format!("ca_file = \"{}\"", ca.display()),
        )
    });
    let mut c = Smtp::connect(submission(&inst));
    c.expect("EHLO client.example", 250);
    assert_eq!(auth_plain(&mut c, USER, "secret"), 235);
    assert_eq!(
        c.send_mail(
            USER,
            &["bob@remote.example"],
            &mail_from(USER, "bob@remote.example", "viatls")
        )
        .0,
        250
    );
    let got = sink.wait_for(1, 20);
    assert!(got[0].tls, "delivered over TLS");
    assert_eq!(got[0].auth.as_deref(), Some("relayuser"));
    wait_queue_empty(&inst, 10);
    let _ = std::fs::remove_file(ca);
}

/// dkimpy's verdict on a message, given the key record; None when dkimpy
/// cannot be had (no python3, no PyPI).
fn dkimpy_verify(dir: &std::path::Path, message: &[u8], name: &str, record: &str) -> Option<bool> {
    let python = "python3";
    let importable = || {
        std::process::Command::new(python)
            .args(["-c", "import dkim, nacl"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !importable() {
        let _ = std::process::Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "dkimpy", "pynacl"])
            .status();
        if !importable() {
            eprintln!("SKIP: dkimpy not available; DKIM verification not run");
            return None;
        }
    }
    let file = dir.join("signed.eml");
    std::fs::write(&file, message).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dkim_verify.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&file)
        .arg(format!("{name}={record}"))
        .output()
        .unwrap();
    Some(out.status.success())
}

#[test]
fn mx_routing_from_dns_and_dkim_signed_delivery() {
    use common::fakedns::{FakeDns, FakeRecord};
    let sink = Sink::start(Script::default());
    let (dns, _dns) = FakeDns::start(vec![
        FakeRecord::mx("remote.example", 5, "down.remote.example"),
        FakeRecord::mx("remote.example", 10, "up.remote.example"),
        // Nothing listens on 127.0.0.2: the preferred MX refuses.
        FakeRecord::a("down.remote.example", "127.0.0.2"),
        FakeRecord::a("up.remote.example", "127.0.0.1"),
        // No MX: the domain's own address is the implicit MX.
        FakeRecord::a("implicit.example", "127.0.0.1"),
        FakeRecord::mx("nullmx.example", 0, "."),
    ]);
    let mut inst = Instance::new("mx", |t| {
        t.replace("dns_servers = []", &format!("dns_servers = [\"{dns}\"]"))
            .replace("mx_port = 25", &format!("mx_port = {}", sink.addr.port()))
            .replace(
                "retry_schedule = [300, 900, 1800, 3600, 7200, 14400]",
                "retry_schedule = [1]",
            )
    });
    let out = inst.cli(&[
        "dkim",
        "keygen",
        "--domain",
        "example.test",
        "--selector",
        "s1",
        "--algorithm",
        "ed25519",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    inst.start();
    let mut c = Smtp::connect(submission(&inst));
    c.expect("EHLO client.example", 250);
    assert_eq!(auth_plain(&mut c, USER, "secret"), 235);
    let rcpts = [
        "bob@remote.example",
        "carol@implicit.example",
        "x@nullmx.example",
        "y@gone.example",
    ];
    assert_eq!(
        c.send_mail(
            USER,
            &rcpts,
            &mail_from(USER, "bob@remote.example", "routing")
        )
        .0,
        250
    );
    let got = sink.wait_for(2, 30);
    wait_queue_empty(&inst, 20);
    let mut delivered: Vec<String> = got.iter().flat_map(|m| m.rcpts.clone()).collect();
    delivered.sort();
    assert_eq!(
        delivered,
        vec![
            "bob@remote.example".to_string(),
            "carol@implicit.example".to_string()
        ]
    );
    // Null MX and a domain that does not exist bounce at once.
    // One bounce per destination domain's delivery run.
    let dsn: String = inst
        .uids(USER, "INBOX")
        .iter()
        .map(|u| String::from_utf8(inst.show(USER, *u)).unwrap())
        .collect();
    assert!(
        dsn.contains(
            "Final-Recipient: rfc822; x@nullmx.example\r\nAction: failed\r\nStatus: 5.1.10"
        ),
        "{dsn}"
    );
    assert!(
        dsn.contains("Final-Recipient: rfc822; y@gone.example\r\nAction: failed\r\nStatus: 5.1.2"),
        "{dsn}"
    );
    // The delivered copy is DKIM-signed by example.test, verifiable with the
    // published key.
    let data = &got[0].data;
    assert!(
        data.starts_with(b"DKIM-Signature: v=1; a=ed25519-sha256;"),
        "{}",
        String::from_utf8_lossy(&data[..200.min(data.len())])
    );
    let stored = pimail::dkim::keys::stored(&inst.dir.join("dkim")).unwrap();
    let key = pimail::dkim::keys::load(&stored[0].2).unwrap();
    if let Some(ok) = dkimpy_verify(
        &inst.dir,
        data,
        "s1._domainkey.example.test",
        &key.txt_record(),
    ) {
        assert!(ok, "dkimpy rejected our signature");
    }
}
