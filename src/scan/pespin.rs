//! Executables protected by PESpin 1.1: the stub's layers of encryption
//! and its compression undone, so that the original sections are scanned.
//!
//! PESpin puts its stub in the last section and the entry point in it.
//! The stub decrypts itself in stages, then the program's sections, all
//! at fixed distances from the entry point (EP):
//! - `mov bl, key; ...; mov ecx, 0x11fe` at EP+0xdb: the 0x11fe bytes
//!   from EP+0x1fe5 are xored, from the last down, with the key, which
//!   decreases by one per byte;
//! - 0x5a0 bytes from EP+0x2d5 are xored with the low byte of a 32-bit
//!   Galois LFSR (polynomial 0x8c328834, stepped before each byte) seeded
//!   from EP+0x26eb;
//! - a checksum of the file's first bytes (all but a count stored at
//!   EP+0x429) is subtracted from the word at EP+0x3217: the key of the
//!   sections' first layer, the same kind of LFSR (0xed43af31, stepped on
//!   even states) over every section the bitmap at EP+0x3207 marks;
//! - 0x180 bytes from EP+0x28d3 (LFSR 0xed43af32, key at EP+0x650) hold
//!   a byte loop like yC's (see yc.rs) that decrypts 0x1a1 bytes from
//!   EP+0x6d4; those hold a second loop (at EP+0x755) that decrypts the
//!   sections the bitmap at EP+0x6f1 marks;
//! - the sections the bitmap at EP+0x3061 marks are then aPLib-compressed
//!   (as FSG and MEW compress), expanding to their virtual size.
//!
//! Each layer's length is checked against the one PESpin 1.1 uses. The
//! facts come from reading the stub and ClamAV's description of it; the
//! code is pimail's own.

use super::peimage::{Headers, Section, u32_at};
use super::yc::{self, Op};

/// How many bytes from the entry point [`is_stub`] looks at.
pub const EP_READ: usize = 0x100;

const LAYER_A: (usize, u32) = (0x1fe5, 0x11fe);
const LAYER_B: (usize, u32) = (0x2d5, 0x5a0);
const LAYER_D: (usize, u32) = (0x28d3, 0x180);
const LAYER_E: (usize, u32) = (0x6d4, 0x1a1);
/// The farthest the stub's fields reach from the entry point.
const STUB_END: usize = 0x3217 + 4;

/// Whether `ep` (the bytes at the entry point) is PESpin 1.1's stub.
pub fn is_stub(ep: &[u8]) -> bool {
    ep.get(0xdb) == Some(&0xbb)
        && ep.get(0xe0) == Some(&0xb9)
        && u32_at(ep, 0xe1) == Some(LAYER_A.1)
}

/// A section as unpacked: its data, and whether it was compressed (its
/// virtual size is then what it may expand to).
pub struct Unpacked {
    pub section: Section,
    pub compressed: bool,
}

