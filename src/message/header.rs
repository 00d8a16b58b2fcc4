//! Header field parsing: unfolding, MIME fields (RFC 2045/2183/2231/3282)
//! and ENVELOPE fields including address lists (RFC 5322 section 3.4).

use super::{Address, Envelope, Part};

fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(super) fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_wsp(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_wsp(*last) {
            break;
        }
        s = rest;
    }
    s
}

fn lossy(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

/// Splits the kept header text (lines joined by LF, CR already stripped) into
/// (lowercased name, unfolded value) pairs. Unfolding per RFC 5322 section
/// 2.2.3 removes only the line break and keeps the leading WSP.
pub(super) fn fields(hdr: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut continuing = false;
    for line in hdr.split(|&b| b == b'\n') {
        match line.first() {
            None => continuing = false,
            Some(b' ' | b'\t') => {
                if let (true, Some(last)) = (continuing, out.last_mut()) {
                    last.1.extend_from_slice(line);
                }
            }
            Some(_) => {
                // Lines that are not "name: value" are ignored, as are their continuations.
                continuing = false;
                if let Some(c) = line.iter().position(|&b| b == b':') {
                    let name = trim(&line[..c]);
                    if !name.is_empty() {
                        out.push((lossy(name).to_ascii_lowercase(), line[c + 1..].to_vec()));
                        continuing = true;
                    }
                }
            }
        }
    }
    for f in &mut out {
        f.1 = trim(&f.1).to_vec();
    }
    out
}

fn first<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Fills the MIME fields of `part` from its header. `digest_child` selects the
/// message/rfc822 default of multipart/digest children (RFC 2046 section 5.1.5).
pub(super) fn apply_mime(fields: &[(String, Vec<u8>)], digest_child: bool, part: &mut Part) {
    let parsed = first(fields, "content-type").and_then(|v| {
        let mut lx = Lexer { s: v, i: 0 };
        let ty = lx.token()?;
        lx.skip_cfws();
        if lx.peek() != Some(b'/') {
            return None;
        }
        lx.i += 1;
        let sub = lx.token()?;
        Some((ty, sub, lx.params()))
    });
    match parsed {
        Some((ty, sub, params)) => {
            part.content_type = ty.to_ascii_lowercase();
            part.subtype = sub.to_ascii_lowercase();
            part.params = params;
        }
        // RFC 2045 section 5.2: missing or invalid Content-Type means text/plain.
        None if digest_child && first(fields, "content-type").is_none() => {
            part.content_type = "message".into();
            part.subtype = "rfc822".into();
        }
        None => {}
    }
    if part.content_type == "text" && !part.params.iter().any(|(k, _)| k == "charset") {
        part.params.push(("charset".into(), "us-ascii".into()));
    }
    let raw = |name: &str| first(fields, name).map(lossy);
    part.id = raw("content-id");
    part.description = raw("content-description");
    part.md5 = raw("content-md5");
    part.location = raw("content-location");
    if let Some(enc) = first(fields, "content-transfer-encoding") {
        let mut lx = Lexer { s: enc, i: 0 };
        if let Some(t) = lx.token() {
            part.encoding = t.to_ascii_uppercase();
        }
    }
    part.disposition = first(fields, "content-disposition").and_then(|v| {
        let mut lx = Lexer { s: v, i: 0 };
        let ty = lx.token()?;
        Some((ty.to_ascii_lowercase(), lx.params()))
    });
    // RFC 3282: comma-separated language tags, comments allowed.
    part.language = first(fields, "content-language").and_then(|v| {
        let mut lx = Lexer { s: v, i: 0 };
        let mut tags = Vec::new();
        while lx.i < v.len() {
            match lx.token() {
                Some(t) => tags.push(t),
                None => lx.i += 1,
            }
        }
        (!tags.is_empty()).then_some(tags)
    });
}

/// Tokenizer for MIME structured fields (RFC 2045 section 5.1 tspecials).
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_cfws(&mut self) {
        loop {
            match self.peek() {
                Some(b) if is_wsp(b) => self.i += 1,
                Some(b'(') => self.i = skip_comment(self.s, self.i).1,
                _ => return,
            }
        }
    }

    /// A MIME token after optional CFWS.
    fn token(&mut self) -> Option<String> {
        self.skip_cfws();
        let start = self.i;
        while let Some(b) = self.peek() {
            if is_wsp(b) || b < 0x20 || b == 0x7f || b"()<>@,;:\\\"/[]?=".contains(&b) {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| lossy(&self.s[start..self.i]))
    }

    /// Parameter list `*(";" attribute "=" value)`, lenient about garbage,
    /// merging RFC 2231 continuations.
    fn params(&mut self) -> Vec<(String, String)> {
        let mut raw: Vec<(String, String)> = Vec::new();
        loop {
            self.skip_cfws();
            match self.peek() {
                None => break,
                Some(b';') => self.i += 1,
                // Garbage between parameters: resynchronise at the next ';'.
                Some(_) => {
                    while self.peek().is_some_and(|b| b != b';') {
                        self.i += 1;
                    }
                    continue;
                }
            }
            self.skip_cfws();
            let start = self.i;
            while self
                .peek()
                .is_some_and(|b| !is_wsp(b) && !b"=;(\"".contains(&b))
            {
                self.i += 1;
            }
            let name = lossy(&self.s[start..self.i]).to_ascii_lowercase();
            self.skip_cfws();
            if name.is_empty() || self.peek() != Some(b'=') {
                continue;
            }
            self.i += 1;
            self.skip_cfws();
            let value = if self.peek() == Some(b'"') {
                let (content, next) = quoted(self.s, self.i);
                self.i = next;
                unescape(content)
            } else {
                // Lenient: many mailers leave tspecials such as '/' unquoted.
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|b| !is_wsp(b) && !b";(\"".contains(&b))
                {
                    self.i += 1;
                }
                self.s[start..self.i].to_vec()
            };
            raw.push((name, lossy(&value)));
        }
        merge_rfc2231(raw)
    }
}

