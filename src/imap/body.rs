//! Which bytes of a stored message a FETCH section names (RFC 9051 6.4.5),
//! header field filtering, and streaming content-transfer decoders for
//! BINARY (RFC 3516) and body search.

use super::parse::{Section, SectionText};
use crate::message::{MessageMeta, Part};

/// What a section resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extent {
    /// Bytes `start..end` of the message, served as they are.
    Range(u64, u64),
    /// A header (`start..end`) of which only some fields are served.
    Fields {
        start: u64,
        end: u64,
        names: Vec<String>,
        not: bool,
    },
    /// A section that does not exist: served as an empty string.
    Empty,
}

/// Resolves a section against the message structure.
pub fn extent(meta: &MessageMeta, section: &Section) -> Extent {
    let root = &meta.root;
    let (target, message) = if section.part.is_empty() {
        (root, Some(root))
    } else {
        match root.section(&section.part) {
            Some(p) => (p, p.is_message().then(|| p.children.first()).flatten()),
            None => return Extent::Empty,
        }
    };
    let header_fields = |m: &Part, names: &[String], not: bool| Extent::Fields {
        start: m.header_start,
        end: m.body_start,
        names: names.to_vec(),
        not,
    };
    match (&section.text, message) {
        (None, _) if section.part.is_empty() => Extent::Range(0, meta.size),
        (None, _) => Extent::Range(target.body_start, target.end),
        (Some(SectionText::Mime), _) => Extent::Range(target.header_start, target.body_start),
        (Some(SectionText::Header), Some(m)) => Extent::Range(m.header_start, m.body_start),
        (Some(SectionText::Text), Some(m)) => Extent::Range(m.body_start, m.end),
        (Some(SectionText::HeaderFields(n)), Some(m)) => header_fields(m, n, false),
        (Some(SectionText::HeaderFieldsNot(n)), Some(m)) => header_fields(m, n, true),
        (Some(_), None) => Extent::Empty,
    }
}

/// The section name as echoed in the FETCH response, e.g. `1.2.HEADER`.
pub fn section_name(section: &Section) -> String {
    let mut s: String = section
        .part
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(".");
    if let Some(t) = &section.text {
        if !s.is_empty() {
            s.push('.');
        }
        match t {
            SectionText::Header => s.push_str("HEADER"),
            SectionText::Text => s.push_str("TEXT"),
            SectionText::Mime => s.push_str("MIME"),
            SectionText::HeaderFields(n) | SectionText::HeaderFieldsNot(n) => {
                s.push_str(if matches!(t, SectionText::HeaderFields(_)) {
                    "HEADER.FIELDS ("
                } else {
                    "HEADER.FIELDS.NOT ("
                });
                s.push_str(
                    &n.iter()
                        .map(|f| f.to_ascii_uppercase())
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                s.push(')');
            }
        }
    }
    s
}

/// Keeps the header fields named (or all but those, with `not`), each with
/// its continuation lines, and the blank line that ends a header.
pub fn filter_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ') | Some(b'\t')) {
            let name = line
                .iter()
                .position(|&b| b == b':')
                .map(|i| &line[..i])
                .unwrap_or(b"");
            let listed = names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii_end()));
            keep = listed != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether a header holds field `name` with `needle` in its value
/// (ASCII case-insensitive, unfolded).
pub fn header_contains(header: &[u8], name: &str, needle: &[u8]) -> bool {
    let mut value: Option<Vec<u8>> = None;
    let check = |v: &Option<Vec<u8>>| v.as_ref().is_some_and(|v| contains_ci(v, needle));
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if matches!(line.first(), Some(b' ') | Some(b'\t')) {
            if let Some(v) = value.as_mut() {
                v.extend_from_slice(line.trim_ascii_end());
            }
            continue;
        }
        if check(&value) {
            return true;
        }
        value = None;
        if let Some(i) = line.iter().position(|&b| b == b':')
            && line[..i]
                .trim_ascii_end()
                .eq_ignore_ascii_case(name.as_bytes())
        {
            value = Some(line[i + 1..].trim_ascii().to_vec());
        }
    }
    check(&value)
}

/// ASCII case-insensitive substring test; an empty needle matches.
pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let last = match hay.len().checked_sub(needle.len()) {
        Some(l) => l,
        None => return false,
    };
    // Scan for the first byte, then compare the rest.
    hay[..=last]
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == lo || b == up)
        .any(|(i, _)| hay[i + 1..i + needle.len()].eq_ignore_ascii_case(&needle[1..]))
}

/// Finds a needle in a stream fed piece by piece, keeping only the last
/// `needle.len() - 1` bytes between pieces.
pub struct StreamSearch<'a> {
    needle: &'a [u8],
    carry: Vec<u8>,
    pub found: bool,
}

impl<'a> StreamSearch<'a> {
    pub fn new(needle: &'a [u8]) -> Self {
        StreamSearch {
            needle,
            carry: Vec::new(),
            found: needle.is_empty(),
        }
    }

