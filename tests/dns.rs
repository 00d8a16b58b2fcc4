//! The stub resolver against a fake DNS server on loopback.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::fakedns::{FakeDns, FakeRecord};
use pimail::dns::{CacheLimits, DnsError, Mx, MxAnswer, Resolver};

const MX: u16 = 15;

fn resolver(addr: SocketAddr) -> Resolver {
    Resolver::new(vec![addr], Duration::from_millis(500), 1)
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    async_io::block_on(f)
}

#[test]
fn mx_sorted_by_preference() {
    let (addr, _dns) = FakeDns::start(vec![
        FakeRecord::mx("example.test", 20, "mx2.example.test"),
        FakeRecord::mx("example.test", 5, "mx0.example.test"),
        FakeRecord::mx("example.test", 10, "mx1.example.test"),
    ]);
    let r = resolver(addr);
    let MxAnswer::Records(mxs) = run(r.mx("Example.Test.")).unwrap() else {
        panic!("expected records")
    };
    let prefs: Vec<(u16, &str)> = mxs
        .iter()
        .map(|m| (m.preference, m.exchange.as_str()))
        .collect();
    assert_eq!(
        prefs,
        [
            (5, "mx0.example.test"),
            (10, "mx1.example.test"),
            (20, "mx2.example.test")
        ]
    );
}

