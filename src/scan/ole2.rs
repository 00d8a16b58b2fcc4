//! OLE2 compound files ([MS-CFB]): Word, Excel and PowerPoint 97-2003
//! documents, MSI packages, embedded OLE objects. A small reader of its
//! own: the walker scans every stream as an object (as ClamAV does), so
//! only the allocation tables, the directory and a stream reader are
//! needed. Streams are read a sector at a time, never held whole.
//!
//! Memory: the FAT is 4 bytes per sector of the file (capped at the
//! sectors the file has), the mini FAT 4 bytes per 64-byte mini sector of
//! the mini stream, the directory a small record per stream (capped by
//! the walker's entry limit). Damage (a chain leaving the file, a cycle, a
//! truncated sector) ends the stream being read, never the process.
//!
//! PowerPoint ([MS-PPT] 2.3.1, 2.10.34): the "PowerPoint Document" stream
//! is a sequence of records with an 8-byte header; `ExOleObjStg` records
//! (type 0x1011) hold embedded OLE objects, zlib-compressed behind a
//! 4-byte decompressed size when the record instance is 1.

use std::io::{Read, Seek, SeekFrom};

use super::unpack::read_full;

pub const SIGNATURE: &[u8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1";

/// Sector numbers at or past this are markers (free, end of chain, FAT,
/// DIFAT), not sectors ([MS-CFB] 2.1).
const MAX_REG_SECT: u32 = 0xffff_fffa;
const NO_STREAM: u32 = 0xffff_ffff;
const DIR_ENTRY: usize = 128;
/// Header DIFAT entries ([MS-CFB] 2.2): the first 109 FAT sectors.
const HEADER_DIFAT: usize = 109;

/// A compound file's allocation tables, read from its header.
pub struct Ole2<R: Read + Seek> {
    r: R,
    /// log2 of the sector size: 9 (512 bytes) or 12 (4096).
    shift: u32,
    fat: Vec<u32>,
    minifat: Vec<u32>,
    /// The sectors holding the mini stream, in order.
    mini_sectors: Vec<u32>,
    /// Streams smaller than this live in the mini stream.
    cutoff: u64,
    /// Version 3 files have only 32-bit stream sizes; the high half of
    /// the field may be garbage ([MS-CFB] 2.6.3).
    v3: bool,
    first_dir: u32,
    /// Where `r` is: a stream read along contiguous sectors seeks once.
    at: u64,
}

/// A stream of the directory.
pub struct Stream {
    pub name: String,
    start: u32,
    pub size: u64,
}

impl<R: Read + Seek> Ole2<R> {
    /// Reads the header, the FAT and the mini FAT. None if this is not a
    /// compound file whose header makes sense; a table that leaves the
    /// file is cut there.
    pub fn open(mut r: R) -> std::io::Result<Option<Ole2<R>>> {
        let len = r.seek(SeekFrom::End(0))?;
        r.seek(SeekFrom::Start(0))?;
        let mut h = [0u8; 512];
        if read_full(&mut r, &mut h)? < 512 || !h.starts_with(SIGNATURE) {
            return Ok(None);
        }
        let u16_at = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let shift = u16_at(30) as u32;
        if shift != 9 && shift != 12 || u16_at(32) != 6 {
            return Ok(None);
        }
        // Sectors that exist: a table never needs more entries.
        let sectors = (len >> shift).saturating_sub(1).min(u32::MAX as u64) as usize;
        let mut ole = Ole2 {
            r,
            shift,
            fat: Vec::new(),
            minifat: Vec::new(),
            mini_sectors: Vec::new(),
            cutoff: u32_at(56) as u64,
            v3: u16_at(26) == 3,
            first_dir: u32_at(48),
            at: 512,
        };
        // FAT sectors: 109 in the header, the rest in the DIFAT chain
        // (each DIFAT sector: entries, then the next DIFAT sector).
        let per_sector = (1usize << shift) / 4;
        let fat_sectors = sectors.div_ceil(per_sector);
        let mut difat: Vec<u32> = (0..HEADER_DIFAT).map(|i| u32_at(76 + 4 * i)).collect();
        let mut next = u32_at(68);
        let mut hops = 0;
        while difat.len() < fat_sectors && next < MAX_REG_SECT && hops < sectors {
            let Ok(s) = ole.sector(next) else { break };
            let (entries, link) = s.split_at(s.len() - 4);
            difat.extend(entries.chunks(4).map(le32));
            next = le32(link);
            hops += 1;
        }
        difat.truncate(fat_sectors);
        // A table sector past the end of the file ends the table.
        for &s in difat.iter().take_while(|&&s| s < MAX_REG_SECT) {
            let Ok(bytes) = ole.sector(s) else { break };
            ole.fat.extend(bytes.chunks(4).map(le32));
        }
        ole.fat.truncate(sectors);
        // The mini FAT is a chain of the FAT; the mini stream is the root
        // entry's chain.
        let minifat_sectors = ole.chain(u32_at(60));
        let mut minifat = Vec::new();
        for s in minifat_sectors {
            let Ok(bytes) = ole.sector(s) else { break };
            minifat.extend(bytes.chunks(4).map(le32));
        }
        if let Some(&first) = ole.chain(ole.first_dir).first()
            && let Ok(bytes) = ole.sector(first)
        {
            // Type 5: the root entry, always the first ([MS-CFB] 2.6.1).
            let (kind, root) = ole.dir_entry(&bytes[..DIR_ENTRY]);
            if kind == 5 {
                ole.mini_sectors = ole.chain(root.start);
            }
        }
        // Mini sectors that exist in the mini stream.
        minifat.truncate(ole.mini_sectors.len() << (shift - 6));
        ole.minifat = minifat;
        Ok(Some(ole))
    }

    /// One sector, or an error past the end of the file.
    fn sector(&mut self, s: u32) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 1 << self.shift];
        let pos = (s as u64 + 1) << self.shift;
        self.seek(pos)?;
        // Unknown until the read succeeds.
        self.at = u64::MAX;
        self.r.read_exact(&mut buf)?;
        self.at = pos + buf.len() as u64;
        Ok(buf)
    }

    fn seek(&mut self, pos: u64) -> std::io::Result<()> {
        if pos != self.at {
            self.r.seek(SeekFrom::Start(pos))?;
            self.at = pos;
        }
        Ok(())
    }

    /// The sectors of a FAT chain, up to a marker, a sector outside the
    /// FAT, or a cycle (no chain is longer than the FAT).
    fn chain(&self, mut s: u32) -> Vec<u32> {
        let mut out = Vec::new();
        while s < MAX_REG_SECT && out.len() < self.fat.len() {
            let Some(&next) = self.fat.get(s as usize) else {
                break;
            };
            out.push(s);
            s = next;
        }
        out
    }

    /// The streams of the directory, in directory order, up to `max` + 1
    /// (the caller's entry limit); a directory that leaves the file ends
    /// there.
    pub fn streams(&mut self, max: usize) -> Vec<Stream> {
        let mut out = Vec::new();
        for s in self.chain(self.first_dir) {
            let Ok(bytes) = self.sector(s) else { break };
            for e in bytes.chunks_exact(DIR_ENTRY) {
                let (kind, stream) = self.dir_entry(e);
                // Type 2: a stream ([MS-CFB] 2.6.1).
                if kind != 2 {
                    continue;
                }
                if out.len() > max {
                    return out;
                }
                out.push(stream);
            }
        }
        out
    }

    /// A 128-byte directory entry: its object type and where its data is.
    fn dir_entry(&self, e: &[u8]) -> (u8, Stream) {
        let name_len = (u16::from_le_bytes([e[64], e[65]]) as usize).min(64);
        let units: Vec<u16> = e[..name_len]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let mut size = le32(&e[120..124]) as u64;
        if !self.v3 {
            size |= (le32(&e[124..128]) as u64) << 32;
        }
        let stream = Stream {
            name: String::from_utf16_lossy(&units),
            start: le32(&e[116..120]),
            size,
        };
        (e[66], stream)
    }

    /// A reader of one stream's bytes (at most its declared size; less if
    /// its chain ends early).
    pub fn open_stream(&mut self, s: &Stream) -> StreamReader<'_, R> {
        let mini = s.size < self.cutoff;
        StreamReader {
            ole: self,
            mini,
            sector: s.start,
            offset: 0,
            left: if s.start == NO_STREAM { 0 } else { s.size },
            hops: 0,
        }
    }
}

