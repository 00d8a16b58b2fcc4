//! Turns a message into the set of tokens the classifier weighs.
//!
//! The message is decoded first (mail-parser: MIME structure, base64 and
//! quoted-printable, RFC 2047 words, charsets to UTF-8), then:
//! - header fields give tokens prefixed by where they came from (`subj:`,
//!   `from:`, `to:`, `rt:` for Reply-To, `rcvd:` for the hosts and addresses
//!   of Received:, `ct:` for Content-Type, `xm:` for X-Mailer/User-Agent,
//!   `mid:` for the Message-ID's domain, `head:` for any other field), plus
//!   `hdr:NAME` for the presence of each field, as bogofilter's header
//!   markup does;
//! - text parts give their words; HTML parts are reduced to their text, with
//!   the tag names (`tag:`) and the hosts of links and images (`url:`) as
//!   tokens; attachments give their type (`mime:`) and file extension
//!   (`ext:`).
//!
//! Words keep their case, as bogofilter's do ("FREE" and "free" are
//! different evidence: on the SpamAssassin corpus folding case raised false
//! negatives from 3 to 6); host names are lowercased. Pure numbers (dates,
//! ids) are dropped, words of
//! more than [`MAX_TOKEN_CHARS`] characters become `skip:C N` (first
//! character, length in tens) as SpamBayes does, so a random string tells
//! "long junk was here" without filling the database. Each token counts
//! once per message. Input is bounded by the caller's byte budget and the
//! output by `max_tokens`; no input makes it panic (property-tested).

use std::collections::HashSet;

use mail_parser::{Address, HeaderName, HeaderValue, Message, MessageParser, PartType};

/// Longer words are summarised (bogofilter's default max_token_len is 30).
pub const MAX_TOKEN_CHARS: usize = 30;
/// Shorter words carry little meaning and many collisions.
const MIN_TOKEN_CHARS: usize = 3;
/// Nested message/rfc822 parts followed.
const MAX_NESTING: usize = 4;

/// Header fields that say nothing about the message, or that we wrote
/// ourselves (our verdict must never train the filter on itself).
fn ignored_header(name: &str) -> bool {
    name.starts_with("x-spam-")
        || name.starts_with("x-bogosity")
        || matches!(
            name,
            "date"
                | "content-length"
                | "lines"
                | "status"
                | "x-status"
                | "x-uid"
                | "x-keywords"
                | "content-transfer-encoding"
                | "mime-version"
                | "references"
                | "in-reply-to"
        )
}

/// Collects unique tokens up to a bound.
pub struct TokenSet {
    tokens: HashSet<String>,
    max: usize,
    seen_auth_results: bool,
}

impl TokenSet {
    pub fn new(max: usize) -> TokenSet {
        TokenSet {
            tokens: HashSet::new(),
            max,
            seen_auth_results: false,
        }
    }

    fn insert(&mut self, token: String) {
        if self.tokens.len() < self.max {
            self.tokens.insert(token);
        }
    }

    fn full(&self) -> bool {
        self.tokens.len() >= self.max
    }

    /// Adds the words of `text`, each with `prefix` in front.
    fn words(&mut self, prefix: &str, text: &str) {
        for raw in text.split(|c: char| !is_word_char(c)) {
            if self.full() {
                return;
            }
            if let Some(t) = word_token(prefix, raw) {
                self.insert(t);
            }
        }
    }

    /// Sorted, so database lookups walk the B-tree in order.
    pub fn into_sorted(self) -> Vec<String> {
        let mut v: Vec<String> = self.tokens.into_iter().collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '\'' | '.' | '-' | '_' | '$' | '!')
}

/// Normalises one raw word into a token, or drops it.
fn word_token(prefix: &str, raw: &str) -> Option<String> {
    let w = raw.trim_matches(|c: char| matches!(c, '\'' | '.' | '-' | '_' | '!'));
    // "!!!" and "$$$" trail words in spam; keep one such mark as its own token.
    let n = w.chars().count();
    if n < MIN_TOKEN_CHARS {
        return None;
    }
    let digits = w.chars().filter(|c| c.is_ascii_digit()).count();
    let money = w.starts_with('$');
    // Numbers (dates, times, ids) and mostly-digit strings (hashes, phone
    // numbers) recur by chance only; prices are kept.
    if !money && digits * 2 > n {
        return None;
    }
    if n > MAX_TOKEN_CHARS {
        let first = w.chars().next()?.to_lowercase().next()?;
        return Some(format!("{prefix}skip:{first} {}", n / 10 * 10));
    }
    let mut t = String::with_capacity(prefix.len() + w.len());
    t.push_str(prefix);
    t.push_str(w);
    Some(t)
}

