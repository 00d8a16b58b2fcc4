//! NSIS (Nullsoft Scriptable Install System) installers: a Windows stub
//! followed, at a 512-byte boundary, by the "first header" and the
//! installer's data: its script header, then every installed file.
//!
//! The first header is 28 bytes: flags, `0xDEADBEEF`, `NullsoftInst`, the
//! uncompressed script header's length and the length of everything from
//! the first header on (a CRC-32 may end it). The data is either solid (one
//! compressed stream holding, each after a 4-byte length, the script header
//! then every file) or not (each of those blocks stored on its own behind a
//! 4-byte length whose top bit says "compressed"). The compressor is one
//! of zlib's deflate (raw, without a zlib header), bzip2 (NSIS's variant,
//! without stream header, block magic or CRCs: not read here) and LZMA (5
//! bytes of properties and dictionary size, then raw LZMA, ended by an end
//! marker). The blocks are scanned in order; the script header is not
//! parsed for names (a scanner needs the bytes, not where they go).

use std::io::{Read, Seek, SeekFrom};

/// The first header's signature and magic, at its bytes 4 to 20.
const MAGIC: &[u8; 16] = b"\xEF\xBE\xAD\xDENullsoftInst";
pub const FIRST_HEADER: u64 = 28;
/// The stub is searched this far for a first header: NSIS's own stubs are
/// under 100 KiB, with plug-ins and resources a few hundred.
const STUB_MAX: u64 = 4 << 20;
/// Largest LZMA dictionary kept: NSIS's default is 8 MiB. The window
/// grows with the output, so this bounds memory only for files past it; a
/// larger declared dictionary is cut to this, and a reference farther back
/// than it ends the data there (what was decoded is scanned).
pub const MAX_DICT: u32 = 8 << 20;
/// The top bit of a block length: the block is compressed.
pub const COMPRESSED: u32 = 1 << 31;

/// Where an installer's data is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstHeader {
    /// Offset of the first header in the file.
    pub offset: u64,
    /// Length of the (uncompressed) script header.
    pub header_len: u32,
    /// End of the installer's data in the file.
    pub end: u64,
}

impl FirstHeader {
    /// Offset of the data, after the first header.
    pub fn data(&self) -> u64 {
        self.offset + FIRST_HEADER
    }
}

/// The first header in `file` (`size` bytes long), searched at every
/// 512-byte boundary of the stub.
pub fn first_header(
    file: &mut (impl Read + Seek),
    size: u64,
) -> std::io::Result<Option<FirstHeader>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut base = 0u64;
    file.seek(SeekFrom::Start(0))?;
    while base < size.min(STUB_MAX) {
        let n = super::unpack::read_full(file, &mut buf)?;
        if n == 0 {
            break;
        }
        for at in (0..n).step_by(512) {
            let Some(h) = buf.get(at..at + FIRST_HEADER as usize) else {
                break;
            };
            if &h[4..20] != MAGIC {
                continue;
            }
            let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            let offset = base + at as u64;
            return Ok(Some(FirstHeader {
                offset,
                header_len: word(20),
                end: (offset + word(24) as u64).min(size),
            }));
        }
        base += n as u64;
    }
    Ok(None)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Deflate,
    Lzma,
    /// NSIS's bzip2 variant: recognised, not decoded.
    Bzip2,
}

/// How the data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Solid(Compression),
    /// Blocks each behind its length; a compressed block's compressor is
    /// told by its first byte ([`compression`]).
    Blocks,
}

/// A compressed stream's compressor, by its first byte: LZMA's usual
/// properties (`0x5D`: lc 3, lp 0, pb 2, which NSIS always writes), NSIS
/// bzip2's block byte `0x31`, otherwise deflate.
pub fn compression(first: u8) -> Compression {
    match first {
        0x5D => Compression::Lzma,
        0x31 => Compression::Bzip2,
        _ => Compression::Deflate,
    }
}

/// Tells the layout from the data's first 5 bytes, as other readers of
/// installers do (NSIS itself knows it from its stub): a non-solid
/// installer starts with the script header block's length, with the top
/// bit set and a compressor's first byte after it when compressed, or
/// equal to the script header's length when stored; anything else is a
/// solid stream. A solid LZMA stream starts `5D 00 .. .. ..` (properties,
/// then a dictionary size that is a multiple of 64 KiB): its first word
/// also has the top bit set when the dictionary is 8 MiB or more, so it is
/// told apart by the byte after the word, which would be a compressor's.
pub fn layout(first: &[u8; 5], fh: &FirstHeader) -> Layout {
    let word = u32::from_le_bytes([first[0], first[1], first[2], first[3]]);
    let room = fh.end.saturating_sub(fh.data() + 4);
    let solid_lzma = first[0] == 0x5D && first[1] == 0 && first[4] != 0x5D;
    let compressed_header =
        word & COMPRESSED != 0 && ((word & !COMPRESSED) as u64) <= room && !solid_lzma;
    if compressed_header || word == fh.header_len {
        Layout::Blocks
    } else {
        Layout::Solid(compression(first[0]))
    }
}

/// A decoder for one compressed stream, or None if it cannot be read
/// (NSIS bzip2, damaged LZMA properties).
pub fn decoder<'a>(
    compression: Compression,
    mut input: impl Read + 'a,
) -> Option<Box<dyn Read + 'a>> {
    match compression {
        Compression::Deflate => Some(Box::new(flate2::read::DeflateDecoder::new(input))),
        Compression::Bzip2 => None,
        Compression::Lzma => {
            let mut props = [0u8; 5];
            if super::unpack::read_full(&mut input, &mut props).ok()? < 5 {
                return None;
            }
            let dict = u32::from_le_bytes([props[1], props[2], props[3], props[4]]);
            let r = lzma_rust2::LzmaReader::new_with_props(
                input,
                u64::MAX,
                props[0],
                dict.clamp(4096, MAX_DICT),
                None,
            )
            .ok()?;
            Some(Box::new(r))
        }
    }
}

/// A non-solid block's length word: (compressed, length).
pub fn block(word: [u8; 4]) -> (bool, u32) {
    let w = u32::from_le_bytes(word);
    (w & COMPRESSED != 0, w & !COMPRESSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_from_the_first_bytes_makensis_writes() {
        // The first five data bytes of installers made with makensis 3.08
        // (`SetCompressor [/SOLID] zlib|bzip2|lzma`), script header 3868
        // bytes, data about 1.3 KB.
        let fh = FirstHeader {
            offset: 0,
            header_len: 3868,
            end: 1300,
        };
        let cases: [([u8; 5], Layout); 6] = [
            ([0xb5, 0x02, 0x00, 0x80, 0xed], Layout::Blocks),
            ([0xa1, 0x02, 0x00, 0x80, 0x31], Layout::Blocks),
            ([0x67, 0x02, 0x00, 0x80, 0x5d], Layout::Blocks),
            (
                [0xed, 0x58, 0x4b, 0x6f, 0x1b],
                Layout::Solid(Compression::Deflate),
            ),
            (
                [0x31, 0x00, 0x04, 0x4f, 0xff],
                Layout::Solid(Compression::Bzip2),
            ),
            (
                [0x5d, 0x00, 0x00, 0x80, 0x00],
                Layout::Solid(Compression::Lzma),
            ),
        ];
        for (first, want) in cases {
            assert_eq!(layout(&first, &fh), want, "{first:02x?}");
        }
        // A stored script header: its length as it is.
        assert_eq!(layout(&[0x1c, 0x0f, 0, 0, 1], &fh), Layout::Blocks);
        assert_eq!(compression(0xed), Compression::Deflate);
    }
}
