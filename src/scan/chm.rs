//! Microsoft Compiled HTML Help (`.chm`, the "ITSF" format): its file
//! directory and the two content sections, 0 (stored) and 1
//! ("MSCompressed": LZX, decoded by the `lzxd` crate).
//!
//! Layout (little endian throughout; the format is undocumented by
//! Microsoft, as reverse engineered in Matthew Russotto's "Microsoft's
//! HTML Help (.chm) format" and the chmspec project's "ITSF format"):
//! - the ITSF header: version at 4, the header section table at 0x38
//!   (section 1 is the directory: offset and length, u64 each at 0x48 and
//!   0x50), and in version 3 the content's offset at 0x58 (in version 2 the
//!   content follows the directory);
//! - the directory: an ITSP header (its length at 8, the chunk size at
//!   0x10, the first and last listing chunks at 0x20 and 0x24), then
//!   chunks; a "PMGL" listing chunk holds entries from 0x14 up to its
//!   free space (length at 4), each an ENCINT name length, the name, and
//!   ENCINTs for content section, offset and length. An ENCINT is big
//!   endian in 7-bit groups, the high bit set on all but the last.
//! - section 1 is the file `::DataSpace/Storage/MSCompressed/Content`
//!   of section 0, described by its `ControlData` ("LZXC", version, reset
//!   interval and window size, in 32 KiB units in version 2) and the reset
//!   table in `.../InstanceData/ResetTable` (uncompressed and compressed
//!   lengths, then the compressed offset of every 32 KiB frame). LZX
//!   frames are 16-bit aligned, so each is decoded from its own bytes, and
//!   the decoder starts afresh at every reset interval.
//!
//! Not exact: `lzxd` counts the positions of its E8 (x86 call) translation
//! from its own start, so past the first reset interval a CHM compressed
//! with that translation on gets the 4 bytes after some 0xE8 bytes wrong
//! (unverified: the CHMs at hand have one interval). What is matched
//! there differs from the file only in those bytes.

use std::io::{Read, Seek, SeekFrom};

use lzxd::{Lzxd, WindowSize};

use super::unpack::read_full;

/// LZX's frame: 32 KiB of output.
const FRAME: u64 = 0x8000;
/// A frame's compressed bytes: LZX adds little to incompressible data
/// (an uncompressed block's header), so more than this is damage.
const MAX_FRAME_INPUT: u64 = 2 * FRAME;
/// Largest LZX window accepted: 2 MiB, LZX's own maximum (2^21), so the
/// decoder's buffer is bounded; a larger one is damage.
const MAX_WINDOW: u64 = 1 << 21;
/// Largest directory chunk (4 KiB in practice).
const MAX_CHUNK: u64 = 64 * 1024;

const CONTENT: &[u8] = b"::DataSpace/Storage/MSCompressed/Content";
const CONTROL: &[u8] = b"::DataSpace/Storage/MSCompressed/ControlData";
const RESET_TABLE: &[u8] = b"::DataSpace/Storage/MSCompressed/Transform/\
{7FC28940-9D31-11D0-9B27-00A0C91E9C7C}/InstanceData/ResetTable";

/// One file in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChmFile {
    pub section: u64,
    pub offset: u64,
    pub length: u64,
}

/// Where section 1's pieces are (files of section 0).
#[derive(Default)]
struct Section1Files {
    content: Option<ChmFile>,
    control: Option<ChmFile>,
    reset_table: Option<ChmFile>,
}

pub enum Directory {
    /// The user files (not the format's own `::` files), by section and
    /// offset, and section 1 if it is readable.
    Files {
        files: Vec<ChmFile>,
        content: u64,
        section1: Option<Section1>,
    },
    /// More files than allowed.
    TooMany,
    /// Not a readable CHM.
    Damaged,
}

