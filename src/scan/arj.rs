//! ARJ archives: headers as in ARJ's TECHNOTE.DOC, and the decoder for
//! its methods, written here (no maintained crate reads ARJ).
//!
//! An archive is a main header then a local header per file, each
//! `0x60 0xEA`, a 16-bit basic header size (0 ends the archive), the basic
//! header (first_hdr_size, versions, host OS, flags, method, file type, a
//! reserved byte, date, compressed size, original size, CRC, ... then the
//! name and comment, NUL-terminated), its CRC-32, and extended headers
//! (16-bit size, data, CRC-32) until a size of 0; a file's compressed
//! bytes follow its headers.
//!
//! Methods 1 to 3 share one decoder (LZ77 over a 26 KiB window, matches of
//! 3 to 256 bytes, Huffman codes sent per block as in LHA's -lh5-: a
//! 16-bit block size, the code-length code, the literal/length code, the
//! position code); method 4 ("fastest") codes lengths and positions with
//! unary-prefixed widths and no Huffman tables. Bits are read most
//! significant first.

use std::io::Read;

use super::unpack::read_full;

/// Longest basic header ARJ writes.
const MAX_HEADER: usize = 2600;
/// Flags: a garbled (password-protected) file; one continued in the
/// next volume (what is here is only its start).
const GARBLED: u8 = 0x01;
const EXTFILE: u8 = 0x08;

/// One member as the reader meets it.
pub struct ArjMember<'a> {
    /// Binary or text file (not a directory, label or comment).
    pub file: bool,
    pub method: u8,
    pub garbled: bool,
    pub original: u64,
    pub data: &'a mut dyn Read,
}

fn le16(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as u64)
}

fn le32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
}

/// Reads one header's id and basic header; None at the end or on damage.
fn basic_header(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut h = [0u8; 4];
    if read_full(r, &mut h)? < 4 || h[..2] != [0x60, 0xea] {
        return Ok(None);
    }
    let size = le16(&h, 2) as usize;
    if size == 0 || size > MAX_HEADER {
        return Ok(None);
    }
    // The header and its CRC (not checked: damage shows in what follows).
    let mut b = vec![0u8; size + 4];
    if read_full(r, &mut b)? < b.len() || size < 30 {
        return Ok(None);
    }
    b.truncate(size);
    // Extended headers, skipped.
    loop {
        let mut s = [0u8; 2];
        if read_full(r, &mut s)? < 2 {
            return Ok(None);
        }
        let size = le16(&s, 0);
        if size == 0 {
            return Ok(Some(b));
        }
        let skip = size + 4;
        if std::io::copy(&mut (&mut *r).take(skip), &mut std::io::sink())? < skip {
            return Ok(None);
        }
    }
}

