//! The streaming line-oriented MIME scanner.
//!
//! Bytes are split into lines at LF (CRLF expected, bare LF tolerated). Only a
//! bounded prefix of each line is kept: enough to recognise a boundary in a
//! body, or up to the per-part header budget while in a header. Open parts
//! form a stack (root at the bottom); a boundary line of any open multipart
//! closes every part above it, which also recovers from missing close
//! delimiters of nested multiparts.

use super::{MessageMeta, Part, ScanLimits, codec, header};

/// Bytes of a body line kept: boundaries are at most 70 characters (RFC 2046
/// section 5.1.1), so this is plenty for recognising boundary lines.
const LINE_KEEP: usize = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Mp {
    /// Before the first boundary (RFC 2046 5.1.1 preamble, not a part).
    Preamble,
    /// A child part is open on top of this frame.
    Child,
    /// Between boundaries after `max_parts` was reached: content is ignored.
    Skip,
    /// After the close delimiter (epilogue, not a part).
    Epilogue,
}

enum Kind {
    Leaf,
    Multipart {
        boundary: Vec<u8>,
        state: Mp,
    },
    /// message/rfc822: the embedded message is open on top of this frame.
    Message,
}

struct Frame {
    part: Part,
    in_header: bool,
    /// Kept header lines joined by LF (CR stripped), at most `max_header_bytes`.
    hdr: Vec<u8>,
    /// Root of a message (top level or embedded): parse the envelope.
    is_message: bool,
    digest_child: bool,
    kind: Kind,
    /// Value of the scanner's line counter when the body started.
    lines_at_body: u64,
}

impl Frame {
    fn new(header_start: u64, is_message: bool, digest_child: bool) -> Frame {
        Frame {
            part: Part::new(header_start),
            in_header: true,
            hdr: Vec::new(),
            is_message,
            digest_child,
            kind: Kind::Leaf,
            lines_at_body: 0,
        }
    }

    /// Parses the kept header into the part (and envelope for message roots).
    fn parse_header(&mut self) {
        let fields = header::fields(&self.hdr);
        header::apply_mime(&fields, self.digest_child, &mut self.part);
        if self.is_message {
            self.part.envelope = Some(header::envelope(&fields));
        }
        self.hdr = Vec::new();
    }
}

/// Streaming scanner; see the module documentation.
pub struct StructureScanner {
    limits: ScanLimits,
    /// Kept prefix of the current line (may end with the CR of a CRLF).
    line: Vec<u8>,
    line_start: u64,
    /// Full length of the current line so far.
    line_len: u64,
    last_cr: bool,
    /// LF-terminated lines seen so far.
    nlines: u64,
    /// Where the previous line's terminator starts: a part that ends at a
    /// boundary ends here, since the CRLF belongs to the boundary (RFC 2046 5.1.1).
    prev_term: u64,
    stack: Vec<Frame>,
    nparts: usize,
    root: Option<Part>,
}

impl StructureScanner {
    pub fn new(mut limits: ScanLimits) -> Self {
        // Stored trees must stay decodable (and renderable without deep recursion).
        limits.max_depth = limits.max_depth.min(codec::MAX_DECODE_DEPTH);
        StructureScanner {
            limits,
            line: Vec::new(),
            line_start: 0,
            line_len: 0,
            last_cr: false,
            nlines: 0,
            prev_term: 0,
            stack: vec![Frame::new(0, true, false)],
            nparts: 1,
            root: None,
        }
    }

