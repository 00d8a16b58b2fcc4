//! MEW 11 SE-packed executables: the original sections are rebuilt as
//! the packer's stub rebuilds them in memory, so that they are scanned.
//!
//! The entry point is a `jmp rel32` to the stub (MEW puts it in the
//! headers), which starts `mov esi, TABLE; mov ebx, esi; lodsd; lodsd;
//! push eax; lodsd; xchg eax, edi; mov dl, 80h`. TABLE (a virtual address
//! in the image) holds: the address of the stub's get-bit routine, the
//! original entry point, then blocks, each the address to decompress to
//! and an LZ77 stream in the format of Jørgen Ibsen's aPLib (tag bits read
//! from the top of a byte, gamma-coded lengths and offset high bytes), the
//! last block followed by a zero word. Recognition is by those code bytes,
//! not by the section names (`MEW` is easily renamed).
//!
//! Every stream decompresses into the image in place, as the stub does:
//! the source is read from the image, so a stream that overwrites its own
//! bytes decodes as it would when run. The result is the image, headers
//! and sections at their RVAs; imports are not rebuilt (scanning does not
//! need them).

use super::pe_image::{Layout, u32_at};
use std::io::{Read, Seek};

/// The stub's code from `mov ebx, esi` to `mov dh, 80h`, after the
/// `mov esi, imm32` (0xbe and the table's address).
const STUB: [u8; 12] = [
    0x8b, 0xde, 0xad, 0xad, 0x50, 0xad, 0x97, 0xb2, 0x80, 0xa4, 0xb6, 0x80,
];

/// A MEW-packed executable: its layout and the table's RVA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mew {
    pub layout: Layout,
    pub table: u32,
}

/// The MEW stub of the PE whose headers are `head`, if it has one; reads
/// only the few bytes at the entry point and at the jump's target.
pub fn find(head: &[u8], file: &mut (impl Read + Seek)) -> std::io::Result<Option<Mew>> {
    let Some(layout) = Layout::parse(head) else {
        return Ok(None);
    };
    let jump = layout.read(file, layout.entry, 5)?;
    let [0xe9, a, b, c, d] = jump[..] else {
        return Ok(None);
    };
    let target = layout
        .entry
        .wrapping_add(5)
        .wrapping_add(u32::from_le_bytes([a, b, c, d]));
    let stub = layout.read(file, target, 5 + STUB.len())?;
    if stub.len() < 5 + STUB.len() || stub[0] != 0xbe || stub[5..] != STUB {
        return Ok(None);
    }
    let table = u32_at(&stub, 1)
        .unwrap_or(0)
        .wrapping_sub(layout.image_base);
    if table >= layout.size_of_image {
        return Ok(None);
    }
    Ok(Some(Mew { layout, table }))
}

/// Decompresses every block of the table at `table` into `image` (the
/// loaded image). Damage (a stream or a table running off the image, a
/// copy from before it) ends the unpacking: what was written stays.
pub fn unpack(image: &mut [u8], image_base: u32, table: u32) {
    let mut at = table as usize + 8;
    // Each byte of the image is written once by a real table: more output
    // than the image's size is a damaged (or hostile) one.
    let mut budget = image.len();
    while let Some(dest) = u32_at(image, at) {
        if dest == 0 {
            break;
        }
        let Some(dest) = dest.checked_sub(image_base) else {
            return;
        };
        let mut lz = Aplib {
            src: at + 4,
            dst: dest as usize,
            tag: 0x80,
            budget,
        };
        match lz.run(image) {
            Some(()) => (at, budget) = (lz.src, lz.budget),
            None => return,
        }
    }
}

/// The state of one aPLib stream being decoded in place in an image.
struct Aplib {
    src: usize,
    dst: usize,
    /// The tag byte: bits are taken from its top; a lone 1 bit (the
    /// marker) left means it is used up.
    tag: u8,
    budget: usize,
}

impl Aplib {
    fn byte(&mut self, image: &[u8]) -> Option<u8> {
        let b = *image.get(self.src)?;
        self.src += 1;
        Some(b)
    }

    fn bit(&mut self, image: &[u8]) -> Option<u32> {
        let top = u32::from(self.tag >> 7);
        self.tag <<= 1;
        if self.tag != 0 {
            return Some(top);
        }
        // Used up: the marker shifted out; a new byte, the marker below.
        let b = self.byte(image)?;
        self.tag = (b << 1) | 1;
        Some(u32::from(b >> 7))
    }

