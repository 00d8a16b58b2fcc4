//! ASPack 2.12-packed Windows executables: the sections the stub
//! decompresses in memory, so that the original code and data are scanned.
//!
//! ASPack appends a section (`.aspack`, trivially renamed) holding its
//! stub and points the entry point into it. The stub is recognised by its
//! code, not by the name: it opens with `pushad; call $+8` and the
//! anti-disassembly bytes after it, and 0x3b9 bytes on holds the `push 0;
//! ret` whose operand it patches with the original entry point. Its data
//! sits at fixed distances from the entry point: a list of blocks
//! (address, uncompressed size; a zero ends it) whose compressed bytes
//! were written in place at that address, the length table (28 bases,
//! their 28 extra-bit counts) and the 58 offset slots' extra-bit counts.
//!
//! Each block is an LZ77 stream with canonical Huffman codes, close to
//! LZX (the stub's own name for it was "unlzx"): bits are read most
//! significant first; a table set is sent first (one bit "keep the old
//! lengths as a base", a 19-symbol pretree of 4-bit lengths, then 757
//! lengths coded with it as deltas mod 16 from the old ones, or runs: 16
//! repeats the last length 3-6 times, 17 and 18 write 3-10 and 11-138
//! zeros) and may be sent again by main symbol 720. The main tree (721
//! symbols) codes literals (0-255) and matches (256 + slot * 8 + length
//! minus 2, length 9 meaning "more, from the length tree"); an offset slot
//! carries extra bits, whose low three come from the 8-symbol aligned tree
//! when there are at least three; slots 0-2 repeat one of the last three
//! offsets. After the first block, `e8`/`e9` operands that start with the
//! stub's marker byte hold a 24-bit target from the block start, which
//! is made relative again (x86 call/jump filter).

/// Bytes of the stub read from the entry point: it and its data tables.
pub const STUB_LEN: usize = 0x800;

const PROLOGUE: &[u8] = b"\x60\xe8\x03\x00\x00\x00\xe9\xeb\x04\x5d\x45\x55\xc3\xe8\x01\x00\x00\x00";
/// `push <original entry point>; ret`, left as `push 0` in the file.
const OEP_JUMP: (usize, &[u8]) = (0x3b9, b"\x68\x00\x00\x00\x00\xc3");
const MARKER: usize = 0x147;
const BLOCKS: usize = 0x57b;
const LENGTHS: usize = 0x6d5;
const SLOTS: usize = LENGTHS + 56;

/// Symbols per tree: main, length, aligned, and the pretree.
const MAIN: usize = 721;
const LENGTH: usize = 28;
const ALIGNED: usize = 8;
const PRETREE: usize = 19;
const TABLES: usize = MAIN + LENGTH + ALIGNED;
/// Bytes the stub may read past a block's size.
const TAIL: usize = 0x10e;

/// What the stub holds: its blocks and tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stub {
    /// (address, uncompressed size) of each block, in the stub's order.
    pub blocks: Vec<(u32, u32)>,
    length_base: [u8; LENGTH],
    length_bits: [u8; LENGTH],
    slot_bits: [u8; 58],
    slot_base: [u32; 58],
    marker: u8,
}

/// The stub in `code` (the bytes from the entry point on), or None if it
/// is not ASPack 2.12's.
pub fn stub(code: &[u8]) -> Option<Stub> {
    let (at, jump) = OEP_JUMP;
    if !code.starts_with(PROLOGUE) || code.get(at..at + jump.len())? != jump {
        return None;
    }
    let tables = code.get(LENGTHS..SLOTS + 58)?;
    let mut s = Stub {
        blocks: Vec::new(),
        length_base: tables[..LENGTH].try_into().ok()?,
        length_bits: tables[LENGTH..2 * LENGTH].try_into().ok()?,
        slot_bits: tables[2 * LENGTH..].try_into().ok()?,
        slot_base: [0; 58],
        marker: *code.get(MARKER)?,
    };
    // A 24-bit peek holds every field: more extra bits is not ASPack's.
    if s.length_bits.iter().chain(&s.slot_bits).any(|&b| b > 24) {
        return None;
    }
    let mut base = 0u32;
    for (slot, &bits) in s.slot_base.iter_mut().zip(&s.slot_bits) {
        *slot = base;
        base = base.checked_add(1 << bits)?;
    }
    let mut at = BLOCKS;
    while let (Some(rva), Some(size)) = (
        super::peimage::u32_at(code, at),
        super::peimage::u32_at(code, at + 4),
    ) {
        if rva == 0 || size == 0 {
            break;
        }
        s.blocks.push((rva, size));
        at += 8;
    }
    Some(s)
}