/// Reads a stream sector by sector along its (mini) FAT chain.
pub struct StreamReader<'a, R: Read + Seek> {
    ole: &'a mut Ole2<R>,
    mini: bool,
    sector: u32,
    /// Bytes of `sector` already read.
    offset: usize,
    left: u64,
    /// Sectors passed: a chain longer than its table is a cycle.
    hops: usize,
}

impl<R: Read + Seek> StreamReader<'_, R> {
    /// Where `sector` is in the file, and its size; None past the tables.
    fn locate(&self) -> Option<(u64, usize)> {
        let shift = self.ole.shift;
        if !self.mini {
            let ok = (self.sector as usize) < self.ole.fat.len();
            return ok.then(|| ((self.sector as u64 + 1) << shift, 1 << shift));
        }
        if self.sector as usize >= self.ole.minifat.len() {
            return None;
        }
        let at = (self.sector as u64) << 6;
        let host = *self.ole.mini_sectors.get((at >> shift) as usize)?;
        let within = at & ((1 << shift) - 1);
        Some((((host as u64 + 1) << shift) + within, 64))
    }

    fn advance(&mut self) {
        let table = if self.mini {
            &self.ole.minifat
        } else {
            &self.ole.fat
        };
        self.hops += 1;
        self.offset = 0;
        self.sector = match table.get(self.sector as usize) {
            Some(&next) if self.hops < table.len() => next,
            _ => NO_STREAM,
        };
    }
}

