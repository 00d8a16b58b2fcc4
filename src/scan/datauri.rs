//! `data:` URIs (RFC 2397) in HTML, found and decoded as the text streams
//! by: an HTML page can carry a whole file inline
//! (`<a href="data:application/octet-stream;base64,...">`), which a browser
//! saves or runs as it is. Each URI's payload is handed on, decoded, as an
//! object of its own.
//!
//! Cheap on ordinary HTML: between URIs only colons are looked at, and
//! "data" before one starts a URI.

use super::decode::Decoder;

/// What the text holds, as it is found.
pub enum DataEvent<'b> {
    /// A URI's payload starts.
    Start,
    /// Decoded payload bytes.
    Bytes(&'b [u8]),
    /// The payload ended (its closing quote, or the text's end).
    End,
}

/// Longest media type and parameters between "data:" and the comma
/// (RFC 2397's `[ mediatype ] [ ";base64" ]`); past it, not a URI.
const MAX_HEADER: usize = 256;

enum State {
    /// Looking for "data:"; the last bytes seen, for a colon's context.
    Seek,
    /// After "data:", before the comma.
    Header(Vec<u8>),
    Base64(Decoder),
    /// Percent-encoded: the high digit of a `%XX` being read, and how many
    /// of its digits have been seen.
    Percent {
        high: u8,
        digits: u8,
    },
}

pub struct DataUris {
    state: State,
    /// The last five bytes before the current chunk, so that "data:"
    /// split across chunks is found.
    tail: [u8; 5],
    out: Vec<u8>,
}

impl DataUris {
    pub fn new() -> DataUris {
        DataUris {
            state: State::Seek,
            tail: [0; 5],
            out: Vec::new(),
        }
    }

