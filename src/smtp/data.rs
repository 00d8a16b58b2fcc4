//! The message content of DATA and BDAT, decoded without I/O.
//!
//! DATA (RFC 5321 4.1.1.4): the content ends only at CRLF "." CRLF, and a
//! line beginning with "." has it removed (4.5.2). Policy against SMTP
//! smuggling: a bare LF or bare CR anywhere in the content never ends it,
//! and a message that contains one is refused after its real end (RFC 5321
//! 2.3.8 requires CRLF), so that no other server could read a different
//! message boundary into what we accepted.

/// Decodes dot-stuffed DATA content incrementally.
#[derive(Debug)]
pub struct DotDecoder {
    state: State,
    pub bare_line_ending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After CRLF (or at the very start): a "." here is special.
    LineStart,
    /// Saw "." at a line start.
    Dot,
    /// Saw "." CR at a line start.
    DotCr,
    Middle,
    /// Saw CR in the middle of a line.
    Cr,
    Done,
}

impl Default for DotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DotDecoder {
    pub fn new() -> DotDecoder {
        DotDecoder {
            state: State::LineStart,
            bare_line_ending: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending content to `out`. Returns how many
    /// input bytes were used: all of them, or fewer when the end marker was
    /// reached (the rest belongs to the next command, RFC 2920 pipelining).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        for (i, &b) in input.iter().enumerate() {
            self.state = match (self.state, b) {
                (State::Done, _) => return i,
                (State::LineStart, b'.') => State::Dot,
                (State::Dot, b'\r') => State::DotCr,
                (State::DotCr, b'\n') => {
                    self.state = State::Done;
                    return i + 1;
                }
                (State::DotCr, b) => {
                    // ".\r" followed by anything but LF: a bare CR.
                    self.bare_line_ending = true;
                    out.push(b'\r');
                    self.middle(b, out)
                }
                // A leading "." with more on the line: drop the dot.
                (State::Dot, b) | (State::LineStart, b) | (State::Middle, b) => self.middle(b, out),
                (State::Cr, b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    State::LineStart
                }
                (State::Cr, b) => {
                    self.bare_line_ending = true;
                    out.push(b'\r');
                    self.middle(b, out)
                }
            };
        }
        if self.state == State::Done {
            0
        } else {
            input.len()
        }
    }

    fn middle(&mut self, b: u8, out: &mut Vec<u8>) -> State {
        match b {
            b'\r' => State::Cr,
            b'\n' => {
                // A bare LF: kept in the content (which will be refused),
                // and it does not start a new line, so "\n.\r\n" cannot end
                // the message.
                self.bare_line_ending = true;
                out.push(b'\n');
                State::Middle
            }
            b => {
                out.push(b);
                State::Middle
            }
        }
    }
}

/// Watches BDAT content (not dot-stuffed, RFC 3030) for bare CR or LF.
#[derive(Debug, Default)]
pub struct LineEndingCheck {
    after_cr: bool,
    pub bare_line_ending: bool,
}

impl LineEndingCheck {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match (self.after_cr, b) {
                (true, b'\n') => self.after_cr = false,
                (true, b'\r') => self.bare_line_ending = true,
                (true, _) => {
                    self.bare_line_ending = true;
                    self.after_cr = false;
                }
                (false, b'\r') => self.after_cr = true,
                (false, b'\n') => self.bare_line_ending = true,
                (false, _) => {}
            }
        }
    }
    /// A CR at the very end of the content is bare too.
    pub fn finish(&mut self) {
        if self.after_cr {
            self.bare_line_ending = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> (Vec<u8>, usize, bool, bool) {
        let mut d = DotDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            let n = d.decode(piece, &mut out);
            used += n;
            if d.is_done() {
                break;
            }
        }
        (out, used, d.is_done(), d.bare_line_ending)
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_unstuffs() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nRSET\r\n";
        for step in [1, 2, 3, 7, 100] {
            let (out, used, done, bare) = decode_all(input, step);
            assert!(done, "step {step}");
            assert!(!bare);
            assert_eq!(out, b"Subject: x\r\n\r\n.leading dot\r\n");
            assert_eq!(&input[used..], b"RSET\r\n", "step {step}");
        }
    }

    #[test]
    fn empty_message() {
        let (out, used, done, _) = decode_all(b".\r\n", 1);
        assert!(done);
        assert_eq!(used, 3);
        assert!(out.is_empty());
    }

    #[test]
    fn smuggling_attempts_do_not_end_data() {
        for input in [
            &b"a\r\n\n.\n\r\nMAIL FROM:<x@evil>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@evil>\r\n",
            b"a\r\n.\nMAIL FROM:<x@evil>\r\n",
            b"a\r.\r\nMAIL FROM:<x@evil>\r\n",
            b"a\r\n.\r MAIL FROM:<x@evil>\r\n",
        ] {
            let (_, _, done, bare) = decode_all(input, 1);
            assert!(!done, "{:?} ended DATA", String::from_utf8_lossy(input));
            assert!(bare, "{:?} not flagged", String::from_utf8_lossy(input));
            // The real end still ends it, and the message stays flagged.
            let mut full = input.to_vec();
            full.extend_from_slice(b"\r\n.\r\n");
            let (_, _, done, bare) = decode_all(&full, 3);
            assert!(done && bare);
        }
    }

    #[test]
    fn bdat_line_endings() {
        let check = |b: &[u8]| {
            let mut c = LineEndingCheck::default();
            for byte in b.chunks(1) {
                c.feed(byte);
            }
            c.finish();
            c.bare_line_ending
        };
        assert!(!check(b"a\r\nb\r\n"));
        assert!(check(b"a\nb\r\n"));
        assert!(check(b"a\rb\r\n"));
        assert!(check(b"a\r\nb\r"));
        assert!(check(b"a\r\r\n"));
    }

    proptest::proptest! {
        #[test]
        fn chunking_does_not_matter(input in proptest::collection::vec(proptest::sample::select(vec![b'a', b'.', b'\r', b'\n']), 0..200), step in 1usize..20) {
            let whole = decode_all(&input, input.len().max(1));
            let pieces = decode_all(&input, step);
            proptest::prop_assert_eq!(whole, pieces);
        }
    }
}