/// RFC 2231 section 3: `name*0`, `name*1*`, ... are joined into one value.
/// If the first segment is extended (`*0*`), the result is named `name*` and
/// keeps its `charset'lang'` prefix, as the value would appear unsplit.
fn merge_rfc2231(raw: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    // (index in `out`, base name, segments as (number, extended, value))
    type Segments = Vec<(u32, bool, String)>;
    let mut groups: Vec<(usize, String, Segments)> = Vec::new();
    for (name, value) in raw {
        let split = name.split_once('*').and_then(|(base, rest)| {
            let (num, ext) = match rest.strip_suffix('*') {
                Some(n) => (n, true),
                None => (rest, false),
            };
            let n: u32 = num.parse().ok()?;
            Some((base.to_string(), n, ext))
        });
        match split {
            Some((base, n, ext)) => match groups.iter_mut().find(|g| g.1 == base) {
                Some(g) => g.2.push((n, ext, value)),
                None => {
                    groups.push((out.len(), base, vec![(n, ext, value)]));
                    out.push((String::new(), String::new()));
                }
            },
            None => out.push((name, value)),
        }
    }
    for (idx, base, mut segs) in groups {
        segs.sort_by_key(|s| s.0);
        let ext = segs.first().is_some_and(|s| s.1);
        let value: String = segs.into_iter().map(|s| s.2).collect();
        if let Some(slot) = out.get_mut(idx) {
            *slot = (if ext { format!("{base}*") } else { base }, value);
        }
    }
    out
}

/// Returns (content, index after the comment) for a comment starting at `i`.
/// Comments nest (RFC 5322 section 3.2.2).
fn skip_comment(s: &[u8], i: usize) -> (&[u8], usize) {
    let mut depth = 0usize;
    let mut j = i;
    while j < s.len() {
        match s[j] {
            b'\\' => j += 1,
            b'(' => depth += 1,
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return (&s[(i + 1).min(j)..j], j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    (&s[(i + 1).min(s.len())..], s.len())
}

/// Returns (raw content, index after the closing quote) for a quoted string at `i`.
fn quoted(s: &[u8], i: usize) -> (&[u8], usize) {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' => j += 1,
            b'"' => return (&s[(i + 1).min(j)..j], j + 1),
            _ => {}
        }
        j += 1;
    }
    (&s[(i + 1).min(s.len())..], s.len())
}

fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut esc = false;
    for &b in s {
        if !esc && b == b'\\' {
            esc = true;
        } else {
            out.push(b);
            esc = false;
        }
    }
    out
}

