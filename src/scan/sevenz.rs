//! 7z archives: the sevenz-rust2 crate reads the headers and decodes the
//! blocks; this module bounds what that costs before the crate allocates.
//!
//! The crate allocates one entry record (about 100 bytes) per file the
//! header declares, and bounds that count only by the header's length, so
//! a tiny LZMA-compressed header of a million zero bytes would cost
//! 100 MB. [`header_size`] reads the header's (decoded) size from the
//! start header and, for a compressed header (`kEncodedHeader`), from its
//! `StreamsInfo`, so the walker can refuse a header larger than its entry
//! limit needs before the crate sees it. Format: 7-Zip's `7zFormat.txt`
//! (signature header, property IDs, `7z` numbers).

use std::io::{Read, Seek, SeekFrom};

use super::unpack::read_full;

pub const SIGNATURE: &[u8] = b"7z\xbc\xaf\x27\x1c";

/// Property IDs of `7zFormat.txt` used here.
const K_END: u8 = 0x00;
const K_HEADER: u8 = 0x01;
const K_PACK_INFO: u8 = 0x06;
const K_UNPACK_INFO: u8 = 0x07;
const K_SIZE: u8 = 0x09;
const K_CRC: u8 = 0x0a;
const K_FOLDER: u8 = 0x0b;
const K_CODERS_UNPACK_SIZE: u8 = 0x0c;
const K_ENCODED_HEADER: u8 = 0x17;

/// Counts read from a header are capped at this before looping over them
/// (a compressed header has one folder of a few coders).
const MAX_COUNT: u64 = 64;

/// The size of the archive's header once decoded (the largest unpack size
/// a compressed header declares), or None if the start header or the
/// header's first bytes are damaged.
pub fn header_size(r: &mut (impl Read + Seek)) -> std::io::Result<Option<u64>> {
    let len = r.seek(SeekFrom::End(0))?;
    let mut start = [0u8; 32];
    r.seek(SeekFrom::Start(0))?;
    if read_full(r, &mut start)? < 32 || !start.starts_with(SIGNATURE) {
        return Ok(None);
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&start[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let (offset, size) = (u64_at(12), u64_at(20));
    let Some(at) = offset
        .checked_add(32)
        .filter(|at| at.saturating_add(size) <= len)
    else {
        return Ok(None);
    };
    r.seek(SeekFrom::Start(at))?;
    // A compressed header's StreamsInfo is a few dozen bytes; only its
    // start is read.
    let mut head = vec![0u8; size.min(4096) as usize];
    let n = read_full(r, &mut head)?;
    head.truncate(n);
    Ok(match head.first() {
        Some(&K_HEADER) => Some(size),
        Some(&K_ENCODED_HEADER) => encoded_unpack_size(&head[1..]),
        _ => None,
    })
}

/// The largest unpack size in a compressed header's StreamsInfo.
fn encoded_unpack_size(b: &[u8]) -> Option<u64> {
    let mut p = Props { b, at: 0 };
    let mut id = p.byte()?;
    if id == K_PACK_INFO {
        p.number()?; // pack position
        let streams = p.count()?;
        loop {
            match p.byte()? {
                K_END => break,
                K_SIZE => {
                    for _ in 0..streams {
                        p.number()?;
                    }
                }
                K_CRC => p.digests(streams)?,
                _ => return None,
            }
        }
        id = p.byte()?;
    }
    if id != K_UNPACK_INFO || p.byte()? != K_FOLDER {
        return None;
    }
    let folders = p.count()?;
    if p.byte()? != 0 {
        // External folders: not written by 7-Zip.
        return None;
    }
    let mut outputs = 0;
    for _ in 0..folders {
        let coders = p.count()?;
        let (mut ins, mut outs) = (0, 0);
        for _ in 0..coders {
            let flags = p.byte()?;
            p.skip((flags & 0x0f) as u64)?;
            if flags & 0x10 != 0 {
                ins += p.count()?;
                outs += p.count()?;
            } else {
                ins += 1;
                outs += 1;
            }
            if flags & 0x20 != 0 {
                let n = p.number()?;
                p.skip(n)?;
            }
        }
        let bind_pairs = outs.checked_sub(1)?;
        for _ in 0..bind_pairs * 2 {
            p.number()?;
        }
        let packed = ins.checked_sub(bind_pairs)?;
        if packed > 1 {
            for _ in 0..packed {
                p.number()?;
            }
        }
        outputs += outs;
    }
    if p.byte()? != K_CODERS_UNPACK_SIZE {
        return None;
    }
    let mut largest = 0;
    for _ in 0..outputs {
        largest = largest.max(p.number()?);
    }
    Some(largest)
}

/// A cursor over header bytes; None past the end.
struct Props<'a> {
    b: &'a [u8],
    at: usize,
}

impl Props<'_> {
    fn byte(&mut self) -> Option<u8> {
        let c = *self.b.get(self.at)?;
        self.at += 1;
        Some(c)
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        let n = usize::try_from(n).ok()?;
        self.at = self.at.checked_add(n).filter(|&e| e <= self.b.len())?;
        Some(())
    }

    /// A `7z` number: the first byte's leading 1 bits say how many more
    /// bytes follow (little-endian); its remaining bits are the high part.
    fn number(&mut self) -> Option<u64> {
        let first = self.byte()?;
        let extra = first.leading_ones();
        let mut v = 0u64;
        for i in 0..extra.min(8) {
            v |= (self.byte()? as u64) << (8 * i);
        }
        if extra < 8 {
            let high = (first as u64) & (0xff >> (extra + 1));
            v |= high << (8 * extra);
        }
        Some(v)
    }

    /// A count, capped (see [`MAX_COUNT`]).
    fn count(&mut self) -> Option<u64> {
        self.number().filter(|&n| n <= MAX_COUNT)
    }

    /// A digests record: an "all defined" byte (else a bit per item),
    /// then a CRC32 per defined item.
    fn digests(&mut self, items: u64) -> Option<()> {
        let defined = if self.byte()? != 0 {
            items
        } else {
            let bytes = items.div_ceil(8);
            let start = self.at;
            self.skip(bytes)?;
            self.b[start..self.at]
                .iter()
                .map(|c| c.count_ones() as u64)
                .sum()
        };
        self.skip(defined * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut p = Props {
            b: &[
                0x7f, 0x89, 0x16, 0xc1, 0x02, 0x03, 0xff, 1, 2, 3, 4, 5, 6, 7, 8,
            ],
            at: 0,
        };
        assert_eq!(p.number(), Some(0x7f));
        assert_eq!(p.number(), Some(0x0916));
        assert_eq!(p.number(), Some(0x01_0302));
        assert_eq!(p.number(), Some(0x0807_0605_0403_0201));
        assert_eq!(p.number(), None);
    }

    #[test]
    fn compressed_header_size() {
        // The StreamsInfo of a header 7-Zip compressed (one LZMA coder,
        // 1 MiB dictionary, 2326 bytes decoded).
        let info = [
            0x06, 0x6e, 0x01, 0x09, 0x81, 0xb4, 0x00, 0x07, 0x0b, 0x01, 0x00, 0x01, 0x23, 0x03,
            0x01, 0x01, 0x05, 0x5d, 0x00, 0x10, 0x00, 0x00, 0x0c, 0x89, 0x16, 0x0a, 0x01, 0x16,
            0x99, 0x43, 0x98, 0x00, 0x00,
        ];
        assert_eq!(encoded_unpack_size(&info), Some(2326));
        for cut in 0..info.len() - 8 {
            assert_eq!(encoded_unpack_size(&info[..cut]), None, "{cut}");
        }
    }
}