/// The tokens of one message given as its first bytes (the caller applies
/// the byte budget).
pub fn tokenize(raw: &[u8], max_tokens: usize) -> Vec<String> {
    let mut set = TokenSet::new(max_tokens);
    match MessageParser::default().parse(raw) {
        Some(msg) => message(&mut set, &msg, 0),
        None => set.words("", &String::from_utf8_lossy(raw)),
    }
    set.into_sorted()
}

fn message(set: &mut TokenSet, msg: &Message, depth: usize) {
    for (i, part) in msg.parts.iter().enumerate() {
        if set.full() {
            return;
        }
        // Part 0 is the message itself: its header is the message header.
        let headers = part.headers.as_slice();
        if i == 0 && depth == 0 {
            for h in headers {
                header(set, h.name.as_str(), &h.name, &h.value);
            }
        } else {
            for h in headers {
                let name = h.name.as_str().to_ascii_lowercase();
                if name.starts_with("content-") {
                    header(set, &name, &h.name, &h.value);
                }
            }
        }
        match &part.body {
            PartType::Text(text) => set.words("", text),
            PartType::Html(html) => html_tokens(set, html),
            PartType::Binary(_) | PartType::InlineBinary(_) => attachment(set, part),
            PartType::Message(inner) if depth < MAX_NESTING => message(set, inner, depth + 1),
            PartType::Message(_) | PartType::Multipart(_) => {}
        }
    }
}

fn attachment(set: &mut TokenSet, part: &mail_parser::MessagePart) {
    let ct = part
        .headers
        .iter()
        .find(|h| h.name == HeaderName::ContentType)
        .and_then(|h| h.value.as_content_type());
    if let Some(ct) = ct {
        let subtype = ct.c_subtype.as_deref().unwrap_or("");
        set.insert(format!("mime:{}/{}", ct.c_type, subtype).to_lowercase());
    }
    let name = part
        .headers
        .iter()
        .filter_map(|h| h.value.as_content_type())
        .find_map(|ct| ct.attribute("filename").or_else(|| ct.attribute("name")));
    if let Some(ext) = name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 8)
    {
        set.insert(format!("ext:{}", ext.to_lowercase()));
    }
}

fn header(set: &mut TokenSet, name: &str, kind: &HeaderName, value: &HeaderValue) {
    let lname = name.to_ascii_lowercase();
    if ignored_header(&lname) || lname.len() > 40 {
        return;
    }
    // Our Authentication-Results field is the topmost one (src/authres):
    // its results are tokens of their own; lower ones may be forged.
    if lname == "authentication-results" {
        if !set.seen_auth_results {
            set.seen_auth_results = true;
            if let HeaderValue::Text(t) = value {
                crate::authres::tokens(t)
                    .into_iter()
                    .for_each(|t| set.insert(t));
            }
        }
        return;
    }
    set.insert(format!("hdr:{lname}"));
    let prefix = match kind {
        HeaderName::Subject => "subj:",
        HeaderName::From | HeaderName::Sender => "from:",
        HeaderName::To | HeaderName::Cc => "to:",
        HeaderName::ReplyTo => "rt:",
        HeaderName::ReturnPath => "rp:",
        HeaderName::Received => "rcvd:",
        HeaderName::ContentType | HeaderName::ContentDisposition => "ct:",
        HeaderName::MessageId => "mid:",
        _ if lname == "x-mailer" || lname == "user-agent" => "xm:",
        _ => "head:",
    };
    match value {
        HeaderValue::Text(t) if prefix == "mid:" => message_id(set, t),
        HeaderValue::TextList(l) if prefix == "mid:" => l.iter().for_each(|t| message_id(set, t)),
        HeaderValue::Text(t) => set.words(prefix, t),
        HeaderValue::TextList(l) => l.iter().for_each(|t| set.words(prefix, t)),
        HeaderValue::Address(a) => address(set, prefix, a),
        HeaderValue::ContentType(ct) => {
            let subtype = ct.c_subtype.as_deref().unwrap_or("");
            set.insert(format!("{prefix}{}/{subtype}", ct.c_type).to_lowercase());
            for attr in ct.attributes.iter().flatten() {
                if attr.name.eq_ignore_ascii_case("charset") {
                    set.insert(format!("{prefix}charset:{}", attr.value.to_lowercase()));
                } else if !attr.name.eq_ignore_ascii_case("boundary") {
                    set.words(prefix, &attr.value);
                }
            }
        }
        HeaderValue::Received(r) => {
            for host in [&r.from, &r.helo, &r.by].into_iter().flatten() {
                match host {
                    mail_parser::Host::Name(n) => host_tokens(set, prefix, n),
                    mail_parser::Host::IpAddr(ip) => ip_tokens(set, prefix, ip),
                }
            }
            if let Some(ip) = &r.from_ip {
                ip_tokens(set, prefix, ip);
            }
            if let Some(n) = &r.from_iprev {
                host_tokens(set, prefix, n);
            }
        }
        HeaderValue::DateTime(_) | HeaderValue::Empty => {}
    }
}