    pub fn feed(&mut self, piece: &[u8]) {
        if self.found {
            return;
        }
        let keep = self.needle.len().saturating_sub(1);
        // Matches spanning the boundary: the carry and the piece's start.
        let mut joint = std::mem::take(&mut self.carry);
        joint.extend_from_slice(&piece[..piece.len().min(keep)]);
        if contains_ci(&joint, self.needle) || contains_ci(piece, self.needle) {
            self.found = true;
            return;
        }
        if piece.len() >= keep {
            joint.clear();
            joint.extend_from_slice(&piece[piece.len() - keep..]);
        } else {
            let excess = joint.len().saturating_sub(keep);
            joint.drain(..excess);
        }
        self.carry = joint;
    }
}

/// Decodes a Content-Transfer-Encoding incrementally.
pub enum Decoder {
    Identity,
    Base64 { quad: [u8; 4], n: usize },
    QuotedPrintable { pending: Vec<u8> },
}

impl Decoder {
    /// `None` for an encoding we cannot decode (RFC 3516: UNKNOWN-CTE).
    pub fn for_encoding(encoding: &str) -> Option<Decoder> {
        match encoding.to_ascii_uppercase().as_str() {
            "7BIT" | "8BIT" | "BINARY" | "" => Some(Decoder::Identity),
            "BASE64" => Some(Decoder::Base64 { quad: [0; 4], n: 0 }),
            "QUOTED-PRINTABLE" => Some(Decoder::QuotedPrintable {
                pending: Vec::new(),
            }),
            _ => None,
        }
    }

    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self {
            Decoder::Identity => out.extend_from_slice(input),
            Decoder::Base64 { quad, n } => {
                for &c in input {
                    let v = match c {
                        b'A'..=b'Z' => c - b'A',
                        b'a'..=b'z' => c - b'a' + 26,
                        b'0'..=b'9' => c - b'0' + 52,
                        b'+' => 62,
                        b'/' => 63,
                        _ => continue,
                    };
                    quad[*n] = v;
                    *n += 1;
                    if *n == 4 {
                        out.push(quad[0] << 2 | quad[1] >> 4);
                        out.push(quad[1] << 4 | quad[2] >> 2);
                        out.push(quad[2] << 6 | quad[3]);
                        *n = 0;
                    }
                }
            }
            Decoder::QuotedPrintable { pending } => {
                pending.extend_from_slice(input);
                let used = qp_decode(pending, out, false);
                pending.drain(..used);
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            Decoder::Identity => {}
            Decoder::Base64 { quad, n } => {
                if *n >= 2 {
                    out.push(quad[0] << 2 | quad[1] >> 4);
                }
                if *n >= 3 {
                    out.push(quad[1] << 4 | quad[2] >> 2);
                }
                *n = 0;
            }
            Decoder::QuotedPrintable { pending } => {
                qp_decode(pending, out, true);
                pending.clear();
            }
        }
    }
}

/// Decodes quoted-printable from `input`; returns how many bytes were used
/// (an incomplete `=` sequence at the end waits for more unless `last`).
fn qp_decode(input: &[u8], out: &mut Vec<u8>, last: bool) -> usize {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c != b'=' {
            out.push(c);
            i += 1;
            continue;
        }
        let rest = &input[i + 1..];
        if rest.len() < 2 && !last {
            return i;
        }
        match rest {
            [b'\r', b'\n', ..] => i += 3,
            [b'\n', ..] => i += 2,
            [a, b, ..] if hex(*a).is_some() && hex(*b).is_some() => {
                out.push(hex(*a).unwrap_or(0) << 4 | hex(*b).unwrap_or(0));
                i += 3;
            }
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_fields_with_continuations() {
        let h = b"From: a\r\nSubject: x\r\n y\r\nTo: b\r\n\r\n";
        assert_eq!(
            filter_fields(h, &["subject".into()], false),
            b"Subject: x\r\n y\r\n\r\n"
        );
        assert_eq!(
            filter_fields(h, &["subject".into()], true),
            b"From: a\r\nTo: b\r\n\r\n"
        );
        assert!(header_contains(h, "subject", b"X Y"));
        assert!(!header_contains(h, "to", b"a"));
    }

    #[test]
    fn stream_search_across_pieces() {
        let mut s = StreamSearch::new(b"needle");
        for piece in [&b"xxxne"[..], b"e", b"dLe yy"] {
            s.feed(piece);
        }
        assert!(s.found);
        let mut s = StreamSearch::new(b"needle");
        s.feed(b"need");
        s.feed(b"xle");
        assert!(!s.found);
    }

    #[test]
    fn decoders_stream() {
        let mut out = Vec::new();
        let mut d = Decoder::for_encoding("base64").unwrap();
        for piece in [&b"aGVs"[..], b"bG8g\r\nd29y", b"bGQ="] {
            d.feed(piece, &mut out);
        }
        d.finish(&mut out);
        assert_eq!(out, b"hello world");
        let mut out = Vec::new();
        let mut d = Decoder::for_encoding("quoted-printable").unwrap();
        for piece in [&b"caf="[..], b"C3=A9 soft=", b"\r\nline"] {
            d.feed(piece, &mut out);
        }
        d.finish(&mut out);
        assert_eq!(out, "café softline".as_bytes());
    }
}
