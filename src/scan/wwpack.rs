//! WWPack32-packed Windows executables: the packer's block list and its
//! decompressor, so that the original sections are scanned.
//!
//! WWPack32 (Piotr Warezak and Rafal Wierzbicki, 1998) appends a section
//! holding its stub and makes it the entry point. The stub's code is fixed
//! (it starts `push ebx; push ebp; mov ebp, eax; xor ebx, ebx; jmp`, then
//! its banner, and at 0x68 computes its own address with `call $+5; pop
//! eax; sub eax, 0x6d`); at 0x2a1 in it a list of 17-byte records says
//! what to decompress: the distance from the stub's address back to the
//! block, a word pimail does not use, the packed length in 32-bit words,
//! the packed length minus 4, and a flag byte (0 on the last record). Each
//! block is decompressed in place, over its packed bytes.
//!
//! The compression is LZ77 over a bit stream of 32-bit little-endian words
//! read from their top bit down; literal bytes come from the same input
//! between the words, and a word is fetched as soon as the previous one is
//! used up (before the literal that may follow). A 0 bit is a literal;
//! after a 1, two bits choose a two-byte copy with a short offset (3) or a
//! copy of 3, 4 (1, 2) or a coded length (0) with an offset of 5 to 15
//! bits. A two-byte copy whose 9-bit offset field is all ones ends the
//! block. These facts come from reading the stub and ClamAV's description
//! of it; the code is pimail's own.

use super::peimage::{Headers, u32_at};

/// The stub's first bytes and the self-locating code at 0x68.
const STUB_START: &[u8] = &[0x53, 0x55, 0x8b, 0xe8, 0x33, 0xdb, 0xeb];
const STUB_LOCATE: &[u8] = &[
    0xe8, 0, 0, 0, 0, 0x58, 0x2d, 0x6d, 0, 0, 0, 0x50, 0x60, 0x33, 0xc9, 0x50, 0x58, 0x50, 0x50,
];
/// Where the block records start in the stub.
const RECORDS: usize = 0x2a1;
const RECORD_LEN: usize = 17;
/// How much of the stub's section is read: the records follow its code,
/// one per packed section.
pub const STUB_READ: usize = RECORDS + RECORD_LEN * MAX_BLOCKS;
/// One record per section at most (a PE has at most 96).
const MAX_BLOCKS: usize = 96;

/// Whether `stub` (the bytes at the entry point) is WWPack32's.
pub fn is_stub(stub: &[u8]) -> bool {
    stub.starts_with(STUB_START) && stub.get(0x68..0x68 + STUB_LOCATE.len()) == Some(STUB_LOCATE)
}

/// A packed block: where it is in the image and in the file, and its
/// packed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub rva: u32,
    pub offset: u64,
    pub len: u32,
    /// What the image holds from `rva` on: the most the block may expand
    /// to.
    pub room: u32,
}

/// The blocks `stub` (the entry section's first bytes, at least
/// [`STUB_READ`] of them if the section has them) lists, those that lie in
/// the file. The entry point must be the last section's start, where
/// WWPack32 puts its stub.
pub fn blocks(pe: &Headers, stub: &[u8]) -> Vec<Block> {
    let mut found = Vec::new();
    let Some(last) = pe.sections.last() else {
        return found;
    };
    if pe.entry != last.rva || !is_stub(stub) {
        return found;
    }
    let mut at = RECORDS;
    while let Some(record) = stub.get(at..at + RECORD_LEN) {
        at += RECORD_LEN;
        let back = u32_at(record, 0).unwrap_or(0);
        let words = u32_at(record, 8).unwrap_or(0);
        let end = u32_at(record, 12).unwrap_or(0);
        let len = words.wrapping_mul(4);
        // The two lengths say the same: anything else is damage.
        if words == 0 || words > u32::MAX / 4 || end.checked_add(4) != Some(len) {
            break;
        }
        let rva = last.rva.wrapping_sub(back);
        let room = pe.image_size.saturating_sub(rva);
        match pe.raw_of(rva) {
            Some((offset, left)) if left >= len && room >= len => found.push(Block {
                rva,
                offset,
                len,
                room,
            }),
            _ => break,
        }
        if record[16] == 0 || found.len() == MAX_BLOCKS {
            break;
        }
    }
    found
}

/// The bits of a block: 32-bit words, top bit first, the next fetched
/// as soon as one is used up; bytes between them are literals.
struct Bits<'a> {
    input: &'a [u8],
    pos: usize,
    word: u32,
    left: u8,
}

impl Bits<'_> {
    fn fetch(&mut self) {
        match u32_at(self.input, self.pos) {
            Some(w) => {
                self.word = w;
                self.left = 32;
                self.pos += 4;
            }
            // Out of input: the next bit asked for ends the block.
            None => self.left = 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = (self.word >> self.left) & 1;
        if self.left == 0 {
            self.fetch();
        }
        Some(b)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |v, _| Some((v << 1) | self.bit()?))
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.input.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
}

