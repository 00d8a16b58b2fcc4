//! DMARC (RFC 7489): the policy of the RFC5322.From domain, found at
//! `_dmarc.<domain>` or else `_dmarc.<organizational domain>` (6.6.3),
//! and whether an SPF or DKIM pass is aligned with that domain (3.1).

use std::fmt;

use super::psl::PublicSuffixes;
use crate::dns::{DnsError, Resolver};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    None,
    Quarantine,
    Reject,
}

impl Policy {
    fn parse(s: &str) -> Option<Policy> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(Policy::None),
            "quarantine" => Some(Policy::Quarantine),
            "reject" => Some(Policy::Reject),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        }
    }

    /// 6.6.4: a message not sampled by pct= gets the next weaker policy.
    fn weaker(self) -> Policy {
        match self {
            Policy::Reject => Policy::Quarantine,
            _ => Policy::None,
        }
    }
}

/// A DMARC record (6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub policy: Policy,
    /// sp=: for subdomains of the organizational domain.
    pub subdomain_policy: Option<Policy>,
    pub dkim_strict: bool,
    pub spf_strict: bool,
    /// 0..=100.
    pub percent: u8,
}

/// Parses a record; `None` when it is not a DMARC record (to be ignored).
pub fn parse_record(text: &str) -> Option<Record> {
    let tags: Vec<(String, String)> = text
        .split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    // 6.4: v=DMARC1 must come first.
    match tags.first() {
        Some((k, v)) if k == "v" && v == "DMARC1" => {}
        _ => return None,
    }
    let get = |k: &str| tags.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // 6.6.3: an invalid or missing p= with a rua= is p=none; without, no record.
    let policy = match get("p").and_then(Policy::parse) {
        Some(p) => p,
        None if get("rua").is_some() => Policy::None,
        None => return None,
    };
    let strict = |k: &str| get(k).is_some_and(|v| v.eq_ignore_ascii_case("s"));
    Some(Record {
        policy,
        subdomain_policy: get("sp").and_then(Policy::parse),
        dkim_strict: strict("adkim"),
        spf_strict: strict("aspf"),
        percent: get("pct")
            .and_then(|p| p.parse::<u8>().ok())
            .map_or(100, |p| p.min(100)),
    })
}

/// Is `authenticated` (an SPF or DKIM domain) aligned with `from` (3.1)?
pub fn aligned(psl: &PublicSuffixes, from: &str, authenticated: &str, strict: bool) -> bool {
    let from = from.trim_end_matches('.').to_ascii_lowercase();
    let auth = authenticated.trim_end_matches('.').to_ascii_lowercase();
    if strict {
        return from == auth;
    }
    psl.organizational_domain(&from) == psl.organizational_domain(&auth)
}

/// The DMARC result (RFC 8601 2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcResult {
    None,
    Pass,
    Fail,
    TempError,
    PermError,
}

impl DmarcResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcResult::None => "none",
            DmarcResult::Pass => "pass",
            DmarcResult::Fail => "fail",
            DmarcResult::TempError => "temperror",
            DmarcResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for DmarcResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The record found and where: `Ok(None)` when neither name has one.
pub async fn discover(
    resolver: &Resolver,
    psl: &PublicSuffixes,
    from_domain: &str,
) -> Result<Option<(Record, bool)>, DnsError> {
    let org = psl.organizational_domain(from_domain);
    if let Some(r) = lookup(resolver, from_domain).await? {
        return Ok(Some((r, false)));
    }
    if org != from_domain
        && let Some(r) = lookup(resolver, &org).await?
    {
        return Ok(Some((r, true)));
    }
    Ok(None)
}

async fn lookup(resolver: &Resolver, domain: &str) -> Result<Option<Record>, DnsError> {
    let txts = match resolver.txt(&format!("_dmarc.{domain}")).await {
        Ok(t) => t,
        Err(DnsError::NxDomain) | Err(DnsError::InvalidName(_)) => return Ok(None),
        Err(e) if e.is_temporary() => return Err(e),
        Err(_) => return Ok(None),
    };
    // 6.6.3: several records means none.
    let mut records = txts
        .iter()
        .filter_map(|t| parse_record(&String::from_utf8_lossy(t)));
    match (records.next(), records.next()) {
        (Some(r), None) => Ok(Some(r)),
        _ => Ok(None),
    }
}

/// A DMARC evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcOutcome {
    pub result: DmarcResult,
    /// The policy to apply (after sp= and pct=); None unless Fail.
    pub policy: Policy,
    /// The published policy, for the header comment.
    pub published: Option<Policy>,
    pub from_domain: String,
}

