//! SORT (RFC 5256): the sort keys of a message and the base subject.

use crate::message::{Address, Envelope};

/// One SORT criterion (RFC 5256 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
}

/// A message's value for one criterion; compared as the RFC says
/// (numbers as numbers, strings by the i;ascii-casemap collation, which on
/// the lower-cased strings kept here is a byte comparison).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue {
    Number(i64),
    Text(String),
}

/// The first mailbox of an address list, lower-cased (RFC 5256 3: "the
/// addr-mailbox of the first address"); empty when there is none.
pub fn first_mailbox(list: &[Address]) -> String {
    list.iter()
        .find(|a| a.host.is_some())
        .and_then(|a| a.mailbox.as_deref())
        .map(|m| String::from_utf8_lossy(m).to_ascii_lowercase())
        .unwrap_or_default()
}

/// The key of `key` for a message: its envelope (None: an empty one),
/// INTERNALDATE and size.
pub fn value(key: SortKey, env: Option<&Envelope>, internal_date: i64, size: u64) -> SortValue {
    let empty = Envelope::default();
    let env = env.unwrap_or(&empty);
    match key {
        SortKey::Arrival => SortValue::Number(internal_date),
        SortKey::Size => SortValue::Number(size as i64),
        // RFC 5256 3: a missing or unparseable Date: sorts by INTERNALDATE.
        SortKey::Date => SortValue::Number(
            env.date
                .as_deref()
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| chrono::DateTime::parse_from_rfc2822(d.trim()).ok())
                .map_or(internal_date, |t| t.timestamp()),
        ),
        SortKey::From => SortValue::Text(first_mailbox(&env.from)),
        SortKey::To => SortValue::Text(first_mailbox(&env.to)),
        SortKey::Cc => SortValue::Text(first_mailbox(&env.cc)),
        SortKey::Subject => SortValue::Text(base_subject(&decode_subject(
            env.subject.as_deref().unwrap_or(b""),
        ))),
    }
}

/// The Subject: with RFC 2047 encoded-words decoded.
fn decode_subject(raw: &[u8]) -> String {
    if !raw.windows(2).any(|w| w == b"=?") {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut m = b"Subject: ".to_vec();
    m.extend_from_slice(raw);
    m.extend_from_slice(b"\r\n\r\n");
    mail_parser::MessageParser::new()
        .parse(&m)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}

/// RFC 5256 2.1: the subject without reply/forward markers, list tags and
/// extra whitespace, lower-cased for comparison.
pub fn base_subject(subject: &str) -> String {
    // (1) whitespace runs become one space.
    let mut s: String = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        // (2) trailing "(fwd)" and whitespace.
        loop {
            let t = s.trim_end();
            let lower = t.to_ascii_lowercase();
            if lower.ends_with("(fwd)") {
                s = t[..t.len() - 5].to_string();
            } else {
                s = t.to_string();
                break;
            }
        }
        // (3) and (4): leading "re:", "fw:", "fwd:" with optional blobs, and
        // leading blobs when something is left after them.
        loop {
            let before = s.len();
            s = strip_leader(&s);
            if let Some(rest) = strip_blob(&s)
                && !rest.is_empty()
            {
                s = rest;
            }
            if s.len() == before {
                break;
            }
        }
        // (6) "[fwd: ... ]" around the whole subject.
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].trim().to_string();
            continue;
        }
        return s.to_lowercase();
    }
}

/// `[...]` and the whitespace after it, at the start.
fn strip_blob(s: &str) -> Option<String> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find([']', '['])?;
    if rest.as_bytes()[end] != b']' {
        return None;
    }
    Some(rest[end + 1..].trim_start().to_string())
}

/// One `*subj-blob subj-refwd` at the start (RFC 5256 5: subj-refwd =
/// ("re" / ("fw" ["d"])) *WSP [subj-blob] ":").
fn strip_leader(s: &str) -> String {
    let mut rest = s.trim_start().to_string();
    while let Some(r) = strip_blob(&rest) {
        rest = r;
    }
    let lower = rest.to_ascii_lowercase();
    let word = ["re", "fwd", "fw"].iter().find(|w| lower.starts_with(*w));
    let Some(word) = word else {
        return s.to_string();
    };
    let mut after = rest[word.len()..].trim_start().to_string();
    if let Some(r) = strip_blob(&after) {
        after = r;
    }
    match after.strip_prefix(':') {
        Some(r) => r.trim_start().to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        for (subject, base) in [
            ("Hello", "hello"),
            ("Re: Hello", "hello"),
            ("RE: re:  Fwd: Hello", "hello"),
            ("Re[2]: Hello", "hello"),
            ("[list] Re: Hello", "hello"),
            ("Hello (fwd)", "hello"),
            ("[Fwd: Hello]", "hello"),
            ("[Fwd: Re: Hello (fwd)]", "hello"),
            ("[list]", "[list]"),
            ("Re:", ""),
            ("Regarding  the   plan", "regarding the plan"),
            ("", ""),
        ] {
            assert_eq!(base_subject(subject), base, "{subject:?}");
        }
        assert_eq!(
            decode_subject(b"=?utf-8?q?Re:_Gr=C3=BC=C3=9Fe?="),
            "Re: Grüße"
        );
        assert_eq!(
            base_subject(&decode_subject(b"=?utf-8?q?Re:_Gr=C3=BC=C3=9Fe?=")),
            "grüße"
        );
    }

    #[test]
    fn dates_fall_back_to_internal_date() {
        let env = Envelope {
            date: Some(b"Tue, 14 Nov 2023 22:13:20 +0000".to_vec()),
            ..Envelope::default()
        };
        assert_eq!(
            value(SortKey::Date, Some(&env), 5, 1),
            SortValue::Number(1_700_000_000)
        );
        assert_eq!(value(SortKey::Date, None, 5, 1), SortValue::Number(5));
    }
}