    /// Feeds the next chunk of the message; chunks may split lines anywhere.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(n) = bytes.iter().position(|&b| b == b'\n') {
            self.take(&bytes[..n]);
            self.end_line(true);
            bytes = &bytes[n + 1..];
        }
        self.take(bytes);
    }

    /// Completes the scan; an unterminated last line and open parts are closed
    /// at the end of the input.
    pub fn finish(mut self) -> MessageMeta {
        if self.line_len > 0 {
            self.end_line(false);
        }
        let size = self.line_start;
        while !self.stack.is_empty() {
            self.close_top(size, false);
        }
        MessageMeta {
            size,
            root: self.root.unwrap_or_else(|| Part::new(0)),
        }
    }

    fn take(&mut self, seg: &[u8]) {
        let Some(&last) = seg.last() else { return };
        let cap = match self.stack.last() {
            Some(f) if f.in_header => LINE_KEEP.max(self.limits.max_header_bytes),
            _ => LINE_KEEP,
        };
        let room = cap.saturating_sub(self.line.len());
        self.line.extend_from_slice(&seg[..seg.len().min(room)]);
        self.line_len += seg.len() as u64;
        self.last_cr = last == b'\r';
    }

    fn end_line(&mut self, terminated: bool) {
        let cr = terminated && self.last_cr;
        let mut line = std::mem::take(&mut self.line);
        if cr && line.len() as u64 == self.line_len {
            line.pop();
        }
        let start = self.line_start;
        let content_end = start + self.line_len - u64::from(cr);
        let next = start + self.line_len + u64::from(terminated);
        self.process_line(&line, start, content_end, next);
        line.clear();
        self.line = line;
        self.line_start = next;
        self.line_len = 0;
        self.last_cr = false;
    }

    fn process_line(&mut self, line: &[u8], start: u64, content_end: u64, next: u64) {
        let empty = content_end == start;
        if let Some((idx, close)) = self.match_boundary(line) {
            while self.stack.len() > idx + 1 {
                self.close_top(self.prev_term, true);
            }
            let can_add = self.nparts < self.limits.max_parts;
            let mut push = None;
            if let Some(Frame {
                kind: Kind::Multipart { state, .. },
                part,
                ..
            }) = self.stack.last_mut()
            {
                *state = if close {
                    Mp::Epilogue
                } else if can_add {
                    push = Some(part.subtype == "digest");
                    Mp::Child
                } else {
                    Mp::Skip
                };
            }
            if let Some(digest) = push {
                self.nparts += 1;
                self.stack.push(Frame::new(next, false, digest));
            }
        } else if let Some(f) = self.stack.last_mut().filter(|f| f.in_header) {
            if empty {
                self.end_header(next);
            } else {
                let room = self.limits.max_header_bytes.saturating_sub(f.hdr.len());
                if room > 0 {
                    f.hdr.extend_from_slice(&line[..line.len().min(room - 1)]);
                    f.hdr.push(b'\n');
                }
            }
        }
        if next > content_end {
            self.nlines += 1;
        }
        self.prev_term = content_end;
    }

    /// Finds the innermost open multipart whose delimiter this line is
    /// (RFC 2046 5.1.1: "--" boundary, then optional whitespace, or "--" for
    /// the close delimiter). Returns (stack index, is close delimiter).
    fn match_boundary(&self, line: &[u8]) -> Option<(usize, bool)> {
        let rest = line.strip_prefix(b"--")?;
        self.stack.iter().enumerate().rev().find_map(|(i, f)| {
            let Kind::Multipart { boundary, state } = &f.kind else {
                return None;
            };
            if *state == Mp::Epilogue {
                return None;
            }
            let tail = rest.strip_prefix(boundary.as_slice())?;
            if tail.starts_with(b"--") {
                Some((i, true))
            } else if tail.iter().all(|&b| b == b' ' || b == b'\t') {
                Some((i, false))
            } else {
                None
            }
        })
    }

    /// The blank line ending the top part's header was seen; the body starts at `next`.
    fn end_header(&mut self, next: u64) {
        let depth_ok = self.stack.len() < self.limits.max_depth;
        let can_add = self.nparts < self.limits.max_parts;
        let lines_at_body = self.nlines + 1;
        let Some(f) = self.stack.last_mut() else {
            return;
        };
        f.in_header = false;
        f.part.body_start = next;
        f.lines_at_body = lines_at_body;
        f.parse_header();
        let p = &mut f.part;
        let mut embedded = false;
        if p.is_multipart() {
            let boundary = p
                .params
                .iter()
                .find(|(k, _)| k == "boundary")
                .map(|(_, v)| v.as_bytes().to_vec())
                .filter(|b| !b.is_empty());
            match boundary {
                Some(boundary) if depth_ok => {
                    f.kind = Kind::Multipart {
                        boundary,
                        state: Mp::Preamble,
                    }
                }
                // Without a boundary there are no children; rendering supplies one.
                None => {}
                Some(_) => make_opaque(p),
            }
        } else if p.is_message() {
            if depth_ok && can_add {
                f.kind = Kind::Message;
                embedded = true;
            } else {
                make_opaque(p);
            }
        }
        if embedded {
            self.nparts += 1;
            self.stack.push(Frame::new(next, true, false));
        }
    }

    /// Closes the innermost open part at `end` (clamped to the part's start).
    fn close_top(&mut self, end: u64, at_boundary: bool) {
        let Some(mut f) = self.stack.pop() else {
            return;
        };
        if f.in_header {
            // No header/body separator: the header runs to the end, body empty.
            let end = end.max(f.part.header_start);
            f.part.body_start = end;
            f.part.end = end;
            f.parse_header();
            if f.part.is_message() {
                make_opaque(&mut f.part);
            }
        } else {
            f.part.end = end.max(f.part.body_start);
            // Lines are the line breaks inside the body, as Dovecot and Cyrus
            // count them; the last one before a boundary belongs to the
            // boundary (RFC 2046 5.1.1), and an unterminated last line adds none.
            let mut lines = self.nlines.saturating_sub(f.lines_at_body);
            if at_boundary && lines > 0 {
                lines -= 1;
            }
            f.part.lines = u32::try_from(lines).unwrap_or(u32::MAX);
        }
        match self.stack.last_mut() {
            Some(parent) => {
                if matches!(parent.kind, Kind::Message) {
                    parent.part.envelope = f.part.envelope.take();
                }
                parent.part.children.push(f.part);
            }
            None => self.root = Some(f.part),
        }
    }
}

/// Containers beyond the limits are reported as opaque data, as Dovecot does
/// for overflowing parts, so the rendered structure stays valid.
fn make_opaque(p: &mut Part) {
    p.content_type = "application".into();
    p.subtype = "octet-stream".into();
    p.params.clear();
}