/// Calls `member` for each member of an ARJ archive, in order, until it
/// returns false; it may read as much of the data as it wants. Damage ends
/// the archive.
pub fn members<R: Read>(
    r: &mut R,
    mut member: impl FnMut(ArjMember<'_>) -> std::io::Result<bool>,
) -> std::io::Result<()> {
    // The main header describes the archive.
    if basic_header(r)?.is_none() {
        return Ok(());
    }
    while let Some(h) = basic_header(r)? {
        let flags = h[4];
        let compressed = le32(&h, 12);
        let mut data = (&mut *r).take(compressed);
        let go_on = member(ArjMember {
            // Binary or 7-bit text; a file continued from another volume
            // does not start at its beginning.
            file: h[6] <= 1 && flags & EXTFILE == 0,
            method: h[5],
            garbled: flags & GARBLED != 0,
            original: le32(&h, 16),
            data: &mut data,
        })?;
        if !go_on {
            return Ok(());
        }
        let unread = data.limit();
        if std::io::copy(&mut data, &mut std::io::sink())? < unread {
            return Ok(());
        }
    }
    Ok(())
}

/// Bits most significant first; past the end of the input, zeros, and
/// `overrun` says how many bytes of them.
struct Bits<R: Read> {
    input: R,
    buf: Box<[u8]>,
    len: usize,
    pos: usize,
    /// Bits held, in the low `n` bits of `acc`.
    acc: u32,
    n: u32,
    overrun: usize,
}

impl<R: Read> Bits<R> {
    fn new(input: R) -> Bits<R> {
        Bits {
            input,
            buf: vec![0; 4096].into_boxed_slice(),
            len: 0,
            pos: 0,
            acc: 0,
            n: 0,
            overrun: 0,
        }
    }

    fn byte(&mut self) -> std::io::Result<u8> {
        if self.pos == self.len {
            self.len = self.input.read(&mut self.buf)?;
            self.pos = 0;
            if self.len == 0 {
                self.overrun += 1;
                return Ok(0);
            }
        }
        self.pos += 1;
        Ok(self.buf[self.pos - 1])
    }

    /// The next `k` bits (at most 16).
    fn get(&mut self, k: u32) -> std::io::Result<u32> {
        while self.n < k {
            self.acc = (self.acc << 8) | self.byte()? as u32;
            self.n += 8;
        }
        self.n -= k;
        Ok((self.acc >> self.n) & ((1 << k) - 1))
    }

    /// Well past the end: the data is damaged or truncated.
    fn exhausted(&self) -> bool {
        self.overrun > 4
    }
}

/// A canonical Huffman code (shorter codes first, then by symbol), as
/// LHA's and ARJ's tables are built, decoded a bit at a time.
struct Code {
    counts: [u16; 17],
    symbols: Vec<u16>,
    /// A code of one symbol sent as "n = 0": no bits at all.
    single: Option<u16>,
}

impl Code {
    fn new() -> Code {
        Code {
            counts: [0; 17],
            symbols: Vec::new(),
            single: None,
        }
    }

    /// From code lengths (0: unused); None if over-subscribed.
    fn build(&mut self, lengths: &[u8]) -> Option<()> {
        self.single = None;
        self.counts = [0; 17];
        for &l in lengths {
            self.counts[l as usize] += 1;
        }
        self.counts[0] = 0;
        let mut left: i64 = 1;
        for len in 1..=16 {
            left = (left << 1) - self.counts[len] as i64;
            if left < 0 {
                return None;
            }
        }
        self.symbols.clear();
        for len in 1..=16u8 {
            for (s, &l) in lengths.iter().enumerate() {
                if l == len {
                    self.symbols.push(s as u16);
                }
            }
        }
        Some(())
    }

    fn decode<R: Read>(&self, bits: &mut Bits<R>) -> std::io::Result<Option<u16>> {
        if let Some(s) = self.single {
            return Ok(Some(s));
        }
        let (mut code, mut first, mut index) = (0i64, 0i64, 0i64);
        for len in 1..=16 {
            code |= bits.get(1)? as i64;
            let count = self.counts[len] as i64;
            if code - first < count {
                return Ok(self.symbols.get((index + code - first) as usize).copied());
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Ok(None)
    }
}

/// Window: 26,624 bytes in ARJ; a power of two at least that, so that any
/// distance the codes can express is inside (bytes never written are 0).
const WINDOW: usize = 1 << 16;
/// Literal/length symbols: 256 literals and lengths 3 to 256.
const NC: usize = 510;
/// Position symbols (distance bit counts 0 to 16) and code-length symbols.
const NP: usize = 17;
const NT: usize = 19;

/// What a compressed member decodes to, as a reader.
pub struct ArjDecoder<R: Read> {
    bits: Bits<R>,
    method: u8,
    /// Bytes still to produce (the original size).
    left: u64,
    window: Box<[u8]>,
    pos: usize,
    /// A match being copied: distance back and bytes left.
    copy: Option<(usize, usize)>,
    /// Methods 1-3: symbols left in the block, and its codes.
    block: u32,
    c: Code,
    p: Code,
    /// The code-length code, then (after the block header) the position
    /// code, as in LHA: they share one table.
    lengths: Vec<u8>,
    done: bool,
}

impl<R: Read> ArjDecoder<R> {
    /// `method` 1 to 4; `original` the size the header declares (checked
    /// against the limits before this is made).
    pub fn new(input: R, method: u8, original: u64) -> ArjDecoder<R> {
        ArjDecoder {
            bits: Bits::new(input),
            method,
            left: original,
            window: vec![0u8; WINDOW].into_boxed_slice(),
            pos: 0,
            copy: None,
            block: 0,
            c: Code::new(),
            p: Code::new(),
            lengths: Vec::new(),
            done: !(1..=4).contains(&method),
        }
    }

    /// The code-length code (`nbit` bits per count; after `special`
    /// lengths, a 2-bit run of zeros) or the position code.
    fn read_pt(&mut self, nn: usize, nbit: u32, special: Option<usize>) -> std::io::Result<bool> {
        let b = &mut self.bits;
        let n = b.get(nbit)? as usize;
        if n == 0 {
            let c = b.get(nbit)? as u16;
            self.p.single = Some(c);
            return Ok((c as usize) < nn);
        }
        if n > nn {
            return Ok(false);
        }
        self.lengths.clear();
        self.lengths.resize(nn, 0);
        let mut i = 0;
        while i < n {
            let mut c = b.get(3)?;
            if c == 7 {
                while b.get(1)? == 1 {
                    c += 1;
                    if c > 16 {
                        return Ok(false);
                    }
                }
            }
            self.lengths[i] = c as u8;
            i += 1;
            if Some(i) == special {
                let zeros = b.get(2)? as usize;
                i = (i + zeros).min(n);
            }
        }
        Ok(self.p.build(&self.lengths).is_some())
    }

    /// The literal/length code, its lengths coded with the code-length
    /// code: 0 one zero, 1 a 4-bit run of 3 to 18 zeros, 2 a 9-bit run of
    /// 20 to 531 zeros, n > 2 a length of n - 2.
    fn read_c(&mut self) -> std::io::Result<bool> {
        let n = self.bits.get(9)? as usize;
        if n == 0 {
            let c = self.bits.get(9)? as u16;
            self.c.single = Some(c);
            return Ok((c as usize) < NC);
        }
        if n > NC {
            return Ok(false);
        }
        let mut lengths = vec![0u8; NC];
        let mut i = 0;
        while i < n {
            let Some(c) = self.p.decode(&mut self.bits)? else {
                return Ok(false);
            };
            match c {
                0 => i += 1,
                1 => i += self.bits.get(4)? as usize + 3,
                2 => i += self.bits.get(9)? as usize + 20,
                _ => {
                    lengths[i] = (c - 2) as u8;
                    i += 1;
                }
            }
        }
        Ok(self.c.build(&lengths).is_some())
    }

    /// The next literal (< 256) or match (256 + length - 3) and its
    /// distance, for methods 1-3; None on damage.
    fn lzh_symbol(&mut self) -> std::io::Result<Option<(u16, usize)>> {
        if self.block == 0 {
            self.block = self.bits.get(16)?;
            if !(self.read_pt(NT, 5, Some(3))? && self.read_c()? && self.read_pt(NP, 5, None)?) {
                return Ok(None);
            }
        }
        self.block = self.block.wrapping_sub(1) & 0xffff;
        let Some(c) = self.c.decode(&mut self.bits)? else {
            return Ok(None);
        };
        if c < 256 {
            return Ok(Some((c, 0)));
        }
        let Some(p) = self.p.decode(&mut self.bits)? else {
            return Ok(None);
        };
        let distance = if p == 0 {
            0
        } else {
            (1usize << (p - 1)) + self.bits.get(p as u32 - 1)? as usize
        };
        Ok(Some((c, distance)))
    }

    /// The same for method 4: a unary count of widths, then the value.
    fn fastest_symbol(&mut self) -> std::io::Result<Option<(u16, usize)>> {
        let len = self.prefixed(0, 7)?;
        if len == 0 {
            return Ok(Some((self.bits.get(8)? as u16, 0)));
        }
        let distance = self.prefixed(9, 13)? as usize;
        // Length len + 2, as a methods 1-3 symbol.
        Ok(Some((256 + len as u16 - 1, distance)))
    }

    /// Method 4's numbers: up to `stop - start` one bits, each doubling
    /// the width (from `start` bits) and adding what the narrower widths
    /// cover; then the value in that width.
    fn prefixed(&mut self, start: u32, stop: u32) -> std::io::Result<u32> {
        let (mut width, mut plus) = (start, 0u32);
        while width < stop && self.bits.get(1)? == 1 {
            plus += 1 << width;
            width += 1;
        }
        let v = if width == 0 { 0 } else { self.bits.get(width)? };
        Ok(plus + v)
    }

    fn emit(&mut self, b: u8, out: &mut [u8], n: &mut usize) {
        self.window[self.pos] = b;
        self.pos = (self.pos + 1) & (WINDOW - 1);
        out[*n] = b;
        *n += 1;
        self.left -= 1;
    }
}

impl<R: Read> Read for ArjDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < out.len() && self.left > 0 {
            if let Some((distance, count)) = self.copy {
                let from = self.pos.wrapping_sub(distance + 1) & (WINDOW - 1);
                let b = self.window[from];
                self.emit(b, out, &mut n);
                self.copy = (count > 1).then_some((distance, count - 1));
                continue;
            }
            if self.done || self.bits.exhausted() {
                self.done = true;
                break;
            }
            let symbol = if self.method == 4 {
                self.fastest_symbol()?
            } else {
                self.lzh_symbol()?
            };
            match symbol {
                Some((c, _)) if c < 256 => self.emit(c as u8, out, &mut n),
                Some((c, distance)) => self.copy = Some((distance, c as usize - 253)),
                None => self.done = true,
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes, as any method: no panic, and never more than the
        /// declared size.
        #[test]
        fn damaged_data_ends_the_member(data in proptest::collection::vec(any::<u8>(), 0..600), method in 1u8..=4) {
            let mut out = Vec::new();
            ArjDecoder::new(&data[..], method, 5000).read_to_end(&mut out).unwrap();
            prop_assert!(out.len() <= 5000);
            let mut archive = vec![0x60, 0xea, 30, 0];
            archive.extend_from_slice(&[30, 11, 1, 2, 0, 0, 2]);
            archive.resize(4 + 30 + 4, 0);
            archive.extend_from_slice(&[0, 0]);
            archive.extend_from_slice(&data);
            members(&mut &archive[..], |m| {
                let mut out = Vec::new();
                ArjDecoder::new(m.data, m.method, m.original.min(5000)).read_to_end(&mut out)?;
                Ok(true)
            }).unwrap();
        }
    }
}
