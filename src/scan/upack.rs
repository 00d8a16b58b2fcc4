//! Upack-packed executables (Upack 0.39, the layout whose stub starts at
//! the entry point with `mov esi, TABLE`): the original sections are
//! decompressed as the stub does, so that they are scanned.
//!
//! Upack's coder is LZMA with no position bits (lp = pb = 0), the literal
//! context taken from the previous byte shifted right by the stub's `shr
//! ebp, n` (lc = 8 - n), and a range decoder started from the stream's
//! first four bytes (raw LZMA's first byte, always 0, is not stored). The
//! stub copies a block of its own code and data (`mov esi, BLOCK; push n;
//! pop ecx; rep movsd`) before its coder state; the block's last word is
//! the compressed data's address, and the words after it hold the
//! output's start (+0x0c) and end (+0x34). Recognition is by those code
//! bytes at the entry point, not by section names (Upack leaves them
//! empty or fills them with code).
//!
//! The stub also undoes a call/jump filter (E8/E9 operands made absolute)
//! on a counted number of calls; that is not undone here: the code and
//! data are scanned as the coder yields them, as for UPX.

use super::pe_image::{Layout, u32_at};
use std::io::{Read, Seek};

/// A Upack-packed executable: its layout and the copied block's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upack {
    pub layout: Layout,
    /// The block's RVA and length in bytes.
    block: u32,
    block_len: u32,
}

/// The stub's code at the entry point (`mov esi, imm32` at 0, then
/// `lodsd; push eax; push [esi+n]; jmp short`), and at the jump's target
/// (`push [esi+n]; lodsd; push eax; mov edi, [esi]; mov esi, imm32; push
/// n; pop ecx; rep movsd`); `None` is any byte.
const ENTRY: [Option<u8>; 11] = [
    Some(0xbe),
    None,
    None,
    None,
    None,
    Some(0xad),
    Some(0x50),
    Some(0xff),
    Some(0x76),
    None,
    Some(0xeb),
];
const COPY: [Option<u8>; 17] = [
    Some(0xff),
    Some(0x76),
    None,
    Some(0xad),
    Some(0x50),
    Some(0x8b),
    Some(0x3e),
    Some(0xbe),
    None,
    None,
    None,
    None,
    Some(0x6a),
    None,
    Some(0x59),
    Some(0xf3),
    Some(0xa5),
];

/// The stub's `mov edi, [esi+0ch]; push edi; push ecx; jmp rel32` into
/// its decoder, whose first bytes hold `shr ebp, n`.
const TO_DECODER: &[u8] = &[0x8b, 0x7e, 0x0c, 0x57, 0x51, 0xe9];
/// How far into the decoder `shr ebp, n` is looked for.
const DECODER_HEAD: usize = 64;

fn matches(bytes: &[u8], pattern: &[Option<u8>]) -> bool {
    bytes.len() >= pattern.len()
        && pattern
            .iter()
            .zip(bytes)
            .all(|(p, b)| p.is_none_or(|p| p == *b))
}

/// The Upack stub of the PE whose headers are `head`, if it has one;
/// reads only the few bytes at the entry point and at its jump's target.
pub fn find(head: &[u8], file: &mut (impl Read + Seek)) -> std::io::Result<Option<Upack>> {
    let Some(layout) = Layout::parse(head) else {
        return Ok(None);
    };
    let entry = layout.read(file, layout.entry, ENTRY.len() + 1)?;
    let Some(&jump) = entry.get(ENTRY.len()).filter(|_| matches(&entry, &ENTRY)) else {
        return Ok(None);
    };
    let target = layout
        .entry
        .wrapping_add(ENTRY.len() as u32 + 1)
        .wrapping_add(jump as i8 as u32);
    let copy = layout.read(file, target, COPY.len())?;
    if !matches(&copy, &COPY) {
        return Ok(None);
    }
    let block = u32_at(&copy, 8)
        .unwrap_or(0)
        .wrapping_sub(layout.image_base);
    let block_len = 4 * copy[13] as u32;
    if block_len == 0 || block.saturating_add(block_len) > layout.size_of_image {
        return Ok(None);
    }
    Ok(Some(Upack {
        layout,
        block,
        block_len,
    }))
}