/// Undoes the encryption in `file` (the whole executable) in place; the
/// entry point's file offset is `ep`. Returns the program's sections
/// (all but the last), marked compressed or not, or None if a layer's
/// length is not PESpin 1.1's or the stub does not fit in the file.
pub fn decrypt(file: &mut [u8], pe: &Headers, ep: usize) -> Option<Vec<Unpacked>> {
    if !is_stub(file.get(ep..)?) || file.len() < ep.checked_add(STUB_END)? {
        return None;
    }
    let at = |off: usize| ep + off;
    // The first two layers are undone on a copy: the checksum is of the
    // file as it is.
    let mut stub = file.get(ep..ep + STUB_END)?.to_vec();
    let key8 = stub[0xdc];
    let (start, len) = LAYER_A;
    for (i, b) in stub[start..start + len as usize]
        .iter_mut()
        .rev()
        .enumerate()
    {
        *b ^= key8.wrapping_sub(i as u8);
    }
    let (start, len) = LAYER_B;
    if u32_at(&stub, 0x26eb + 5) != Some(len) {
        return None;
    }
    let seed = u32_at(&stub, 0x26eb)?;
    lfsr(
        &mut stub[start..start + len as usize],
        seed,
        0x8c32_8834,
        true,
    );
    let checked = (file.len() as u64).checked_sub(u32_at(&stub, 0x429)? as u64)?;
    let key = u32_at(&stub, 0x3217)?.wrapping_sub(checksum(&file[..checked as usize]));
    file[ep..ep + STUB_END].copy_from_slice(&stub);
    drop(stub);

    let sections = &pe.sections[..pe.sections.len().checked_sub(1)?];
    let xored = u32_at(file, at(0x3207))?;
    for_marked(file, sections, xored, |data, _| {
        lfsr(data, key, 0xed43_af31, false)
    });
    let (start, len) = LAYER_D;
    if u32_at(file, at(0x644)) != Some(len) {
        return None;
    }
    let seed = u32_at(file, at(0x650))?;
    lfsr(
        file.get_mut(at(start)..at(start) + len as usize)?,
        seed,
        0xed43_af32,
        true,
    );
    let (start, len) = LAYER_E;
    if u32_at(file, at(0x28dd)) != Some(len) {
        return None;
    }
    let first = ops(file.get(at(0x28ec)..)?)?;
    yc::run(
        &first,
        file.get_mut(at(start)..at(start) + len as usize)?,
        len,
    );
    let polied = u32_at(file, at(0x6f1))?;
    let second = ops(file.get(at(0x755)..)?)?;
    for_marked(file, sections, polied, |data, raw_size| {
        yc::run(&second, data, raw_size)
    });
    let compressed = u32_at(file, at(0x3061))?;
    Some(
        sections
            .iter()
            .enumerate()
            .map(|(i, &section)| Unpacked {
                section,
                compressed: i < 32 && compressed >> i & 1 == 1,
            })
            .collect(),
    )
}

/// Runs `f` over the raw data (as far as the file holds it) of each
/// section whose bit is set in `bitmap`, with the section's raw size.
fn for_marked(
    file: &mut [u8],
    sections: &[Section],
    bitmap: u32,
    mut f: impl FnMut(&mut [u8], u32),
) {
    for (i, s) in sections.iter().enumerate().take(32) {
        if bitmap >> i & 1 == 0 {
            continue;
        }
        let start = (s.raw as usize).min(file.len());
        let end = start.saturating_add(s.raw_size as usize).min(file.len());
        f(&mut file[start..end], s.raw_size);
    }
}

/// Xors `data` with the low byte of a Galois LFSR, stepped before each
/// byte: shifted right, `taps` xored in when the bit shifted out is 1
/// (`on_odd`) or 0.
fn lfsr(data: &mut [u8], seed: u32, taps: u32, on_odd: bool) {
    let mut state = seed;
    for b in data {
        let odd = state & 1 == 1;
        state >>= 1;
        if odd == on_odd {
            state ^= taps;
        }
        *b ^= state as u8;
    }
}

/// The stub's checksum of the file's first bytes: two 32-bit registers
/// mixed four times per byte (xor, add 0x7801a108, rotate, swap).
fn checksum(data: &[u8]) -> u32 {
    let (mut a, mut b) = (u32::MAX, u32::MAX);
    for &byte in data {
        a ^= (byte as u32) << 8;
        a = (a >> 3) & 0x1fff_ffff;
        for _ in 0..4 {
            a ^= (b >> 8) & 0xff;
            a = a.wrapping_add(0x7801_a108);
            a ^= b;
            a = a.rotate_right(b & 0x1f);
            std::mem::swap(&mut a, &mut b);
        }
    }
    b
}

