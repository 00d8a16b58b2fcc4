//! DKIM canonicalization (RFC 6376 3.4), shared by the signer and the
//! verifier: header fields one at a time, the body streamed in chunks.

use ring::digest;

/// `c=` of a signature, for the header or the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonicalization {
    Simple,
    Relaxed,
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Appends one canonicalized header field, with its CRLF.
///
/// `name` is the field name as written (everything before the colon) and
/// `value` everything after the colon up to, not including, the field's
/// final CRLF (folding CRLFs included).
pub fn header(c: Canonicalization, name: &str, value: &[u8], out: &mut Vec<u8>) {
    header_no_crlf(c, name, value, out);
    out.extend_from_slice(b"\r\n");
}

/// As `header`, without the final CRLF: the form of the DKIM-Signature
/// field itself in the signed data (RFC 6376 3.7).
pub fn header_no_crlf(c: Canonicalization, name: &str, value: &[u8], out: &mut Vec<u8>) {
    match c {
        Canonicalization::Simple => {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value);
        }
        Canonicalization::Relaxed => {
            // 3.4.2: lower-case name without WSP around it; value unfolded,
            // WSP runs reduced to one SP, WSP at both ends removed.
            out.extend(
                name.trim_matches([' ', '\t'])
                    .bytes()
                    .map(|b| b.to_ascii_lowercase()),
            );
            out.push(b':');
            let mut pending_wsp = false;
            let mut started = false;
            for &b in value {
                match b {
                    b'\r' | b'\n' => {}
                    b if is_wsp(b) => pending_wsp = true,
                    b => {
                        if pending_wsp && started {
                            out.push(b' ');
                        }
                        pending_wsp = false;
                        started = true;
                        out.push(b);
                    }
                }
            }
        }
    }
}

/// Which field instance each name of an `h=` list signs (RFC 6376 5.4.2):
/// the last unused instance of that name, searching from the bottom up;
/// `None` for a name with no instance left (it signs as the empty string,
/// which is what makes oversigning work).
pub fn select_fields<N: AsRef<str>, V>(fields: &[(N, V)], signed: &[&str]) -> Vec<Option<usize>> {
    let mut used = vec![false; fields.len()];
    signed
        .iter()
        .map(|want| {
            let i = (0..fields.len()).rev().find(|&i| {
                !used[i]
                    && fields[i]
                        .0
                        .as_ref()
                        .trim_end_matches([' ', '\t'])
                        .eq_ignore_ascii_case(want)
            })?;
            used[i] = true;
            Some(i)
        })
        .collect()
}

/// The data whose hash is signed (RFC 6376 3.7): the `signed` fields, then
/// the DKIM-Signature field (`dkim_value` with an empty `b=`) without CRLF.
pub fn signed_data<N: AsRef<str>, V: AsRef<[u8]>>(
    c: Canonicalization,
    fields: &[(N, V)],
    signed: &[&str],
    dkim_name: &str,
    dkim_value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    for i in select_fields(fields, signed).into_iter().flatten() {
        header(c, fields[i].0.as_ref(), fields[i].1.as_ref(), &mut out);
    }
    header_no_crlf(c, dkim_name, dkim_value, &mut out);
    out
}

