//! Body signatures as the matcher keeps them: every signature's tokens in
//! one byte arena and every name in one string, with a 16-byte entry per
//! signature. Parsed signatures (`signature::BodySignature`, a vector per
//! token) cost several hundred bytes each in small allocations; with tens
//! of thousands loaded that was most of the scanner's memory.
//!
//! A signature's code is its offset (16 bytes, unless `*`) and then its
//! tokens, each a tag byte and its operands (lengths as u16, gap bounds as
//! u64, little-endian):
//!
//! - `EXACT len bytes`: fixed bytes, all exact;
//! - `MASKED len values masks`: fixed bytes, some nibbles or `??`;
//! - `ALT count (len bytes)...`: `(aa|bbcc)`;
//! - `GAP min max`: max `u64::MAX` for unbounded.
//!
//! One parsed token is one code token, so verification takes the same
//! steps (and budget) as on the parsed form.

use super::signature::{BodySignature, Offset, Target, Token};

const EXACT: u8 = 1;
const MASKED: u8 = 2;
const ALT: u8 = 3;
const GAP: u8 = 4;
const UNBOUNDED: u64 = u64::MAX;

/// All loaded body signatures, numbered in load order.
#[derive(Default)]
pub struct Compiled {
    code: Vec<u8>,
    names: String,
    entries: Vec<Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    /// Where the signature's code and name start (each ends where the
    /// next signature's starts).
    code: u32,
    name: u32,
    /// How far the anchor is from the signature's start.
    anchor_at: u32,
    target: Target,
    /// 0: `*`, 1: from the start, 2: from the end (values in the code).
    offset: u8,
}

/// One loaded signature, borrowed from the arenas.
pub struct Sig<'a> {
    pub name: &'a str,
    pub target: Target,
    pub offset: Offset,
    pub anchor_at: usize,
    pub program: Program<'a>,
}

fn arena_pos(n: usize) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| "body signatures exceed 4 GiB".to_string())
}

fn put_len(code: &mut Vec<u8>, n: usize) -> Result<(), String> {
    let n = u16::try_from(n).map_err(|_| format!("a token of {n} bytes: at most 65535"))?;
    code.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

impl Compiled {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Appends a parsed signature; its number is the previous `len()`.
    pub fn push(&mut self, s: &BodySignature) -> Result<(), String> {
        let start = self.code.len();
        let name = self.names.len();
        let entry = Entry {
            code: arena_pos(start)?,
            name: arena_pos(name)?,
            anchor_at: arena_pos(s.anchor_at)?,
            target: s.target,
            offset: match s.offset {
                Offset::Any => 0,
                Offset::Start(..) => 1,
                Offset::End(..) => 2,
            },
        };
        if let Err(e) = self.encode(s) {
            self.code.truncate(start);
            return Err(e);
        }
        self.names.push_str(&s.name);
        self.entries.push(entry);
        Ok(())
    }

    fn encode(&mut self, s: &BodySignature) -> Result<(), String> {
        let code = &mut self.code;
        if let Offset::Start(n, shift) | Offset::End(n, shift) = s.offset {
            code.extend_from_slice(&n.to_le_bytes());
            code.extend_from_slice(&shift.to_le_bytes());
        }
        for t in &s.tokens {
            match t {
                Token::Fixed(bytes) if bytes.iter().all(|&(_, m)| m == 0xff) => {
                    code.push(EXACT);
                    put_len(code, bytes.len())?;
                    code.extend(bytes.iter().map(|&(v, _)| v));
                }
                Token::Fixed(bytes) => {
                    code.push(MASKED);
                    put_len(code, bytes.len())?;
                    code.extend(bytes.iter().map(|&(v, _)| v));
                    code.extend(bytes.iter().map(|&(_, m)| m));
                }
                Token::Alt(alts) => {
                    code.push(ALT);
                    put_len(code, alts.len())?;
                    for a in alts {
                        put_len(code, a.len())?;
                        code.extend_from_slice(a);
                    }
                }
                Token::Gap { min, max } => {
                    code.push(GAP);
                    code.extend_from_slice(&min.to_le_bytes());
                    code.extend_from_slice(&max.unwrap_or(UNBOUNDED).to_le_bytes());
                }
            }
        }
        Ok(())
    }

    /// Signature number `i` (`i < len()`).
    pub fn get(&self, i: usize) -> Sig<'_> {
        let e = self.entries[i];
        let next = self.entries.get(i + 1);
        let code_end = next.map_or(self.code.len(), |n| n.code as usize);
        let name_end = next.map_or(self.names.len(), |n| n.name as usize);
        let mut code = self.code.get(e.code as usize..code_end).unwrap_or(&[]);
        let offset = match e.offset {
            0 => Offset::Any,
            k => {
                let n = u64_at(code, 0).unwrap_or(0);
                let shift = u64_at(code, 8).unwrap_or(0);
                code = code.get(16..).unwrap_or(&[]);
                if k == 1 {
                    Offset::Start(n, shift)
                } else {
                    Offset::End(n, shift)
                }
            }
        };
        Sig {
            name: self.names.get(e.name as usize..name_end).unwrap_or(""),
            target: e.target,
            offset,
            anchor_at: e.anchor_at as usize,
            program: Program(code),
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.code.capacity()
            + self.names.capacity()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Gives back the arenas' spare capacity once loading is done.
    pub fn shrink_to_fit(&mut self) {
        self.code.shrink_to_fit();
        self.names.shrink_to_fit();
        self.entries.shrink_to_fit();
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    let v = b.get(at..at + 2)?;
    Some(u16::from_le_bytes([v[0], v[1]]) as usize)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let v = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(v);
    Some(u64::from_le_bytes(a))
}

/// One token of a signature's code.
#[derive(Clone, Copy)]
pub enum Tok<'a> {
    Exact(&'a [u8]),
    Masked { values: &'a [u8], masks: &'a [u8] },
    Alt(Alts<'a>),
    Gap { min: u64, max: Option<u64> },
}

/// The alternatives of an `(aa|bb)` token, in order.
#[derive(Clone, Copy)]
pub struct Alts<'a> {
    left: usize,
    rest: &'a [u8],
}

impl<'a> Iterator for Alts<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let n = u16_at(self.rest, 0)?;
        let alt = self.rest.get(2..2 + n)?;
        self.rest = &self.rest[2 + n..];
        Some(alt)
    }
}

/// A run of tokens: a whole signature or one of its parts.
#[derive(Clone, Copy)]
pub struct Program<'a>(&'a [u8]);

