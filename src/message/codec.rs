//! Compact binary storage format.
//!
//! Layout: version byte (1), LEB128 size, then the root part. A part stores
//! header_start and the deltas body_start - header_start and end - body_start
//! (all LEB128), its fields as length-prefixed byte strings with a 0/1 tag for
//! options, and its children recursively. Decoding checks every length against
//! the remaining input and bounds recursion, so garbage yields `None`.

use super::{Address, Envelope, MessageMeta, Part};

const VERSION: u8 = 1;
/// Deeper trees are rejected to keep decoding recursion (and stack use)
/// bounded; the scanner clamps `max_depth` to this so its output always decodes.
pub(super) const MAX_DECODE_DEPTH: usize = 256;

pub(super) fn encode(meta: &MessageMeta) -> Vec<u8> {
    let mut w = vec![VERSION];
    put_u64(&mut w, meta.size);
    put_part(&mut w, &meta.root);
    w
}

pub(super) fn decode(bytes: &[u8]) -> Option<MessageMeta> {
    let (&version, rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let mut r = Reader { b: rest };
    let size = r.u64()?;
    let root = r.tree()?;
    r.b.is_empty().then_some(MessageMeta { size, root })
}

/// Only the top-level envelope, for FETCH ENVELOPE: the part tree after it
/// is neither decoded nor allocated. `None` for anything malformed.
pub(super) fn decode_envelope(bytes: &[u8]) -> Option<Option<Envelope>> {
    let (&version, rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let mut r = Reader { b: rest };
    r.u64()?;
    r.skip_to_envelope()?;
    r.envelope()
}

fn put_u64(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_u64(w, b.len() as u64);
    w.extend_from_slice(b);
}

fn put_opt(w: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            w.push(1);
            put_bytes(w, b);
        }
        None => w.push(0),
    }
}

fn put_params(w: &mut Vec<u8>, ps: &[(String, String)]) {
    put_u64(w, ps.len() as u64);
    for (k, v) in ps {
        put_bytes(w, k.as_bytes());
        put_bytes(w, v.as_bytes());
    }
}

fn put_addrs(w: &mut Vec<u8>, list: &[Address]) {
    put_u64(w, list.len() as u64);
    for a in list {
        for f in [&a.name, &a.adl, &a.mailbox, &a.host] {
            put_opt(w, f.as_deref());
        }
    }
}

