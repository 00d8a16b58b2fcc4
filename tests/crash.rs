//! Durability: SIGKILL the server in the middle of a stream of concurrent
//! deliveries, restart it, and check that every message that got 250 is
//! stored whole, exactly once.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn token_of(content: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    let line = text.lines().find(|l| l.starts_with("Subject: test "))?;
    Some(line["Subject: test ".len()..].to_string())
}

/// Sizes cycle through one-chunk and multi-chunk messages.
fn size_for(n: usize) -> usize {
    [800, 5_000, 150_000][n % 3]
}

#[test]
fn acknowledged_mail_survives_kill_9() {
    let mut inst = Instance::new("crash", |t| t);
    inst.start();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let addr = inst.smtp_addr();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let Ok(stream) = std::net::TcpStream::connect(addr) else {
                    return;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut c = Smtp::new(stream);
                if c.read_reply().0 != 220 || c.cmd("EHLO crash.example").0 != 250 {
                    return;
                }
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let token = format!("w{w}n{n}");
                    let content = message(&token, size_for(n));
                    if c.cmd("MAIL FROM:<c@other.example>").0 != 250
                        || c.cmd(&format!("RCPT TO:<{USER}>")).0 != 250
                        || c.cmd("DATA").0 != 354
                    {
                        return;
                    }
                    let mut data = dot_stuff(&content);
                    data.extend_from_slice(b".\r\n");
                    if std::io::Write::write_all(c.get_mut(), &data).is_err() {
                        return;
                    }
                    match c.read_reply().0 {
                        250 => acked.lock().unwrap().push(token),
                        _ => return,
                    }
                    n += 1;
                }
            })
        })
        .collect();
    // Let deliveries flow, then kill the server without warning.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 150 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    inst.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} messages acknowledged before the kill",
        acked.len()
    );

    inst.start();
    let mut stored: HashMap<String, usize> = HashMap::new();
    for uid in inst.uids(USER, "INBOX") {
        let content = inst.show_content(USER, uid);
        let token = token_of(&content).unwrap_or_else(|| panic!("UID {uid} has no token"));
        let n: usize = token.split('n').nth(1).unwrap().parse().unwrap();
        assert_eq!(
            content,
            message(&token, size_for(n)),
            "UID {uid} ({token}) is not whole"
        );
        *stored.entry(token).or_default() += 1;
    }
    for token in &acked {
        assert_eq!(
            stored.get(token),
            Some(&1),
            "acknowledged {token} stored {:?} times",
            stored.get(token)
        );
    }
    // Messages in flight at the kill may be stored or not, but never twice.
    assert!(stored.values().all(|&n| n == 1));
    eprintln!(
        "{} acknowledged, {} stored after restart",
        acked.len(),
        stored.len()
    );
}
