//! Inbound sender authentication at delivery: SPF for the MAIL FROM and
//! HELO identities ([`spf`], RFC 7208), DKIM verification
//! ([`crate::dkim::verify`], RFC 6376), DMARC ([`dmarc`], RFC 7489) and
//! iprev ([`iprev`], RFC 8601 3), recorded in one `Authentication-Results:`
//! field (RFC 8601) with our hostname as authserv-id.
//!
//! All lookups of one message run concurrently on the executor thread
//! (`futures_lite::future::zip`); each check is raced against one
//! per-message deadline (`auth_results.time_budget_ms`), and a check cut
//! off there reports temperror, so a slow DNS never stalls the session.
//!
//! Incoming `Authentication-Results:` fields that claim our authserv-id
//! are renamed in place to `X-Original-AuthResults:` before the message is
//! stored ([`forged`], RFC 8601 5); ours is always the topmost field, and
//! the spam filter reads only that one.

pub mod dmarc;
pub mod forged;
pub mod iprev;
pub mod psl;
pub mod spf;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dkim::verify::{self as dkimv, DkimOutcome, DkimResult};
use crate::dns::Resolver;
use dmarc::{DmarcOutcome, DmarcResult, Policy};
use iprev::Iprev;
use psl::PublicSuffixes;
use spf::{SpfOutcome, SpfResult};

/// What to do with a message whose DMARC policy says reject or quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// 550 5.7.1 at end of data.
    Reject,
    /// File into Junk.
    Junk,
    /// Deliver normally (the header still tells).
    Deliver,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "reject" => Some(Action::Reject),
            "junk" => Some(Action::Junk),
            "deliver" => Some(Action::Deliver),
            _ => None,
        }
    }
}

/// The `[auth_results]` section of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub enabled: bool,
    /// All checks of one message end within this.
    pub time_budget: Duration,
    /// DKIM-Signature fields verified per message (the rest are ignored).
    pub max_signatures: usize,
    pub spf_limits: spf::Limits,
    /// Check SPF for the HELO identity too.
    pub check_helo: bool,
    /// For DMARC p=reject failures, and for p=quarantine ones.
    pub on_reject: Action,
    pub on_quarantine: Action,
    pub public_suffixes: Arc<PublicSuffixes>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            time_budget: Duration::from_secs(8),
            max_signatures: 5,
            spf_limits: spf::Limits::default(),
            check_helo: true,
            on_reject: Action::Reject,
            on_quarantine: Action::Junk,
            public_suffixes: Arc::new(PublicSuffixes::builtin()),
        }
    }
}

/// The SMTP facts the checks need.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// The reverse path, "" for the null sender.
    pub mail_from: &'a str,
}

/// When the message arrived (Unix seconds, for DKIM x=) and its draw in
/// 0..100 for DMARC pct=.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub unix_time: u64,
    pub pct_sample: u8,
}

/// Everything found about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `None` for the null sender (the HELO check stands in, RFC 7208 2.4).
    pub spf_mail_from: Option<SpfOutcome>,
    pub spf_helo: Option<SpfOutcome>,
    pub dkim: Vec<DkimOutcome>,
    pub dmarc: DmarcOutcome,
    pub iprev: Iprev,
    pub mail_from: String,
    pub helo: String,
    pub ip: IpAddr,
}

/// Runs `check`, or gives `fallback` once `deadline` has passed.
async fn within<T>(deadline: Instant, check: impl Future<Output = T>, fallback: T) -> T {
    futures_lite::future::or(check, async move {
        async_io::Timer::at(deadline).await;
        fallback
    })
    .await
}

fn cut_off() -> SpfOutcome {
    SpfOutcome {
        result: SpfResult::TempError,
        reason: Some("time budget exhausted".into()),
    }
}

