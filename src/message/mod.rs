//! Single-pass MIME structure scanning for delivery time.
//!
//! The SMTP layer streams message bytes through [`StructureScanner`] once; the
//! result ([`MessageMeta`]) holds everything IMAP later needs (part offsets,
//! ENVELOPE, BODYSTRUCTURE fields) so mail never has to be reparsed. It is
//! stored as a compact blob ([`MessageMeta::encode`]) and rendered into IMAP
//! syntax by [`render_envelope`] / [`render_bodystructure`].

mod codec;
mod header;
mod render;
mod scan;
#[cfg(test)]
mod tests;

pub use render::{render_bodystructure, render_envelope};
pub use scan::StructureScanner;

/// Resource limits; the scanner's memory is bounded by these regardless of
/// the message size (apart from the part tree, bounded by `max_parts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Deepest nesting of multipart / message/rfc822 parts that is parsed;
    /// deeper containers become opaque application/octet-stream leaves.
    pub max_depth: usize,
    /// Maximum number of parts (including the root) in the tree.
    pub max_parts: usize,
    /// Header bytes kept per part for parsing; the excess is still counted
    /// for offsets but not parsed.
    pub max_header_bytes: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_depth: 32,
            max_parts: 1000,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Everything IMAP needs about a stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageMeta {
    pub size: u64,
    pub root: Part,
}

/// One MIME part. Offsets are absolute positions in the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub header_start: u64,
    pub body_start: u64,
    pub end: u64,
    /// Lowercased media type, default "text" (RFC 2045 section 5.2).
    pub content_type: String,
    /// Lowercased media subtype, default "plain".
    pub subtype: String,
    /// Content-Type parameters; names lowercased, values as given.
    pub params: Vec<(String, String)>,
    pub id: Option<String>,
    pub description: Option<String>,
    /// Content-Transfer-Encoding, uppercased, default "7BIT".
    pub encoding: String,
    pub md5: Option<String>,
    /// Disposition type (lowercased) and its parameters.
    pub disposition: Option<(String, Vec<(String, String)>)>,
    pub language: Option<Vec<String>>,
    pub location: Option<String>,
    /// Line breaks in the body, i.e. lines as Dovecot and Cyrus count them
    /// (a partial last line adds none); rendered for text/* and message/rfc822.
    pub lines: u32,
    /// For the root part and message/rfc822 parts (embedded message's envelope).
    pub envelope: Option<Envelope>,
    /// Multipart children, or the embedded message's root for message/rfc822.
    pub children: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope {
    pub date: Option<Vec<u8>>,
    pub subject: Option<Vec<u8>>,
    pub from: Vec<Address>,
    pub sender: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub bcc: Vec<Address>,
    pub in_reply_to: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
}

/// An ENVELOPE address (RFC 3501 section 7.4.2). Group start: `host` None and
/// `mailbox` = group name; group end: `mailbox` and `host` both None.
#[derive(Debug, Clone, PartialEq)]
pub struct Address {
    pub name: Option<Vec<u8>>,
    pub adl: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub host: Option<Vec<u8>>,
}

impl MessageMeta {
    /// Compact binary form; the first byte is the format version (1).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Inverse of [`MessageMeta::encode`]; `None` for anything malformed.
    pub fn decode(bytes: &[u8]) -> Option<MessageMeta> {
        codec::decode(bytes)
    }

    /// The top-level envelope of an encoded [`MessageMeta`] without decoding
    /// the part tree: what `decode(bytes)?.root.envelope` would give.
    pub fn decode_envelope(bytes: &[u8]) -> Option<Option<Envelope>> {
        codec::decode_envelope(bytes)
    }

    /// Accounts for `len` bytes of header fields prepended to the message
    /// at delivery (Return-Path, Received, X-Spam-Status...): they join the
    /// top-level header, and everything after it moves down by `len`.
    pub fn prepend_header(&mut self, len: u64) {
        fn shift(part: &mut Part, len: u64) {
            part.header_start += len;
            part.body_start += len;
            part.end += len;
            for c in &mut part.children {
                shift(c, len);
            }
        }
        self.size += len;
        shift(&mut self.root, len);
        self.root.header_start = 0;
    }
}

impl Part {
    /// A part with all defaults (text/plain; charset=us-ascii, 7BIT).
    pub fn new(header_start: u64) -> Part {
        Part {
            header_start,
            body_start: header_start,
            end: header_start,
            content_type: "text".into(),
            subtype: "plain".into(),
            params: Vec::new(),
            id: None,
            description: None,
            encoding: "7BIT".into(),
            md5: None,
            disposition: None,
            language: None,
            location: None,
            lines: 0,
            envelope: None,
            children: Vec::new(),
        }
    }

    pub fn is_multipart(&self) -> bool {
        self.content_type == "multipart"
    }

    /// message/rfc822 and message/global (RFC 6532 section 3.7) carry an
    /// embedded message whose structure IMAP exposes.
    pub fn is_message(&self) -> bool {
        self.content_type == "message" && (self.subtype == "rfc822" || self.subtype == "global")
    }

    /// Body size in bytes as reported in BODYSTRUCTURE.
    pub fn body_size(&self) -> u64 {
        self.end.saturating_sub(self.body_start)
    }

    /// Resolves an IMAP section part number (RFC 3501 section 6.4.5), called on
    /// the root part. An empty path is the message itself. A non-multipart
    /// message has only part 1 (its body); the parts of a message/rfc822 part
    /// are numbered like those of its embedded message.
    pub fn section(&self, path: &[u32]) -> Option<&Part> {
        let mut cur = self;
        // `cur` is a message root (top level or embedded) only before the first step.
        let mut at_message = true;
        for &n in path {
            let idx = usize::try_from(n.checked_sub(1)?).ok()?;
            let container = if at_message {
                cur
            } else if cur.is_message() {
                cur.children.first()?
            } else if cur.is_multipart() {
                cur
            } else {
                return None;
            };
            cur = if container.is_multipart() {
                container.children.get(idx)?
            } else if idx == 0 {
                container
            } else {
                return None;
            };
            at_message = false;
        }
        Some(cur)
    }
}