fn message_id(set: &mut TokenSet, id: &str) {
    if let Some((_, domain)) = id.rsplit_once('@') {
        host_tokens(set, "mid:", domain.trim_end_matches('>'));
    }
}

fn address(set: &mut TokenSet, prefix: &str, a: &Address) {
    let mut one = |addr: &mail_parser::Addr| {
        if let Some(name) = &addr.name {
            set.words(prefix, name);
        }
        if let Some(email) = &addr.address {
            let email = email.to_lowercase();
            match email.rsplit_once('@') {
                Some((local, domain)) => {
                    set.words(prefix, local);
                    host_tokens(set, prefix, domain);
                }
                None => set.words(prefix, &email),
            }
        }
    };
    match a {
        Address::List(list) => list.iter().for_each(&mut one),
        Address::Group(groups) => groups
            .iter()
            .flat_map(|g| g.addresses.iter())
            .for_each(&mut one),
    }
}

/// A host name gives itself and its registrable-looking tail
/// (`mail.spam.example.biz` also gives `example.biz`), so a spammer's
/// throw-away subdomains still hit.
fn host_tokens(set: &mut TokenSet, prefix: &str, host: &str) {
    let host = host
        .trim_matches(|c: char| c == '.' || c == '[' || c == ']')
        .to_lowercase();
    if host.is_empty() || host.len() > 100 || !host.chars().all(is_word_char) {
        return;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        ip_tokens(set, prefix, &ip);
        return;
    }
    set.insert(format!("{prefix}{host}"));
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() > 2 {
        set.insert(format!("{prefix}{}", labels[labels.len() - 2..].join(".")));
    }
}

/// An address and its /24 (or /48), as bogofilter's block_on_subnets does:
/// spam comes from neighbourhoods.
fn ip_tokens(set: &mut TokenSet, prefix: &str, ip: &std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            set.insert(format!("{prefix}{v4}"));
            set.insert(format!("{prefix}{}.{}.{}", o[0], o[1], o[2]));
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            set.insert(format!("{prefix}{v6}"));
            set.insert(format!("{prefix}{:x}:{:x}:{:x}", s[0], s[1], s[2]));
        }
    }
}

/// Reduces HTML to its text, taking tag names and link hosts as tokens.
fn html_tokens(set: &mut TokenSet, html: &str) {
    let mut text = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        text.push(' ');
        let after = &rest[lt + 1..];
        let end = after.find('>').unwrap_or(after.len());
        tag(set, &after[..end]);
        rest = after.get(end + 1..).unwrap_or("");
        if set.full() {
            return;
        }
    }
    text.push_str(rest);
    set.words("", &decode_entities(&text));
}

fn tag(set: &mut TokenSet, inner: &str) {
    if inner.starts_with('!') || inner.starts_with('?') {
        return; // comments, doctype
    }
    let name: String = inner
        .trim_start_matches('/')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    if !name.is_empty() && name.len() <= 12 {
        set.insert(format!("tag:{name}"));
    }
    // Hosts of href=, src=, action= and background= values.
    let lower = inner.to_ascii_lowercase();
    for attr in ["href", "src", "action", "background"] {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(attr) {
            let at = from + pos + attr.len();
            from = at;
            let value = inner[at..]
                .trim_start()
                .strip_prefix('=')
                .map(|v| v.trim_start().trim_start_matches(['"', '\'']));
            if let Some(v) = value {
                url_tokens(set, v);
            }
        }
    }
}