    /// A number from 2 up: a leading 1, then a bit appended per step, a
    /// "more" bit after each.
    fn gamma(&mut self, image: &[u8]) -> Option<u32> {
        let mut v = 1u32;
        loop {
            v = v.checked_mul(2)?.checked_add(self.bit(image)?)?;
            if self.bit(image)? == 0 {
                return Some(v);
            }
        }
    }

    fn put(&mut self, image: &mut [u8], b: u8) -> Option<()> {
        self.budget = self.budget.checked_sub(1)?;
        *image.get_mut(self.dst)? = b;
        self.dst += 1;
        Some(())
    }

    /// `len` bytes from `off` back, one at a time (an overlapping copy
    /// repeats, as `rep movsb` does).
    fn copy(&mut self, image: &mut [u8], off: u32, len: u32) -> Option<()> {
        for _ in 0..len {
            let b = *image.get(self.dst.checked_sub(off as usize)?)?;
            self.put(image, b)?;
        }
        Some(())
    }

    /// Decodes up to the end marker (a short match of offset 0); None on
    /// damage.
    fn run(&mut self, image: &mut [u8]) -> Option<()> {
        // The last offset used, and whether a literal came last (a new
        // offset's high part then counts from 3, not 2).
        let (mut last, mut literal);
        last = 0u32;
        let b = self.byte(image)?;
        self.put(image, b)?;
        literal = true;
        loop {
            if self.bit(image)? == 0 {
                let b = self.byte(image)?;
                self.put(image, b)?;
                literal = true;
            } else if self.bit(image)? == 0 {
                let high = self.gamma(image)? - 1 - u32::from(literal);
                literal = false;
                if high == 0 {
                    let len = self.gamma(image)?;
                    self.copy(image, last, len)?;
                } else {
                    let off = (high - 1).checked_mul(256)? | u32::from(self.byte(image)?);
                    let len = self.gamma(image)?.checked_add(match off {
                        0x7d00.. => 2,
                        0x500.. => 1,
                        0x80.. => 0,
                        _ => 2,
                    })?;
                    last = off;
                    self.copy(image, off, len)?;
                }
            } else if self.bit(image)? == 0 {
                let b = self.byte(image)?;
                if b >> 1 == 0 {
                    return Some(());
                }
                last = u32::from(b >> 1);
                literal = false;
                self.copy(image, last, 2 + u32::from(b & 1))?;
            } else {
                let mut off = 0;
                for _ in 0..4 {
                    off = off * 2 + self.bit(image)?;
                }
                literal = true;
                match off {
                    0 => self.put(image, 0)?,
                    _ => self.copy(image, off, 1)?,
                }
            }
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tag-bit writer matching [`Aplib::bit`]: a tag byte's place is
    /// reserved when its first bit is written; bytes written meanwhile
    /// follow it.
    struct Writer {
        out: Vec<u8>,
        at: usize,
        used: u8,
    }

    impl Writer {
        fn bit(&mut self, b: u32) {
            if self.used == 8 || self.at == usize::MAX {
                self.at = self.out.len();
                self.out.push(0);
                self.used = 0;
            }
            self.out[self.at] |= (b as u8) << (7 - self.used);
            self.used += 1;
        }

        fn gamma(&mut self, v: u32) {
            let n = 32 - v.leading_zeros();
            for i in (0..n - 1).rev() {
                self.bit((v >> i) & 1);
                self.bit(u32::from(i != 0));
            }
        }
    }

    /// A small greedy aPLib compressor for the tests: literals, short
    /// matches, new offsets and the last offset again, the end marker.
    pub fn compress(data: &[u8]) -> Vec<u8> {
        let mut w = Writer {
            out: vec![data[0]],
            at: usize::MAX,
            used: 0,
        };
        let (mut i, mut last, mut literal) = (1, 0usize, true);
        while i < data.len() {
            let (mut best, mut best_off) = (0, 0);
            for off in 1..=i.min(2000) {
                let mut l = 0;
                while i + l < data.len() && data[i + l] == data[i + l - off] && l < 300 {
                    l += 1;
                }
                if l > best {
                    (best, best_off) = (l, off);
                }
            }
            // The last offset again: only right after a literal (its code,
            // 2, is then free).
            if best >= 2 && best_off == last && literal {
                w.bit(1);
                w.bit(0);
                w.gamma(2);
                w.gamma(best as u32);
                literal = false;
                i += best;
            } else if (2..=3).contains(&best) && best_off < 128 {
                w.bit(1);
                w.bit(1);
                w.bit(0);
                w.out.push(((best_off as u8) << 1) | (best as u8 - 2));
                (last, literal) = (best_off, false);
                i += best;
            } else if best >= 4 && best_off >= 128 || best >= 5 {
                let extra = match best_off {
                    0x7d00.. => 2,
                    0x500.. => 1,
                    0x80.. => 0,
                    _ => 2,
                };
                w.bit(1);
                w.bit(0);
                let high = (best_off >> 8) as u32 + 1;
                w.gamma(high + 1 + u32::from(literal));
                w.out.push(best_off as u8);
                w.gamma((best - extra) as u32);
                (last, literal) = (best_off, false);
                i += best;
            } else if data[i] == 0 || (1..16).any(|o| o <= i && data[i - o] == data[i]) {
                let off = (1..16)
                    .find(|&o| o <= i && data[i - o] == data[i])
                    .unwrap_or(0);
                let off = if data[i] == 0 { 0 } else { off };
                for s in (0..4).rev() {
                    if s == 3 {
                        w.bit(1);
                        w.bit(1);
                        w.bit(1);
                    }
                    w.bit((off as u32 >> s) & 1);
                }
                literal = true;
                i += 1;
            } else {
                w.bit(0);
                w.out.push(data[i]);
                literal = true;
                i += 1;
            }
        }
        w.bit(1);
        w.bit(1);
        w.bit(0);
        w.out.push(0);
        w.out
    }

    /// The stub's first bytes for a table at `table_va`.
    pub fn stub(table_va: u32) -> Vec<u8> {
        let mut s = vec![0xbe];
        s.extend_from_slice(&table_va.to_le_bytes());
        s.extend_from_slice(&STUB);
        s
    }

    pub fn sample() -> Vec<u8> {
        let mut d = Vec::new();
        for i in 0..300u32 {
            d.extend_from_slice(format!("line {} of the packed file; ", i % 37).as_bytes());
            d.extend_from_slice(&i.wrapping_mul(2654435761).to_le_bytes());
            d.extend_from_slice(&[0; 5]);
        }
        d
    }

    #[test]
    fn blocks_round_trip_in_place() {
        let data = sample();
        let (a, b) = (&data[..5000], &data[5000..]);
        let mut image = vec![0u8; 0x8000];
        let table = 0x6000;
        let mut t = Vec::new();
        t.extend_from_slice(&0x40_0000u32.to_le_bytes());
        t.extend_from_slice(&0x40_1000u32.to_le_bytes());
        t.extend_from_slice(&0x40_1000u32.to_le_bytes());
        t.extend_from_slice(&compress(a));
        t.extend_from_slice(&(0x40_1000u32 + a.len() as u32).to_le_bytes());
        t.extend_from_slice(&compress(b));
        t.extend_from_slice(&[0; 4]);
        assert!(t.len() < data.len() / 2);
        image[table..table + t.len()].copy_from_slice(&t);
        unpack(&mut image, 0x40_0000, table as u32);
        assert_eq!(&image[0x1000..0x1000 + data.len()], &data[..]);
    }

    #[test]
    fn damaged_streams_end_the_output() {
        let data = sample();
        let packed = compress(&data);
        for cut in [1, 10, packed.len() / 2, packed.len() - 1] {
            let mut image = vec![0u8; 0x8000];
            image[0x6008..0x600c].copy_from_slice(&0x1000u32.to_le_bytes());
            image[0x600c..0x600c + cut].copy_from_slice(&packed[..cut]);
            unpack(&mut image, 0, 0x6000);
            // What was written is a prefix of the data (the rest of the
            // stream reads as zeros from the image, so it may go on).
            let n = image[0x1000..]
                .iter()
                .zip(&data)
                .take_while(|(a, b)| a == b)
                .count();
            assert!(n > 0);
        }
    }

    proptest! {
        #[test]
        fn random_streams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut image = vec![0u8; 0x4000];
            image[0x3000..0x3004].copy_from_slice(&0x10u32.to_le_bytes());
            let n = data.len().min(0x1000 - 4);
            image[0x3004..0x3004 + n].copy_from_slice(&data[..n]);
            unpack(&mut image, 0, 0x2ff8);
        }
    }
}
