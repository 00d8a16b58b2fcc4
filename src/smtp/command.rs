//! SMTP command lines (RFC 5321 4.1), parsed without I/O.

use std::fmt;

/// A reply for a command that could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: &'static str,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

const fn reject(code: u16, enhanced: &'static str, text: &'static str) -> Reject {
    Reject {
        code,
        enhanced,
        text,
    }
}

pub const UNKNOWN_COMMAND: Reject = reject(500, "5.5.1", "Unknown command");
pub const BAD_SYNTAX: Reject = reject(501, "5.5.4", "Syntax error in parameters or arguments");
pub const BAD_ADDRESS: Reject = reject(501, "5.1.3", "Bad address syntax");
pub const BAD_SENDER: Reject = reject(501, "5.1.7", "Bad sender address syntax");
pub const UNKNOWN_PARAMETER: Reject = reject(555, "5.5.4", "Unsupported MAIL/RCPT parameter");
pub const BAD_BINARYMIME: Reject = reject(555, "5.5.4", "BINARYMIME is not supported");

/// An address from a MAIL or RCPT path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The local part, unquoted (`"a b"` becomes `a b`).
    pub local: String,
    /// Was the local part a quoted string?
    pub quoted: bool,
    /// The domain as given (not lower-cased), or an address literal with its
    /// brackets.
    pub domain: String,
    /// `<@relay1,@relay2:user@domain>` (RFC 5321 4.1.2, obsolete).
    pub source_route: bool,
}

impl Address {
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
    /// `local@domain`, with the domain lower-cased.
    pub fn normalized(&self) -> String {
        format!("{}@{}", self.local, self.domain.trim_end_matches('.')).to_lowercase()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quoted {
            write!(f, "\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    write!(f, "\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"@{}", self.domain)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Address(Address),
    /// `RCPT TO:<Postmaster>` without a domain (RFC 5321 4.5.1).
    Postmaster,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    /// `None` is the null reverse path `<>`.
    Mail(Option<Address>, MailParams),
    Rcpt(Recipient),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth(String),
}

/// Parses one command line, CRLF (or a bare LF) already removed.
pub fn parse(line: &[u8]) -> Result<Command, Reject> {
    let line = std::str::from_utf8(line).map_err(|_| BAD_SYNTAX)?;
    if line.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(BAD_SYNTAX);
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |c: Command| {
        if rest.trim().is_empty() {
            Ok(c)
        } else {
            Err(BAD_SYNTAX)
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            let domain = rest.trim();
            if domain.is_empty() || domain.contains(' ') && !domain.starts_with('[') {
                return Err(reject(501, "5.5.4", "Syntax: EHLO domain"));
            }
            let domain = domain.split(' ').next().unwrap_or(domain).to_string();
            Ok(if verb == "EHLO" {
                Command::Ehlo(domain)
            } else {
                Command::Helo(domain)
            })
        }
        "MAIL" => {
            let rest = strip_keyword(rest, "FROM:").ok_or(reject(
                501,
                "5.5.4",
                "Syntax: MAIL FROM:<address>",
            ))?;
            let (path, params) = split_path(rest).ok_or(BAD_SENDER)?;
            let from = if path == "<>" {
                None
            } else {
                Some(parse_path(path).ok_or(BAD_SENDER)?)
            };
            Ok(Command::Mail(from, parse_mail_params(params)?))
        }
        "RCPT" => {
            let rest = strip_keyword(rest, "TO:").ok_or(reject(
                501,
                "5.5.4",
                "Syntax: RCPT TO:<address>",
            ))?;
            let (path, params) = split_path(rest).ok_or(BAD_ADDRESS)?;
            if !params.trim().is_empty() {
                // No RCPT extension (DSN's NOTIFY/ORCPT) is advertised.
                return Err(UNKNOWN_PARAMETER);
            }
            if path.eq_ignore_ascii_case("<postmaster>") {
                return Ok(Command::Rcpt(Recipient::Postmaster));
            }
            Ok(Command::Rcpt(Recipient::Address(
                parse_path(path).ok_or(BAD_ADDRESS)?,
            )))
        }
        "DATA" => no_args(Command::Data),
        "BDAT" => {
            let mut words = rest.split(' ').filter(|w| !w.is_empty());
            let size = words
                .next()
                .filter(|w| w.bytes().all(|b| b.is_ascii_digit()) && w.len() <= 19)
                .and_then(|w| w.parse().ok())
                .ok_or(reject(501, "5.5.4", "Syntax: BDAT size [LAST]"))?;
            let last = match words.next() {
                None => false,
                Some(w) if w.eq_ignore_ascii_case("LAST") => true,
                Some(_) => return Err(reject(501, "5.5.4", "Syntax: BDAT size [LAST]")),
            };
            if words.next().is_some() {
                return Err(reject(501, "5.5.4", "Syntax: BDAT size [LAST]"));
            }
            Ok(Command::Bdat { size, last })
        }
        "RSET" => no_args(Command::Rset),
        // RFC 5321 4.1.1.9: NOOP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(Command::StartTls),
        "AUTH" => Ok(Command::Auth(rest.to_string())),
        _ => Err(UNKNOWN_COMMAND),
    }
}

/// `FROM:` / `TO:` case-insensitively, allowing the common (not strictly
/// RFC 5321) space after the colon.
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    Some(rest[keyword.len()..].trim_start_matches(' '))
}

/// Splits `<path> params` at the `>` that closes the path, honouring quoted
/// local parts, which may contain `>`.
fn split_path(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with('<') {
        return None;
    }
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '>' if !in_quotes => {
                let rest = &s[i + 1..];
                if !rest.is_empty() && !rest.starts_with(' ') {
                    return None;
                }
                return Some((&s[..=i], rest));
            }
            _ => {}
        }
    }
    None
}