/// The block `packed` expands to, at most `room` bytes. Damage (input
/// running out, an offset before the block's start, output past `room`)
/// ends it: what was decoded so far is returned.
pub fn expand(packed: &[u8], room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(room.min(packed.len().saturating_mul(8)));
    let mut bits = Bits {
        input: packed,
        pos: 0,
        word: 0,
        left: 0,
    };
    bits.fetch();
    let _ = expand_into(&mut bits, &mut out, room);
    out
}

fn expand_into(bits: &mut Bits, out: &mut Vec<u8>, room: usize) -> Option<()> {
    loop {
        if bits.bit()? == 0 {
            if out.len() >= room {
                return None;
            }
            out.push(bits.byte()?);
            continue;
        }
        let kind = bits.bits(2)?;
        let (offset, len) = if kind == 3 {
            // Two bytes from 1..=863 back; offsets 1, 33, 97, 353 start
            // the four classes of 5, 6, 8 and 9 bits.
            let class = bits.bits(2)?;
            let (width, base) = [(5, 1), (6, 33), (8, 97), (9, 353)][class as usize];
            let v = bits.bits(width)?;
            if width == 9 && v == 0x1ff {
                return Some(());
            }
            (base + v, 2)
        } else {
            let offset = match bits.bits(3)? {
                0 => bits.bits(5)? + 1,
                1 => bits.bits(6)? + 33,
                2 => bits.bits(7)? + 97,
                3 if bits.bit()? == 0 => bits.bits(8)? + 225,
                3 => bits.bits(9)? + 481,
                4 if bits.bit()? == 0 => bits.bits(10)? + 993,
                4 => bits.bits(11)? + 2017,
                5 => bits.bits(12)? + 4065,
                6 => bits.bits(14)? + 8161,
                _ => bits.bits(15)? + 24545,
            };
            let len = match kind {
                1 => 3,
                2 => 4,
                _ => long_length(bits)?,
            };
            (offset, len)
        };
        let (offset, len) = (offset as usize, len as usize);
        if offset > out.len() {
            return None;
        }
        // A copy past the room is cut there, and ends the output.
        for _ in 0..len.min(room - out.len()) {
            out.push(out[out.len() - offset]);
        }
        if out.len() == room {
            return None;
        }
    }
}

