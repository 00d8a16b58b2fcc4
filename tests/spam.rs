//! End-to-end: the spam filter trained from the CLI files mail at delivery.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Instance, Smtp, USER, message};

fn spam(i: usize) -> String {
    format!(
        "From: Winner Notice <promo{i}@lucky-prizes.example.biz>\r\nTo: {USER}\r\n\
Subject: You WON a free casino bonus {i}\r\nContent-Type: text/html\r\n\r\n\
<html><body><font color=red>Claim your cash prize now!</font> Cheap pills, viagra, \
casino jackpot, guaranteed money. <a href=\"http://claim.lucky-prizes.example.biz/x\">Click here</a> \
unsubscribe limited offer</body></html>\r\n"
    )
}

fn ham(i: usize) -> String {
    format!(
        "From: Bob Builder <bob@colleagues.example.org>\r\nTo: {USER}\r\n\
Subject: Minutes of the project meeting {i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
Hi Alice,\r\n\r\nattached are the minutes of yesterday's project meeting. Please review the \
schedule for the release and the test plan before our call on Thursday.\r\n\r\nThanks, Bob\r\n"
    )
}

fn write_all(dir: &Path, make: fn(usize) -> String, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("{i}.eml")), make(i)).unwrap();
    }
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn trained_filter_files_spam_into_junk_and_ham_into_inbox() {
    let mut inst = Instance::new("spam", |t| t);
    let corpus = inst.dir.join("corpus");
    write_all(&corpus.join("spam"), spam, 12);
    write_all(&corpus.join("ham"), ham, 12);
    let s = corpus.join("spam").display().to_string();
    let h = corpus.join("ham").display().to_string();
    let out = ok(&inst.cli(&["spam", "train", "--spam", &s]));
    assert!(out.contains("spam: 12 trained"), "{out}");
    ok(&inst.cli(&["spam", "train", "--ham", &h]));
    // Training the same messages again counts nothing twice.
    let out = ok(&inst.cli(&["spam", "train", "--ham", &h]));
    assert!(out.contains("12 already trained"), "{out}");
    let out = ok(&inst.cli(&["spam", "stats"]));
    assert!(out.contains("12 spam, 12 ham"), "{out}");

    // classify prints one line per message.
    let probe = corpus.join("probe.eml");
    std::fs::write(&probe, spam(99)).unwrap();
    let out = ok(&inst.cli(&["spam", "classify", &probe.display().to_string()]));
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        fields[..2],
        [probe.display().to_string().as_str(), "spam"],
        "{out}"
    );
    assert!(fields[2].parse::<f64>().unwrap() > 0.99, "{out}");

    // A usage error exits 2.
    let out = inst.cli(&["spam", "train", &s]);
    assert_eq!(out.status.code(), Some(2));

    inst.start();
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    let (code, text) = c.send_mail(
        "promo@lucky-prizes.example.biz",
        &[USER],
        spam(100).as_bytes(),
    );
    assert_eq!(code, 250, "{text}");
    let (code, text) = c.send_mail("bob@colleagues.example.org", &[USER], ham(100).as_bytes());
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT");

    assert_eq!(inst.uids(USER, "Junk"), vec![1]);
    assert_eq!(inst.uids(USER, "INBOX"), vec![1]);
    let junk = ok(&inst.cli(&["message", "show", USER, "1", "--mailbox", "Junk"]));
    assert!(junk.contains("X-Spam-Status: Yes, score="), "{junk}");
    assert!(junk.contains("Claim your cash prize"), "{junk}");
    let inbox = String::from_utf8_lossy(&inst.show(USER, 1)).into_owned();
    assert!(inbox.contains("X-Spam-Status: No, score="), "{inbox}");

    // The running server holds the store: the CLI says what to do instead.
    let out = inst.cli(&["spam", "train", "--spam", &s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--db FILE"));

    // Refusal at end-of-data, switched on by a config reload.
    let text = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(
        &inst.config,
        text.replace("refuse = false", "refuse = true"),
    )
    .unwrap();
    inst.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !inst.log().contains("reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", inst.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    let (code, text) = c.send_mail(
        "promo@lucky-prizes.example.biz",
        &[USER],
        spam(101).as_bytes(),
    );
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("5.7.1"), "{text}");
    assert_eq!(inst.uids(USER, "Junk"), vec![1]);
}

#[test]
fn separate_database_file_and_untrain() {
    let inst = Instance::new("spamdb", |t| t);
    let corpus = inst.dir.join("corpus");
    write_all(&corpus.join("spam"), spam, 3);
    let db = inst.dir.join("tokens.redb").display().to_string();
    let s = corpus.join("spam").display().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap();
        ok(&out)
    };
    run(&["spam", "train", "--db", &db, "--spam", &s]);
    // Retraining as ham corrects the earlier spam training.
    let out = run(&["spam", "train", "--db", &db, "--ham", &s]);
    assert!(out.contains("3 corrected from spam"), "{out}");
    let out = run(&["spam", "stats", "--db", &db]);
    assert!(out.contains("0 spam, 3 ham"), "{out}");
    let out = run(&["spam", "untrain", "--db", &db, &s]);
    assert!(out.contains("untrained 3"), "{out}");
    let out = run(&["spam", "stats", "--db", &db]);
    assert!(
        out.contains("0 spam, 0 ham") && out.contains("tokens: 0"),
        "{out}"
    );
}

/// Moving a message into Junk over IMAP trains it as spam; moving it back
/// out undoes that and trains it as ham; nothing is counted twice.
#[test]
fn imap_moves_teach_the_filter() {
    use std::io::{BufRead, BufReader, Write};
    let mut inst = Instance::new("spam-imap", |t| t);
    inst.start();
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO client.example", 250);
    assert_eq!(
        c.send_mail("x@other.example", &[USER], &message("cheap pills", 500))
            .0,
        250
    );
    drop(c);
    let tcp = std::net::TcpStream::connect(("127.0.0.1", inst.port_base + 143)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut r = BufReader::new(tcp);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let cmd = |r: &mut BufReader<std::net::TcpStream>, tag: &str, text: &str| -> String {
        r.get_mut()
            .write_all(format!("{tag} {text}\r\n").as_bytes())
            .unwrap();
        let mut all = String::new();
        loop {
            let mut l = String::new();
            assert!(
                r.read_line(&mut l).unwrap() > 0,
                "connection closed after {text}"
            );
            all.push_str(&l);
            if l.starts_with(&format!("{tag} ")) {
                assert!(l.starts_with(&format!("{tag} OK")), "{text}: {all}");
                return all;
            }
        }
    };
    cmd(&mut r, "a1", &format!("LOGIN {USER} secret"));
    cmd(&mut r, "a2", "SELECT INBOX");
    cmd(&mut r, "a3", "UID MOVE 1 Junk");
    cmd(&mut r, "a4", "SELECT Junk");
    cmd(&mut r, "a5", "UID MOVE 1 INBOX");
    cmd(&mut r, "a6", "LOGOUT");
    inst.signal("TERM");
    assert_eq!(inst.wait(std::time::Duration::from_secs(20)), Some(0));
    let out = inst.cli(&["spam", "stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Into Junk: 1 spam; back out: the spam training undone, 1 ham.
    assert!(text.contains("messages trained: 0 spam, 1 ham"), "{text}");
}
