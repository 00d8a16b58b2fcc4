//! Verification time per message with a cold and a warm DNS cache, and the
//! peak heap used by one verification, against the fake DNS on loopback.
//! Run: `cargo test --release --test auth_bench -- --ignored --nocapture`
//! (figures in README).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::fakedns::{FakeDns, FakeRecord};
use pimail::authres::{self, Arrival, Client, Settings};
use pimail::dns::Resolver;

/// Counts live heap bytes and their peak.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn records(dir: &Path) -> Vec<FakeRecord> {
    let rsa = std::fs::read_to_string(dir.join("keys/rsa2048.pub.b64")).unwrap();
    vec![
        FakeRecord::txt(
            "rsa1._domainkey.example.com",
            &format!("v=DKIM1; k=rsa; p={}", rsa.trim()),
        ),
        FakeRecord::txt("example.com", "v=spf1 mx ~all"),
        FakeRecord::mx("example.com", 10, "mx.example.com"),
        FakeRecord::a("mx.example.com", "203.0.113.5"),
        FakeRecord::txt("_dmarc.example.com", "v=DMARC1; p=reject"),
        FakeRecord::ptr("203.0.113.5".parse().unwrap(), "mx.example.com"),
    ]
}

#[test]
#[ignore]
fn verification_time_and_memory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/auth");
    let message = std::fs::read(dir.join("dkimpy-rsa-simple-l/message.msg")).unwrap();
    let split = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    let fields = pimail::dkim::canon::parse_fields(&message[..split]);
    let body = &message[split + 2..];
    let (addr, _dns) = FakeDns::start(records(&dir));
    let settings = Settings::default();
    let check = |r: &Resolver| {
        async_io::block_on(authres::authenticate(
            r,
            &settings,
            "mx.example.test",
            Client {
                ip: "203.0.113.5".parse().unwrap(),
                helo: "mx.example.com",
                mail_from: "carol@example.com",
            },
            &fields,
            async |feed: &mut dyn FnMut(&[u8])| feed(body),
            Arrival {
                unix_time: 1_800_000_000,
                pct_sample: 0,
            },
        ))
    };
    let new = || Resolver::new(vec![addr], Duration::from_secs(1), 1);
    let report = check(&new());
    assert_eq!(report.dmarc.result.as_str(), "pass", "{report:?}");

    let n = 100;
    let start = Instant::now();
    for _ in 0..n {
        check(&new());
    }
    let cold = start.elapsed() / n;
    let warm_resolver = new();
    check(&warm_resolver);
    let start = Instant::now();
    for _ in 0..n {
        check(&warm_resolver);
    }
    let warm = start.elapsed() / n;
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    check(&warm_resolver);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    println!(
        "auth_results: 1 rsa-sha256 signature, SPF mx, DMARC, iprev; cold cache {cold:?}/message, \
         warm cache {warm:?}/message, peak heap during one warm check {peak} bytes, \
         {} DNS cache entries",
        warm_resolver.cached_entries()
    );
}