/// A copy's length after kind 0: 5-6, 7-13, 14-28, then 29, 61 or 125 plus
/// 5, 6 or 7 bits, or a plain 14-bit length.
fn long_length(bits: &mut Bits) -> Option<u32> {
    if bits.bit()? == 0 {
        return Some(5 + bits.bit()?);
    }
    let v = bits.bits(3)?;
    if v != 0 {
        return Some(6 + v);
    }
    let v = bits.bits(4)?;
    if v != 0 {
        return Some(13 + v);
    }
    for (width, base) in [(5, 29), (6, 61), (7, 125)] {
        if bits.bit()? == 1 {
            return Some(base + bits.bits(width)?);
        }
    }
    bits.bits(14)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A bit writer matching [`Bits`]: a word's place is reserved as soon
    /// as the previous one is full, so literals written meanwhile follow
    /// it, as the decoder reads them.
    struct BitWriter {
        out: Vec<u8>,
        at: usize,
        word: u32,
        used: u8,
    }

    impl BitWriter {
        fn new() -> BitWriter {
            BitWriter {
                out: vec![0; 4],
                at: 0,
                word: 0,
                used: 0,
            }
        }

        fn bit(&mut self, b: u32) {
            self.word |= (b & 1) << (31 - self.used);
            self.used += 1;
            if self.used == 32 {
                self.out[self.at..self.at + 4].copy_from_slice(&self.word.to_le_bytes());
                self.at = self.out.len();
                self.out.extend_from_slice(&[0; 4]);
                self.word = 0;
                self.used = 0;
            }
        }

        fn bits(&mut self, v: u32, n: u32) {
            for i in (0..n).rev() {
                self.bit(v >> i);
            }
        }

        fn finish(mut self) -> Vec<u8> {
            self.out[self.at..self.at + 4].copy_from_slice(&self.word.to_le_bytes());
            // Whole words, as the records count them.
            while !self.out.len().is_multiple_of(4) {
                self.out.push(0);
            }
            self.out
        }
    }

    fn offset_code(w: &mut BitWriter, offset: u32) {
        let classes: [(u32, u32, &[u32]); 10] = [
            (1, 5, &[0, 0, 0]),
            (33, 6, &[0, 0, 1]),
            (97, 7, &[0, 1, 0]),
            (225, 8, &[0, 1, 1, 0]),
            (481, 9, &[0, 1, 1, 1]),
            (993, 10, &[1, 0, 0, 0]),
            (2017, 11, &[1, 0, 0, 1]),
            (4065, 12, &[1, 0, 1]),
            (8161, 14, &[1, 1, 0]),
            (24545, 15, &[1, 1, 1]),
        ];
        let &(base, width, prefix) = classes.iter().rev().find(|c| offset >= c.0).unwrap();
        for &b in prefix {
            w.bit(b);
        }
        w.bits(offset - base, width);
    }

    /// A WWPack32 block: greedy matches of 3 to 28 bytes up to 57312 back,
    /// literals otherwise, then the end marker.
    pub fn compress(data: &[u8]) -> Vec<u8> {
        let mut w = BitWriter::new();
        let mut i = 0;
        while i < data.len() {
            let (mut best, mut off) = (0, 0);
            for o in 1..=i.min(57312) {
                let mut l = 0;
                while l < 28 && i + l < data.len() && data[i + l] == data[i + l - o] {
                    l += 1;
                }
                if l > best {
                    (best, off) = (l, o);
                }
            }
            if best < 3 {
                w.bit(0);
                w.out.push(data[i]);
                i += 1;
                continue;
            }
            w.bit(1);
            match best {
                3 | 4 => w.bits(best as u32 - 2, 2),
                _ => w.bits(0, 2),
            }
            offset_code(&mut w, off as u32);
            match best {
                3 | 4 => {}
                5 | 6 => w.bits(best as u32 - 5, 2),
                7..=13 => {
                    w.bit(1);
                    w.bits(best as u32 - 6, 3);
                }
                _ => {
                    w.bit(1);
                    w.bits(0, 3);
                    w.bits(best as u32 - 13, 4);
                }
            }
            i += best;
        }
        // The end marker: a two-byte copy, 9-bit class, all ones.
        w.bit(1);
        w.bits(3, 2);
        w.bits(3, 2);
        w.bits(0x1ff, 9);
        w.finish()
    }

    /// A minimal WWPack32-packed PE: a section holding `data` compressed,
    /// room for `room` bytes, and the stub section with one record.
    pub fn sample(data: &[u8], room: u32) -> Vec<u8> {
        let packed = compress(data);
        let mut pe = vec![0u8; 0x400];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x86] = 2;
        pe[0x94] = 0xe0;
        pe[0x98..0x9a].copy_from_slice(&0x10bu16.to_le_bytes());
        let stub_rva = 0x1000 + room.next_multiple_of(0x1000);
        pe[0x98 + 16..0x98 + 20].copy_from_slice(&stub_rva.to_le_bytes());
        pe[0x98 + 56..0x98 + 60].copy_from_slice(&(stub_rva + 0x1000).to_le_bytes());
        let raw = packed.len().next_multiple_of(0x200) as u32;
        let sections = [
            (room, 0x1000u32, raw, 0x400u32),
            (0x1000, stub_rva, 0x400, 0x400 + raw),
        ];
        for (i, (vs, va, rs, ro)) in sections.into_iter().enumerate() {
            let at = 0x178 + 40 * i;
            for (j, v) in [vs, va, rs, ro].into_iter().enumerate() {
                pe[at + 8 + 4 * j..at + 12 + 4 * j].copy_from_slice(&v.to_le_bytes());
            }
        }
        pe.extend_from_slice(&packed);
        pe.resize(0x400 + raw as usize, 0);
        let mut stub = vec![0x90u8; 0x400];
        stub[..STUB_START.len()].copy_from_slice(STUB_START);
        stub[0x68..0x68 + STUB_LOCATE.len()].copy_from_slice(STUB_LOCATE);
        let record = &mut stub[RECORDS..RECORDS + RECORD_LEN];
        record[..4].copy_from_slice(&(stub_rva - 0x1000).to_le_bytes());
        record[8..12].copy_from_slice(&(packed.len() as u32 / 4).to_le_bytes());
        record[12..16].copy_from_slice(&(packed.len() as u32 - 4).to_le_bytes());
        record[16] = 0;
        pe.extend_from_slice(&stub);
        pe
    }

    #[test]
    fn round_trips_literals_and_every_copy() {
        let mut data = b"WWPack32 test: abcabcabcabc, a longer run ".repeat(3);
        data.extend((0..3000u32).map(|i| (i * i % 251) as u8));
        data.extend(std::iter::repeat_n(7u8, 100));
        data.extend_from_slice(&data.clone()[..500]);
        let packed = compress(&data);
        assert_eq!(expand(&packed, data.len()), data);
        // The room bounds the output.
        assert_eq!(expand(&packed, 10), data[..10]);
    }

    #[test]
    fn blocks_are_found_by_the_stub() {
        let pe = sample(b"hello hello hello", 0x1000);
        let headers = crate::scan::peimage::headers(&pe).unwrap();
        let last = headers.sections[1];
        let stub = &pe[last.raw as usize..];
        let found = blocks(&headers, stub);
        assert_eq!(found.len(), 1);
        let b = found[0];
        assert_eq!((b.rva, b.offset), (0x1000, 0x400));
        let packed = &pe[b.offset as usize..][..b.len as usize];
        assert_eq!(expand(packed, b.room as usize), b"hello hello hello");
        // Another stub is not WWPack32's.
        let mut other = stub.to_vec();
        other[0x69] = 1;
        assert!(blocks(&headers, &other).is_empty());
    }

    proptest! {
        #[test]
        fn expand_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let out = expand(&data, 4096);
            prop_assert!(out.len() <= 4096);
        }
    }
}
