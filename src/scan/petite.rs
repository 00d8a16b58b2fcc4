//! Petite 2.1/2.2-packed Windows executables: the sections its stub
//! decompresses in memory, so that the original code and data are scanned.
//!
//! Petite puts its stub in the last section and the entry point at it. The
//! stub is recognised by its code: `mov eax, <that section's address>`,
//! then (2.2) an exception frame set up with `push handler; push fs:[0];
//! mov fs:[0], esp`, then `pushfw; pushad; push eax`. A list of records
//! follows the stub's code at a fixed distance from the section start
//! (0x178 in 2.1, 0x1b8 in 2.2), each a little-endian word first:
//!
//! - 0 ends the list;
//! - with bit 31 set, the low bits count words to move: the words ending
//!   at the address in the record's second word go to those ending at its
//!   third (12 bytes: compressed data moved to a section's end so that
//!   it can be decompressed in place);
//! - otherwise it is the address of compressed data, then the
//!   uncompressed size, the destination address and a word pimail does
//!   not use (16 bytes).
//!
//! The compression is an NRV-like LZ77 bit stream: the first byte is
//! stored, then a flag bit per item, bits read most significant first
//! from bytes taken as needed between the literal bytes. A literal (0) is
//! a byte XORed with the low byte of the count of bytes still to come; a
//! match (1) has an Elias-gamma prefix (continue bits are 1) whose value
//! 2 repeats the last offset, and otherwise gives the offset's high bits
//! above 5, 7 or 8 low bits (by the section size); the length is two bits,
//! or a gamma number plus 2 when they are 0, plus 1-3 for a new offset
//! (the further back, the more).

/// A stub version: where its record list starts in its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V21,
    V22,
}

impl Version {
    pub fn records(self) -> u32 {
        match self {
            Version::V21 => 0x178,
            Version::V22 => 0x1b8,
        }
    }
}

const V21_TAIL: &[u8] = b"\x66\x9c\x60\x50";
const V22_TAIL: &[u8] = b"\x64\xff\x35\x00\x00\x00\x00\x64\x89\x25\x00\x00\x00\x00\x66\x9c\x60\x50";

/// The stub version if `code` (the bytes from the entry point) is
/// Petite's and loads `section`, the last section's address in memory.
pub fn stub(code: &[u8], section: u32) -> Option<Version> {
    if code.first() != Some(&0xb8) || super::peimage::u32_at(code, 1)? != section {
        return None;
    }
    if code.get(5..9)? == V21_TAIL {
        Some(Version::V21)
    } else if code.get(5) == Some(&0x68) && code.get(10..28)? == V22_TAIL {
        Some(Version::V22)
    } else {
        None
    }
}

/// Records followed at most: the list is one per original section (the
/// loader allows 96) and a move or two.
const MAX_RECORDS: usize = 128;

/// Runs the record list at `records` (an address) over `image` (the
/// mapped image, see peimage.rs): moves and decompressions in place. A
/// damaged record keeps what was decoded and ends the list.
pub fn unpack(image: &mut [u8], records: u32) {
    let word = |image: &[u8], at: usize| super::peimage::u32_at(image, at).map(|w| w as usize);
    let mut at = records as usize;
    for _ in 0..MAX_RECORDS {
        let Some(first) = word(image, at) else {
            return;
        };
        if first == 0 {
            return;
        }
        if first & 0x8000_0000 != 0 {
            let (Some(from), Some(to)) = (word(image, at + 4), word(image, at + 8)) else {
                return;
            };
            let words = first & 0x7fff_ffff;
            let len = words * 4;
            let back = (words.saturating_sub(1)) * 4;
            let (Some(from), Some(to)) = (from.checked_sub(back), to.checked_sub(back)) else {
                return;
            };
            if from
                .max(to)
                .checked_add(len)
                .is_none_or(|end| end > image.len())
            {
                return;
            }
            image.copy_within(from..from + len, to);
            at += 12;
            continue;
        }
        let (Some(size), Some(to)) = (word(image, at + 4), word(image, at + 8)) else {
            return;
        };
        at += 16;
        if size == 0 {
            continue;
        }
        if to.checked_add(size).is_none_or(|end| end > image.len()) || first >= image.len() {
            return;
        }
        let out = expand(&image[first..], size);
        let whole = out.len() == size;
        image[to..to + out.len()].copy_from_slice(&out);
        if !whole {
            return;
        }
    }
}

