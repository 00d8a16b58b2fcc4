//! SPF (RFC 7208): is this client IP allowed to send for this domain?
//!
//! The record parser, macro expansion and CIDR matching are pure functions
//! (unit-tested here); `check_host` walks the record with the resolver,
//! counting DNS-querying terms (at most [`Limits::lookups`], 4.6.4) and
//! lookups that found nothing (at most [`Limits::void_lookups`]).
//!
//! `%{p}` always expands to "unknown" (7.3 allows it, and discourages the
//! macro: it costs a PTR walk per use).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use crate::dns::{DnsError, MxAnswer, Resolver};

/// The result of `check_host()` (RFC 7208 2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfResult {
    None,
    Neutral,
    Pass,
    Fail,
    SoftFail,
    TempError,
    PermError,
}

impl SpfResult {
    /// The name used in Authentication-Results and Received-SPF.
    pub fn as_str(self) -> &'static str {
        match self {
            SpfResult::None => "none",
            SpfResult::Neutral => "neutral",
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds on one evaluation (RFC 7208 4.6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Terms that query DNS (include, a, mx, ptr, exists, redirect).
    pub lookups: u32,
    /// Of those, lookups that gave NXDOMAIN or no answer.
    pub void_lookups: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lookups: 10,
            void_lookups: 2,
        }
    }
}

/// A qualifier (4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

impl Qualifier {
    fn result(self) -> SpfResult {
        match self {
            Qualifier::Pass => SpfResult::Pass,
            Qualifier::Fail => SpfResult::Fail,
            Qualifier::SoftFail => SpfResult::SoftFail,
            Qualifier::Neutral => SpfResult::Neutral,
        }
    }
}

/// A mechanism (5); domain specs are kept unexpanded (macro strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    All,
    Include(String),
    A {
        domain: Option<String>,
        v4: u8,
        v6: u8,
    },
    Mx {
        domain: Option<String>,
        v4: u8,
        v6: u8,
    },
    Ptr(Option<String>),
    Ip {
        net: IpAddr,
        prefix: u8,
    },
    Exists(String),
}

/// A parsed record: directives in order, plus the modifiers we use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub directives: Vec<(Qualifier, Mechanism)>,
    pub redirect: Option<String>,
    pub exp: Option<String>,
}

/// Parses an SPF record ("v=spf1 ..."); `Err` is a syntax error
/// (permerror) with the offending term.
pub fn parse_record(text: &str) -> Result<Record, String> {
    let mut terms = text.split(' ').filter(|t| !t.is_empty());
    match terms.next() {
        Some(v) if v.eq_ignore_ascii_case("v=spf1") => {}
        _ => return Err("not an SPF record".into()),
    }
    let mut record = Record::default();
    for term in terms {
        let lower = term.to_ascii_lowercase();
        // A modifier is name=value with a name that is not a mechanism's.
        if let Some((name, value)) = term.split_once('=')
            && !name.contains(':')
            && !name.contains('/')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        {
            check_macro_string(value).map_err(|e| format!("{term}: {e}"))?;
            let slot = match name.to_ascii_lowercase().as_str() {
                "redirect" => &mut record.redirect,
                "exp" => &mut record.exp,
                _ => continue, // unknown modifiers are ignored (6)
            };
            // 6: redirect and exp may appear at most once.
            if slot.replace(value.to_string()).is_some() {
                return Err(format!("{name}= given twice"));
            }
            continue;
        }
        let (qualifier, rest) = match lower.as_bytes().first() {
            Some(b'+') => (Qualifier::Pass, &term[1..]),
            Some(b'-') => (Qualifier::Fail, &term[1..]),
            Some(b'~') => (Qualifier::SoftFail, &term[1..]),
            Some(b'?') => (Qualifier::Neutral, &term[1..]),
            _ => (Qualifier::Pass, term),
        };
        let mechanism = parse_mechanism(rest).map_err(|e| format!("{term}: {e}"))?;
        record.directives.push((qualifier, mechanism));
    }
    Ok(record)
}