/// A PESpin decryption loop: 0x24 bytes of operations (yC's, plus `inc
/// al`, `or al, imm8` as filler and `jmp short` over one junk byte), then
/// `stosb`.
fn ops(code: &[u8]) -> Option<Vec<Op>> {
    const LEN: usize = 0x24;
    let mut ops = Vec::new();
    let mut j = 0;
    while j < LEN {
        let op = *code.get(j)?;
        let arg = *code.get(j + 1)?;
        j += match op {
            0xeb => 3,
            0x0a => 2,
            0x90 | 0xf8 | 0xf9 => 1,
            0x02 | 0x2a | 0x32 => {
                ops.push(match op {
                    0x02 => Op::AddCl,
                    0x2a => Op::SubCl,
                    _ => Op::XorCl,
                });
                2
            }
            0x04 => {
                ops.push(Op::Add(arg));
                2
            }
            0x2c => {
                ops.push(Op::Sub(arg));
                2
            }
            0x34 => {
                ops.push(Op::Xor(arg));
                2
            }
            0xfe => {
                ops.push(if arg == 0xc0 { Op::Inc } else { Op::Dec });
                2
            }
            0xc0 => {
                let n = *code.get(j + 2)?;
                ops.push(if arg == 0xc0 { Op::Rol(n) } else { Op::Ror(n) });
                3
            }
            _ => return None,
        };
    }
    (j == LEN && code.get(LEN) == Some(&0xaa)).then_some(ops)
}

/// The aPLib stream `packed` expands to, at most `room` bytes: a first
/// literal byte, then tag bits (bytes read from the stream as needed, top
/// bit first) choosing a literal, a short match (offset 1-127 and length
/// 2-3 in one byte; offset 0 ends the stream), a one-byte copy from up to
/// 15 back (0: a zero byte), or a gamma-coded offset (reusing the last
/// after a literal) and length. Damage ends the output.
pub fn aplib(packed: &[u8], room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(room.min(packed.len().saturating_mul(8)));
    let mut tags = Tags {
        input: packed,
        pos: 0,
        tag: 0,
        left: 0,
    };
    let _ = aplib_into(&mut tags, &mut out, room);
    out
}

struct Tags<'a> {
    input: &'a [u8],
    pos: usize,
    tag: u8,
    left: u8,
}

impl Tags<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.input.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn bit(&mut self) -> Option<u32> {
        if self.left == 0 {
            self.tag = self.byte()?;
            self.left = 8;
        }
        self.left -= 1;
        Some((self.tag >> self.left) as u32 & 1)
    }

    fn gamma(&mut self) -> Option<u32> {
        let mut v = 1u32;
        loop {
            v = v.checked_mul(2)?.checked_add(self.bit()?)?;
            if self.bit()? == 0 {
                return Some(v);
            }
        }
    }
}