/// Bits of a byte taken when the last one is used up, most significant
/// first.
struct Bits<'a> {
    input: &'a [u8],
    at: usize,
    byte: u8,
    left: u8,
}

impl Bits<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.input.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn bit(&mut self) -> Option<u32> {
        if self.left == 0 {
            self.byte = self.byte()?;
            self.left = 8;
        }
        self.left -= 1;
        Some(((self.byte >> self.left) & 1) as u32)
    }

    /// `start`, then a data bit appended per step while a 1 follows it.
    fn gamma(&mut self, start: u32) -> Option<u32> {
        let mut v = start;
        loop {
            v = v.checked_mul(2)?.checked_add(self.bit()?)?;
            if self.bit()? == 0 {
                return Some(v);
            }
        }
    }
}

/// Decompresses `size` bytes from `input`; damage (input ending early, a
/// reference before the start or past `size`) ends the output there.
pub fn expand(input: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let _ = expand_into(input, size, &mut out);
    out
}

fn expand_into(input: &[u8], size: usize, out: &mut Vec<u8>) -> Option<()> {
    let mut bits = Bits {
        input,
        at: 0,
        byte: 0,
        left: 0,
    };
    out.push(bits.byte()?);
    // Low offset bits, and the offsets past which a match is 1 and 2
    // bytes longer than coded, by the section's size.
    let (low, far, farther) = match size {
        0..0x10000 => (5, 0x39f, 0x3f9f),
        0x10000..0x40000 => (7, 0x67f, 0x7e7f),
        _ => (8, 0x4ff, 0x7cff),
    };
    let mut last = 0usize;
    while out.len() < size {
        if bits.bit()? == 0 {
            let key = (size - out.len()) as u8;
            out.push(bits.byte()? ^ key);
            continue;
        }
        let prefix = bits.gamma(1)?;
        let mut add = 0;
        if prefix >= 3 {
            let mut v = prefix - 3;
            for _ in 0..low {
                v = v.checked_mul(2)?.checked_add(bits.bit()?)?;
            }
            add = 1 + u32::from(v > far) + u32::from(v > farther);
            last = v as usize + 1;
        }
        let mut len = bits.bit()? * 2 + bits.bit()?;
        if len == 0 {
            len = bits.gamma(1)? + 2;
        }
        let len = (len + add) as usize;
        if last == 0 || last > out.len() || len > size - out.len() {
            return None;
        }
        let from = out.len() - last;
        for i in 0..len {
            out.push(out[from + i]);
        }
    }
    Some(())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bits as [`Bits`] reads them: a byte's place is reserved when its
    /// first bit is written; bytes written meanwhile go after it.
    struct Writer {
        out: Vec<u8>,
        at: usize,
        used: u8,
    }

    impl Writer {
        fn bit(&mut self, b: u32) {
            if self.used == 0 {
                self.at = self.out.len();
                self.out.push(0);
            }
            self.out[self.at] |= (b as u8) << (7 - self.used);
            self.used += 1;
            if self.used == 8 {
                self.used = 0;
            }
        }

        /// `v` (at least 2) as [`Bits::gamma`] reads it from 1.
        fn gamma(&mut self, v: u32) {
            let n = 32 - v.leading_zeros();
            for i in (0..n - 1).rev() {
                self.bit((v >> i) & 1);
                self.bit(u32::from(i != 0));
            }
        }
    }

    /// A greedy compressor for the tests (sizes below 64 KiB: 5 low
    /// offset bits): literals, new and repeated offsets, short and long
    /// lengths.
    pub fn compress(data: &[u8]) -> Vec<u8> {
        let size = data.len();
        let mut w = Writer {
            out: vec![data[0]],
            at: 0,
            used: 0,
        };
        let (mut i, mut last) = (1, 0usize);
        while i < size {
            let (mut best, mut dist) = (0, 0);
            for d in 1..=i.min(20000) {
                let mut n = 0;
                while i + n < size && data[i + n] == data[i + n - d] && n < 300 {
                    n += 1;
                }
                if n > best || (n == best && d == last) {
                    (best, dist) = (n, d);
                }
            }
            let v = (dist as u32).wrapping_sub(1);
            let add = if dist == last {
                0
            } else {
                1 + u32::from(v > 0x39f) + u32::from(v > 0x3f9f)
            } as usize;
            if best < add + 2 {
                w.bit(0);
                w.out.push(data[i] ^ (size - i) as u8);
                i += 1;
                continue;
            }
            w.bit(1);
            if dist == last {
                w.gamma(2);
            } else {
                w.gamma((v >> 5) + 3);
                for b in (0..5).rev() {
                    w.bit((v >> b) & 1);
                }
                last = dist;
            }
            let len = (best - add) as u32;
            if len <= 3 {
                w.bit(len >> 1);
                w.bit(len & 1);
            } else {
                w.bit(0);
                w.bit(0);
                w.gamma(len - 2);
            }
            i += best;
        }
        w.out
    }

    pub fn sample() -> Vec<u8> {
        let mut d = Vec::new();
        for i in 0..400u32 {
            d.extend_from_slice(format!("record {} of the list; ", i % 53).as_bytes());
            d.extend_from_slice(&i.wrapping_mul(2654435761).to_le_bytes());
        }
        let again = d[..3000].to_vec();
        d.extend_from_slice(&again);
        d
    }

    /// Petite 2.2's stub code loading the section at `section` (image
    /// base included).
    pub fn stub_code(section: u32) -> Vec<u8> {
        let mut c = vec![0xb8];
        c.extend_from_slice(&section.to_le_bytes());
        c.extend_from_slice(b"\x68\x23\x21\x40\x00");
        c.extend_from_slice(V22_TAIL);
        c
    }

    #[test]
    fn round_trip_and_damage() {
        let data = sample();
        let packed = compress(&data);
        assert!(packed.len() < data.len() / 2);
        assert_eq!(expand(&packed, data.len()), data);
        // Another declared size changes the literals' key: bounded, no
        // panic.
        assert!(expand(&packed, 1000).len() <= 1000);
        let short = expand(&packed[..packed.len() / 2], data.len());
        assert!(short.len() < data.len() && data.starts_with(&short));
        let mut bad = packed.clone();
        for b in bad.iter_mut().skip(100).step_by(29) {
            *b ^= 0x44;
        }
        assert!(expand(&bad, data.len()).len() <= data.len());
    }

    #[test]
    fn records_move_then_decompress_in_place() {
        let data = sample();
        let packed = compress(&data);
        let words = packed.len().div_ceil(4) as u32;
        let mut image = vec![0u8; 0x10000];
        image[0x1000..0x1000 + packed.len()].copy_from_slice(&packed);
        let records = [
            0x8000_0000 | words,
            0x1000 + (words - 1) * 4,
            0x6000 + (words - 1) * 4,
            0x6000,
            data.len() as u32,
            0x8000,
            0,
            0,
        ];
        for (i, r) in records.iter().enumerate() {
            image[0xf000 + 4 * i..0xf004 + 4 * i].copy_from_slice(&r.to_le_bytes());
        }
        let mut one = image.clone();
        unpack(&mut one, 0xf000);
        assert_eq!(&one[0x8000..0x8000 + data.len()], &data[..]);
        // A size past the image: nothing is written or allocated.
        image[0xf010..0xf014].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        let before = image.clone();
        unpack(&mut image, 0xf000);
        assert_eq!(image[0x8000..], before[0x8000..]);
    }

    #[test]
    fn only_the_petite_stub_is_recognised() {
        let code = stub_code(0x40_5000);
        assert_eq!(stub(&code, 0x40_5000), Some(Version::V22));
        assert_eq!(stub(&code, 0x40_6000), None);
        let mut v21 = code[..5].to_vec();
        v21.extend_from_slice(V21_TAIL);
        assert_eq!(stub(&v21, 0x40_5000), Some(Version::V21));
        assert_eq!(stub(&code[..20], 0x40_5000), None);
    }

    proptest! {
        #[test]
        fn random_data_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            for size in [1, 100, 0x20000, 0x50000] {
                prop_assert!(expand(&data, size).len() <= size);
            }
        }
    }
}