fn parse_mechanism(term: &str) -> Result<Mechanism, String> {
    let split = term.find([':', '/']).unwrap_or(term.len());
    let name = term[..split].to_ascii_lowercase();
    let rest = &term[split..];
    let arg = rest.strip_prefix(':');
    let need_domain = |arg: Option<&str>| -> Result<String, String> {
        let d = arg.ok_or("a domain is required")?;
        check_macro_string(d)?;
        if d.is_empty() {
            return Err("empty domain".into());
        }
        Ok(d.to_string())
    };
    match name.as_str() {
        "all" if rest.is_empty() => Ok(Mechanism::All),
        "include" => Ok(Mechanism::Include(need_domain(arg)?)),
        "exists" => Ok(Mechanism::Exists(need_domain(arg)?)),
        "ptr" => Ok(Mechanism::Ptr(match arg {
            Some(_) => Some(need_domain(arg)?),
            None if rest.is_empty() => None,
            None => return Err("unexpected text".into()),
        })),
        "a" | "mx" => {
            // domain-spec, then an optional dual-cidr-length.
            let (domain, cidr) = match rest.strip_prefix(':') {
                Some(r) => match r.find('/') {
                    Some(i) => (Some(&r[..i]), &r[i..]),
                    None => (Some(r), ""),
                },
                None => (None, rest),
            };
            let domain = match domain {
                Some(d) => Some(need_domain(Some(d))?),
                None => None,
            };
            let (v4, v6) = parse_dual_cidr(cidr)?;
            Ok(if name == "a" {
                Mechanism::A { domain, v4, v6 }
            } else {
                Mechanism::Mx { domain, v4, v6 }
            })
        }
        "ip4" | "ip6" => {
            let arg = arg.ok_or("an address is required")?;
            let (addr, prefix) = match arg.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (arg, None),
            };
            let net: IpAddr = match name.as_str() {
                "ip4" => IpAddr::V4(addr.parse().map_err(|_| "not an IPv4 address")?),
                _ => IpAddr::V6(addr.parse().map_err(|_| "not an IPv6 address")?),
            };
            let max = if net.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) => parse_cidr(p, max)?,
                None => max,
            };
            Ok(Mechanism::Ip { net, prefix })
        }
        _ => Err("unknown mechanism".into()),
    }
}

fn parse_cidr(digits: &str, max: u8) -> Result<u8, String> {
    // 5.6: no leading zeros, within the family's width.
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(format!("bad CIDR length {digits:?}"));
    }
    match digits.parse::<u8>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("CIDR length {digits} above {max}")),
    }
}

/// "/24", "//64", "/24//64" or "".
fn parse_dual_cidr(s: &str) -> Result<(u8, u8), String> {
    if s.is_empty() {
        return Ok((32, 128));
    }
    if let Some(v6) = s.strip_prefix("//") {
        return Ok((32, parse_cidr(v6, 128)?));
    }
    let s = s.strip_prefix('/').ok_or("bad CIDR")?;
    match s.split_once("//") {
        Some((v4, v6)) => Ok((parse_cidr(v4, 32)?, parse_cidr(v6, 128)?)),
        None => Ok((parse_cidr(s, 32)?, 128)),
    }
}

/// Is `ip` within `net/prefix`? Different families never match.
pub fn cidr_match(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Syntax check of a macro-string (7.1) without expanding it.
fn check_macro_string(s: &str) -> Result<(), String> {
    let vars = MacroVars {
        sender: "a@b",
        domain: "b",
        ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        helo: "b",
        receiver: "r",
    };
    expand(s, &vars, true).map(|_| ())
}

/// The values macros expand to (7.2).
#[derive(Debug, Clone, Copy)]
pub struct MacroVars<'a> {
    /// `<sender>`: local-part@domain (postmaster@helo for a null sender).
    pub sender: &'a str,
    /// `<domain>` being checked now.
    pub domain: &'a str,
    pub ip: IpAddr,
    pub helo: &'a str,
    /// Our own name (`%{r}`, exp only).
    pub receiver: &'a str,
}

/// Expands a macro-string (7). `exp` allows the c, r and t macros of
/// explanation strings.
pub fn expand(s: &str, vars: &MacroVars<'_>, exp: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('_') => out.push(' '),
            Some('-') => out.push_str("%20"),
            Some('{') => {
                let mut body = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => body.push(c),
                        None => return Err("unterminated macro".into()),
                    }
                }
                out.push_str(&expand_one(&body, vars, exp)?);
            }
            _ => return Err("'%' must be followed by %, _, - or {".into()),
        }
    }
    Ok(out)
}