impl<'a> Program<'a> {
    /// The first token and the rest (None at the end, or on code this
    /// module did not write).
    pub fn split_first(self) -> Option<(Tok<'a>, Program<'a>)> {
        let b = self.0;
        let (tok, len) = match *b.first()? {
            EXACT => {
                let n = u16_at(b, 1)?;
                (Tok::Exact(b.get(3..3 + n)?), 3 + n)
            }
            MASKED => {
                let n = u16_at(b, 1)?;
                let values = b.get(3..3 + n)?;
                let masks = b.get(3 + n..3 + 2 * n)?;
                (Tok::Masked { values, masks }, 3 + 2 * n)
            }
            ALT => {
                let count = u16_at(b, 1)?;
                let mut len = 3;
                for _ in 0..count {
                    len += 2 + u16_at(b, len)?;
                }
                let rest = b.get(3..len)?;
                (Tok::Alt(Alts { left: count, rest }), len)
            }
            GAP => {
                let min = u64_at(b, 1)?;
                let max = u64_at(b, 9)?;
                let max = (max != UNBOUNDED).then_some(max);
                (Tok::Gap { min, max }, 17)
            }
            _ => return None,
        };
        Some((tok, Program(b.get(len..)?)))
    }

    /// The first byte, if the program starts with an exact one: where a
    /// match can start is then found with a byte search.
    pub fn first_exact_byte(self) -> Option<u8> {
        match self.split_first()?.0 {
            Tok::Exact(b) => b.first().copied(),
            Tok::Masked { values, masks } => (masks.first() == Some(&0xff)).then(|| values[0]),
            _ => None,
        }
    }

    /// The signature's parts: the token runs between unbounded gaps, each
    /// with the least gap that must follow it (0 after the last).
    pub fn parts(self) -> impl Iterator<Item = (u64, Program<'a>)> {
        let mut rest = self;
        std::iter::from_fn(move || {
            if rest.0.is_empty() {
                return None;
            }
            let all = rest.0;
            let mut p = rest;
            while let Some((tok, next)) = p.split_first() {
                if let Tok::Gap { min, max: None } = tok {
                    let used = all.len() - p.0.len();
                    rest = next;
                    return Some((min, Program(&all[..used])));
                }
                p = next;
            }
            rest = Program(&[]);
            Some((0, Program(all)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::signature::parse_ndb;
    use super::*;

    fn compiled(lines: &[&str]) -> Compiled {
        let mut c = Compiled::default();
        for l in lines {
            c.push(&parse_ndb(l).unwrap().unwrap()).unwrap();
        }
        c
    }

    #[test]
    fn round_trip_of_every_token_and_offset() {
        let c = compiled(&[
            "A:0:*:4142??43(44|4546){2-3}47*48{5-}4950",
            "Bee:4:EOF-10,2:4142434445",
            "C:7:100:61626364",
        ]);
        assert_eq!(c.len(), 3);
        let a = c.get(0);
        assert_eq!(
            (a.name, a.target, a.offset),
            ("A", Target::Any, Offset::Any)
        );
        let mut toks = Vec::new();
        let mut p = a.program;
        while let Some((t, rest)) = p.split_first() {
            toks.push(match t {
                Tok::Exact(b) => format!("E{b:?}"),
                Tok::Masked { values, masks } => format!("M{values:?}{masks:?}"),
                Tok::Alt(alts) => format!("A{:?}", alts.collect::<Vec<_>>()),
                Tok::Gap { min, max } => format!("G{min}-{max:?}"),
            });
            p = rest;
        }
        assert_eq!(
            toks,
            [
                "M[65, 66, 0, 67][255, 255, 0, 255]",
                "A[[68], [69, 70]]",
                "G2-Some(3)",
                "E[71]",
                "G0-None",
                "E[72]",
                "G5-None",
                "E[73, 80]",
            ]
        );
        let parts: Vec<u64> = a.program.parts().map(|(gap, _)| gap).collect();
        assert_eq!(parts, [0, 5, 0]);
        assert_eq!(a.program.first_exact_byte(), Some(0x41));
        let b = c.get(1);
        assert_eq!(
            (b.name, b.target, b.offset),
            ("Bee", Target::Mail, Offset::End(10, 2))
        );
        assert_eq!(b.program.first_exact_byte(), Some(0x41));
        let t = c.get(2);
        assert_eq!((t.name, t.offset), ("C", Offset::Start(100, 0)));
    }

    #[test]
    fn a_signature_costs_its_bytes_not_allocations() {
        let lines: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    "Gen.Body.{i:06}:0:*:{}",
                    "4142434445464748494a4b4c".repeat(2)
                )
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut c = compiled(&refs);
        c.shrink_to_fit();
        // 24 code bytes + 3 of header, a 15-byte name, a 16-byte entry.
        assert!(c.heap_bytes() <= 1000 * 60, "{}", c.heap_bytes());
    }
}