/// Runs every check. `fields` are the message's header fields
/// (`dkim::canon::parse_fields`); `body` feeds the body bytes to its
/// argument.
pub async fn authenticate(
    resolver: &Resolver,
    settings: &Settings,
    hostname: &str,
    client: Client<'_>,
    fields: &[(String, Vec<u8>)],
    body: impl AsyncFnOnce(&mut dyn FnMut(&[u8])),
    arrival: Arrival,
) -> Report {
    let deadline = Instant::now() + settings.time_budget;
    let helo = client.helo.trim_start_matches('[').trim_end_matches(']');
    let helo_sender = format!("postmaster@{helo}");
    let mail_from_domain = client.mail_from.rsplit_once('@').map(|x| x.1);
    let spf_mail_from = async {
        match mail_from_domain {
            Some(d) => Some(
                within(
                    deadline,
                    spf::check_host(
                        resolver,
                        settings.spf_limits,
                        client.ip,
                        d,
                        client.mail_from,
                        helo,
                        hostname,
                    ),
                    cut_off(),
                )
                .await,
            ),
            None => None,
        }
    };
    let check_helo = settings.check_helo || mail_from_domain.is_none();
    let spf_helo = async {
        if !check_helo || helo.parse::<IpAddr>().is_ok() {
            return None;
        }
        Some(
            within(
                deadline,
                spf::check_host(
                    resolver,
                    settings.spf_limits,
                    client.ip,
                    helo,
                    &helo_sender,
                    helo,
                    hostname,
                ),
                cut_off(),
            )
            .await,
        )
    };
    let from_domains: Vec<String> = fields
        .iter()
        .filter(|(n, _)| n.trim_end().eq_ignore_ascii_case("from"))
        .map(|(_, v)| dmarc::from_domain(v))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    // 6.6.1: exactly one From domain can be evaluated.
    let from_domain = match from_domains.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    };
    let psl = &settings.public_suffixes;
    let dmarc_record = async {
        match &from_domain {
            Some(d) => {
                within(
                    deadline,
                    dmarc::discover(resolver, psl, d),
                    Err(crate::dns::DnsError::Timeout),
                )
                .await
            }
            None => Ok(None),
        }
    };
    // A cut-off DKIM check is one temperror (the signatures are not known
    // one by one then); a message without signatures stays dkim=none.
    let signed = fields
        .iter()
        .any(|(n, _)| n.trim_end().eq_ignore_ascii_case("dkim-signature"));
    let dkim_cut_off = match signed {
        true => vec![DkimOutcome {
            result: DkimResult::TempError,
            domain: String::new(),
            selector: String::new(),
            auid: String::new(),
            b_prefix: String::new(),
            reason: Some("time budget exhausted".into()),
        }],
        false => Vec::new(),
    };
    let dkim = within(
        deadline,
        dkimv::verify(
            resolver,
            fields,
            body,
            settings.max_signatures,
            arrival.unix_time,
        ),
        dkim_cut_off,
    );
    let iprev = within(
        deadline,
        iprev::check(resolver, client.ip),
        Iprev::TempError,
    );
    let ((spf_mail_from, spf_helo), (dkim, (dmarc_record, iprev))) = futures_lite::future::zip(
        futures_lite::future::zip(spf_mail_from, spf_helo),
        futures_lite::future::zip(dkim, futures_lite::future::zip(dmarc_record, iprev)),
    )
    .await;

    // DMARC's SPF identity is MAIL FROM, or HELO for the null sender.
    let spf_pass_domain = match (&spf_mail_from, &spf_helo) {
        (Some(o), _) if o.result == SpfResult::Pass => mail_from_domain,
        (None, Some(o)) if o.result == SpfResult::Pass => Some(helo),
        _ => None,
    };
    let dkim_pass: Vec<&str> = dkim
        .iter()
        .filter(|o| o.result == DkimResult::Pass)
        .map(|o| o.domain.as_str())
        .collect();
    let dmarc = match (&from_domain, dmarc_record) {
        (None, _) => DmarcOutcome {
            result: if from_domains.is_empty() {
                DmarcResult::None
            } else {
                DmarcResult::PermError
            },
            policy: Policy::None,
            published: None,
            from_domain: String::new(),
        },
        (Some(d), Err(_)) => DmarcOutcome {
            result: DmarcResult::TempError,
            policy: Policy::None,
            published: None,
            from_domain: d.clone(),
        },
        (Some(d), Ok(record)) => dmarc::evaluate(
            record,
            psl,
            d,
            spf_pass_domain,
            &dkim_pass,
            arrival.pct_sample,
        ),
    };
    Report {
        spf_mail_from,
        spf_helo,
        dkim,
        dmarc,
        iprev,
        mail_from: client.mail_from.to_string(),
        helo: helo.to_string(),
        ip: client.ip,
    }
}

