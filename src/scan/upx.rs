//! UPX-packed Windows executables: the packer's header ("pack header") and
//! its decompressors, so that the original code and data are scanned.
//!
//! A packed PE keeps, at the end of its headers, a pack header: `UPX!`, the
//! UPX version, the format (9 win32/pe, 36 win64/pe), the method, the level,
//! the Adler-32 of the uncompressed and of the compressed data, their
//! lengths, the original file's length and the filter; the compressed data
//! follows it. The file is recognised by that header, checked against the
//! Adler-32 of the bytes after it, not by section names (`UPX0`/`UPX1` are
//! trivially renamed). The methods are UCL's NRV2B, NRV2D and NRV2E
//! (bit-stream LZ77, each with 8-, 16- and 32-bit bit buffers) and LZMA.
//!
//! The output is the original sections laid out from the first section's
//! address, as the stub rebuilds them in memory. Its call/jump filter (E8/E9
//! operands made absolute) is not undone: ClamAV scans the same view, and
//! a scanner's signatures are written against it.

use std::io::Read;

/// The pack header's fields pimail uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackHeader {
    pub method: Method,
    /// Uncompressed and compressed lengths.
    pub u_len: u32,
    pub c_len: u32,
    pub u_adler: u32,
    /// Offset of the compressed data in the buffer given to [`find`].
    pub data: usize,
}

/// A compression method, by the number UPX stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// NRV2B, NRV2D or NRV2E, with a bit buffer of this many bits.
    Nrv(Nrv, u8),
    /// LZMA (14): two bytes of properties, then a raw LZMA stream.
    Lzma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nrv {
    B,
    D,
    E,
}

impl Method {
    fn from_number(m: u8) -> Option<Method> {
        Some(match m {
            2 => Method::Nrv(Nrv::B, 32),
            3 => Method::Nrv(Nrv::B, 8),
            4 => Method::Nrv(Nrv::B, 16),
            5 => Method::Nrv(Nrv::D, 32),
            6 => Method::Nrv(Nrv::D, 8),
            7 => Method::Nrv(Nrv::D, 16),
            8 => Method::Nrv(Nrv::E, 32),
            9 => Method::Nrv(Nrv::E, 8),
            10 => Method::Nrv(Nrv::E, 16),
            14 => Method::Lzma,
            _ => return None,
        })
    }
}

/// UPX's format numbers for Windows executables (win32/pe, win64/pe).
const FORMATS: [u8; 2] = [9, 36];
const MAGIC: &[u8] = b"UPX!";

/// The pack header in `head` (a PE's first bytes, its headers), checked
/// against the compressed bytes it announces, which `compressed` reads
/// from `data` on (`c_len` bytes at most). None if there is none: the file
/// is not UPX-packed, or its header is damaged.
pub fn find(
    head: &[u8],
    mut compressed: impl FnMut(usize, u32) -> std::io::Result<Vec<u8>>,
) -> std::io::Result<Option<(PackHeader, Vec<u8>)>> {
    let mut from = 0;
    while let Some(at) = head[from..]
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map(|p| from + p)
    {
        from = at + 1;
        let Some(h) = parse(head, at) else {
            continue;
        };
        let data = compressed(h.data, h.c_len)?;
        if data.len() == h.c_len as usize && adler32(&data) == c_adler(head, at) {
            return Ok(Some((h, data)));
        }
    }
    Ok(None)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn c_adler(head: &[u8], at: usize) -> u32 {
    u32_at(head, at + 12).unwrap_or(0)
}

/// The header at `at`, if its fields are those of a packed PE.
fn parse(head: &[u8], at: usize) -> Option<PackHeader> {
    let version = *head.get(at + 4)?;
    let format = *head.get(at + 5)?;
    if !FORMATS.contains(&format) || version == 0 {
        return None;
    }
    let method = Method::from_number(*head.get(at + 6)?)?;
    // The header grew over UPX's versions: 24 bytes before version 4, 28
    // up to 9 (a filter byte and a checksum), 32 since (filter
    // parameters).
    let size = match version {
        0..=3 => 24,
        4..=9 => 28,
        _ => 32,
    };
    let u_len = u32_at(head, at + 16)?;
    let c_len = u32_at(head, at + 20)?;
    if u_len == 0 || c_len == 0 || c_len > u_len.saturating_add(u_len / 8 + 1024) {
        return None;
    }
    Some(PackHeader {
        method,
        u_len,
        c_len,
        u_adler: u32_at(head, at + 8)?,
        data: at + size,
    })
}

/// Adler-32 (RFC 1950 section 8.2), as UPX checks its data with.
pub fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that cannot overflow `b` between reductions.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// The bits of an NRV stream: a buffer of 8, 16 or 32 bits read little
/// endian, used from its top bit down; literal bytes and offset low bytes
/// come from the same input between buffer refills.
struct Bits<'a> {
    input: &'a [u8],
    pos: usize,
    width: u8,
    buf: u32,
    left: u8,
}