fn le32(b: &[u8], at: usize) -> Option<u64> {
    let b = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    let b = b.get(at..at + 8)?;
    Some(u64::from_le_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

fn read_at(r: &mut (impl Read + Seek), at: u64, buf: &mut [u8]) -> std::io::Result<bool> {
    r.seek(SeekFrom::Start(at))?;
    Ok(read_full(r, buf)? == buf.len())
}

/// An ENCINT at `*at` in `b`; at most 9 groups (63 bits).
fn encint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for _ in 0..9 {
        let c = *b.get(*at)?;
        *at += 1;
        v = (v << 7) | (c & 0x7f) as u64;
        if c & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl Directory {
    /// Reads the headers and the listing chunks; at most `max_files` user
    /// files (with a length) are kept.
    pub fn read(r: &mut (impl Read + Seek), max_files: usize) -> std::io::Result<Directory> {
        let mut h = [0u8; 0x60];
        if !read_at(r, 0, &mut h)? || &h[..4] != b"ITSF" {
            return Ok(Directory::Damaged);
        }
        let (Some(version), Some(dir), Some(dir_len)) =
            (le32(&h, 4), le64(&h, 0x48), le64(&h, 0x50))
        else {
            return Ok(Directory::Damaged);
        };
        let content = match version {
            2 => dir.checked_add(dir_len),
            3 => le64(&h, 0x58),
            _ => None,
        };
        let Some(content) = content else {
            return Ok(Directory::Damaged);
        };
        let mut itsp = [0u8; 0x54];
        if !read_at(r, dir, &mut itsp)? || &itsp[..4] != b"ITSP" {
            return Ok(Directory::Damaged);
        }
        let (Some(header), Some(chunk), Some(first), Some(last)) = (
            le32(&itsp, 8),
            le32(&itsp, 0x10),
            le32(&itsp, 0x20),
            le32(&itsp, 0x24),
        ) else {
            return Ok(Directory::Damaged);
        };
        if !(0x20..=MAX_CHUNK).contains(&chunk) || first > last {
            return Ok(Directory::Damaged);
        }
        let mut files = Vec::new();
        let mut format = Section1Files::default();
        let mut buf = vec![0u8; chunk as usize];
        for k in first..=last {
            // A chunk past the directory or the file ends the listing.
            let at = dir.saturating_add(header).saturating_add(k * chunk);
            if k * chunk >= dir_len || !read_at(r, at, &mut buf)? {
                break;
            }
            if &buf[..4] != b"PMGL" {
                continue;
            }
            let free = le32(&buf, 4).unwrap_or(chunk);
            let end = (chunk.saturating_sub(free) as usize).min(buf.len());
            let mut i = 0x14;
            while i < end {
                let Some(name_len) = encint(&buf, &mut i) else {
                    break;
                };
                let Some(name) = buf.get(i..i.saturating_add(name_len as usize)) else {
                    break;
                };
                i += name.len();
                let (Some(section), Some(offset), Some(length)) = (
                    encint(&buf, &mut i),
                    encint(&buf, &mut i),
                    encint(&buf, &mut i),
                ) else {
                    break;
                };
                let file = ChmFile {
                    section,
                    offset,
                    length,
                };
                if name.starts_with(b"::") {
                    if name == CONTENT {
                        format.content = Some(file);
                    } else if name == CONTROL {
                        format.control = Some(file);
                    } else if name == RESET_TABLE {
                        format.reset_table = Some(file);
                    }
                    continue;
                }
                if length == 0 {
                    continue;
                }
                if files.len() == max_files {
                    return Ok(Directory::TooMany);
                }
                files.push(file);
            }
        }
        files.sort_by_key(|f| (f.section, f.offset));
        let section1 = Section1::new(r, content, &format)?;
        Ok(Directory::Files {
            files,
            content,
            section1,
        })
    }
}

/// The LZX-compressed section, decoded a frame at a time from the
/// nearest reset point before what is read.
pub struct Section1 {
    /// Where the compressed stream starts in the CHM, and its length.
    content: u64,
    content_len: u64,
    /// Where the reset table's frame offsets start, and how many.
    table: u64,
    entries: u64,
    uncompressed: u64,
    frames_per_reset: u64,
    window: WindowSize,
    lzx: Option<Box<Lzxd>>,
    /// The frame decoded next.
    next_frame: u64,
    /// The last frame decoded, where it starts, and how much of it was
    /// read.
    frame: Vec<u8>,
    frame_start: u64,
    at: usize,
    input: Vec<u8>,
}

fn window_size(bytes: u64) -> Option<WindowSize> {
    use WindowSize as W;
    Some(match bytes {
        0x8000 => W::KB32,
        0x1_0000 => W::KB64,
        0x2_0000 => W::KB128,
        0x4_0000 => W::KB256,
        0x8_0000 => W::KB512,
        0x10_0000 => W::MB1,
        0x20_0000 => W::MB2,
        _ => return None,
    })
}

impl Section1 {
    /// Section 1's description, or None if it is missing or unreadable
    /// (its files are then skipped).
    fn new(
        r: &mut (impl Read + Seek),
        content_offset: u64,
        f: &Section1Files,
    ) -> std::io::Result<Option<Section1>> {
        let (Some(content), Some(control), Some(table)) = (f.content, f.control, f.reset_table)
        else {
            return Ok(None);
        };
        if content.section != 0 || control.section != 0 || table.section != 0 {
            return Ok(None);
        }
        let mut c = [0u8; 24];
        let at = content_offset.saturating_add(control.offset);
        if control.length < 24 || !read_at(r, at, &mut c)? || &c[4..8] != b"LZXC" {
            return Ok(None);
        }
        let unit = match le32(&c, 8) {
            Some(1) => 1,
            Some(2) => FRAME,
            _ => return Ok(None),
        };
        let reset = le32(&c, 12).unwrap_or(0).saturating_mul(unit);
        let window = le32(&c, 16).unwrap_or(0).saturating_mul(unit);
        let Some(window) = window_size(window).filter(|_| window <= MAX_WINDOW) else {
            return Ok(None);
        };
        if reset == 0 || !reset.is_multiple_of(FRAME) {
            return Ok(None);
        }
        let mut t = [0u8; 0x28];
        let at = content_offset.saturating_add(table.offset);
        if table.length < 0x28 || !read_at(r, at, &mut t)? {
            return Ok(None);
        }
        let (Some(entries), Some(header), Some(uncompressed), Some(frame)) =
            (le32(&t, 4), le32(&t, 12), le64(&t, 0x10), le64(&t, 0x20))
        else {
            return Ok(None);
        };
        if frame != FRAME || entries.saturating_mul(8).saturating_add(header) > table.length {
            return Ok(None);
        }
        Ok(Some(Section1 {
            content: content_offset.saturating_add(content.offset),
            content_len: content.length,
            table: at.saturating_add(header),
            entries,
            uncompressed,
            frames_per_reset: reset / FRAME,
            window,
            lzx: None,
            next_frame: 0,
            frame: Vec::new(),
            frame_start: 0,
            at: 0,
            input: Vec::new(),
        }))
    }

    /// Positions the section at `offset`; returns how many bytes before it
    /// were decoded to get there (to be counted against the scan's
    /// limits).
    /// Damage leaves nothing to read.
    pub fn seek(&mut self, r: &mut (impl Read + Seek), offset: u64) -> std::io::Result<u64> {
        let held = self.frame_start..self.frame_start + self.frame.len() as u64;
        if held.contains(&offset) {
            self.at = (offset - self.frame_start) as usize;
            return Ok(0);
        }
        let target = offset / FRAME;
        let reset_point = target / self.frames_per_reset * self.frames_per_reset;
        if self.lzx.is_none() || target < self.next_frame || reset_point > self.next_frame {
            self.lzx = None;
            self.next_frame = reset_point;
        }
        let mut decoded = 0;
        self.frame.clear();
        self.at = 0;
        while self.next_frame <= target {
            if !self.decode_frame(r)? {
                self.frame.clear();
                return Ok(decoded);
            }
            decoded += self.frame.len() as u64;
        }
        self.at = ((offset - self.frame_start) as usize).min(self.frame.len());
        // The rest of the last frame is the file's, counted as it is read.
        Ok(decoded - (self.frame.len() - self.at) as u64)
    }

    /// The compressed offset of frame `i`, from the reset table.
    fn frame_offset(&self, r: &mut (impl Read + Seek), i: u64) -> std::io::Result<Option<u64>> {
        if i >= self.entries {
            return Ok((i == self.entries).then_some(self.content_len));
        }
        let mut b = [0u8; 8];
        Ok(read_at(r, self.table.saturating_add(8 * i), &mut b)?.then(|| u64::from_le_bytes(b)))
    }

    /// Decodes the next frame into `self.frame`; false at the end or on
    /// damage.
    fn decode_frame(&mut self, r: &mut (impl Read + Seek)) -> std::io::Result<bool> {
        let i = self.next_frame;
        let start = i.saturating_mul(FRAME);
        if start >= self.uncompressed {
            return Ok(false);
        }
        let (Some(from), Some(to)) = (self.frame_offset(r, i)?, self.frame_offset(r, i + 1)?)
        else {
            return Ok(false);
        };
        if from > to || to > self.content_len || to - from > MAX_FRAME_INPUT {
            return Ok(false);
        }
        self.input.resize((to - from) as usize, 0);
        if !read_at(r, self.content.saturating_add(from), &mut self.input)? {
            return Ok(false);
        }
        if i.is_multiple_of(self.frames_per_reset) || self.lzx.is_none() {
            // The old window is freed before the new one is made.
            self.lzx = None;
            self.lzx = Some(Box::new(Lzxd::new(self.window)));
        }
        let Some(lzx) = &mut self.lzx else {
            return Ok(false);
        };
        let want = (self.uncompressed - start).min(FRAME) as usize;
        self.next_frame += 1;
        match lzx.decompress_next(&self.input, want) {
            Ok(out) => {
                self.frame.clear();
                self.frame.extend_from_slice(out);
                self.frame_start = start;
                self.at = 0;
                Ok(true)
            }
            Err(_) => {
                self.lzx = None;
                Ok(false)
            }
        }
    }

    /// The next `length` bytes, from where [`Section1::seek`] left it.
    pub fn file<'s, R: Read + Seek>(
        &'s mut self,
        r: &'s mut R,
        length: u64,
    ) -> Section1File<'s, R> {
        Section1File {
            section: self,
            r,
            left: length,
        }
    }
}

/// One file of section 1, decoded as it is read.
pub struct Section1File<'s, R> {
    section: &'s mut Section1,
    r: &'s mut R,
    left: u64,
}

impl<R: Read + Seek> Read for Section1File<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let s = &mut *self.section;
        if self.left == 0 || out.is_empty() {
            return Ok(0);
        }
        if s.at == s.frame.len() {
            // Only straight on from the frame held: after damage the frame
            // is empty and the file ends.
            if s.frame.is_empty() || s.next_frame * FRAME != s.frame_start + FRAME {
                return Ok(0);
            }
            if !s.decode_frame(self.r)? {
                s.frame.clear();
                return Ok(0);
            }
        }
        let left = usize::try_from(self.left).unwrap_or(usize::MAX);
        let n = (s.frame.len() - s.at).min(out.len()).min(left);
        out[..n].copy_from_slice(&s.frame[s.at..s.at + n]);
        s.at += n;
        self.left -= n as u64;
        Ok(n)
    }
}