/// Evaluates DMARC for a From domain given the SPF-authenticated domain
/// (when SPF passed) and the DKIM-authenticated domains (passing
/// signatures). `sample` is a number in 0..100 compared with pct=.
pub fn evaluate(
    record: Option<(Record, bool)>,
    psl: &PublicSuffixes,
    from_domain: &str,
    spf_pass_domain: Option<&str>,
    dkim_pass_domains: &[&str],
    sample: u8,
) -> DmarcOutcome {
    let Some((record, from_org)) = record else {
        return DmarcOutcome {
            result: DmarcResult::None,
            policy: Policy::None,
            published: None,
            from_domain: from_domain.to_string(),
        };
    };
    let spf_ok = spf_pass_domain.is_some_and(|d| aligned(psl, from_domain, d, record.spf_strict));
    let dkim_ok = dkim_pass_domains
        .iter()
        .any(|d| aligned(psl, from_domain, d, record.dkim_strict));
    let mut published = record.policy;
    if from_org && let Some(sp) = record.subdomain_policy {
        published = sp;
    }
    if spf_ok || dkim_ok {
        return DmarcOutcome {
            result: DmarcResult::Pass,
            policy: Policy::None,
            published: Some(published),
            from_domain: from_domain.to_string(),
        };
    }
    let policy = if sample < record.percent {
        published
    } else {
        published.weaker()
    };
    DmarcOutcome {
        result: DmarcResult::Fail,
        policy,
        published: Some(published),
        from_domain: from_domain.to_string(),
    }
}

/// The domain of the (single) address in a From field's value; `None` when
/// there is no usable address.
pub fn from_domain(value: &[u8]) -> Option<String> {
    let value = String::from_utf8_lossy(value);
    let addr = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value.trim(),
    };
    let domain = addr.rsplit_once('@')?.1.trim().trim_end_matches('.');
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    Some(domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let r = parse_record("v=DMARC1; p=reject; sp=quarantine; adkim=s; pct=20").unwrap();
        assert_eq!(r.policy, Policy::Reject);
        assert_eq!(r.subdomain_policy, Some(Policy::Quarantine));
        assert!(r.dkim_strict && !r.spf_strict);
        assert_eq!(r.percent, 20);
        assert!(parse_record("p=reject; v=DMARC1").is_none());
        assert!(parse_record("v=DMARC1; p=bogus").is_none());
        assert_eq!(
            parse_record("v=DMARC1; p=bogus; rua=mailto:x@y")
                .unwrap()
                .policy,
            Policy::None
        );
    }

    #[test]
    fn alignment() {
        let p = PublicSuffixes::builtin();
        assert!(aligned(&p, "example.com", "mail.example.com", false));
        assert!(!aligned(&p, "example.com", "mail.example.com", true));
        assert!(aligned(&p, "example.com", "EXAMPLE.com.", true));
        assert!(!aligned(&p, "a.co.uk", "b.co.uk", false));
        assert!(aligned(&p, "x.a.co.uk", "a.co.uk", false));
        assert!(!aligned(&p, "example.com", "example.net", false));
    }

    #[test]
    fn evaluation() {
        let p = PublicSuffixes::builtin();
        let rec = |s: &str, org| Some((parse_record(s).unwrap(), org));
        let reject = "v=DMARC1; p=reject; sp=none";
        let e = evaluate(
            rec(reject, false),
            &p,
            "example.com",
            Some("bounce.example.com"),
            &[],
            0,
        );
        assert_eq!((e.result, e.policy), (DmarcResult::Pass, Policy::None));
        let e = evaluate(
            rec(reject, false),
            &p,
            "example.com",
            Some("evil.example"),
            &["x.example"],
            0,
        );
        assert_eq!((e.result, e.policy), (DmarcResult::Fail, Policy::Reject));
        // Subdomain: sp= applies.
        let e = evaluate(rec(reject, true), &p, "a.example.com", None, &[], 0);
        assert_eq!((e.result, e.policy), (DmarcResult::Fail, Policy::None));
        // pct: sampled out, one step weaker.
        let e = evaluate(
            rec("v=DMARC1; p=reject; pct=10", false),
            &p,
            "example.com",
            None,
            &[],
            50,
        );
        assert_eq!(e.policy, Policy::Quarantine);
        let e = evaluate(
            rec("v=DMARC1; p=reject; pct=10", false),
            &p,
            "example.com",
            None,
            &[],
            9,
        );
        assert_eq!(e.policy, Policy::Reject);
        let e = evaluate(
            rec("v=DMARC1; p=reject; adkim=s", false),
            &p,
            "example.com",
            None,
            &["mail.example.com"],
            0,
        );
        assert_eq!(e.result, DmarcResult::Fail);
        assert_eq!(
            evaluate(None, &p, "example.com", None, &[], 0).result,
            DmarcResult::None
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "[ -~]{0,200}") {
            let _ = parse_record(&s);
            let _ = from_domain(s.as_bytes());
            let _ = PublicSuffixes::builtin().organizational_domain(&s);
            let _ = crate::authres::tokens(&s);
        }
    }

    #[test]
    fn from_domains() {
        assert_eq!(
            from_domain(b" Joe <joe@Example.COM>").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            from_domain(b" joe@example.com").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            from_domain(b" \"a<b\" <x@y.example>").as_deref(),
            Some("y.example")
        );
        assert_eq!(from_domain(b" undisclosed"), None);
        assert_eq!(from_domain(b" <x@bad domain>"), None);
    }
}