fn aplib_into(tags: &mut Tags, out: &mut Vec<u8>, room: usize) -> Option<()> {
    if room == 0 {
        return None;
    }
    out.push(tags.byte()?);
    let mut last_offset = 0u32;
    let mut after_literal = true;
    loop {
        if tags.bit()? == 0 {
            if out.len() >= room {
                return None;
            }
            out.push(tags.byte()?);
            after_literal = true;
            continue;
        }
        let (offset, len) = if tags.bit()? == 0 {
            let high = tags.gamma()? - 2;
            let reuse = after_literal && high == 0;
            let high = if after_literal {
                high.checked_sub(1)
            } else {
                Some(high)
            };
            after_literal = false;
            if reuse {
                (last_offset, tags.gamma()?)
            } else {
                let offset = (high? << 8) | tags.byte()? as u32;
                let mut len = tags.gamma()?;
                if offset >= 0x7d00 {
                    len += 1;
                }
                if offset >= 0x500 {
                    len += 1;
                }
                if offset <= 0x7f {
                    len += 2;
                }
                last_offset = offset;
                (offset, len)
            }
        } else if tags.bit()? == 0 {
            let b = tags.byte()? as u32;
            if b >> 1 == 0 {
                return Some(());
            }
            last_offset = b >> 1;
            after_literal = false;
            (b >> 1, 2 + (b & 1))
        } else {
            let offset = tags.bit()? << 3 | tags.bit()? << 2 | tags.bit()? << 1 | tags.bit()?;
            after_literal = true;
            if offset == 0 {
                if out.len() >= room {
                    return None;
                }
                out.push(0);
                continue;
            }
            (offset, 1)
        };
        let (offset, len) = (offset as usize, len as usize);
        if offset == 0 || offset > out.len() {
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

#[cfg(test)]
pub mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An aPLib writer: tag bytes reserved in the output when their first
    /// bit is written, bytes written meanwhile after them.
    struct TagWriter {
        out: Vec<u8>,
        at: usize,
        used: u8,
    }

    impl TagWriter {
        fn bit(&mut self, b: u32) {
            if self.used == 8 {
                self.at = self.out.len();
                self.out.push(0);
                self.used = 0;
            }
            self.out[self.at] |= ((b & 1) as u8) << (7 - self.used);
            self.used += 1;
        }
    }

    /// aPLib: literals, and short matches (offset 1-127, 2-3 bytes).
    pub fn compress(data: &[u8]) -> Vec<u8> {
        let mut w = TagWriter {
            out: vec![data[0]],
            at: 0,
            used: 8,
        };
        let mut i = 1;
        while i < data.len() {
            let best = (1..=i.min(127))
                .map(|o| {
                    let l = (0..3)
                        .take_while(|&l| i + l < data.len() && data[i + l] == data[i + l - o]);
                    (l.count(), o)
                })
                .max_by_key(|&(l, o)| (l, std::cmp::Reverse(o)))
                .unwrap_or((0, 0));
            if best.0 >= 2 {
                w.bit(1);
                w.bit(1);
                w.bit(0);
                w.out.push(((best.1 as u8) << 1) | (best.0 as u8 - 2));
                i += best.0;
            } else {
                w.bit(0);
                w.out.push(data[i]);
                i += 1;
            }
        }
        w.bit(1);
        w.bit(1);
        w.bit(0);
        w.out.push(0);
        w.out
    }

    const LOOP_1: &[u8] = b"\x2a\xc1\x04\x11\xeb\x01\xe8\xfe\xc0\x34\x5a\xc0\xc0\x03\x0a\xc0\x90";
    const LOOP_2: &[u8] = b"\x02\xc1\xc0\xc8\x05\x2c\x21\x32\xc1\xfe\xc8\xf9";

    fn loop_code(ops: &[u8]) -> Vec<u8> {
        let mut code = ops.to_vec();
        code.resize(0x24, 0x90);
        code.push(0xaa);
        code
    }

    /// What `code` decrypts: its operations undone in reverse order.
    fn encrypt(code: &[u8], data: &mut [u8], ecx: u32) {
        yc::run(&yc::tests::inverse(ops(code).unwrap()), data, ecx);
    }

    fn put(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// A minimal PESpin 1.1-protected PE: `.text` holding `data`
    /// compressed and encrypted by both section layers, then the stub's
    /// section (entry point at 0x10 in it) with every layer applied.
    /// `vsize` is `.text`'s virtual size (what it expands to).
    pub fn sample(data: &[u8], vsize: u32) -> Vec<u8> {
        let packed = compress(data);
        let raw = packed.len().next_multiple_of(0x200) as u32;
        let stub_raw = 0x400 + raw;
        let stub_len = (0x10 + STUB_END).next_multiple_of(0x200) as u32;
        let stub_rva = 0x1000 + vsize.next_multiple_of(0x1000);
        let mut pe = vec![0u8; 0x400];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x86] = 2;
        pe[0x94] = 0xe0;
        pe[0x98..0x9a].copy_from_slice(&0x10bu16.to_le_bytes());
        put(&mut pe, 0x98 + 16, stub_rva + 0x10);
        put(&mut pe, 0x98 + 56, stub_rva + 0x4000);
        let sections = [
            (vsize, 0x1000u32, raw, 0x400u32),
            (0x4000, stub_rva, stub_len, stub_raw),
        ];
        for (i, (vs, va, rs, ro)) in sections.into_iter().enumerate() {
            let at = 0x178 + 40 * i;
            for (j, v) in [vs, va, rs, ro].into_iter().enumerate() {
                put(&mut pe, at + 8 + 4 * j, v);
            }
        }
        let mut text = packed;
        text.resize(raw as usize, 0);
        let mut stub = vec![0u8; stub_len as usize];
        let ep = 0x10;
        let e = |off: usize| ep + off;
        // Plain fields, innermost layer first.
        put(&mut stub, e(0x3061), 1);
        put(&mut stub, e(0x3207), 1);
        put(&mut stub, e(0x6f1), 1);
        stub[e(0x755)..e(0x755) + 0x25].copy_from_slice(&loop_code(LOOP_2));
        put(&mut stub, e(0x28dd), LAYER_E.1);
        stub[e(0x28ec)..e(0x28ec) + 0x25].copy_from_slice(&loop_code(LOOP_1));
        put(&mut stub, e(0x644), LAYER_D.1);
        put(&mut stub, e(0x650), 0x1234_5678);
        put(&mut stub, e(0x26eb), 0x9abc_def0);
        put(&mut stub, e(0x26eb + 5), LAYER_B.1);
        stub[e(0xdb)] = 0xbb;
        stub[e(0xdc)] = 0x77;
        stub[e(0xe0)] = 0xb9;
        put(&mut stub, e(0xe1), LAYER_A.1);
        let file_len = 0x400 + raw + stub_len;
        // The checksum covers the headers only.
        put(&mut stub, e(0x429), file_len - 0x400);
        let key = 0x0bad_cafeu32;
        put(&mut stub, e(0x3217), key.wrapping_add(checksum(&pe)));
        // Now each layer's inverse, outermost last.
        encrypt(&loop_code(LOOP_2), &mut text, raw);
        let (start, len) = LAYER_E;
        encrypt(
            &loop_code(LOOP_1),
            &mut stub[e(start)..e(start) + len as usize],
            len,
        );
        let (start, len) = LAYER_D;
        lfsr(
            &mut stub[e(start)..e(start) + len as usize],
            0x1234_5678,
            0xed43_af32,
            true,
        );
        lfsr(&mut text, key, 0xed43_af31, false);
        let (start, len) = LAYER_B;
        lfsr(
            &mut stub[e(start)..e(start) + len as usize],
            0x9abc_def0,
            0x8c32_8834,
            true,
        );
        let (start, len) = LAYER_A;
        let layer = &mut stub[e(start)..e(start) + len as usize];
        for (i, b) in layer.iter_mut().rev().enumerate() {
            *b ^= 0x77u8.wrapping_sub(i as u8);
        }
        pe.extend_from_slice(&text);
        pe.extend_from_slice(&stub);
        pe
    }

    #[test]
    fn aplib_round_trips() {
        let mut data = b"aPLib aPLib aPLib, abababab and 0000".repeat(5);
        data.extend((0..2000u32).map(|i| (i * 7 % 256) as u8));
        assert_eq!(aplib(&compress(&data), 1 << 20), data);
        assert_eq!(aplib(&compress(&data), 10), data[..10]);
    }

    #[test]
    fn undoes_every_layer() {
        let data: Vec<u8> = (0..1500u32).map(|i| (i * 11 % 256) as u8).collect();
        let mut file = sample(&data, 0x1000);
        let pe = crate::scan::peimage::headers(&file).unwrap();
        let ep = pe.sections[1].raw as usize + 0x10;
        let sections = decrypt(&mut file, &pe, ep).unwrap();
        assert_eq!(sections.len(), 1);
        assert!(sections[0].compressed);
        let s = sections[0].section;
        let raw = &file[s.raw as usize..][..s.raw_size as usize];
        assert_eq!(aplib(raw, s.vsize as usize), data);
        // Another stub, a changed layer length: not PESpin 1.1's.
        let mut other = sample(&data, 0x1000);
        other[ep + 0xe1] ^= 1;
        assert!(decrypt(&mut other, &pe, ep).is_none());
    }

    proptest! {
        #[test]
        fn aplib_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert!(aplib(&data, 4096).len() <= 4096);
        }

        #[test]
        fn loops_never_panic(code in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(ops) = ops(&code) {
                yc::run(&ops, &mut [1, 2, 3], 3);
            }
        }
    }
}