fn put_part(w: &mut Vec<u8>, p: &Part) {
    put_u64(w, p.header_start);
    put_u64(w, p.body_start.saturating_sub(p.header_start));
    put_u64(w, p.end.saturating_sub(p.body_start));
    put_bytes(w, p.content_type.as_bytes());
    put_bytes(w, p.subtype.as_bytes());
    put_params(w, &p.params);
    for f in [&p.id, &p.description] {
        put_opt(w, f.as_deref().map(str::as_bytes));
    }
    put_bytes(w, p.encoding.as_bytes());
    put_opt(w, p.md5.as_deref().map(str::as_bytes));
    match &p.disposition {
        Some((ty, ps)) => {
            w.push(1);
            put_bytes(w, ty.as_bytes());
            put_params(w, ps);
        }
        None => w.push(0),
    }
    match &p.language {
        Some(langs) => {
            w.push(1);
            put_u64(w, langs.len() as u64);
            for l in langs {
                put_bytes(w, l.as_bytes());
            }
        }
        None => w.push(0),
    }
    put_opt(w, p.location.as_deref().map(str::as_bytes));
    put_u64(w, u64::from(p.lines));
    match &p.envelope {
        Some(e) => {
            w.push(1);
            for f in [&e.date, &e.subject] {
                put_opt(w, f.as_deref());
            }
            for l in [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc] {
                put_addrs(w, l);
            }
            for f in [&e.in_reply_to, &e.message_id] {
                put_opt(w, f.as_deref());
            }
        }
        None => w.push(0),
    }
    put_u64(w, p.children.len() as u64);
    for c in &p.children {
        put_part(w, c);
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&v, rest) = self.b.split_first()?;
        self.b = rest;
        Some(v)
    }

    fn u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            // Reject encodings whose bits would not fit in 64.
            if shift == 63 && bits > 1 {
                return None;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A count of following items, each at least one byte long.
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.b.len()).then_some(n)
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::try_from(self.u64()?).ok()?;
        if n > self.b.len() {
            return None;
        }
        let (v, rest) = self.b.split_at(n);
        self.b = rest;
        Some(v.to_vec())
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }

    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn opt_bytes(&mut self) -> Option<Option<Vec<u8>>> {
        Some(if self.flag()? {
            Some(self.bytes()?)
        } else {
            None
        })
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        Some(if self.flag()? {
            Some(self.string()?)
        } else {
            None
        })
    }

    fn params(&mut self) -> Option<Vec<(String, String)>> {
        let n = self.count()?;
        (0..n)
            .map(|_| Some((self.string()?, self.string()?)))
            .collect()
    }

    fn addrs(&mut self) -> Option<Vec<Address>> {
        let n = self.count()?;
        (0..n)
            .map(|_| {
                Some(Address {
                    name: self.opt_bytes()?,
                    adl: self.opt_bytes()?,
                    mailbox: self.opt_bytes()?,
                    host: self.opt_bytes()?,
                })
            })
            .collect()
    }

    fn envelope(&mut self) -> Option<Option<Envelope>> {
        if !self.flag()? {
            return Some(None);
        }
        Some(Some(Envelope {
            date: self.opt_bytes()?,
            subject: self.opt_bytes()?,
            from: self.addrs()?,
            sender: self.addrs()?,
            reply_to: self.addrs()?,
            to: self.addrs()?,
            cc: self.addrs()?,
            bcc: self.addrs()?,
            in_reply_to: self.opt_bytes()?,
            message_id: self.opt_bytes()?,
        }))
    }

    fn skip_bytes(&mut self) -> Option<()> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.b = self.b.get(n..)?;
        Some(())
    }

    fn skip_opt(&mut self) -> Option<()> {
        if self.flag()? {
            self.skip_bytes()?;
        }
        Some(())
    }

    fn skip_params(&mut self) -> Option<()> {
        for _ in 0..self.count()? {
            self.skip_bytes()?;
            self.skip_bytes()?;
        }
        Some(())
    }

    /// Steps over a part's fields up to its envelope, in [`put_part`]'s
    /// order, without allocating.
    fn skip_to_envelope(&mut self) -> Option<()> {
        for _ in 0..3 {
            self.u64()?;
        }
        self.skip_bytes()?;
        self.skip_bytes()?;
        self.skip_params()?;
        self.skip_opt()?;
        self.skip_opt()?;
        self.skip_bytes()?;
        self.skip_opt()?;
        if self.flag()? {
            self.skip_bytes()?;
            self.skip_params()?;
        }
        if self.flag()? {
            for _ in 0..self.count()? {
                self.skip_bytes()?;
            }
        }
        self.skip_opt()?;
        self.u64()?;
        Some(())
    }

    /// Decodes a part tree iteratively (explicit stack) so garbage cannot
    /// exhaust the call stack.
    fn tree(&mut self) -> Option<Part> {
        let mut stack = vec![self.node()?];
        loop {
            let top = stack.last_mut()?;
            if top.1 == 0 {
                let (done, _) = stack.pop()?;
                match stack.last_mut() {
                    Some(parent) => parent.0.children.push(done),
                    None => return Some(done),
                }
            } else {
                top.1 -= 1;
                if stack.len() > MAX_DECODE_DEPTH {
                    return None;
                }
                stack.push(self.node()?);
            }
        }
    }

    /// One part without its children, plus the number of children that follow.
    fn node(&mut self) -> Option<(Part, usize)> {
        let header_start = self.u64()?;
        let body_start = header_start.checked_add(self.u64()?)?;
        let end = body_start.checked_add(self.u64()?)?;
        let content_type = self.string()?;
        let subtype = self.string()?;
        let params = self.params()?;
        let id = self.opt_string()?;
        let description = self.opt_string()?;
        let encoding = self.string()?;
        let md5 = self.opt_string()?;
        let disposition = if self.flag()? {
            Some((self.string()?, self.params()?))
        } else {
            None
        };
        let language = if self.flag()? {
            let n = self.count()?;
            Some((0..n).map(|_| self.string()).collect::<Option<Vec<_>>>()?)
        } else {
            None
        };
        let location = self.opt_string()?;
        let lines = u32::try_from(self.u64()?).ok()?;
        let envelope = self.envelope()?;
        let n = self.count()?;
        let part = Part {
            header_start,
            body_start,
            end,
            content_type,
            subtype,
            params,
            id,
            description,
            encoding,
            md5,
            disposition,
            language,
            location,
            lines,
            envelope,
            children: Vec::new(),
        };
        Some((part, n))
    }
}