/// Decompresses every block of `image` (the mapped image, see peimage.rs)
/// in place. A damaged block keeps what was decoded of it and ends the
/// unpacking; so does a block outside the image.
pub fn unpack(image: &mut [u8], stub: &Stub) {
    for (i, &(rva, size)) in stub.blocks.iter().enumerate() {
        let (start, size) = (rva as usize, size as usize);
        let Some(end) = start.checked_add(size).filter(|&e| e <= image.len()) else {
            return;
        };
        // The stream may run a little past the block (a table set costs
        // some 400 bytes); past the image, zeros.
        let mut input = image[start..(end + TAIL).min(image.len())].to_vec();
        input.resize(size + TAIL, 0);
        let mut out = Vec::with_capacity(size);
        let whole = Block::new(&input, stub).decode(&mut out, size).is_some();
        if i == 0 {
            unfilter(&mut out, stub.marker);
        }
        image[start..start + out.len()].copy_from_slice(&out);
        if !whole {
            return;
        }
    }
}

/// Undoes the call/jump filter: a marked `e8`/`e9` operand holds the
/// target's low 24 bits from the block start.
fn unfilter(out: &mut [u8], marker: u8) {
    let mut i = 0;
    while i + 6 < out.len() {
        if matches!(out[i], 0xe8 | 0xe9) && out[i + 1] == marker {
            let target = u32::from_le_bytes([out[i + 2], out[i + 3], out[i + 4], 0]);
            let rel = target.wrapping_sub(i as u32);
            out[i + 1..i + 5].copy_from_slice(&rel.to_le_bytes());
            i += 4;
        }
        i += 1;
    }
}

/// A canonical Huffman code from its lengths (shorter codes first, then by
/// symbol: as DEFLATE's, RFC 1951 section 3.2.2), decoded bit by bit.
#[derive(Default)]
struct Tree {
    /// Codes of each length 1-15.
    count: [u16; 16],
    /// Symbols by code.
    symbols: Vec<u16>,
}

impl Tree {
    /// None if the lengths do not make a complete code, as the stub
    /// requires.
    fn new(lengths: &[u8]) -> Option<Tree> {
        let mut t = Tree::default();
        for &l in lengths {
            t.count[l as usize] += 1;
        }
        t.count[0] = 0;
        let mut left = 1i32;
        for len in 1..16 {
            left = left * 2 - t.count[len] as i32;
            if left < 0 {
                return None;
            }
        }
        if left != 0 {
            return None;
        }
        for len in 1..16u8 {
            let at = lengths.iter().enumerate().filter(|&(_, &l)| l == len);
            t.symbols.extend(at.map(|(s, _)| s as u16));
        }
        Some(t)
    }

    fn decode(&self, bits: &mut Bits) -> Option<usize> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.take(1)? as i32;
            let count = self.count[len] as i32;
            if code - first < count {
                return self
                    .symbols
                    .get((index + code - first) as usize)
                    .map(|&s| s as usize);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        None
    }
}

/// Bits most significant first.
struct Bits<'a> {
    input: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            let byte = *self.input.get(self.at / 8)?;
            v = (v << 1) | ((byte >> (7 - self.at % 8)) & 1) as u32;
            self.at += 1;
        }
        Some(v)
    }
}

/// One block's decoder state.
struct Block<'a> {
    bits: Bits<'a>,
    stub: &'a Stub,
    lengths: [u8; TABLES],
    main: Tree,
    length: Tree,
    aligned: Tree,
}

