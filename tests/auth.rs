//! Inbound sender authentication (src/authres) against a fake DNS server:
//! the table of cases in tests/data/auth (a .msg, the DNS records it needs,
//! the expected results), SPF evaluation and its limits, DKIM verification
//! of our signer's and dkimpy's signatures, and the time budget.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::fakedns::{FakeDns, FakeRecord};
use pimail::authres::spf::{self, SpfResult};
use pimail::authres::{self, Action, Arrival, Client, Report, Settings};
use pimail::dkim::{self, BodyHasher, Canonicalization, Signer};
use pimail::dns::Resolver;

fn resolver(addr: SocketAddr) -> Resolver {
    Resolver::new(vec![addr], Duration::from_millis(1000), 1)
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    async_io::block_on(f)
}

/// `name TYPE data` lines: A, AAAA, MX (pref host), TXT (rest of line),
/// PTR (the name is an IP), RCODE (a number); `#` comments.
fn zone(text: &str) -> Vec<FakeRecord> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (name, kind, data) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap_or(""),
        );
        out.push(match kind {
            "A" => FakeRecord::a(name, data),
            "AAAA" => FakeRecord::aaaa(name, data),
            "MX" => {
                let (p, host) = data.split_once(' ').unwrap();
                FakeRecord::mx(name, p.parse().unwrap(), host)
            }
            "TXT" => FakeRecord::txt(name, data),
            "PTR" => FakeRecord::ptr(name.parse().unwrap(), data),
            "RCODE" => FakeRecord::rcode(name, data.parse().unwrap()),
            other => panic!("unknown record type {other} in {line:?}"),
        });
    }
    out
}

fn split_message(message: &[u8]) -> (Vec<(String, Vec<u8>)>, &[u8]) {
    let split = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end")
        + 2;
    (
        dkim::canon::parse_fields(&message[..split]),
        &message[split + 2..],
    )
}

fn check_message(r: &Resolver, settings: &Settings, client: Client<'_>, message: &[u8]) -> Report {
    let (fields, body) = split_message(message);
    run(authres::authenticate(
        r,
        settings,
        "mx.example.test",
        client,
        &fields,
        async |feed: &mut dyn FnMut(&[u8])| body.chunks(7).for_each(feed),
        Arrival {
            unix_time: 1_800_000_000,
            pct_sample: 0,
        },
    ))
}