/// Splits a header section (the bytes before the empty line) into fields:
/// `(name as written, value after the colon without the final CRLF)`.
/// Lines without a colon are skipped; they cannot be signed.
pub fn parse_fields(section: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    let mut lines = section.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() && lines.peek().is_none() {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().copied().is_some_and(is_wsp) {
            if let Some((_, value)) = fields.last_mut() {
                value.extend_from_slice(b"\r\n");
                value.extend_from_slice(line);
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            fields.push((name, line[colon + 1..].to_vec()));
        }
    }
    fields
}

/// SHA-256 of a canonicalized body, fed in chunks of any size (lines may
/// be split anywhere, CR and LF included): the `bh=` value. The body is the
/// message after the empty line ending the header.
pub struct BodyHasher {
    canon: Canonicalization,
    ctx: digest::Context,
    buf: Vec<u8>,
    /// `l=`: stop after this many canonical bytes.
    limit: Option<u64>,
    hashed: u64,
    /// A CR seen last, not yet known to start a CRLF.
    cr: bool,
    /// CRLFs held back: they end the body only if more content follows
    /// (3.4.3 and 3.4.4 drop trailing empty lines).
    held_crlfs: u64,
    /// Relaxed: the current line has content.
    line_content: bool,
    /// Relaxed: a WSP run not yet written (it becomes one SP, or nothing at
    /// the end of the line).
    wsp: bool,
}

impl BodyHasher {
    pub fn new(canon: Canonicalization) -> BodyHasher {
        BodyHasher {
            canon,
            ctx: digest::Context::new(&digest::SHA256),
            buf: Vec::with_capacity(8192),
            limit: None,
            hashed: 0,
            cr: false,
            held_crlfs: 0,
            line_content: false,
            wsp: false,
        }
    }

    /// Hashes at most `limit` canonical bytes (the verifier's `l=`).
    pub fn with_limit(canon: Canonicalization, limit: u64) -> BodyHasher {
        BodyHasher {
            limit: Some(limit),
            ..BodyHasher::new(canon)
        }
    }

    /// Canonical body bytes produced so far (all of them, past any limit).
    pub fn canonical_len(&self) -> u64 {
        self.hashed + self.buf.len() as u64
    }

    pub fn update(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.cr {
                self.cr = false;
                if b == b'\n' {
                    self.end_line();
                    continue;
                }
                self.content(b'\r');
            }
            match b {
                b'\r' => self.cr = true,
                b if is_wsp(b) && self.canon == Canonicalization::Relaxed => self.wsp = true,
                b => self.content(b),
            }
        }
    }

    /// The SHA-256 of the canonical body.
    pub fn finish(self) -> [u8; 32] {
        self.finish_counted().0
    }

    /// The SHA-256 of the canonical body and the canonical body's whole
    /// length (past any limit): the verifier checks `l=` against it.
    pub fn finish_counted(mut self) -> ([u8; 32], u64) {
        if self.cr {
            self.cr = false;
            self.content(b'\r');
        }
        match self.canon {
            // 3.4.3: an empty body, or one without final CRLF, becomes CRLF.
            Canonicalization::Simple => self.emit(b"\r\n"),
            // 3.4.4: a non-empty last line without CRLF gets one; an empty
            // body stays empty.
            Canonicalization::Relaxed => {
                if self.line_content {
                    self.emit(b"\r\n");
                }
            }
        }
        let len = self.canonical_len();
        self.flush();
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ctx.finish().as_ref());
        (out, len)
    }

    fn content(&mut self, b: u8) {
        while self.held_crlfs > 0 {
            self.held_crlfs -= 1;
            self.emit(b"\r\n");
        }
        if self.wsp {
            self.wsp = false;
            self.emit(b" ");
        }
        self.line_content = true;
        self.emit(&[b]);
    }

    fn end_line(&mut self) {
        self.wsp = false;
        if self.canon == Canonicalization::Relaxed && self.line_content {
            // A line with content keeps its CRLF at once; only empty lines
            // can be trailing.
            self.emit(b"\r\n");
        } else {
            self.held_crlfs += 1;
        }
        self.line_content = false;
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= 8192 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let take = match self.limit {
            Some(l) => (l.saturating_sub(self.hashed)).min(self.buf.len() as u64) as usize,
            None => self.buf.len(),
        };
        self.ctx.update(&self.buf[..take]);
        self.hashed += self.buf.len() as u64;
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Canonicalization::{Relaxed, Simple};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    fn bh(c: Canonicalization, body: &[u8]) -> String {
        let mut h = BodyHasher::new(c);
        h.update(body);
        B64.encode(h.finish())
    }

    fn sha(bytes: &[u8]) -> String {
        B64.encode(digest::digest(&digest::SHA256, bytes))
    }

    /// RFC 6376 3.4.5, the example.
    #[test]
    fn rfc6376_example() {
        let mut out = Vec::new();
        header(Relaxed, "A", b" X", &mut out);
        header(Relaxed, "B ", b" Y\t\r\n\tZ  ", &mut out);
        assert_eq!(out, b"a:X\r\nb:Y Z\r\n");
        let mut out = Vec::new();
        header(Simple, "B ", b" Y\t\r\n\tZ  ", &mut out);
        assert_eq!(out, b"B : Y\t\r\n\tZ  \r\n");
        let body = b" C \r\nD \t E\r\n\r\n\r\n";
        assert_eq!(bh(Relaxed, body), sha(b" C\r\nD E\r\n"));
        assert_eq!(bh(Simple, body), sha(b" C \r\nD \t E\r\n"));
    }

    #[test]
    fn empty_bodies() {
        // RFC 6376 3.4.3 / 3.4.4 and errata 1384.
        assert_eq!(
            bh(Simple, b""),
            "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY="
        );
        assert_eq!(
            bh(Relaxed, b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(bh(Relaxed, b"\r\n\r\n"), bh(Relaxed, b""));
        assert_eq!(bh(Simple, b"\r\n\r\n"), bh(Simple, b""));
    }

    #[test]
    fn missing_final_crlf_added() {
        assert_eq!(bh(Relaxed, b"abc  "), sha(b"abc\r\n"));
        assert_eq!(bh(Simple, b"abc"), sha(b"abc\r\n"));
        assert_eq!(bh(Relaxed, b"a\r\n \t \r\nb"), sha(b"a\r\n\r\nb\r\n"));
    }

    /// RFC 8463 appendix A.3: the body hash of the example message.
    #[test]
    fn rfc8463_body_hash() {
        let body = b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n";
        assert_eq!(
            bh(Relaxed, body),
            "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
        );
    }

    #[test]
    fn length_limit() {
        let mut h = BodyHasher::with_limit(Relaxed, 3);
        h.update(b"abcdef\r\n");
        assert_eq!(h.canonical_len(), 8);
        assert_eq!(B64.encode(h.finish()), sha(b"abc"));
        // The length counts the CRLF that only finishing adds.
        let mut h = BodyHasher::new(Simple);
        h.update(b"abc\r\n\r\n");
        assert_eq!(h.finish_counted().1, 5);
        let mut h = BodyHasher::new(Relaxed);
        h.update(b"abc ");
        assert_eq!(h.finish_counted().1, 5);
    }

    #[test]
    fn oversigning_selects_bottom_up() {
        let fields = [("From", "a"), ("To", "b"), ("from", "c")];
        assert_eq!(
            select_fields(&fields, &["from", "to", "from", "from"]),
            [Some(2), Some(1), Some(0), None]
        );
    }

    #[test]
    fn fields_parsed_with_folding() {
        let f = parse_fields(b"From: a\r\nSubject: one\r\n two\r\nbad line\r\nX-Y:\r\n");
        assert_eq!(
            f,
            vec![
                ("From".into(), b" a".to_vec()),
                ("Subject".into(), b" one\r\n two".to_vec()),
                ("X-Y".into(), b"".to_vec())
            ]
        );
    }

    proptest::proptest! {
        /// Any split into chunks gives the same hash as one piece.
        #[test]
        fn chunking_does_not_matter(
            body in proptest::collection::vec(proptest::sample::select(b"ab \t\r\n".to_vec()), 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            for c in [Relaxed, Simple] {
                let whole = bh(c, &body);
                let mut cuts: Vec<usize> = cuts.iter().map(|&x| x.min(body.len())).collect();
                cuts.sort();
                let mut h = BodyHasher::new(c);
                let mut at = 0;
                for cut in cuts {
                    h.update(&body[at..cut]);
                    at = cut;
                }
                h.update(&body[at..]);
                proptest::prop_assert_eq!(B64.encode(h.finish()), whole);
            }
        }
    }
}