fn url_tokens(set: &mut TokenSet, value: &str) {
    let lower = value.trim().to_ascii_lowercase();
    let rest = if let Some((scheme, rest)) = lower.split_once("://") {
        if !matches!(scheme, "http" | "https" | "ftp") {
            return;
        }
        rest
    } else if let Some(addr) = lower.strip_prefix("mailto:") {
        addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    } else {
        return;
    };
    let host_end = rest
        .find(['/', '?', '#', ':', '"', '\'', ' ', '>'])
        .unwrap_or(rest.len());
    let host = rest[..host_end].rsplit('@').next().unwrap_or("");
    host_tokens(set, "url:", host);
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';').filter(|&i| i <= 8);
        let decoded = semi.and_then(|i| {
            let name = &after[..i];
            let c = match name {
                "nbsp" => ' ',
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)?
                }
            };
            Some((c, i))
        });
        match decoded {
            Some((c, i)) => {
                out.push(c);
                rest = &after[i + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(tokens: &[String], t: &str) -> bool {
        tokens.iter().any(|x| x == t)
    }

    #[test]
    fn headers_are_prefixed_and_body_words_lowercased() {
        let msg = b"From: Cheap Pills <offers@mail.pharma.example.biz>\r\n\
Subject: =?utf-8?B?RlJFRSBWaWFncmE=?=\r\n\
Received: from relay.example.net (relay.example.net [192.0.2.7]) by mx.example.org\r\n\
X-Spam-Status: Yes, score=1.0\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n\
Buy NOW caf=E9 prices $99 only 1234567 !!!\r\n";
        let t = tokenize(msg, 1000);
        for want in [
            "subj:FREE",
            "subj:Viagra",
            "from:Cheap",
            "from:offers",
            "from:mail.pharma.example.biz",
            "from:example.biz",
            "rcvd:relay.example.net",
            "rcvd:192.0.2.7",
            "rcvd:192.0.2",
            "ct:text/plain",
            "ct:charset:iso-8859-1",
            "hdr:subject",
            "Buy",
            "NOW",
            "café",
            "prices",
            "$99",
            "only",
        ] {
            assert!(has(&t, want), "{want} missing from {t:?}");
        }
        assert!(!t.iter().any(|x| x.contains("1234567")), "{t:?}");
        assert!(!t.iter().any(|x| x.contains("x-spam")), "{t:?}");
        assert!(!t.iter().any(|x| x.contains("score")), "{t:?}");
    }

    #[test]
    fn html_gives_text_tags_and_link_hosts() {
        let msg = b"Subject: hi\r\nContent-Type: text/html\r\n\r\n\
<html><body><font color=red>Click&nbsp;HERE</font> <a href=\"http://www.win.example.com/x?y\">now</a>\
<img src='https://cdn.example.org/a.gif'></body></html>\r\n";
        let t = tokenize(msg, 1000);
        for want in [
            "Click",
            "HERE",
            "now",
            "tag:font",
            "tag:img",
            "url:www.win.example.com",
            "url:example.com",
            "url:cdn.example.org",
        ] {
            assert!(has(&t, want), "{want} missing from {t:?}");
        }
        assert!(!has(&t, "color"), "{t:?}");
    }

    #[test]
    fn base64_parts_and_attachments() {
        let msg = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
aGVsbG8gd29ybGQgbW9uZXk=\r\n\
--b\r\nContent-Type: application/octet-stream; name=\"setup.EXE\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n";
        let t = tokenize(msg, 1000);
        for want in [
            "hello",
            "world",
            "money",
            "ext:exe",
            "mime:application/octet-stream",
        ] {
            assert!(has(&t, want), "{want} missing from {t:?}");
        }
    }

    #[test]
    fn long_words_are_summarised() {
        let long = "a".repeat(45);
        let t = tokenize(format!("Subject: x\r\n\r\n{long} ok\r\n").as_bytes(), 100);
        assert!(has(&t, "skip:a 40"), "{t:?}");
        assert!(!has(&t, &long));
    }

    #[test]
    fn token_count_is_bounded() {
        let body: String = (0..5000).map(|i| format!("word{i}x ")).collect();
        let t = tokenize(format!("Subject: x\r\n\r\n{body}").as_bytes(), 100);
        assert_eq!(t.len(), 100);
    }

    /// Only the topmost Authentication-Results (ours) gives auth: tokens.
    #[test]
    fn auth_results_tokens_from_the_top_field_only() {
        let raw = b"Authentication-Results: mx.example.test;\r\n\tspf=fail smtp.mailfrom=a@b.example;\r\n\tdkim=pass header.d=b.example header.s=s;\r\n\tdmarc=fail (p=reject) header.from=c.example\r\n\
Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=forged@c.example\r\n\
From: x@c.example\r\nSubject: hello there\r\n\r\nbody words\r\n";
        let t = tokenize(raw, 1000);
        for want in [
            "auth:spf=fail",
            "auth:dkim=pass:b.example",
            "auth:dmarc=fail",
        ] {
            assert!(has(&t, want), "{want}: {t:?}");
        }
        assert!(!has(&t, "auth:spf=pass"), "{t:?}");
    }

    #[test]
    fn entities() {
        assert_eq!(
            decode_entities("a&amp;b&#65;&#x42;&bogus;&"),
            "a&bAB&bogus;&"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let _ = tokenize(&bytes, 500);
        }

        #[test]
        fn never_panics_on_mime_like_input(
            s in "(Subject: [a-z=?]{0,20}\r\n|Content-Type: (text/html|multipart/mixed; boundary=b|text/plain; charset=[a-z0-9-]{0,12})\r\n|Content-Transfer-Encoding: (base64|quoted-printable)\r\n|\r\n|--b\r\n|<a href=[^>]{0,30}>|&#[0-9x]{0,9};|[A-Za-z0-9+/=]{0,40}\r\n){0,30}"
        ) {
            let _ = tokenize(s.as_bytes(), 500);
        }
    }
}