#[test]
fn null_mx_nodata_and_nxdomain() {
    let (addr, _dns) = FakeDns::start(vec![
        FakeRecord::mx("nullmx.test", 0, "."),
        FakeRecord::a("nomx.test", "192.0.2.7"),
    ]);
    let r = resolver(addr);
    assert_eq!(run(r.mx("nullmx.test")).unwrap(), MxAnswer::NullMx);
    assert_eq!(run(r.mx("nomx.test")).unwrap(), MxAnswer::NoRecords);
    assert_eq!(run(r.mx("missing.test")).unwrap(), MxAnswer::NxDomain);
    assert_eq!(run(r.ip_addrs("missing.test")), Err(DnsError::NxDomain));
    assert_eq!(run(r.txt("nomx.test")).unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(run(r.txt("missing.test")), Err(DnsError::NxDomain));
}

#[test]
fn a_and_aaaa_concurrently() {
    let (addr, dns) = FakeDns::start(vec![
        FakeRecord::a("host.test", "192.0.2.1"),
        FakeRecord::aaaa("host.test", "2001:db8::1"),
        FakeRecord::a("v4only.test", "192.0.2.2"),
    ]);
    let r = resolver(addr);
    let ips = run(r.ip_addrs("host.test")).unwrap();
    assert_eq!(
        ips,
        vec![
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "2001:db8::1".parse().unwrap()
        ]
    );
    assert_eq!(run(r.ip_addrs("v4only.test")).unwrap().len(), 1);
    assert_eq!(dns.query_count(), 4);
}

#[test]
fn txt_strings_concatenated_and_ptr() {
    let ip: IpAddr = "192.0.2.25".parse().unwrap();
    let long = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
    let (addr, _dns) = FakeDns::start(vec![
        FakeRecord::txt_strings("example.test", &[b"v=spf1 ", b"mx -all"]),
        FakeRecord::txt("example.test", "second record"),
        FakeRecord::txt("sel._domainkey.example.test", &long),
        FakeRecord::ptr(ip, "mail.example.test"),
    ]);
    let r = resolver(addr);
    let mut txts = run(r.txt("example.test")).unwrap();
    txts.sort();
    assert_eq!(
        txts,
        vec![b"second record".to_vec(), b"v=spf1 mx -all".to_vec()]
    );
    assert_eq!(
        run(r.txt("sel._domainkey.example.test")).unwrap(),
        vec![long.into_bytes()]
    );
    assert_eq!(
        run(r.ptr(ip)).unwrap(),
        vec!["mail.example.test".to_string()]
    );
}

#[test]
fn cname_chain_followed_and_limited() {
    let mut records = vec![
        FakeRecord::cname("alias.test", "middle.test"),
        FakeRecord::cname("middle.test", "real.test"),
        FakeRecord::mx("real.test", 10, "mx.real.test"),
    ];
    for i in 0..12 {
        records.push(FakeRecord::cname(
            &format!("loop{i}.test"),
            &format!("loop{}.test", i + 1),
        ));
    }
    let (addr, _dns) = FakeDns::start(records);
    let r = resolver(addr);
    assert_eq!(
        run(r.mx("alias.test")).unwrap(),
        MxAnswer::Records(vec![Mx {
            preference: 10,
            exchange: "mx.real.test".into()
        }])
    );
    assert!(matches!(
        run(r.mx("loop0.test")),
        Err(DnsError::CnameLimit(_))
    ));
    // Entering the chain half-way.
    assert_eq!(
        run(r.mx("middle.test")).unwrap(),
        MxAnswer::Records(vec![Mx {
            preference: 10,
            exchange: "mx.real.test".into()
        }])
    );
}

#[test]
fn truncated_udp_retried_over_tcp() {
    let (addr, dns) = FakeDns::start(vec![FakeRecord::mx("example.test", 10, "mx.example.test")]);
    dns.set_truncate_udp(true);
    let r = resolver(addr);
    assert!(matches!(run(r.mx("example.test")).unwrap(), MxAnswer::Records(m) if m.len() == 1));
    let q = dns.queries();
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(!q[0].tcp && q[1].tcp);
    assert_eq!(q[1].rtype, MX);
}

#[test]
fn timeout_then_next_server() {
    let (dead, dead_dns) = FakeDns::start(vec![]);
    dead_dns.set_drop_queries(true);
    let (good, good_dns) = FakeDns::start(vec![FakeRecord::a("host.test", "192.0.2.9")]);
    let r = Resolver::new(vec![dead, good], Duration::from_millis(200), 1);
    let t = Instant::now();
    assert_eq!(run(r.ip_addrs("host.test")).unwrap().len(), 1);
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(dead_dns.query_count(), 2);
    assert_eq!(good_dns.query_count(), 2);
    // Every server silent: a temporary error after attempts x servers tries.
    let r = Resolver::new(vec![dead], Duration::from_millis(100), 2);
    let err = run(r.txt("host.test")).unwrap_err();
    assert_eq!(err, DnsError::Timeout);
    assert!(err.is_temporary());
    assert_eq!(dead_dns.query_count(), 2 + 2);
}

#[test]
fn servfail_is_temporary_and_next_server_tried() {
    let (bad, _bad_dns) = FakeDns::start(vec![FakeRecord::rcode("example.test", 2)]);
    let (good, _good_dns) =
        FakeDns::start(vec![FakeRecord::mx("example.test", 1, "mx.example.test")]);
    let r = Resolver::new(vec![bad], Duration::from_millis(300), 1);
    let err = run(r.mx("example.test")).unwrap_err();
    assert!(matches!(err, DnsError::ServerFailure(_)), "{err:?}");
    assert!(err.is_temporary());
    let r = Resolver::new(vec![bad, good], Duration::from_millis(300), 1);
    assert!(matches!(
        run(r.mx("example.test")).unwrap(),
        MxAnswer::Records(_)
    ));
}

#[test]
fn concurrent_lookups_of_one_name_share_one_query() {
    let (addr, dns) = FakeDns::start(vec![
        FakeRecord::txt("_dmarc.example.test", "v=DMARC1; p=none"),
        FakeRecord::txt("other.test", "x").ttl(0),
    ]);
    let r = resolver(addr);
    let answers = run(futures_lite::future::zip(
        futures_lite::future::zip(r.txt("_dmarc.example.test"), r.txt("_dmarc.example.test")),
        r.txt("_DMARC.example.test."),
    ));
    let ((a, b), c) = answers;
    assert_eq!(a.as_ref().unwrap(), &vec![b"v=DMARC1; p=none".to_vec()]);
    assert_eq!(a.unwrap(), b.unwrap());
    assert!(c.is_ok());
    assert_eq!(dns.query_count(), 1, "{:?}", dns.queries());
    // An answer that may not be cached (TTL 0): the waiter asks itself.
    let (x, y) = run(futures_lite::future::zip(
        r.txt("other.test"),
        r.txt("other.test"),
    ));
    assert_eq!(x.unwrap(), y.unwrap());
    assert_eq!(dns.query_count(), 3);
}

#[test]
fn answers_from_the_cache_without_asking_again() {
    let (addr, dns) = FakeDns::start(vec![FakeRecord::mx("example.test", 10, "mx.example.test")]);
    let r = resolver(addr);
    let first = run(r.mx("example.test")).unwrap();
    assert_eq!(run(r.mx("EXAMPLE.test.")).unwrap(), first);
    assert_eq!(dns.query_count(), 1);
    // Negative answers are cached too (SOA minimum).
    assert_eq!(run(r.mx("nothere.test")).unwrap(), MxAnswer::NxDomain);
    assert_eq!(run(r.mx("nothere.test")).unwrap(), MxAnswer::NxDomain);
    assert_eq!(dns.query_count(), 2);
    assert_eq!(r.cached_entries(), 2);
}

#[test]
fn ttl_expiry_and_cache_bound() {
    let (addr, dns) = FakeDns::start(vec![
        FakeRecord::a("short.test", "192.0.2.1").ttl(1),
        FakeRecord::a("b.test", "192.0.2.2"),
        FakeRecord::a("c.test", "192.0.2.3"),
    ]);
    dns.set_negative_ttl(1);
    let r = resolver(addr).with_cache_limits(CacheLimits {
        max_entries: 2,
        ..CacheLimits::default()
    });
    run(r.txt("short.test")).unwrap(); // NODATA, negative TTL 1 s
    run(r.ip_addrs("short.test")).unwrap();
    let before = dns.query_count();
    std::thread::sleep(Duration::from_millis(1100));
    run(r.txt("short.test")).unwrap();
    assert_eq!(
        dns.query_count(),
        before + 1,
        "expired negative entry asked again"
    );
    run(r.ip_addrs("b.test")).unwrap();
    run(r.ip_addrs("c.test")).unwrap();
    assert!(r.cached_entries() <= 2);
}

#[test]
fn many_lookups_at_once_on_one_thread() {
    let records = (0..20)
        .map(|i| FakeRecord::a(&format!("h{i}.test"), &format!("192.0.2.{i}")))
        .collect();
    let (addr, _dns) = FakeDns::start(records);
    let r = resolver(addr);
    let ex = smol::LocalExecutor::new();
    let results = async_io::block_on(ex.run(async {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let r = &r;
                ex.spawn(async move { r.ip_addrs(&format!("h{i}.test")).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    }));
    for (i, res) in results.into_iter().enumerate() {
        assert_eq!(
            res.unwrap(),
            vec![format!("192.0.2.{i}").parse::<IpAddr>().unwrap()]
        );
    }
}