    /// Feeds text; `event` is called for every URI found and its decoded
    /// bytes, and may stop the text with an error.
    pub fn push<E>(
        &mut self,
        text: &[u8],
        mut event: impl FnMut(DataEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut i = 0;
        while i < text.len() {
            match &mut self.state {
                State::Seek => {
                    let Some(colon) = text[i..].iter().position(|&c| c == b':') else {
                        break;
                    };
                    let at = i + colon;
                    i = at + 1;
                    if starts_uri(&self.tail, &text[..at]) {
                        self.state = State::Header(Vec::new());
                    }
                }
                State::Header(h) => {
                    let c = text[i];
                    i += 1;
                    if c == b',' {
                        let base64 = h.to_ascii_lowercase().ends_with(b";base64");
                        self.state = if base64 {
                            State::Base64(Decoder::for_encoding("BASE64"))
                        } else {
                            State::Percent { high: 0, digits: 0 }
                        };
                        event(DataEvent::Start)?;
                    } else if h.len() >= MAX_HEADER || ends_value(c) || c.is_ascii_whitespace() {
                        self.state = State::Seek;
                    } else {
                        h.push(c);
                    }
                }
                State::Base64(d) => {
                    // Whitespace inside is skipped by the decoder, as the
                    // URL standard's forgiving base64 does.
                    let rest = &text[i..];
                    let end = rest.iter().position(|&c| ends_value(c));
                    let payload = &rest[..end.unwrap_or(rest.len())];
                    self.out.clear();
                    d.push(payload, &mut self.out);
                    i += payload.len();
                    if !self.out.is_empty() {
                        event(DataEvent::Bytes(&self.out))?;
                    }
                    if end.is_some() {
                        self.end_uri(&mut event)?;
                    }
                }
                State::Percent { high, digits } => {
                    self.out.clear();
                    let mut ended = false;
                    while i < text.len() {
                        let c = text[i];
                        if ends_value(c) || c.is_ascii_whitespace() {
                            ended = true;
                            break;
                        }
                        i += 1;
                        match (*digits, (c as char).to_digit(16)) {
                            (0, _) if c == b'%' => *digits = 1,
                            (0, _) => self.out.push(c),
                            (1, Some(v)) => (*high, *digits) = (v as u8, 2),
                            (2, Some(v)) => {
                                self.out.push((*high << 4) | v as u8);
                                *digits = 0;
                            }
                            // A malformed escape is kept as it is.
                            _ => {
                                self.out.push(b'%');
                                if *digits == 2 {
                                    self.out.push(hex_digit(*high));
                                }
                                self.out.push(c);
                                *digits = 0;
                            }
                        }
                    }
                    if !self.out.is_empty() {
                        event(DataEvent::Bytes(&self.out))?;
                    }
                    if ended {
                        self.end_uri(&mut event)?;
                    }
                }
            }
        }
        // Keep the last bytes for a "data:" split across chunks.
        let keep = text.len().min(5);
        self.tail.rotate_left(keep);
        self.tail[5 - keep..].copy_from_slice(&text[text.len() - keep..]);
        Ok(())
    }

    fn end_uri<E>(
        &mut self,
        event: &mut impl FnMut(DataEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.out.clear();
        match &mut self.state {
            State::Base64(d) => d.finish(&mut self.out),
            // An escape cut short is kept as it is.
            State::Percent { high, digits } if *digits > 0 => {
                self.out.push(b'%');
                if *digits == 2 {
                    self.out.push(hex_digit(*high));
                }
            }
            _ => {}
        }
        if !self.out.is_empty() {
            event(DataEvent::Bytes(&self.out))?;
        }
        self.state = State::Seek;
        event(DataEvent::End)
    }

    /// The text ended: a URI still open ends with it.
    pub fn finish<E>(
        &mut self,
        mut event: impl FnMut(DataEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.state {
            State::Base64(_) | State::Percent { .. } => self.end_uri(&mut event),
            _ => Ok(()),
        }
    }
}

fn hex_digit(v: u8) -> u8 {
    b"0123456789abcdef"[(v & 15) as usize]
}

/// Characters that end an attribute value or a CSS `url(...)`.
fn ends_value(c: u8) -> bool {
    matches!(c, b'"' | b'\'' | b')' | b'<' | b'>' | b'`')
}

/// Whether the colon after `before` (with `tail`, the bytes before those)
/// ends the scheme "data" at the start of a word ("metadata:" is not one).
fn starts_uri(tail: &[u8; 5], before: &[u8]) -> bool {
    let mut last = [0u8; 5];
    let from_text = before.len().min(5);
    last[..5 - from_text].copy_from_slice(&tail[from_text..]);
    last[5 - from_text..].copy_from_slice(&before[before.len() - from_text..]);
    last[1..].eq_ignore_ascii_case(b"data") && !last[0].is_ascii_alphanumeric()
}

/// Whether an object's first bytes look like an HTML page or fragment
/// (after whitespace and a byte-order mark, a tag HTML mail starts with).
pub fn looks_like_html(head: &[u8]) -> bool {
    const TAGS: &[&[u8]] = &[
        b"<!doctype html",
        b"<html",
        b"<head",
        b"<body",
        b"<meta",
        b"<title",
        b"<a ",
        b"<div",
        b"<p>",
        b"<p ",
        b"<table",
        b"<img",
        b"<iframe",
        b"<script",
        b"<style",
        b"<span",
        b"<br",
        b"<!--",
    ];
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let start = head.iter().position(|c| !c.is_ascii_whitespace());
    let Some(head) = start.map(|s| &head[s..]) else {
        return false;
    };
    TAGS.iter()
        .any(|t| head.len() >= t.len() && head[..t.len()].eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every payload found, fed in pieces of `piece` bytes.
    fn payloads(text: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut d = DataUris::new();
        let mut found: Vec<Vec<u8>> = Vec::new();
        let mut on = |e: DataEvent<'_>| -> Result<(), ()> {
            match e {
                DataEvent::Start => found.push(Vec::new()),
                DataEvent::Bytes(b) => found.last_mut().unwrap().extend_from_slice(b),
                DataEvent::End => {}
            }
            Ok(())
        };
        for p in text.chunks(piece.max(1)) {
            d.push(p, &mut on).unwrap();
        }
        d.finish(&mut on).unwrap();
        found
    }

    #[test]
    fn base64_and_percent_payloads() {
        let html = b"<p>metadata: no</p><a href=\"data:application/octet-stream;base64,SGVs\r\nbG8=\">x</a>\
            <img src='DATA:text/plain,a%20b%zz%4'>url(data:,x%41y)";
        for piece in [1, 3, 7, 1000] {
            assert_eq!(
                payloads(html, piece),
                vec![b"Hello".to_vec(), b"a b%zz%4".to_vec(), b"xAy".to_vec()],
                "piece {piece}"
            );
        }
    }

    #[test]
    fn html_by_its_first_tags() {
        assert!(looks_like_html(b"<a href=\"data:..."));
        assert!(looks_like_html(b"\xef\xbb\xbf\r\n<!DOCTYPE html><html>"));
        assert!(!looks_like_html(b"MZ\x90\0"));
        assert!(!looks_like_html(b"<?xml version"));
    }

    proptest! {
        #[test]
        fn any_text_in_any_pieces(text in proptest::collection::vec(any::<u8>(), 0..400), piece in 1usize..20) {
            let mut t = b"x data:;base64,".to_vec();
            t.extend_from_slice(&text);
            prop_assert_eq!(payloads(&t, piece), payloads(&t, 10_000));
        }
    }
}
