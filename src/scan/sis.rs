//! Symbian installation files (`.sis`, EPOC releases 3 to 6, before
//! Symbian OS 9's SISX), as described in Alexander Thoukydides' "SIS File
//! Format": a header, then file records pointing to each file's data,
//! zlib-compressed unless the header's options say otherwise.
//!
//! Little endian. The header: UID1 (the application), UID2 0x1000006D
//! (EPOC release 3, 4 and 5) or 0x10003A12 (release 6), UID3 0x10000419,
//! UID4 (a checksum of the UIDs); the number of languages at 18 and of
//! file records at 20 (u16), the options at 36 (u16, 0x0008: not
//! compressed), the file records' offset at 52 (u32). Each record starts
//! with its type (u32): 0 a file, 1 a file in each language, 2 options, 3
//! and 4 an if / else-if condition, 5 else, 6 end-if. A file record holds
//! its file type at 4 (4: a file created at installation, not in the SIS),
//! then the source and destination names (length and offset each), then
//! the data's length(s) and offset(s), one per language for type 1;
//! release 6 adds the original (uncompressed) length(s) and a MIME type.

use std::io::{Read, Seek, SeekFrom};

use super::unpack::read_full;

const UID2_ER3: u32 = 0x1000_006d;
const UID2_ER6: u32 = 0x1000_3a12;
const UID3: u32 = 0x1000_0419;
/// The options bit for files stored as they are.
const NOT_COMPRESSED: u64 = 0x0008;
/// A file type that has no data in the SIS.
const NOT_IN_SIS: u64 = 4;
/// Languages per file record: Symbian defines fewer than 200.
const MAX_LANGUAGES: u64 = 256;

/// Whether an object's first bytes are a SIS header (UID2 and UID3).
pub fn is_sis(head: &[u8]) -> bool {
    let uid = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    matches!(uid(4), Some(UID2_ER3 | UID2_ER6)) && uid(8) == Some(UID3)
}

/// One file's data in the SIS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SisFile {
    pub offset: u64,
    pub length: u64,
    /// Its length once decompressed, as declared (release 6 only).
    pub original: Option<u64>,
}

pub enum Sis {
    Files {
        files: Vec<SisFile>,
        compressed: bool,
    },
    TooMany,
    Damaged,
}

fn u32_at(r: &mut (impl Read + Seek), at: u64) -> std::io::Result<Option<u64>> {
    let mut b = [0u8; 4];
    r.seek(SeekFrom::Start(at))?;
    Ok((read_full(r, &mut b)? == 4).then(|| u32::from_le_bytes(b) as u64))
}

/// Reads the header and the file records of a SIS of `size` bytes; at most
/// `max_files` files with data are kept. Damage ends the records (the
/// files before it are kept).
pub fn read(r: &mut (impl Read + Seek), size: u64, max_files: usize) -> std::io::Result<Sis> {
    let mut h = [0u8; 56];
    r.seek(SeekFrom::Start(0))?;
    if read_full(r, &mut h)? < h.len() || !is_sis(&h) {
        return Ok(Sis::Damaged);
    }
    let u16_at = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]) as u64;
    let er6 = h[4..8] == UID2_ER6.to_le_bytes();
    let languages = u16_at(18);
    let records = u16_at(20);
    let compressed = u16_at(36) & NOT_COMPRESSED == 0;
    let mut pos = u32::from_le_bytes([h[52], h[53], h[54], h[55]]) as u64;
    if languages > MAX_LANGUAGES {
        return Ok(Sis::Damaged);
    }
    let mut files = Vec::new();
    for _ in 0..records {
        let Some(kind) = u32_at(r, pos)? else { break };
        let next = match kind {
            0 | 1 => {
                let Some(file_type) = u32_at(r, pos + 4)? else {
                    break;
                };
                let copies = if kind == 0 { 1 } else { languages };
                let lengths = pos + 28;
                let offsets = lengths + 4 * copies;
                let originals = offsets + 4 * copies;
                for i in 0..copies {
                    let (Some(length), Some(offset)) =
                        (u32_at(r, lengths + 4 * i)?, u32_at(r, offsets + 4 * i)?)
                    else {
                        return Ok(Sis::Files { files, compressed });
                    };
                    let original = if er6 {
                        u32_at(r, originals + 4 * i)?
                    } else {
                        None
                    };
                    if file_type == NOT_IN_SIS || length == 0 || offset + length > size {
                        continue;
                    }
                    if files.len() == max_files {
                        return Ok(Sis::TooMany);
                    }
                    files.push(SisFile {
                        offset,
                        length,
                        original,
                    });
                }
                // Release 6: the original lengths and the MIME type.
                originals + if er6 { 4 * copies + 8 } else { 0 }
            }
            2 => {
                // Options: each a string (length and offset) per language,
                // then 16 bytes of selected options.
                let Some(n) = u32_at(r, pos + 4)? else { break };
                pos + 8 + n * 8 * languages + 16
            }
            3 | 4 => {
                let Some(n) = u32_at(r, pos + 4)? else { break };
                pos + 8 + n
            }
            5 | 6 => pos + 4,
            _ => break,
        };
        if next > size {
            break;
        }
        pos = next;
    }
    Ok(Sis::Files { files, compressed })
}