/// A property value made safe for the header (RFC 8601 2.2 pvalue).
fn pvalue(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() && !";()\"\\".contains(*c))
        .take(200)
        .collect();
    if clean.is_empty() {
        "\"\"".into()
    } else {
        clean
    }
}

/// A comment's text made safe.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() && !"()\\".contains(c) {
                c
            } else {
                ' '
            }
        })
        .take(120)
        .collect()
}

/// The `Authentication-Results:` field (with CRLF), one result per line.
pub fn header(hostname: &str, report: &Report) -> String {
    let mut results: Vec<String> = Vec::new();
    results.push(match &report.iprev {
        Iprev::Pass(name) => format!("iprev=pass policy.iprev={} ({})", report.ip, comment(name)),
        other => format!("iprev={} policy.iprev={}", other.as_str(), report.ip),
    });
    let spf = |o: &SpfOutcome, property: &str, value: &str| {
        let mut s = format!("spf={} {property}={}", o.result, pvalue(value));
        if let Some(r) = &o.reason {
            s = format!(
                "spf={} ({}) {property}={}",
                o.result,
                comment(r),
                pvalue(value)
            );
        }
        s
    };
    if let Some(o) = &report.spf_mail_from {
        results.push(spf(o, "smtp.mailfrom", &report.mail_from));
    }
    if let Some(o) = &report.spf_helo {
        results.push(spf(o, "smtp.helo", &report.helo));
    }
    if report.dkim.is_empty() {
        results.push("dkim=none".into());
    }
    for d in &report.dkim {
        let mut s = format!("dkim={}", d.result);
        if let Some(r) = &d.reason {
            s.push_str(&format!(" ({})", comment(r)));
        }
        if !d.domain.is_empty() {
            s.push_str(&format!(
                " header.d={} header.s={} header.b={}",
                pvalue(&d.domain),
                pvalue(&d.selector),
                pvalue(&d.b_prefix)
            ));
        }
        results.push(s);
    }
    let m = &report.dmarc;
    let mut s = format!("dmarc={}", m.result);
    if let Some(p) = m.published {
        s.push_str(&format!(" (p={})", p.as_str()));
    }
    if !m.from_domain.is_empty() {
        s.push_str(&format!(" header.from={}", pvalue(&m.from_domain)));
    }
    results.push(s);
    let mut out = format!("Authentication-Results: {};", pvalue(hostname));
    let n = results.len();
    for (i, r) in results.into_iter().enumerate() {
        out.push_str("\r\n\t");
        out.push_str(&r);
        if i + 1 < n {
            out.push(';');
        }
    }
    out.push_str("\r\n");
    out
}

/// What DMARC asks for this message under the configured actions.
pub fn action(settings: &Settings, report: &Report) -> Action {
    if report.dmarc.result != DmarcResult::Fail {
        return Action::Deliver;
    }
    match report.dmarc.policy {
        Policy::Reject => settings.on_reject,
        Policy::Quarantine => settings.on_quarantine,
        Policy::None => Action::Deliver,
    }
}

/// Spam-filter tokens from an Authentication-Results value (after the
/// colon): `auth:spf=fail`, `auth:dkim=pass:example.com`, `auth:dmarc=fail`
/// and so on. Comments are dropped; the authserv-id is not a token.
pub fn tokens(value: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut depth = 0u32;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for resinfo in plain.split(';').skip(1) {
        let mut words = resinfo.split_whitespace();
        let Some((method, result)) = words.next().and_then(|w| w.split_once('=')) else {
            continue;
        };
        let method = method.to_ascii_lowercase();
        let result = result.to_ascii_lowercase();
        if !["spf", "dkim", "dmarc", "iprev"].contains(&method.as_str()) {
            continue;
        }
        let base = if method == "spf" && resinfo.contains("smtp.helo=") {
            format!("auth:helo-spf={result}")
        } else {
            format!("auth:{method}={result}")
        };
        if method == "dkim"
            && result == "pass"
            && let Some(d) = words.find_map(|w| w.strip_prefix("header.d="))
        {
            out.push(format!("{base}:{}", d.to_ascii_lowercase()));
        }
        out.push(base);
    }
    out
}