/// Where the stub decompresses to, from what, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// RVAs of the compressed data and of the output.
    pub stream: u32,
    pub start: u32,
    pub len: u32,
    pub lc: u8,
}

/// The plan the stub's words and code in `image` (the loaded image)
/// give; None if they are not a Upack stub's (or point outside it).
pub fn plan(image: &[u8], up: &Upack) -> Option<Plan> {
    let base = up.layout.image_base;
    let rva = |va: u32| va.checked_sub(base).filter(|&r| (r as usize) < image.len());
    let end = (up.block + up.block_len) as usize;
    let stream = rva(u32_at(image, end - 4)?)?;
    let start = rva(u32_at(image, end + 0x0c)?)?;
    let stop = u32_at(image, end + 0x34)?.checked_sub(base)?;
    let len = stop
        .checked_sub(start)
        .filter(|&l| l as usize <= image.len() - start as usize)?;
    // The jump's first copy whose target holds `shr ebp, n` (the headers
    // may repeat the stub's bytes, as Upack's first section overlaps them).
    let lc = image
        .windows(TO_DECODER.len())
        .enumerate()
        .filter(|(_, w)| *w == TO_DECODER)
        .find_map(|(at, _)| {
            let jump = at + TO_DECODER.len();
            let decoder = (jump as u32)
                .wrapping_add(4)
                .wrapping_add(u32_at(image, jump)?) as usize;
            let head = image.get(decoder..)?;
            let head = &head[..head.len().min(DECODER_HEAD)];
            let shr = head.windows(3).find(|w| w[..2] == [0xc1, 0xed])?;
            8u8.checked_sub(shr[2])
        })?;
    Some(Plan {
        stream,
        start,
        len,
        lc,
    })
}

/// The decompressed sections, `plan.len` bytes at most: damage ends them
/// (what was decoded is what the reader yields).
pub fn decoder<'a>(image: &'a [u8], plan: &Plan) -> Option<impl Read + 'a> {
    let stream = image.get(plan.stream as usize..)?;
    // Raw LZMA's first byte, which Upack drops.
    let data = std::io::Read::chain(&[0u8][..], stream);
    lzma_rust2::LzmaReader::new(
        data,
        plan.len as u64,
        plan.lc as u32,
        0,
        0,
        plan.len.max(4096),
        None,
    )
    .ok()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Write;

    /// Raw LZMA as Upack stores it: lc 3, lp = pb = 0, the first byte cut.
    pub fn compress(data: &[u8]) -> Vec<u8> {
        let mut opts = lzma_rust2::LzmaOptions::with_preset(6);
        (opts.lc, opts.lp, opts.pb, opts.dict_size) = (3, 0, 0, 1 << 16);
        let mut w = lzma_rust2::LzmaWriter::new_no_header(Vec::new(), &opts, true).unwrap();
        w.write_all(data).unwrap();
        let raw = w.finish().unwrap();
        assert_eq!(raw[0], 0);
        raw[1..].to_vec()
    }

    #[test]
    fn lzma_without_its_first_byte_round_trips() {
        let data = super::super::mew::tests::sample();
        let packed = compress(&data);
        let mut image = packed.clone();
        image.extend_from_slice(&[0; 16]);
        let plan = Plan {
            stream: 0,
            start: 0,
            len: data.len() as u32,
            lc: 3,
        };
        let mut out = Vec::new();
        decoder(&image, &plan)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        // Truncated: a prefix, then an error (no panic).
        let mut out = Vec::new();
        let _ = decoder(&image[..packed.len() / 2], &plan)
            .unwrap()
            .read_to_end(&mut out);
        assert!(data.starts_with(&out));
    }
}