fn expand_one(body: &str, vars: &MacroVars<'_>, exp: bool) -> Result<String, String> {
    let mut chars = body.chars();
    let letter = chars.next().ok_or("empty macro")?;
    let rest: String = chars.collect();
    let lower = letter.to_ascii_lowercase();
    let sender_domain = vars.sender.rsplit_once('@').map_or(vars.sender, |x| x.1);
    let value: String = match lower {
        's' => vars.sender.to_string(),
        'l' => vars
            .sender
            .rsplit_once('@')
            .map_or("postmaster", |x| x.0)
            .to_string(),
        'o' => sender_domain.to_string(),
        'd' => vars.domain.to_string(),
        'i' => match vars.ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => a
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 15])
                .map(|n| format!("{n:x}"))
                .collect::<Vec<_>>()
                .join("."),
        },
        'p' => "unknown".to_string(),
        'v' => if vars.ip.is_ipv4() { "in-addr" } else { "ip6" }.to_string(),
        'h' => vars.helo.to_string(),
        'c' if exp => vars.ip.to_string(),
        'r' if exp => vars.receiver.to_string(),
        't' if exp => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string(),
        _ => return Err(format!("unknown macro letter {letter:?}")),
    };
    // Transformers: digits, then 'r', then delimiters.
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let mut tail = &rest[digits.len()..];
    let reverse = tail.starts_with(['r', 'R']);
    if reverse {
        tail = &tail[1..];
    }
    if !tail.chars().all(|c| ".-+,/_=".contains(c)) {
        return Err(format!("bad macro transformer in %{{{body}}}"));
    }
    let keep = match digits.as_str() {
        "" => None,
        d => match d.parse::<usize>() {
            Ok(0) | Err(_) => return Err(format!("bad macro digit count in %{{{body}}}")),
            Ok(n) => Some(n),
        },
    };
    let delimiters: Vec<char> = if tail.is_empty() {
        vec!['.']
    } else {
        tail.chars().collect()
    };
    let mut parts: Vec<&str> = value.split(|c| delimiters.contains(&c)).collect();
    if reverse {
        parts.reverse();
    }
    if let Some(n) = keep
        && n < parts.len()
    {
        parts.drain(..parts.len() - n);
    }
    let joined = parts.join(".");
    Ok(if letter.is_ascii_uppercase() {
        url_escape(&joined)
    } else {
        joined
    })
}

/// Uppercase macros are URL-escaped (7.3, RFC 3986 unreserved kept).
fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A domain after macro expansion, cut to 253 characters by dropping
/// labels on the left (7.3).
fn truncate_domain(mut d: &str) -> &str {
    d = d.trim_end_matches('.');
    while d.len() > 253 {
        match d.split_once('.') {
            Some((_, rest)) => d = rest,
            None => break,
        }
    }
    d
}

/// What one SPF check found: the result and, for fail, the explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfOutcome {
    pub result: SpfResult,
    /// The `exp=` text for fail, or why for permerror/temperror.
    pub reason: Option<String>,
}

/// check_host(ip, domain, sender) (RFC 7208 4). `helo` fills `%{h}`;
/// `receiver` is our hostname (`%{r}`).
pub async fn check_host(
    resolver: &Resolver,
    limits: Limits,
    ip: IpAddr,
    domain: &str,
    sender: &str,
    helo: &str,
    receiver: &str,
) -> SpfOutcome {
    let eval = Eval {
        resolver,
        limits,
        ip,
        sender,
        helo,
        receiver,
        lookups: Cell::new(0),
        voids: Cell::new(0),
    };
    match eval
        .check(domain.trim_end_matches('.').to_ascii_lowercase(), 0)
        .await
    {
        Ok((result, reason)) => SpfOutcome { result, reason },
        Err((result, reason)) => SpfOutcome {
            result,
            reason: Some(reason),
        },
    }
}

/// Nesting of include/redirect beyond the lookup limit cannot happen, but a
/// bound keeps recursion finite whatever the limits are set to.
const MAX_DEPTH: u32 = 20;

type Abort = (SpfResult, String);
type Step<'a, T> = Pin<Box<dyn Future<Output = Result<T, Abort>> + 'a>>;