/// The inspection stage: `(header, action)`.
pub async fn stage(
    server: &crate::server::Server,
    inbound: &crate::smtp::inspect::Inbound<'_>,
    body: &crate::smtp::spool::Body,
) -> (String, Action) {
    let config = server.config();
    let settings = &config.auth_results;
    let body_start = body.meta.root.body_start;
    let mut head = Vec::with_capacity(body_start.min(1 << 20) as usize);
    let _ = body.content.for_each_chunk(|_, chunk| {
        let take = (body_start as usize - head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..take]);
        if head.len() as u64 >= body_start {
            // Only ends the walk.
            Err(crate::store::StoreError::Invalid("header read".into()))
        } else {
            Ok(())
        }
    });
    let fields = crate::dkim::canon::parse_fields(&head);
    // Hashing a large body yields to other sessions every megabyte.
    let feed = async |f: &mut dyn FnMut(&[u8])| {
        let mut pos = 0u64;
        let _ = body
            .content
            .for_each_chunk_yielding(|_, chunk| {
                let end = pos + chunk.len() as u64;
                if end > body_start {
                    f(&chunk[body_start.saturating_sub(pos) as usize..]);
                }
                pos = end;
                Ok(())
            })
            .await;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let started = Instant::now();
    let mut draw = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut draw);
    let report = authenticate(
        &server.resolver,
        settings,
        &config.hostname,
        Client {
            ip: inbound.peer,
            helo: inbound.helo,
            mail_from: inbound.from,
        },
        &fields,
        feed,
        Arrival {
            unix_time: now,
            pct_sample: (u32::from_le_bytes(draw) % 100) as u8,
        },
    )
    .await;
    let header = header(&config.hostname, &report);
    log::debug!(
        "auth: from=<{}> {} in {} ms",
        inbound.from,
        header
            .trim_end()
            .replace("\r\n\t", " ")
            .trim_start_matches("Authentication-Results: "),
        started.elapsed().as_millis()
    );
    (header, action(settings, &report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_tokens() {
        let report = Report {
            spf_mail_from: Some(SpfOutcome {
                result: SpfResult::Fail,
                reason: Some("not (allowed)".into()),
            }),
            spf_helo: Some(SpfOutcome {
                result: SpfResult::None,
                reason: None,
            }),
            dkim: vec![DkimOutcome {
                result: DkimResult::Pass,
                domain: "Example.com".into(),
                selector: "sel".into(),
                auid: "@example.com".into(),
                b_prefix: "abcdefgh".into(),
                reason: None,
            }],
            dmarc: DmarcOutcome {
                result: DmarcResult::Fail,
                policy: Policy::Reject,
                published: Some(Policy::Reject),
                from_domain: "example.org".into(),
            },
            iprev: Iprev::Pass("mx.example.com".into()),
            mail_from: "a;b@example.net".into(),
            helo: "mx.example.com".into(),
            ip: "192.0.2.1".parse().unwrap(),
        };
        let h = header("mail.example.test", &report);
        assert_eq!(
            h,
            "Authentication-Results: mail.example.test;\r\n\
             \tiprev=pass policy.iprev=192.0.2.1 (mx.example.com);\r\n\
             \tspf=fail (not  allowed ) smtp.mailfrom=ab@example.net;\r\n\
             \tspf=none smtp.helo=mx.example.com;\r\n\
             \tdkim=pass header.d=Example.com header.s=sel header.b=abcdefgh;\r\n\
             \tdmarc=fail (p=reject) header.from=example.org\r\n"
        );
        let value = h.split_once(':').unwrap().1;
        assert_eq!(
            tokens(value),
            [
                "auth:iprev=pass",
                "auth:spf=fail",
                "auth:helo-spf=none",
                "auth:dkim=pass:example.com",
                "auth:dkim=pass",
                "auth:dmarc=fail"
            ]
        );
        assert_eq!(action(&Settings::default(), &report), Action::Reject);
    }
}
