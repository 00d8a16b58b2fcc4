//! A counting SMTP sink for the outbound benchmark (std only):
//! `sink ADDR SECONDS` accepts SMTP sessions on ADDR, accepts every message,
//! and prints `messages=N first_ms=.. last_ms=..` (times since start) when
//! SECONDS pass with nothing new after the last message, or at the limit.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:2526".into());
    let limit: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
    let listener = TcpListener::bind(&addr).expect("bind");
    let start = Instant::now();
    let count = Arc::new(AtomicU64::new(0));
    let first = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    {
        let (count, first, last) = (count.clone(), first.clone(), last.clone());
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (count, first, last) = (count.clone(), first.clone(), last.clone());
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    // Replies to pipelined commands are small writes in a
                    // row: without this each waits for a delayed ACK, as
                    // real MTAs know (they batch or set TCP_NODELAY).
                    let _ = s.set_nodelay(true);
                    let mut w = s.try_clone().unwrap();
                    let mut r = BufReader::new(s);
                    let _ = w.write_all(b"220 sink ESMTP\r\n");
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let u = line.to_ascii_uppercase();
                        let reply: &[u8] = if u.starts_with("EHLO") {
                            b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                        } else if u.starts_with("DATA") {
                            let _ = w.write_all(b"354 go\r\n");
                            let mut l = Vec::new();
                            loop {
                                l.clear();
                                if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                                    return;
                                }
                                if l == b".\r\n" {
                                    break;
                                }
                            }
                            let ms = start.elapsed().as_millis() as u64;
                            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                                first.store(ms, Ordering::SeqCst);
                            }
                            last.store(ms, Ordering::SeqCst);
                            b"250 ok\r\n"
                        } else if u.starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n");
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        if w.write_all(reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
    // Report once deliveries stop (2 s quiet after at least one) or at the limit.
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let n = count.load(Ordering::SeqCst);
        let quiet = start.elapsed().as_millis() as u64 - last.load(Ordering::SeqCst);
        if (n > 0 && quiet > 2000) || start.elapsed() > Duration::from_secs(limit) {
            println!("messages={n} first_ms={} last_ms={}", first.load(Ordering::SeqCst), last.load(Ordering::SeqCst));
            return;
        }
    }
}