impl<'a> Block<'a> {
    fn new(input: &'a [u8], stub: &'a Stub) -> Block<'a> {
        Block {
            bits: Bits { input, at: 0 },
            stub,
            lengths: [0; TABLES],
            main: Tree::default(),
            length: Tree::default(),
            aligned: Tree::default(),
        }
    }

    fn tables(&mut self) -> Option<()> {
        if self.bits.take(1)? == 0 {
            self.lengths = [0; TABLES];
        }
        let mut pre = [0u8; PRETREE];
        for l in &mut pre {
            *l = self.bits.take(4)? as u8;
        }
        let pre = Tree::new(&pre)?;
        let mut new = [0u8; TABLES];
        let mut i = 0;
        while i < TABLES {
            let (value, run) = match pre.decode(&mut self.bits)? {
                d @ 0..=15 => ((self.lengths[i] + d as u8) & 15, 1),
                16 => (
                    new[i.saturating_sub(1)] * u8::from(i > 0),
                    3 + self.bits.take(2)?,
                ),
                17 => (0, 3 + self.bits.take(3)?),
                _ => (0, 11 + self.bits.take(7)?),
            };
            for _ in 0..run {
                if i == TABLES {
                    break;
                }
                new[i] = value;
                i += 1;
            }
        }
        self.main = Tree::new(&new[..MAIN])?;
        self.length = Tree::new(&new[MAIN..MAIN + LENGTH])?;
        self.aligned = Tree::new(&new[MAIN + LENGTH..])?;
        self.lengths = new;
        Some(())
    }

    /// Decodes up to `size` bytes into `out`; None if the stream is
    /// damaged (`out` holds what came before).
    fn decode(&mut self, out: &mut Vec<u8>, size: usize) -> Option<()> {
        self.tables()?;
        let mut last = [0u32; 3];
        while out.len() < size {
            let symbol = self.main.decode(&mut self.bits)?;
            if symbol < 256 {
                out.push(symbol as u8);
                continue;
            }
            if symbol == MAIN - 1 {
                self.tables()?;
                continue;
            }
            let slot = (symbol - 256) >> 3;
            let mut len = ((symbol - 256) & 7) as u32 + 2;
            if len == 9 {
                let l = self.length.decode(&mut self.bits)?;
                len += self.stub.length_base[l] as u32
                    + self.bits.take(self.stub.length_bits[l] as u32)?;
            }
            let extra = self.stub.slot_bits[slot] as u32;
            let mut offset = self.stub.slot_base[slot];
            if extra >= 3 {
                offset += self.bits.take(extra - 3)? << 3;
                offset += self.aligned.decode(&mut self.bits)? as u32;
            } else {
                offset += self.bits.take(extra)?;
            }
            // 0-2: one of the last three offsets, moved to the front.
            let distance = if offset < 3 {
                last.swap(offset as usize, 0);
                last[0]
            } else {
                last = [offset - 3, last[0], last[1]];
                offset - 3
            } as usize
                + 1;
            if distance > out.len() || len as usize > size - out.len() {
                return None;
            }
            let from = out.len() - distance;
            for i in 0..len as usize {
                out.push(out[from + i]);
            }
        }
        Some(())
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The stub's tables as ASPack 2.12 has them: length bases and extra
    /// bits (as DEFLATE's, from 0), and LZX-like offset slots.
    fn tables() -> ([u8; LENGTH], [u8; LENGTH], [u8; 58]) {
        let mut base = [0u8; LENGTH];
        let mut bits = [0u8; LENGTH];
        let mut b = 0u32;
        for i in 0..LENGTH {
            bits[i] = if i < 8 { 0 } else { (i as u8 - 4) / 4 };
            base[i] = b as u8;
            b += 1 << bits[i];
        }
        let mut slots = [0u8; 58];
        for (i, s) in slots.iter_mut().enumerate() {
            *s = if i < 4 {
                0
            } else {
                ((i as u8 - 2) / 2).min(17)
            };
        }
        (base, bits, slots)
    }

    pub const MARK: u8 = 0x5a;

    /// An ASPack 2.12 stub (entry point at its second byte) listing
    /// `blocks`.
    pub fn stub_bytes(blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut s = vec![0x90u8; 1];
        s.extend_from_slice(PROLOGUE);
        s.resize(1 + STUB_LEN, 0);
        let (at, jump) = OEP_JUMP;
        s[1 + at..1 + at + jump.len()].copy_from_slice(jump);
        s[1 + MARKER] = MARK;
        for (i, &(rva, size)) in blocks.iter().enumerate() {
            let at = 1 + BLOCKS + 8 * i;
            s[at..at + 4].copy_from_slice(&rva.to_le_bytes());
            s[at + 4..at + 8].copy_from_slice(&size.to_le_bytes());
        }
        let (base, bits, slots) = tables();
        let t = [&base[..], &bits[..], &slots[..]].concat();
        s[1 + LENGTHS..1 + LENGTHS + t.len()].copy_from_slice(&t);
        s
    }

    struct Writer {
        out: Vec<u8>,
        acc: u8,
        used: u8,
    }

    impl Writer {
        fn bits(&mut self, v: u32, n: u32) {
            for i in (0..n).rev() {
                self.acc = (self.acc << 1) | ((v >> i) & 1) as u8;
                self.used += 1;
                if self.used == 8 {
                    self.out.push(self.acc);
                    (self.acc, self.used) = (0, 0);
                }
            }
        }

        fn code(&mut self, codes: &[(u32, u32)], symbol: usize) {
            let (c, n) = codes[symbol];
            self.bits(c, n);
        }
    }

    /// Canonical codes (code, length) for `lengths`.
    fn codes(lengths: &[u8]) -> Vec<(u32, u32)> {
        let mut next = 0u32;
        let mut codes = vec![(0, 0); lengths.len()];
        for len in 1..16u8 {
            for (s, _) in lengths.iter().enumerate().filter(|&(_, &l)| l == len) {
                codes[s] = (next, len as u32);
                next += 1;
            }
            next <<= 1;
        }
        codes
    }

    /// Fixed, complete code lengths for every tree: 303 main symbols of 9
    /// bits and 418 of 10, length symbols of 4 and 5, aligned ones of 3.
    fn lengths() -> Vec<u8> {
        let mut l: Vec<u8> = (0..MAIN).map(|s| if s < 303 { 9 } else { 10 }).collect();
        l.extend((0..LENGTH).map(|s| if s < 4 { 4 } else { 5 }));
        l.extend([3; ALIGNED]);
        l
    }

    fn send_tables(w: &mut Writer, keep: bool) {
        let pre: Vec<u8> = (0..PRETREE).map(|s| if s < 13 { 4 } else { 5 }).collect();
        w.bits(u32::from(keep), 1);
        for &l in &pre {
            w.bits(l as u32, 4);
        }
        let pre = codes(&pre);
        for &l in &lengths() {
            // Deltas from the old lengths: 0 when they are kept.
            w.code(&pre, if keep { 0 } else { l as usize });
        }
    }

    /// A greedy compressor for the tests: literals, new and repeated
    /// offsets, short and long lengths, and the tables sent again once.
    pub fn compress(data: &[u8]) -> Vec<u8> {
        let (base, bits, slots) = tables();
        let mut slot_base = [0u32; 58];
        let mut b = 0;
        for i in 0..58 {
            slot_base[i] = b;
            b += 1 << slots[i];
        }
        let l = lengths();
        let (main, len_codes, aligned) = (
            codes(&l[..MAIN]),
            codes(&l[MAIN..MAIN + LENGTH]),
            codes(&l[MAIN + LENGTH..]),
        );
        let mut w = Writer {
            out: Vec::new(),
            acc: 0,
            used: 0,
        };
        send_tables(&mut w, false);
        let (mut i, mut last) = (0, 0usize);
        let mut resent = false;
        while i < data.len() {
            if !resent && i > data.len() / 2 {
                w.code(&main, MAIN - 1);
                send_tables(&mut w, true);
                resent = true;
            }
            let (mut best, mut dist) = (0, 0);
            for d in 1..=i.min(5000) {
                let mut n = 0;
                while i + n < data.len() && data[i + n] == data[i + n - d] && n < 250 {
                    n += 1;
                }
                if n > best || (n == best && d == last) {
                    (best, dist) = (n, d);
                }
            }
            if best < 3 {
                w.code(&main, data[i] as usize);
                i += 1;
                continue;
            }
            let offset = if dist == last { 0 } else { dist - 1 + 3 };
            let slot = (0..58)
                .rev()
                .find(|&s| slot_base[s] as usize <= offset)
                .unwrap();
            let short = (best - 2).min(7);
            w.code(&main, 256 + slot * 8 + short);
            if short == 7 {
                let rest = (best - 9) as u32;
                let ls = (0..LENGTH).rev().find(|&s| base[s] as u32 <= rest).unwrap();
                w.code(&len_codes, ls);
                w.bits(rest - base[ls] as u32, bits[ls] as u32);
            }
            let extra = (offset - slot_base[slot] as usize) as u32;
            let n = slots[slot] as u32;
            if n >= 3 {
                w.bits(extra >> 3, n - 3);
                w.code(&aligned, (extra & 7) as usize);
            } else {
                w.bits(extra, n);
            }
            last = dist;
            i += best;
        }
        w.bits(0, 7);
        w.out
    }

    pub fn sample() -> Vec<u8> {
        let mut d = Vec::new();
        for i in 0..300u32 {
            d.extend_from_slice(format!("entry {} of the table; ", i % 41).as_bytes());
            d.extend_from_slice(&i.wrapping_mul(2654435761).to_le_bytes());
        }
        let again = d[..2000].to_vec();
        d.extend_from_slice(&again);
        d
    }

    fn decode(packed: &[u8], size: usize) -> (Vec<u8>, bool) {
        let s = stub(&stub_bytes(&[])[1..]).unwrap();
        let mut input = packed.to_vec();
        input.resize(packed.len() + TAIL, 0);
        let mut out = Vec::new();
        let whole = Block::new(&input, &s).decode(&mut out, size).is_some();
        (out, whole)
    }

    #[test]
    fn round_trip_with_every_kind_of_match() {
        let data = sample();
        let packed = compress(&data);
        assert!(packed.len() < data.len() / 2);
        assert_eq!(decode(&packed, data.len()), (data.clone(), true));
        // A smaller declared size stops there (before a match past it).
        let (cut, whole) = decode(&packed, 1000);
        assert!(!whole && cut.len() > 900 && data.starts_with(&cut));
        // Truncated and damaged input: a prefix, no panic.
        let (short, whole) = decode(&packed[..packed.len() / 2], data.len());
        assert!(!whole && data.starts_with(&short));
        let mut bad = packed.clone();
        for b in bad.iter_mut().skip(300).step_by(37) {
            *b ^= 0x21;
        }
        decode(&bad, data.len());
    }

    #[test]
    fn blocks_decompress_in_place_and_the_first_is_unfiltered() {
        let mut first = vec![0x55u8; 1000];
        first[10..15].copy_from_slice(&[0xe8, MARK, 0x30, 0x00, 0x00]);
        let data = sample();
        let (p1, p2) = (compress(&first), compress(&data));
        let mut image = vec![0u8; 0x8000];
        image[0x1000..0x1000 + p1.len()].copy_from_slice(&p1);
        image[0x2000..0x2000 + p2.len()].copy_from_slice(&p2);
        let s = stub(&stub_bytes(&[(0x1000, 1000), (0x2000, data.len() as u32)])[1..]).unwrap();
        unpack(&mut image, &s);
        // The call's target made relative to the instruction again.
        assert_eq!(&image[0x100a..0x100f], &[0xe8, 0x26, 0, 0, 0]);
        assert_eq!(&image[0x2000..0x2000 + data.len()], &data[..]);
        // A block past the image's end is left alone.
        let s = stub(&stub_bytes(&[(0x7000, 0x2000)])[1..]).unwrap();
        unpack(&mut image, &s);
    }

    #[test]
    fn only_the_aspack_stub_is_recognised() {
        let s = stub_bytes(&[]);
        assert!(stub(&s[1..]).is_some());
        let mut other = s.clone();
        other[1 + OEP_JUMP.0] = 0xe9;
        assert!(stub(&other[1..]).is_none());
        assert!(stub(&s[1..0x400]).is_none());
    }

    proptest! {
        #[test]
        fn random_blocks_never_panic(data in proptest::collection::vec(any::<u8>(), 0..800)) {
            let (out, _) = decode(&data, 4096);
            prop_assert!(out.len() <= 4096);
        }
    }
}