struct Eval<'a> {
    resolver: &'a Resolver,
    limits: Limits,
    ip: IpAddr,
    sender: &'a str,
    helo: &'a str,
    receiver: &'a str,
    lookups: Cell<u32>,
    voids: Cell<u32>,
}

fn perm(reason: impl Into<String>) -> Abort {
    (SpfResult::PermError, reason.into())
}

impl<'a> Eval<'a> {
    fn vars<'b>(&'b self, domain: &'b str) -> MacroVars<'b> {
        MacroVars {
            sender: self.sender,
            domain,
            ip: self.ip,
            helo: self.helo,
            receiver: self.receiver,
        }
    }

    fn count_lookup(&self) -> Result<(), Abort> {
        let n = self.lookups.get() + 1;
        self.lookups.set(n);
        if n > self.limits.lookups {
            return Err(perm(format!(
                "more than {} DNS-querying terms",
                self.limits.lookups
            )));
        }
        Ok(())
    }

    fn void(&self) -> Result<(), Abort> {
        let n = self.voids.get() + 1;
        self.voids.set(n);
        if n > self.limits.void_lookups {
            return Err(perm(format!(
                "more than {} void lookups",
                self.limits.void_lookups
            )));
        }
        Ok(())
    }

    /// A DNS error: temporary ones end the check with temperror (2.6.6);
    /// a missing name counts as a void lookup and answers nothing.
    fn dns<T>(&self, r: Result<Vec<T>, DnsError>) -> Result<Vec<T>, Abort> {
        match r {
            Ok(v) => {
                if v.is_empty() {
                    self.void()?;
                }
                Ok(v)
            }
            Err(DnsError::NxDomain) | Err(DnsError::InvalidName(_)) => {
                self.void()?;
                Ok(Vec::new())
            }
            Err(e) => Err((SpfResult::TempError, e.to_string())),
        }
    }

    fn target(&self, spec: Option<&String>, domain: &str) -> Result<String, Abort> {
        match spec {
            None => Ok(domain.to_string()),
            Some(s) => {
                let d = expand(s, &self.vars(domain), false).map_err(perm)?;
                Ok(truncate_domain(&d).to_ascii_lowercase())
            }
        }
    }