impl Bits<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.input.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn bit(&mut self) -> Option<u32> {
        if self.left == 0 {
            let n = self.width as usize / 8;
            let bytes = self.input.get(self.pos..self.pos + n)?;
            self.pos += n;
            self.buf = bytes
                .iter()
                .rev()
                .fold(0u32, |acc, &b| (acc << 8) | b as u32);
            self.left = self.width;
        }
        self.left -= 1;
        Some((self.buf >> self.left) & 1)
    }

    /// An Elias-gamma-like number: `start`, then a bit appended per step
    /// until a 1 "stop" bit (NRV2B's offsets and all three's lengths).
    fn gamma(&mut self, start: u32) -> Option<u32> {
        let mut v = start;
        loop {
            v = v.checked_mul(2)?.checked_add(self.bit()?)?;
            if self.bit()? == 1 {
                return Some(v);
            }
        }
    }

    /// NRV2D's and NRV2E's offset prefix: two data bits per stop bit.
    fn gamma2(&mut self) -> Option<u32> {
        let mut v = 1u32;
        loop {
            v = v.checked_mul(2)?.checked_add(self.bit()?)?;
            if self.bit()? == 1 {
                return Some(v);
            }
            v = (v - 1).checked_mul(2)?.checked_add(self.bit()?)?;
        }
    }
}

/// Decompresses an NRV2B/D/E stream of at most `u_len` bytes (UCL's
/// format, as UPX uses it). Damage (input ending early, a reference before
/// the start, output past `u_len`) ends the output there: what was
/// decoded is returned.
pub fn nrv(kind: Nrv, width: u8, input: &[u8], u_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(u_len);
    let mut bits = Bits {
        input,
        pos: 0,
        width,
        buf: 0,
        left: 0,
    };
    let _ = nrv_into(kind, &mut bits, &mut out, u_len);
    out
}

fn nrv_into(kind: Nrv, bits: &mut Bits, out: &mut Vec<u8>, u_len: usize) -> Option<()> {
    let mut last_off: u32 = 1;
    loop {
        while bits.bit()? == 1 {
            if out.len() >= u_len {
                return None;
            }
            out.push(bits.byte()?);
        }
        let prefix = match kind {
            Nrv::B => bits.gamma(1)?,
            Nrv::D | Nrv::E => bits.gamma2()?,
        };
        // D and E carry the length's first bit: in the offset's low bit
        // for a new offset, as a bit of its own for the last one.
        let (off, carried) = if prefix == 2 {
            let carried = match kind {
                Nrv::B => 0,
                Nrv::D | Nrv::E => bits.bit()?,
            };
            (last_off, carried)
        } else {
            let v = (prefix - 3)
                .checked_mul(256)?
                .checked_add(bits.byte()? as u32)?;
            if v == u32::MAX {
                // The end marker.
                return Some(());
            }
            let (v, carried) = match kind {
                Nrv::B => (v, 0),
                Nrv::D | Nrv::E => (v >> 1, (!v) & 1),
            };
            last_off = v.checked_add(1)?;
            (last_off, carried)
        };
        let len = match kind {
            Nrv::B | Nrv::D => {
                let first = match kind {
                    Nrv::B => bits.bit()?,
                    _ => carried,
                };
                match first * 2 + bits.bit()? {
                    0 => bits.gamma(1)?.checked_add(2)?,
                    n => n,
                }
            }
            Nrv::E if carried == 1 => 1 + bits.bit()?,
            Nrv::E if bits.bit()? == 1 => 3 + bits.bit()?,
            Nrv::E => bits.gamma(1)?.checked_add(3)?,
        };
        let far = match kind {
            Nrv::B => 0xd00,
            Nrv::D | Nrv::E => 0x500,
        };
        let count = len as usize + 1 + usize::from(off > far);
        let off = off as usize;
        if off > out.len() || out.len() + count > u_len {
            return None;
        }
        let start = out.len() - off;
        for i in 0..count {
            let b = out[start + i];
            out.push(b);
        }
    }
}