fn conf(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn table_of_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/auth");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.conf").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "{cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let records = zone(&std::fs::read_to_string(case.join("dns.zone")).unwrap());
        let (addr, _dns) = FakeDns::start(records);
        let r = resolver(addr);
        let c = conf(&std::fs::read_to_string(case.join("case.conf")).unwrap());
        let message = std::fs::read(case.join("message.msg")).unwrap();
        let ip: IpAddr = c["ip"].parse().unwrap();
        let report = check_message(
            &r,
            &Settings::default(),
            Client {
                ip,
                helo: &c["helo"],
                mail_from: &c["mail_from"],
            },
            &message,
        );
        let got = |o: Option<&spf::SpfOutcome>| o.map_or("-".to_string(), |o| o.result.to_string());
        let dkim = if report.dkim.is_empty() {
            "none".to_string()
        } else {
            report
                .dkim
                .iter()
                .map(|d| d.result.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let action = match authres::action(&Settings::default(), &report) {
            Action::Reject => "reject",
            Action::Junk => "junk",
            Action::Deliver => "deliver",
        };
        let results = [
            ("spf", got(report.spf_mail_from.as_ref())),
            ("helo_spf", got(report.spf_helo.as_ref())),
            ("dkim", dkim),
            ("dmarc", report.dmarc.result.to_string()),
            ("iprev", report.iprev.as_str().to_string()),
            ("action", action.to_string()),
        ];
        for (key, value) in results {
            if c[key] != value {
                failures.push(format!(
                    "{name}: {key} = {value}, expected {} ({report:?})",
                    c[key]
                ));
            }
        }
        let header = authres::header("mx.example.test", &report);
        assert!(header.starts_with("Authentication-Results: mx.example.test;\r\n"));
        assert!(header.contains(&format!("dmarc={}", report.dmarc.result)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn spf_check(records: Vec<FakeRecord>, ip: &str, sender: &str) -> spf::SpfOutcome {
    let (addr, _dns) = FakeDns::start(records);
    let r = resolver(addr);
    let domain = sender.rsplit_once('@').unwrap().1;
    run(spf::check_host(
        &r,
        spf::Limits::default(),
        ip.parse().unwrap(),
        domain,
        sender,
        "helo.example",
        "mx.example.test",
    ))
}

#[test]
fn spf_mechanisms() {
    let base = || {
        vec![
            FakeRecord::a("a.example", "192.0.2.1"),
            FakeRecord::aaaa("a.example", "2001:db8::1"),
            FakeRecord::mx("mx.example", 10, "m1.example"),
            FakeRecord::a("m1.example", "192.0.2.50"),
            FakeRecord::a("listed.192.0.2.77.dnsbl.example", "127.0.0.2"),
            FakeRecord::ptr("192.0.2.90".parse().unwrap(), "host.ptr.example"),
            FakeRecord::a("host.ptr.example", "192.0.2.90"),
            FakeRecord::txt("inc.example", "v=spf1 ip4:198.51.100.0/24 -all"),
            FakeRecord::txt("explain.example", "%{i} is not one of %{d}'s"),
        ]
    };
    let cases = [
        ("v=spf1 a:a.example -all", "192.0.2.1", SpfResult::Pass),
        ("v=spf1 a:a.example/24 -all", "192.0.2.200", SpfResult::Pass),
        (
            "v=spf1 a:a.example//64 -all",
            "2001:db8::ff",
            SpfResult::Pass,
        ),
        ("v=spf1 a:a.example -all", "192.0.2.2", SpfResult::Fail),
        ("v=spf1 mx:mx.example ~all", "192.0.2.50", SpfResult::Pass),
        (
            "v=spf1 mx:mx.example ~all",
            "192.0.2.51",
            SpfResult::SoftFail,
        ),
        (
            "v=spf1 include:inc.example ?all",
            "198.51.100.9",
            SpfResult::Pass,
        ),
        // A fail inside an include is only "no match" (5.2).
        (
            "v=spf1 include:inc.example ?all",
            "192.0.2.9",
            SpfResult::Neutral,
        ),
        (
            "v=spf1 -exists:listed.%{i}.dnsbl.example +all",
            "192.0.2.77",
            SpfResult::Fail,
        ),
        (
            "v=spf1 -exists:listed.%{i}.dnsbl.example +all",
            "192.0.2.78",
            SpfResult::Pass,
        ),
        ("v=spf1 ptr:ptr.example -all", "192.0.2.90", SpfResult::Pass),
        (
            "v=spf1 redirect=inc.example",
            "198.51.100.1",
            SpfResult::Pass,
        ),
        (
            "v=spf1 redirect=nothing.example",
            "198.51.100.1",
            SpfResult::PermError,
        ),
        (
            "v=spf1 include:nothing.example",
            "198.51.100.1",
            SpfResult::PermError,
        ),
        ("v=spf1 ip6:2001:db8::/32", "192.0.2.1", SpfResult::Neutral),
        ("v=spf1 bogus:x -all", "192.0.2.1", SpfResult::PermError),
    ];
    for (record, ip, want) in cases {
        let mut records = base();
        records.push(FakeRecord::txt("test.example", record));
        let got = spf_check(records, ip, "user@test.example");
        assert_eq!(got.result, want, "{record} from {ip}: {got:?}");
    }
    // exp= with macros (6.2).
    let mut records = base();
    records.push(FakeRecord::txt(
        "test.example",
        "v=spf1 -all exp=explain.example",
    ));
    let got = spf_check(records, "192.0.2.3", "user@test.example");
    assert_eq!(got.result, SpfResult::Fail);
    assert_eq!(
        got.reason.as_deref(),
        Some("192.0.2.3 is not one of test.example's")
    );
    // No record, two records.
    assert_eq!(
        spf_check(base(), "192.0.2.3", "u@test.example").result,
        SpfResult::None
    );
    let mut records = base();
    records.push(FakeRecord::txt("test.example", "v=spf1 -all"));
    records.push(FakeRecord::txt("test.example", "v=spf1 +all"));
    assert_eq!(
        spf_check(records, "192.0.2.3", "u@test.example").result,
        SpfResult::PermError
    );
}

/// RFC 7208 4.6.4: ten DNS-querying terms are allowed, the eleventh is
/// permerror; two void lookups are allowed, the third is permerror.
#[test]
fn spf_lookup_limits() {
    let chain = |n: usize| {
        // test.example includes i1 ... in; the last one passes.
        let mut records = Vec::new();
        let mut first = String::from("v=spf1");
        for i in 1..=n {
            first.push_str(&format!(" include:i{i}.example"));
        }
        records.push(FakeRecord::txt("test.example", &format!("{first} -all")));
        for i in 1..n {
            records.push(FakeRecord::txt(&format!("i{i}.example"), "v=spf1 -all"));
        }
        records.push(FakeRecord::txt(&format!("i{n}.example"), "v=spf1 +all"));
        records
    };
    assert_eq!(
        spf_check(chain(10), "192.0.2.1", "u@test.example").result,
        SpfResult::Pass
    );
    assert_eq!(
        spf_check(chain(11), "192.0.2.1", "u@test.example").result,
        SpfResult::PermError
    );
    let voids = |n: usize| {
        let mut r = String::from("v=spf1");
        for i in 0..n {
            r.push_str(&format!(" a:void{i}.example"));
        }
        vec![FakeRecord::txt("test.example", &format!("{r} -all"))]
    };
    assert_eq!(
        spf_check(voids(2), "192.0.2.1", "u@test.example").result,
        SpfResult::Fail
    );
    let third = spf_check(voids(3), "192.0.2.1", "u@test.example");
    assert_eq!(third.result, SpfResult::PermError, "{third:?}");
}

#[test]
fn spf_dns_failure_is_temperror() {
    let got = spf_check(
        vec![
            FakeRecord::txt("test.example", "v=spf1 a:down.example -all"),
            FakeRecord::rcode("down.example", 2),
        ],
        "192.0.2.1",
        "u@test.example",
    );
    assert_eq!(got.result, SpfResult::TempError);
}

/// A DNS server that never answers: every check ends at the time budget
/// with temperror, well before the resolver's own timeouts.
#[test]
fn time_budget_bounds_a_silent_dns() {
    let (addr, dns) = FakeDns::start(vec![]);
    dns.set_drop_queries(true);
    let r = Resolver::new(vec![addr], Duration::from_secs(5), 3);
    let settings = Settings {
        time_budget: Duration::from_millis(300),
        ..Settings::default()
    };
    let message = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/auth/rfc8463-ed25519/message.msg"),
    )
    .unwrap();
    let start = Instant::now();
    let report = check_message(
        &r,
        &settings,
        Client {
            ip: "192.0.2.1".parse().unwrap(),
            helo: "mx.football.example.com",
            mail_from: "joe@football.example.com",
        },
        &message,
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(report.spf_mail_from.unwrap().result, SpfResult::TempError);
    assert_eq!(
        report.dmarc.result,
        pimail::authres::dmarc::DmarcResult::TempError
    );
    assert_eq!(report.iprev, pimail::authres::iprev::Iprev::TempError);
    assert_eq!(report.dkim.len(), 1);
    assert_eq!(report.dkim[0].result.as_str(), "temperror");
}

const MESSAGE: &[u8] = b"From:   Alice  Example <alice@example.test>\r\n\
To: bob@example.net,\r\n\tcarol@example.net\r\n\
Subject: Lunch   \r\n\ttomorrow?\r\n\
Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\
Message-ID: <1@example.test>\r\n\
\r\n\
Hello Bob,  \r\n\
\r\n\
\tsee you at  noon.\t\r\n\
 \r\n\
\r\n";

fn sign_ours(signer: &Signer, message: &[u8]) -> Vec<u8> {
    let (fields, body) = split_message(message);
    let mut h = BodyHasher::new(Canonicalization::Relaxed);
    h.update(body);
    let mut out = signer.sign(&fields, &h.finish()).unwrap().into_bytes();
    out.extend_from_slice(message);
    out
}

fn verify(records: Vec<FakeRecord>, message: &[u8]) -> Vec<pimail::dkim::verify::DkimOutcome> {
    let (addr, _dns) = FakeDns::start(records);
    let r = resolver(addr);
    let (fields, body) = split_message(message);
    run(pimail::dkim::verify::verify(
        &r,
        &fields,
        async |feed: &mut dyn FnMut(&[u8])| body.chunks(5).for_each(feed),
        5,
        1_800_000_000,
    ))
}

#[test]
fn dkim_our_signer_verifies() {
    let pem = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/auth/keys/rsa2048.pem"),
    )
    .unwrap();
    let der = pem_to_der(&pem);
    for key in [
        dkim::Key::from_pkcs8_der(&der).unwrap(),
        dkim::Key::ed25519_from_seed(
            &b64("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="),
            &b64("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="),
        )
        .unwrap(),
    ] {
        let record = key.txt_record();
        let signer = Signer {
            domain: "example.test".into(),
            selector: "s1".into(),
            key,
        };
        let signed = sign_ours(&signer, MESSAGE);
        let dns = || vec![FakeRecord::txt("s1._domainkey.example.test", &record)];
        let out = verify(dns(), &signed);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].result.as_str(), "pass", "{out:?}");
        // A header changed after signing.
        let forged = String::from_utf8_lossy(&signed).replace("Lunch", "Dinner");
        let out = verify(dns(), forged.as_bytes());
        assert_eq!(out[0].result.as_str(), "fail", "{out:?}");
        // No key published.
        let no_key = verify(vec![], &signed);
        assert_eq!(no_key[0].result.as_str(), "permerror");
    }
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    b64(&body)
}

/// dkimpy (PyPI) signs, we verify: rsa and ed25519, both
/// canonicalizations, with and without l=. Skipped without python3/dkimpy.
#[test]
fn dkim_dkimpy_signatures_verify() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import dkim, nacl"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: python3 with dkimpy and PyNaCl not available");
        return;
    }
    let dir = std::env::temp_dir().join(format!("pimail-auth-dkimpy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let msg_path = dir.join("m.msg");
    std::fs::write(&msg_path, MESSAGE).unwrap();
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/auth/keys/rsa2048.pem");
    let rsa_pub = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/auth/keys/rsa2048.pub.b64"),
    )
    .unwrap();
    let script = r#"
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
alg, canon, length, keyfile = sys.argv[2], sys.argv[3], sys.argv[4] == '1', sys.argv[5]
key = open(keyfile, 'rb').read() if alg == 'rsa-sha256' else b'nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A='
h, b = canon.split('/')
sig = dkim.sign(msg, b'sel', b'example.test', key, canonicalize=(h.encode(), b.encode()),
                signature_algorithm=alg.encode(), length=length)
sys.stdout.buffer.write(sig + msg)
"#;
    for alg in ["rsa-sha256", "ed25519-sha256"] {
        for canon in [
            "simple/simple",
            "relaxed/relaxed",
            "relaxed/simple",
            "simple/relaxed",
        ] {
            for length in ["0", "1"] {
                let out = std::process::Command::new("python3")
                    .args(["-c", script])
                    .arg(&msg_path)
                    .args([alg, canon, length])
                    .arg(&key)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let record = if alg == "rsa-sha256" {
                    format!("v=DKIM1; k=rsa; p={}", rsa_pub.trim())
                } else {
                    "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".into()
                };
                let dns = vec![FakeRecord::txt("sel._domainkey.example.test", &record)];
                let result = verify(dns, &out.stdout);
                assert_eq!(
                    result[0].result.as_str(),
                    "pass",
                    "{alg} {canon} l={length}: {result:?}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole path on a real server: a DMARC p=reject failure is refused at
/// end of data, p=quarantine goes to Junk, a pass is stored with our
/// Authentication-Results: on top of any that came with the message.
#[test]
fn delivery_adds_header_and_applies_dmarc_policy() {
    use common::{AUTH_RESULTS_OFF, AUTH_RESULTS_ON, Instance, Smtp, USER};
    let (dns, _dns) = FakeDns::start(vec![
        FakeRecord::txt("good.example", "v=spf1 ip4:127.0.0.0/8 -all"),
        FakeRecord::txt("_dmarc.good.example", "v=DMARC1; p=reject"),
        FakeRecord::txt("evil.example", "v=spf1 +all"),
        FakeRecord::txt("_dmarc.paypal.example", "v=DMARC1; p=reject"),
        FakeRecord::txt("_dmarc.q.example", "v=DMARC1; p=quarantine"),
        FakeRecord::ptr("127.0.0.1".parse().unwrap(), "localhost.good.example"),
        FakeRecord::a("localhost.good.example", "127.0.0.1"),
    ]);
    let mut inst = Instance::new("authres", |t| {
        t.replace(AUTH_RESULTS_OFF, AUTH_RESULTS_ON)
            .replace("dns_servers = []", &format!("dns_servers = [\"{dns}\"]"))
    });
    inst.start();
    let hostname = std::fs::read_to_string(&inst.config)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("hostname = ")
                .map(|h| h.trim_matches('"').to_string())
        })
        .unwrap();
    let mut c = Smtp::connect(inst.smtp_addr());
    c.expect("EHLO mx.good.example", 250);
    let forged = b"From: PayPal <service@paypal.example>\r\nSubject: verify\r\n\r\nClick.\r\n";
    let reply = c.send_mail("x@evil.example", &[USER], forged);
    assert_eq!(reply.0, 550, "{reply:?}");
    assert!(reply.1.contains("5.7.1"), "{reply:?}");
    let quarantined = b"From: q@q.example\r\nSubject: maybe\r\n\r\nHm.\r\n";
    assert_eq!(c.send_mail("q@q.example", &[USER], quarantined).0, 250);
    let good = format!(
        "Authentication-Results: {hostname}; spf=pass smtp.mailfrom=forged@paypal.example\r\n\
         From: a@good.example\r\nSubject: hello\r\n\r\nHi.\r\n"
    );
    assert_eq!(
        c.send_mail("a@good.example", &[USER], good.as_bytes()).0,
        250
    );
    c.expect("QUIT", 221);

    assert_eq!(inst.uids(USER, "Junk").len(), 1);
    let inbox = inst.uids(USER, "INBOX");
    assert_eq!(inbox.len(), 1);
    let stored = String::from_utf8(inst.show(USER, inbox[0])).unwrap();
    let ours = stored
        .find(&format!(
            "Authentication-Results: {hostname};\r\n\tiprev=pass"
        ))
        .unwrap_or_else(|| panic!("{stored}"));
    let theirs = stored.find("smtp.mailfrom=forged@paypal.example").unwrap();
    assert!(ours < theirs, "{stored}");
    // The field that claimed our authserv-id was renamed (RFC 8601 5); ours
    // is the only Authentication-Results left.
    assert!(
        stored.contains(&format!(
            "X-Original-AuthResults: {hostname}; spf=pass smtp.mailfrom=forged@paypal.example"
        )),
        "{stored}"
    );
    assert_eq!(
        stored.matches("\nAuthentication-Results:").count()
            + stored.starts_with("Authentication-Results:") as usize,
        1,
        "{stored}"
    );
    for want in [
        "spf=pass smtp.mailfrom=a@good.example",
        "dkim=none",
        "dmarc=pass (p=reject) header.from=good.example",
    ] {
        assert!(stored.contains(want), "{want}: {stored}");
    }
}