fn is_atext(c: char) -> bool {
    // RFC 5322 3.2.3 atext, plus any non-ASCII character (RFC 6531 3.3);
    // the session refuses those without SMTPUTF8.
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || !c.is_ascii() && !c.is_control()
}

/// Parses `<[@route,@route:]local@domain>`.
fn parse_path(path: &str) -> Option<Address> {
    let inner = path.strip_prefix('<')?.strip_suffix('>')?;
    let (source_route, mailbox) = if inner.starts_with('@') {
        // A-d-l: "@" domain *("," "@" domain) ":"
        let colon = inner.find(':')?;
        let route = &inner[..colon];
        if !route
            .split(',')
            .all(|hop| hop.strip_prefix('@').is_some_and(is_domain))
        {
            return None;
        }
        (true, &inner[colon + 1..])
    } else {
        (false, inner)
    };
    let (local, quoted, domain) = if let Some(q) = mailbox.strip_prefix('"') {
        let mut local = String::new();
        let mut chars = q.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => local.push(chars.next()?.1),
                '"' => {
                    end = Some(i);
                    break;
                }
                c if c.is_control() => return None,
                c => local.push(c),
            }
        }
        let rest = &q[end? + 1..];
        (local, true, rest.strip_prefix('@')?)
    } else {
        let at = mailbox.rfind('@')?;
        let local = &mailbox[..at];
        if local.is_empty()
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || !local.chars().all(|c| c == '.' || is_atext(c))
        {
            return None;
        }
        (local.to_string(), false, &mailbox[at + 1..])
    };
    if local.len() > 64 * 4 || !(is_domain(domain) || is_address_literal(domain)) {
        return None;
    }
    Some(Address {
        local,
        quoted,
        domain: domain.to_string(),
        source_route,
    })
}

fn is_domain(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 255
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii() && !c.is_control()
                })
        })
}

fn is_address_literal(d: &str) -> bool {
    let Some(inner) = d.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return false;
    };
    match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("IPv6:") => {
            inner[5..].parse::<std::net::Ipv6Addr>().is_ok()
        }
        _ => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