/// The LZMA stream of method 14: a byte `(lc + lp) << 3 | pb`, a byte
/// `lp << 4 | lc`, then raw LZMA without a dictionary size (the output is
/// the whole window: `u_len`). None if the properties are out of range.
pub fn lzma(input: &[u8], u_len: u32) -> Option<impl Read + '_> {
    let (&p0, &p1) = (input.first()?, input.get(1)?);
    let (pb, lp, lc) = (p0 & 7, p1 >> 4, p1 & 15);
    if pb > 4 || lp > 4 || lc > 8 || (p0 >> 3) != lc + lp {
        return None;
    }
    let dict = u_len.max(4096);
    lzma_rust2::LzmaReader::new(
        &input[2..],
        u_len as u64,
        lc as u32,
        lp as u32,
        pb as u32,
        dict,
        None,
    )
    .ok()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A bit writer matching [`Bits`]: a buffer's place is reserved in the
    /// output when its first bit is written; bytes written meanwhile go
    /// after it, as the decoder reads them.
    struct BitWriter {
        out: Vec<u8>,
        width: u8,
        at: usize,
        buf: u32,
        used: u8,
    }

    impl BitWriter {
        fn flush(&mut self) {
            let v = self.buf << (self.width - self.used);
            for i in 0..self.width as usize / 8 {
                self.out[self.at + i] = (v >> (8 * i)) as u8;
            }
        }

        fn bit(&mut self, b: u32) {
            if self.used == self.width {
                self.flush();
                self.used = 0;
            }
            if self.used == 0 {
                self.at = self.out.len();
                self.out
                    .extend(std::iter::repeat_n(0, self.width as usize / 8));
                self.buf = 0;
            }
            self.buf = (self.buf << 1) | b;
            self.used += 1;
        }

        /// `v` (at least 2) as [`Bits::gamma`] reads it from 1: the bits
        /// after the leading one, each followed by "stop?".
        fn gamma(&mut self, v: u32) {
            let n = 32 - v.leading_zeros();
            for i in (0..n - 1).rev() {
                self.bit((v >> i) & 1);
                self.bit(u32::from(i == 0));
            }
        }

        /// `v` (at least 2) as [`Bits::gamma2`] reads it: undo its steps
        /// from the last one (`v = 2u + b`, stop), each earlier step being
        /// `u = 2(t - 1) + c` after `t = 2s + d`.
        fn gamma2(&mut self, v: u32) {
            let mut steps = Vec::new();
            let mut u = v >> 1;
            while u != 1 {
                let t = (u >> 1) + 1;
                steps.push((t & 1, u & 1));
                u = t >> 1;
            }
            for &(d, c) in steps.iter().rev() {
                self.bit(d);
                self.bit(0);
                self.bit(c);
            }
            self.bit(v & 1);
            self.bit(1);
        }

        fn finish(mut self) -> Vec<u8> {
            if self.used > 0 {
                self.flush();
            }
            self.out
        }
    }

    /// A small greedy NRV compressor for the tests (a naive match search):
    /// literals, new offsets, the last offset again, every length coding
    /// and the end marker.
    pub fn compress(kind: Nrv, width: u8, data: &[u8]) -> Vec<u8> {
        let mut w = BitWriter {
            out: Vec::new(),
            width,
            at: 0,
            buf: 0,
            used: 0,
        };
        let far = if kind == Nrv::B { 0xd00 } else { 0x500 };
        let (mut i, mut last_off) = (0, 1);
        // Earlier positions of each 3-byte string, the candidates.
        let mut seen: std::collections::HashMap<&[u8], Vec<usize>> = Default::default();
        while i < data.len() {
            let (mut best, mut best_off) = (0, 0);
            let key = &data[i..(i + 3).min(data.len())];
            let mut candidates: Vec<usize> = seen.get(key).into_iter().flatten().copied().collect();
            candidates.push(i.saturating_sub(last_off));
            for at in candidates.into_iter().rev().take(64) {
                let off = i - at;
                if off == 0 {
                    continue;
                }
                let mut l = 0;
                while i + l < data.len() && data[i + l] == data[at + l] && l < 400 {
                    l += 1;
                }
                // The last offset costs fewer bits: take it on a tie.
                if l > best || (l == best && off == last_off) {
                    (best, best_off) = (l, off);
                }
            }
            let extra = usize::from(best_off > far);
            let step = if best < 2 + extra { 1 } else { best };
            for p in i..i + step {
                if p + 3 <= data.len() {
                    seen.entry(&data[p..p + 3]).or_default().push(p);
                }
            }
            if best < 2 + extra {
                w.bit(1);
                w.out.push(data[i]);
                i += 1;
                continue;
            }
            w.bit(0);
            let len = (best - 1 - extra) as u32;
            // The length's first bit for D and E (see `nrv_into`).
            let first = match kind {
                Nrv::B => 0,
                Nrv::D => u32::from(len <= 3) * (len >> 1),
                Nrv::E => u32::from(len <= 2),
            };
            if best_off == last_off {
                if kind == Nrv::B {
                    w.gamma(2);
                } else {
                    w.gamma2(2);
                    w.bit(first);
                }
            } else {
                let v = (best_off - 1) as u32;
                let v = if kind == Nrv::B {
                    v
                } else {
                    (v << 1) | (1 - first)
                };
                if kind == Nrv::B {
                    w.gamma((v >> 8) + 3);
                } else {
                    w.gamma2((v >> 8) + 3);
                }
                w.out.push(v as u8);
                last_off = best_off;
            }
            match kind {
                Nrv::B | Nrv::D if len <= 3 => {
                    if kind == Nrv::B {
                        w.bit(len >> 1);
                    }
                    w.bit(len & 1);
                }
                Nrv::B | Nrv::D => {
                    if kind == Nrv::B {
                        w.bit(0);
                    }
                    w.bit(0);
                    w.gamma(len - 2);
                }
                Nrv::E if len <= 2 => w.bit(len - 1),
                Nrv::E if len <= 4 => {
                    w.bit(1);
                    w.bit(len - 3);
                }
                Nrv::E => {
                    w.bit(0);
                    w.gamma(len - 3);
                }
            }
            i += best;
        }
        // The end marker: an offset of all ones.
        w.bit(0);
        if kind == Nrv::B {
            w.gamma(0x100_0002);
        } else {
            w.gamma2(0x100_0002);
        }
        w.out.push(0xff);
        w.finish()
    }

    /// Text with repeats near and far (past 0x500 and 0xd00).
    pub fn sample() -> Vec<u8> {
        let mut d = Vec::new();
        for i in 0..200u32 {
            d.extend_from_slice(format!("line {} of the packed file; ", i % 37).as_bytes());
            d.extend_from_slice(&i.wrapping_mul(2654435761).to_le_bytes());
        }
        let again = d[..3000].to_vec();
        d.extend_from_slice(&again);
        d
    }

    #[test]
    fn nrv_round_trips_every_method_and_width() {
        let data = sample();
        for kind in [Nrv::B, Nrv::D, Nrv::E] {
            for width in [8, 16, 32] {
                let packed = compress(kind, width, &data);
                assert!(packed.len() < data.len() / 2, "{kind:?}/{width}");
                assert_eq!(
                    nrv(kind, width, &packed, data.len()),
                    data,
                    "{kind:?}/{width}"
                );
                // A short output bound stops the output there.
                let cut = nrv(kind, width, &packed, 1000);
                assert!(cut.len() <= 1000 && data.starts_with(&cut));
                // Truncated input: a prefix of the data, no panic.
                let short = nrv(kind, width, &packed[..packed.len() / 2], data.len());
                assert!(data.starts_with(&short));
            }
        }
    }

    #[test]
    fn pack_header_is_checked_against_the_compressed_bytes() {
        let data = sample();
        let packed = compress(Nrv::E, 32, &data);
        let mut file = vec![0u8; 64];
        file.extend_from_slice(b"UPX!\x0d\x09\x08\x08");
        for v in [
            adler32(&data),
            adler32(&packed),
            data.len() as u32,
            packed.len() as u32,
        ] {
            file.extend_from_slice(&v.to_le_bytes());
        }
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&packed);
        let read = |file: &[u8], at: usize, n: u32| {
            Ok(file[at..(at + n as usize).min(file.len())].to_vec())
        };
        let (h, c) = find(&file, |at, n| read(&file, at, n)).unwrap().unwrap();
        assert_eq!(h.method, Method::Nrv(Nrv::E, 32));
        assert_eq!((h.data, h.u_len), (96, data.len() as u32));
        assert_eq!(nrv(Nrv::E, 32, &c, h.u_len as usize), data);
        // A damaged byte of compressed data: not taken for a pack header.
        let mut bad = file.clone();
        bad[100] ^= 1;
        assert!(find(&bad, |at, n| read(&bad, at, n)).unwrap().is_none());
        // An unknown format (here 12, a DOS .com).
        let mut com = file.clone();
        com[69] = 12;
        assert!(find(&com, |at, n| read(&com, at, n)).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn nrv_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            for kind in [Nrv::B, Nrv::D, Nrv::E] {
                for width in [8, 16, 32] {
                    prop_assert!(nrv(kind, width, &data, 4096).len() <= 4096);
                }
            }
        }
    }

    #[test]
    fn adler32_of_known_text() {
        // The checksum of "Wikipedia", the commonly quoted example.
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }
}