    fn check(&'a self, domain: String, depth: u32) -> Step<'a, (SpfResult, Option<String>)> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(perm("include/redirect nesting too deep"));
            }
            // 4.3: a domain that is not a valid FQDN gives none.
            if domain.is_empty() || !domain.contains('.') || domain.len() > 253 {
                return Ok((SpfResult::None, None));
            }
            let txts = match self.resolver.txt(&domain).await {
                Ok(t) => t,
                Err(DnsError::NxDomain) | Err(DnsError::InvalidName(_)) => {
                    return Ok((SpfResult::None, None));
                }
                Err(e) => return Err((SpfResult::TempError, e.to_string())),
            };
            // 4.5: exactly one record starting "v=spf1" (then SP or end).
            let mut records = txts.iter().filter(|t| {
                t.len() >= 6
                    && t[..6].eq_ignore_ascii_case(b"v=spf1")
                    && (t.len() == 6 || t[6] == b' ')
            });
            let text = match (records.next(), records.next()) {
                (None, _) => return Ok((SpfResult::None, None)),
                (Some(_), Some(_)) => return Err(perm(format!("{domain}: several SPF records"))),
                (Some(t), None) => String::from_utf8_lossy(t).into_owned(),
            };
            let record = parse_record(&text).map_err(|e| perm(format!("{domain}: {e}")))?;
            for (qualifier, mechanism) in &record.directives {
                if self.matches(mechanism, &domain, depth).await? {
                    let result = qualifier.result();
                    let reason = match result {
                        SpfResult::Fail => self.explanation(&record, &domain).await,
                        _ => None,
                    };
                    return Ok((result, reason));
                }
            }
            if let Some(redirect) = &record.redirect {
                self.count_lookup()?;
                let target = self.target(Some(redirect), &domain)?;
                return match self.check(target.clone(), depth + 1).await? {
                    // 6.1: a redirect to a domain without record is permerror.
                    (SpfResult::None, _) => Err(perm(format!("redirect={target}: no SPF record"))),
                    other => Ok(other),
                };
            }
            Ok((SpfResult::Neutral, None))
        })
    }

    /// exp= (6.2): any failure to get it just means no explanation.
    async fn explanation(&self, record: &Record, domain: &str) -> Option<String> {
        let spec = record.exp.as_ref()?;
        let target = self.target(Some(spec), domain).ok()?;
        let txts = self.resolver.txt(&target).await.ok()?;
        if txts.len() != 1 {
            return None;
        }
        let text = String::from_utf8_lossy(&txts[0]).into_owned();
        let expanded = expand(&text, &self.vars(domain), true).ok()?;
        Some(
            expanded
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .collect(),
        )
    }

    async fn matches(&'a self, m: &'a Mechanism, domain: &str, depth: u32) -> Result<bool, Abort> {
        match m {
            Mechanism::All => Ok(true),
            Mechanism::Ip { net, prefix } => Ok(cidr_match(self.ip, *net, *prefix)),
            Mechanism::Include(spec) => {
                self.count_lookup()?;
                let target = self.target(Some(spec), domain)?;
                // 5.2: the included check's result decides the match.
                match self.check(target.clone(), depth + 1).await {
                    Ok((SpfResult::Pass, _)) => Ok(true),
                    Ok((SpfResult::None, _)) => {
                        Err(perm(format!("include:{target}: no SPF record")))
                    }
                    Ok(_) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Mechanism::A {
                domain: spec,
                v4,
                v6,
            } => {
                self.count_lookup()?;
                let target = self.target(spec.as_ref(), domain)?;
                let addrs = self.dns(self.resolver.ip_addrs(&target).await)?;
                Ok(addrs.iter().any(|a| self.in_net(*a, *v4, *v6)))
            }
            Mechanism::Mx {
                domain: spec,
                v4,
                v6,
            } => {
                self.count_lookup()?;
                let target = self.target(spec.as_ref(), domain)?;
                let mxs = match self.resolver.mx(&target).await {
                    Ok(MxAnswer::Records(r)) => r,
                    Ok(MxAnswer::NullMx) => Vec::new(),
                    Ok(MxAnswer::NoRecords) | Ok(MxAnswer::NxDomain) => {
                        self.void()?;
                        Vec::new()
                    }
                    Err(e) => return Err((SpfResult::TempError, e.to_string())),
                };
                // 4.6.4: at most 10 MX names are looked up.
                if mxs.len() > 10 {
                    return Err(perm(format!("{target}: more than 10 MX records")));
                }
                let lookups = mxs.iter().map(|mx| self.resolver.ip_addrs(&mx.exchange));
                for result in join_all(lookups.collect()).await {
                    let addrs = self.dns(result)?;
                    if addrs.iter().any(|a| self.in_net(*a, *v4, *v6)) {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Mechanism::Ptr(spec) => {
                self.count_lookup()?;
                let target = self.target(spec.as_ref(), domain)?;
                let names = match self.resolver.ptr(self.ip).await {
                    Ok(n) => n,
                    // 5.5: a failed PTR lookup is just no match.
                    Err(_) => return Ok(false),
                };
                for name in names.iter().take(10) {
                    if !(name == &target || name.ends_with(&format!(".{target}"))) {
                        continue;
                    }
                    if let Ok(addrs) = self.resolver.ip_addrs(name).await
                        && addrs.contains(&self.ip)
                    {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Mechanism::Exists(spec) => {
                self.count_lookup()?;
                let target = self.target(Some(spec), domain)?;
                // 5.7: an A query, whatever the client's family.
                let addrs = self.dns(self.resolver.ip_addrs(&target).await)?;
                Ok(addrs.iter().any(|a| a.is_ipv4()))
            }
        }
    }

    fn in_net(&self, addr: IpAddr, v4: u8, v6: u8) -> bool {
        let prefix = if addr.is_ipv4() { v4 } else { v6 };
        cidr_match(self.ip, addr, prefix)
    }
}

/// Awaits every future concurrently, results in order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(ip: &str) -> MacroVars<'static> {
        MacroVars {
            sender: "strong-bad@email.example.com",
            domain: "email.example.com",
            ip: ip.parse().unwrap(),
            helo: "mx.example.org",
            receiver: "mail.example.net",
        }
    }

    /// RFC 7208 7.4, the examples.
    #[test]
    fn rfc7208_macro_examples() {
        let v = vars("192.0.2.3");
        let cases = [
            ("%{s}", "strong-bad@email.example.com"),
            ("%{o}", "email.example.com"),
            ("%{d}", "email.example.com"),
            ("%{d4}", "email.example.com"),
            ("%{d3}", "email.example.com"),
            ("%{d2}", "example.com"),
            ("%{d1}", "com"),
            ("%{dr}", "com.example.email"),
            ("%{d2r}", "example.email"),
            ("%{l}", "strong-bad"),
            ("%{l-}", "strong.bad"),
            ("%{lr}", "strong-bad"),
            ("%{lr-}", "bad.strong"),
            ("%{l1r-}", "strong"),
            (
                "%{ir}.%{v}._spf.%{d2}",
                "3.2.0.192.in-addr._spf.example.com",
            ),
            ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
            (
                "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
                "bad.strong.lp.3.2.0.192.in-addr._spf.example.com",
            ),
            (
                "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
                "3.2.0.192.in-addr.strong.lp._spf.example.com",
            ),
            (
                "%{d2}.trusted-domains.example.net",
                "example.com.trusted-domains.example.net",
            ),
            ("%%%_%-", "% %20"),
            ("%{S}", "strong-bad%40email.example.com"),
        ];
        for (m, want) in cases {
            assert_eq!(expand(m, &v, false).unwrap(), want, "{m}");
        }
        let v6 = vars("2001:db8::cb01");
        assert_eq!(
            expand("%{ir}.%{v}._spf.%{d2}", &v6, false).unwrap(),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
    }

    #[test]
    fn bad_macros_are_errors() {
        let v = vars("192.0.2.3");
        for m in ["%{x}", "%{d0}", "%{d", "%a", "%{c}", "%{d2q}", "%"] {
            assert!(expand(m, &v, false).is_err(), "{m}");
        }
        assert!(expand("%{c} %{r}", &v, true).is_ok());
    }

    #[test]
    fn records_parse() {
        let r = parse_record(
            "v=spf1 +a mx/24 -ip4:192.0.2.0/24 ~ip6:2001:db8::/32 a:%{d}//64 \
             include:_spf.example.org exists:%{ir}.x.example ?ptr foo=bar redirect=other.example",
        )
        .unwrap();
        assert_eq!(r.directives.len(), 8);
        assert_eq!(r.redirect.as_deref(), Some("other.example"));
        assert_eq!(
            r.directives[1].1,
            Mechanism::Mx {
                domain: None,
                v4: 24,
                v6: 128
            }
        );
        assert_eq!(
            r.directives[4].1,
            Mechanism::A {
                domain: Some("%{d}".into()),
                v4: 32,
                v6: 64
            }
        );
        assert_eq!(r.directives[2].0, Qualifier::Fail);
        for bad in [
            "v=spf1 ip4:192.0.2.0/33",
            "v=spf1 ip4:nope",
            "v=spf1 a/024",
            "v=spf1 frob",
            "v=spf1 include",
            "v=spf1 redirect=a.example redirect=b.example",
            "v=spf1 exists:%{z}",
            "spf2.0/pra",
        ] {
            assert!(parse_record(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Records and macro strings from the DNS never make us panic.
        #[test]
        fn record_parser_never_panics(s in "v=spf1[ -~]{0,200}") {
            let _ = parse_record(&s);
        }

        #[test]
        fn macro_expansion_never_panics(s in "[%{}a-zA-Z0-9.+,/_=-]{0,80}", v6 in proptest::bool::ANY) {
            let mut v = vars("192.0.2.3");
            if v6 {
                v.ip = "2001:db8::1".parse().unwrap();
            }
            let _ = expand(&s, &v, true);
        }
    }

    #[test]
    fn cidr() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr_match(ip("192.0.2.77"), ip("192.0.2.0"), 24));
        assert!(!cidr_match(ip("192.0.3.1"), ip("192.0.2.0"), 24));
        assert!(cidr_match(ip("10.1.2.3"), ip("0.0.0.0"), 0));
        assert!(cidr_match(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(!cidr_match(ip("2001:db9::1"), ip("2001:db8::"), 32));
        assert!(!cidr_match(ip("192.0.2.1"), ip("::"), 0));
        assert!(cidr_match(ip("192.0.2.1"), ip("192.0.2.1"), 32));
    }
}