/// ENVELOPE fields of a message header (RFC 3501 section 7.4.2).
pub(super) fn envelope(fields: &[(String, Vec<u8>)]) -> Envelope {
    let raw = |n: &str| first(fields, n).map(<[u8]>::to_vec);
    let addrs = |n: &str| first(fields, n).map(addresses).unwrap_or_default();
    let from = addrs("from");
    let mut sender = addrs("sender");
    let mut reply_to = addrs("reply-to");
    // RFC 3501 7.4.2: absent or empty Sender / Reply-To take the From value.
    if sender.is_empty() {
        sender.clone_from(&from);
    }
    if reply_to.is_empty() {
        reply_to.clone_from(&from);
    }
    Envelope {
        date: raw("date"),
        subject: raw("subject"),
        sender,
        reply_to,
        to: addrs("to"),
        cc: addrs("cc"),
        bcc: addrs("bcc"),
        in_reply_to: raw("in-reply-to"),
        message_id: raw("message-id"),
        from,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum T {
    Atom,
    Quoted,
    Comment,
    Special(u8),
}

/// A token with its raw span and whether whitespace preceded it.
#[derive(Clone, Copy)]
struct Tok {
    t: T,
    s: usize,
    e: usize,
    sp: bool,
}

fn tokenize(v: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut sp = false;
    while i < v.len() {
        let b = v[i];
        let (t, e) = match b {
            _ if is_wsp(b) => {
                sp = true;
                i += 1;
                continue;
            }
            b'(' => (T::Comment, skip_comment(v, i).1),
            b'"' => (T::Quoted, quoted(v, i).1),
            b'[' => {
                // Domain literal (RFC 5322 section 3.4.1), kept as one atom.
                let e = v[i..]
                    .iter()
                    .position(|&c| c == b']')
                    .map_or(v.len(), |p| i + p + 1);
                (T::Atom, e)
            }
            b')' => {
                i += 1;
                continue;
            }
            b'<' | b'>' | b':' | b';' | b'@' | b',' | b'.' => (T::Special(b), i + 1),
            _ => {
                let len = v[i..]
                    .iter()
                    .position(|&c| is_wsp(c) || b"()<>[]:;@,.\"".contains(&c))
                    .unwrap_or(v.len() - i);
                (T::Atom, i + len)
            }
        };
        out.push(Tok { t, s: i, e, sp });
        sp = false;
        i = e.max(i + 1);
    }
    out
}

const MISSING_MAILBOX: &[u8] = b"MISSING_MAILBOX";
const MISSING_DOMAIN: &[u8] = b"MISSING_DOMAIN";

/// Parses an address-list header value into ENVELOPE addresses.
pub(super) fn addresses(v: &[u8]) -> Vec<Address> {
    let mut p = AddrParser {
        v,
        t: tokenize(v),
        i: 0,
        out: Vec::new(),
    };
    p.list(false);
    p.out
}

struct AddrParser<'a> {
    v: &'a [u8],
    t: Vec<Tok>,
    i: usize,
    out: Vec<Address>,
}

impl AddrParser<'_> {
    fn peek(&self) -> Option<T> {
        self.t.get(self.i).map(|t| t.t)
    }

    fn list(&mut self, in_group: bool) {
        while let Some(t) = self.peek() {
            match t {
                T::Special(b',') => self.i += 1,
                T::Special(b';') => {
                    self.i += 1;
                    if in_group {
                        return;
                    }
                }
                _ => {
                    let before = self.i;
                    self.item(in_group);
                    // Guarantee progress on garbage.
                    if self.i == before {
                        self.i += 1;
                    }
                }
            }
        }
    }

    /// Collects words (atoms, quoted strings, dots) and returns their token
    /// range plus the first comment seen.
    fn words(&mut self) -> (usize, usize, Option<Tok>) {
        let start = self.i;
        let mut comment = None;
        while let Some(t) = self.t.get(self.i) {
            match t.t {
                T::Atom | T::Quoted | T::Special(b'.') => {}
                T::Comment => {
                    comment = comment.or(Some(*t));
                }
                _ => break,
            }
            self.i += 1;
        }
        (start, self.i, comment)
    }

    /// Raw concatenation (local parts, domains, routes): no spaces, quotes kept.
    fn raw(&self, a: usize, b: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for t in self.t[a..b].iter().filter(|t| t.t != T::Comment) {
            out.extend_from_slice(&self.v[t.s..t.e]);
        }
        out
    }

    /// Display-name phrase: quoted strings unquoted, words joined by one space
    /// where the source had whitespace; encoded-words stay raw.
    fn phrase(&self, a: usize, b: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for t in self.t[a..b].iter().filter(|t| t.t != T::Comment) {
            if t.sp && !out.is_empty() {
                out.push(b' ');
            }
            if t.t == T::Quoted {
                let inner = &self.v[t.s + 1..t.e];
                let inner = inner.strip_suffix(b"\"").unwrap_or(inner);
                out.extend(unescape(inner));
            } else {
                out.extend_from_slice(&self.v[t.s..t.e]);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    fn comment_text(&self, c: Option<Tok>) -> Option<Vec<u8>> {
        let c = c?;
        let text = trim(skip_comment(self.v, c.s).0);
        (!text.is_empty()).then(|| text.to_vec())
    }

    fn push(&mut self, name: Option<Vec<u8>>, adl: Option<Vec<u8>>, mb: Vec<u8>, host: Vec<u8>) {
        let or = |v: Vec<u8>, d: &[u8]| if v.is_empty() { d.to_vec() } else { v };
        self.out.push(Address {
            name,
            adl,
            mailbox: Some(or(mb, MISSING_MAILBOX)),
            host: Some(or(host, MISSING_DOMAIN)),
        });
    }

    fn item(&mut self, in_group: bool) {
        let (a, b, comment) = self.words();
        match self.peek() {
            // Group (RFC 5322 section 3.4): RFC 3501 marks it with a start
            // address (mailbox = name, host NIL) and an all-NIL end address.
            Some(T::Special(b':')) if !in_group => {
                self.i += 1;
                let name = self.phrase(a, b).unwrap_or_default();
                self.out.push(Address {
                    name: None,
                    adl: None,
                    mailbox: Some(name),
                    host: None,
                });
                self.list(true);
                self.out.push(Address {
                    name: None,
                    adl: None,
                    mailbox: None,
                    host: None,
                });
            }
            Some(T::Special(b'<')) => {
                self.i += 1;
                let name = self.phrase(a, b);
                self.angle(name);
            }
            Some(T::Special(b'@')) => {
                self.i += 1;
                let local = self.raw(a, b);
                let (da, db, c2) = self.words();
                let host = self.raw(da, db);
                let trailing = self.skip_rest();
                // "user@host (Name)": the comment is the only display name.
                let name = self.comment_text(c2.or(trailing).or(comment));
                self.push(name, None, local, host);
                return;
            }
            _ => {
                if a < b && self.t[a..b].iter().any(|t| t.t != T::Comment) {
                    let mb = self.raw(a, b);
                    let name = self.comment_text(comment);
                    self.push(name, None, mb, Vec::new());
                }
            }
        }
        self.skip_rest();
    }

    /// Inside `<...>`: optional obsolete route (RFC 5322 section 4.4), addr-spec.
    fn angle(&mut self, name: Option<Vec<u8>>) {
        let mut adl = None;
        if self.peek() == Some(T::Special(b'@')) {
            let start = self.i;
            while let Some(t) = self.peek() {
                if matches!(t, T::Special(b':') | T::Special(b'>')) {
                    break;
                }
                self.i += 1;
            }
            if self.peek() == Some(T::Special(b':')) {
                adl = Some(self.raw(start, self.i));
                self.i += 1;
            } else {
                self.i = start;
            }
        }
        let (a, b, _) = self.words();
        let local = self.raw(a, b);
        let mut host = Vec::new();
        if self.peek() == Some(T::Special(b'@')) {
            self.i += 1;
            let (da, db, _) = self.words();
            host = self.raw(da, db);
        }
        if self.peek() == Some(T::Special(b'>')) {
            self.i += 1;
        }
        self.push(name, adl, local, host);
    }

    /// Skips to the next ',' or ';', returning the first comment passed.
    fn skip_rest(&mut self) -> Option<Tok> {
        let mut comment = None;
        while let Some(t) = self.t.get(self.i) {
            match t.t {
                T::Special(b',') | T::Special(b';') => break,
                T::Comment => comment = comment.or(Some(*t)),
                _ => {}
            }
            self.i += 1;
        }
        comment
    }
}
