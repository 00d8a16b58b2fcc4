//! Content-transfer decoders, fed a part's body a chunk at a time and
//! lenient the way mail readers are (a scanner must see what a reader would
//! decode): base64 (RFC 2045 section 6.8, characters outside the alphabet
//! ignored), quoted-printable (section 6.7, malformed escapes kept as they
//! are) and uuencode (inside text, or as x-uuencode).

/// A streaming decoder.
pub enum Decoder {
    Identity,
    Base64 { quad: [u8; 4], n: usize, done: bool },
    QuotedPrintable { carry: Vec<u8> },
    Uuencode { line: Vec<u8>, state: UuState },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum UuState {
    BeforeBegin,
    InBody,
    Done,
}

fn b64(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

impl Decoder {
    /// The decoder for a Content-Transfer-Encoding value (uppercased).
    pub fn for_encoding(encoding: &str) -> Decoder {
        match encoding {
            "BASE64" => Decoder::Base64 {
                quad: [0; 4],
                n: 0,
                done: false,
            },
            "QUOTED-PRINTABLE" => Decoder::QuotedPrintable { carry: Vec::new() },
            "X-UUENCODE" | "UUENCODE" | "X-UUE" => Decoder::Uuencode {
                line: Vec::new(),
                state: UuState::BeforeBegin,
            },
            _ => Decoder::Identity,
        }
    }

    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self {
            Decoder::Identity => out.extend_from_slice(input),
            Decoder::Base64 { quad, n, done } => {
                for &c in input {
                    if *done {
                        return;
                    }
                    if c == b'=' {
                        // Padding ends the data (what follows is ignored,
                        // as most readers do).
                        match *n {
                            2 => out.push((quad[0] << 2) | (quad[1] >> 4)),
                            3 => {
                                out.push((quad[0] << 2) | (quad[1] >> 4));
                                out.push((quad[1] << 4) | (quad[2] >> 2));
                            }
                            _ => {}
                        }
                        *n = 0;
                        *done = true;
                        continue;
                    }
                    let Some(v) = b64(c) else { continue };
                    quad[*n] = v;
                    *n += 1;
                    if *n == 4 {
                        out.push((quad[0] << 2) | (quad[1] >> 4));
                        out.push((quad[1] << 4) | (quad[2] >> 2));
                        out.push((quad[2] << 6) | quad[3]);
                        *n = 0;
                    }
                }
            }
            Decoder::QuotedPrintable { carry } => {
                let data: Vec<u8>;
                let input = if carry.is_empty() {
                    input
                } else {
                    data = [carry.as_slice(), input].concat();
                    carry.clear();
                    &data
                };
                let mut i = 0;
                while i < input.len() {
                    let c = input[i];
                    if c != b'=' {
                        out.push(c);
                        i += 1;
                        continue;
                    }
                    // Need up to two more bytes to decide.
                    if i + 2 >= input.len() {
                        carry.extend_from_slice(&input[i..]);
                        return;
                    }
                    let (a, b) = (input[i + 1], input[i + 2]);
                    if a == b'\r' && b == b'\n' {
                        i += 3;
                    } else if a == b'\n' {
                        i += 2;
                    } else if let (Some(h), Some(l)) = (hex(a), hex(b)) {
                        out.push((h << 4) | l);
                        i += 3;
                    } else {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            Decoder::Uuencode { line, state } => {
                for &c in input {
                    if c == b'\n' {
                        uu_line(line, state, out);
                        line.clear();
                    } else if line.len() < 1024 {
                        line.push(c);
                    }
                }
            }
        }
    }

    /// Whether a uuencoded file's "end" line has gone by.
    pub fn uu_done(&self) -> bool {
        matches!(
            self,
            Decoder::Uuencode {
                state: UuState::Done,
                ..
            }
        )
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            Decoder::Base64 { quad, n, done } if !*done => match *n {
                2 => out.push((quad[0] << 2) | (quad[1] >> 4)),
                3 => {
                    out.push((quad[0] << 2) | (quad[1] >> 4));
                    out.push((quad[1] << 4) | (quad[2] >> 2));
                }
                _ => {}
            },
            Decoder::QuotedPrintable { carry } => {
                // A trailing soft break "=" or "=\r" is dropped.
                if !(carry.starts_with(b"=") && carry[1..].iter().all(|&c| c == b'\r')) {
                    out.extend_from_slice(carry);
                }
                carry.clear();
            }
            Decoder::Uuencode { line, state } if !line.is_empty() => {
                uu_line(line, state, out);
                line.clear();
            }
            _ => {}
        }
    }
}

fn uu_line(line: &[u8], state: &mut UuState, out: &mut Vec<u8>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match state {
        UuState::BeforeBegin => {
            if is_uu_begin(line) {
                *state = UuState::InBody;
            }
        }
        UuState::InBody => {
            if line == b"end" {
                *state = UuState::Done;
                return;
            }
            let Some((&first, rest)) = line.split_first() else {
                return;
            };
            let n = ((first.wrapping_sub(b' ')) & 63) as usize;
            if n == 0 {
                return;
            }
            let mut bytes = Vec::with_capacity(n + 2);
            for q in rest.chunks(4) {
                let v = |i: usize| q.get(i).map_or(0, |&c| c.wrapping_sub(b' ') & 63);
                bytes.push((v(0) << 2) | (v(1) >> 4));
                bytes.push((v(1) << 4) | (v(2) >> 2));
                bytes.push((v(2) << 6) | v(3));
            }
            bytes.truncate(n);
            out.extend_from_slice(&bytes);
        }
        UuState::Done => {}
    }
}

/// "begin 644 name": the start of a uuencoded file.
pub fn is_uu_begin(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"begin ") else {
        return false;
    };
    let digits = rest
        .iter()
        .take_while(|c| (b'0'..=b'7').contains(c))
        .count();
    (3..=4).contains(&digits) && rest.get(digits) == Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(enc: &str, pieces: &[&[u8]]) -> Vec<u8> {
        let mut d = Decoder::for_encoding(enc);
        let mut out = Vec::new();
        for p in pieces {
            d.push(p, &mut out);
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn base64_across_chunks_and_line_breaks() {
        assert_eq!(
            decode("BASE64", &[b"SGVs", b"bG8\r\n", b"gd29y", b"bGQ="]),
            b"Hello world"
        );
        assert_eq!(decode("BASE64", &[b"YQ=="]), b"a");
        assert_eq!(decode("BASE64", &[b"YWI"]), b"ab", "missing padding");
    }

    #[test]
    fn quoted_printable() {
        assert_eq!(
            decode("QUOTED-PRINTABLE", &[b"a=3Db=", b"\r\nc=4", b"1=ZZ"]),
            b"a=bcA=ZZ"
        );
        assert_eq!(decode("QUOTED-PRINTABLE", &[b"end="]), b"end");
    }

    #[test]
    fn uuencode() {
        assert!(is_uu_begin(b"begin 644 x.txt"));
        assert!(!is_uu_begin(b"begin 64 x.txt"));
        assert!(!is_uu_begin(b"not begin 644 x"));
        assert_eq!(
            decode("X-UUENCODE", &[b"begin 600 a\n#0V", b"%T\nend\n"]),
            b"Cat"
        );
    }

    proptest! {
        #[test]
        fn base64_round_trips_in_any_chunking(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..400) {
            use base64::Engine;
            let enc = base64::engine::general_purpose::STANDARD.encode(&data);
            let cut = cut.min(enc.len());
            prop_assert_eq!(decode("BASE64", &[&enc.as_bytes()[..cut], &enc.as_bytes()[cut..]]), data);
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            for enc in ["BASE64", "QUOTED-PRINTABLE", "X-UUENCODE", "7BIT"] {
                decode(enc, &[&data]);
            }
            is_uu_begin(&data);
        }
    }
}