impl<R: Read + Seek> Read for StreamReader<'_, R> {
    /// As much as `out` takes, sector after sector.
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut done = 0;
        while done < out.len() && self.left > 0 && self.sector < MAX_REG_SECT {
            let Some((pos, size)) = self.locate() else {
                self.left = 0;
                break;
            };
            let want = (size - self.offset)
                .min(out.len() - done)
                .min(self.left.min(usize::MAX as u64) as usize);
            let from = pos + self.offset as u64;
            self.ole.seek(from)?;
            self.ole.at = u64::MAX;
            let n = self.ole.r.read(&mut out[done..done + want])?;
            self.ole.at = from + n as u64;
            if n == 0 {
                // The file ends inside the chain.
                self.left = 0;
                break;
            }
            done += n;
            self.offset += n;
            self.left -= n as u64;
            if self.offset == size {
                self.advance();
            }
        }
        Ok(done)
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The "PowerPoint Document" stream's name ([MS-PPT] 2.1.2).
pub const POWERPOINT_DOCUMENT: &str = "PowerPoint Document";

/// An embedded object found in a PowerPoint Document stream.
pub enum PptObject {
    /// Record instance 0: the object's bytes as they are, this many.
    Stored(u64),
    /// Record instance 1: zlib data of this many bytes, declaring this
    /// decompressed size.
    Zlib { compressed: u64, declared: u64 },
}

/// Walks the records of a PowerPoint Document stream and calls `object`
/// for each `ExOleObjStg` record with the reader positioned at the
/// object's bytes; `object` returns false to stop. Container records
/// (recVer 0xF) are entered, other records skipped. A truncated record
/// ends the walk.
pub fn ppt_objects(
    r: &mut impl Read,
    mut object: impl FnMut(PptObject, &mut dyn Read) -> Result<bool, String>,
) -> Result<(), String> {
    let mut h = [0u8; 8];
    loop {
        match read_full(r, &mut h) {
            Ok(8) => {}
            _ => return Ok(()),
        }
        let ver_instance = u16::from_le_bytes([h[0], h[1]]);
        let kind = u16::from_le_bytes([h[2], h[3]]);
        let len = le32(&h[4..8]) as u64;
        if ver_instance & 0x0f == 0x0f {
            continue;
        }
        let mut body = (&mut *r).take(len);
        if kind == 0x1011 {
            let go_on = match ver_instance >> 4 {
                0 => object(PptObject::Stored(len), &mut body)?,
                1 => {
                    let mut size = [0u8; 4];
                    if read_full(&mut body, &mut size).map_err(|e| e.to_string())? < 4 {
                        return Ok(());
                    }
                    let found = PptObject::Zlib {
                        compressed: len - 4,
                        declared: le32(&size) as u64,
                    };
                    object(found, &mut body)?
                }
                _ => true,
            };
            if !go_on {
                return Ok(());
            }
        }
        // What the record's reader left; a stream that ends first ends
        // the walk.
        let _ = std::io::copy(&mut body, &mut std::io::sink());
        if body.limit() > 0 {
            return Ok(());
        }
    }
}