fn parse_mail_params(s: &str) -> Result<MailParams, Reject> {
    let mut p = MailParams {
        size: None,
        body: Body::SevenBit,
        smtputf8: false,
    };
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) => {
                p.size = Some(
                    v.parse()
                        .map_err(|_| reject(501, "5.5.4", "Bad SIZE value"))?,
                );
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => p.body = Body::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => p.body = Body::EightBitMime,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("BINARYMIME") => {
                return Err(BAD_BINARYMIME);
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            // RFC 4954 5: AUTH= from an unauthenticated client is ignored.
            ("AUTH", Some(_)) => {}
            _ => return Err(UNKNOWN_PARAMETER),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(local: &str, domain: &str) -> Address {
        Address {
            local: local.into(),
            quoted: false,
            domain: domain.into(),
            source_route: false,
        }
    }

    #[test]
    fn verbs() {
        assert_eq!(
            parse(b"EHLO client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            parse(b"helo [192.0.2.1]"),
            Ok(Command::Helo("[192.0.2.1]".into()))
        );
        assert_eq!(parse(b"DATA"), Ok(Command::Data));
        assert_eq!(parse(b"data x"), Err(BAD_SYNTAX));
        assert_eq!(parse(b"NOOP anything"), Ok(Command::Noop));
        assert_eq!(parse(b"QUIT"), Ok(Command::Quit));
        assert_eq!(parse(b"STARTTLS"), Ok(Command::StartTls));
        assert_eq!(
            parse(b"BDAT 100 LAST"),
            Ok(Command::Bdat {
                size: 100,
                last: true
            })
        );
        assert_eq!(
            parse(b"BDAT 0"),
            Ok(Command::Bdat {
                size: 0,
                last: false
            })
        );
        assert!(parse(b"BDAT -1").is_err());
        assert!(parse(b"BDAT 99999999999999999999999").is_err());
        assert!(parse(b"BDAT 5 FIRST").is_err());
        assert_eq!(parse(b"XYZZY"), Err(UNKNOWN_COMMAND));
        assert_eq!(parse(b""), Err(UNKNOWN_COMMAND));
        assert_eq!(
            parse(b"EHLO"),
            Err(reject(501, "5.5.4", "Syntax: EHLO domain"))
        );
        assert_eq!(parse(b"MAIL FROM:<a@b.c>\x00"), Err(BAD_SYNTAX));
        assert_eq!(parse(b"\xff\xfe"), Err(BAD_SYNTAX));
    }

    #[test]
    fn mail_from() {
        let p = |s: &[u8]| parse(s);
        match p(b"MAIL FROM:<alice@example.org> SIZE=1000 BODY=8BITMIME").unwrap() {
            Command::Mail(Some(a), params) => {
                assert_eq!(a, addr("alice", "example.org"));
                assert_eq!(params.size, Some(1000));
                assert_eq!(params.body, Body::EightBitMime);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(p(b"MAIL FROM:<>"), Ok(Command::Mail(None, _))));
        assert!(matches!(
            p(b"mail from: <a@b.example>"),
            Ok(Command::Mail(Some(_), _))
        ));
        assert_eq!(
            p(b"MAIL FROM:<a@b.example> RET=FULL"),
            Err(UNKNOWN_PARAMETER)
        );
        assert_eq!(
            p(b"MAIL FROM:<a@b.example> BODY=BINARYMIME"),
            Err(BAD_BINARYMIME)
        );
        assert_eq!(p(b"MAIL FROM:a@b.example"), Err(BAD_SENDER));
        assert_eq!(p(b"MAIL FROM:<a@b.example"), Err(BAD_SENDER));
        assert!(matches!(
            p(b"MAIL FROM:<a@b.example> SMTPUTF8"),
            Ok(Command::Mail(_, MailParams { smtputf8: true, .. }))
        ));
        assert!(p(b"MAIL TO:<a@b.example>").is_err());
    }

    #[test]
    fn rcpt_to() {
        let rcpt = |s: &[u8]| match parse(s) {
            Ok(Command::Rcpt(Recipient::Address(a))) => Some(a),
            _ => None,
        };
        assert_eq!(
            rcpt(b"RCPT TO:<bob@example.org>"),
            Some(addr("bob", "example.org"))
        );
        assert_eq!(
            parse(b"RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt(Recipient::Postmaster))
        );
        let routed = rcpt(b"RCPT TO:<@relay.example,@other.example:bob@example.org>").unwrap();
        assert!(routed.source_route);
        assert_eq!(routed.domain, "example.org");
        let quoted = rcpt(br#"RCPT TO:<"bob@evil.example"@example.org>"#).unwrap();
        assert!(quoted.quoted);
        assert_eq!(quoted.local, "bob@evil.example");
        let pct = rcpt(b"RCPT TO:<bob%evil.example@example.org>").unwrap();
        assert_eq!(pct.local, "bob%evil.example");
        assert_eq!(
            rcpt(b"RCPT TO:<evil.example!bob>"),
            None,
            "bang path without a domain"
        );
        assert_eq!(rcpt(b"RCPT TO:<bob>"), None);
        assert_eq!(
            rcpt(b"RCPT TO:<bob@[192.0.2.1]>").map(|a| a.domain),
            Some("[192.0.2.1]".into())
        );
        assert_eq!(
            rcpt(b"RCPT TO:<bob@[IPv6:::1]>").map(|a| a.domain),
            Some("[IPv6:::1]".into())
        );
        assert_eq!(rcpt(b"RCPT TO:<bob@[999.1.1.1]>"), None);
        assert_eq!(rcpt(b"RCPT TO:<.bob@example.org>"), None);
        assert_eq!(rcpt(b"RCPT TO:<bo..b@example.org>"), None);
        assert_eq!(rcpt(b"RCPT TO:<bob@-example.org>"), None);
        assert_eq!(
            parse(b"RCPT TO:<bob@example.org> NOTIFY=NEVER"),
            Err(UNKNOWN_PARAMETER)
        );
        let utf8 = rcpt("RCPT TO:<jösé@exämple.org>".as_bytes()).unwrap();
        assert!(!utf8.is_ascii());
        assert_eq!(addr("Bob", "Example.ORG.").normalized(), "bob@example.org");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&line);
        }

        #[test]
        fn paths_never_panic(s in "(MAIL FROM:|RCPT TO:)<[@a-z.,:\"\\\\%!]{0,40}>( [A-Z=0-9]{0,20})?") {
            let _ = parse(s.as_bytes());
        }
    }
}
