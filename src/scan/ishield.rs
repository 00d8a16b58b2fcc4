//! InstallShield installers: a Windows executable whose overlay (the bytes
//! after its last section) carries the files to install, in one of two
//! layouts the installer builds write.
//!
//! - The setup stream of older (InstallScript) builds, right at the
//!   overlay: for each file four NUL-ended strings (name, path on the
//!   install medium, version, size in decimal), then the file's bytes as
//!   they are. Among them the InstallShield cabinets: `data1.hdr` (the file
//!   table) and `data<N>.cab` (the files' data, each file a run of chunks:
//!   a 16-bit length, then raw deflate, RFC 1951). Both start `ISc(`.
//! - The setup stream of MSI-based builds (Setup.exe launchers):
//!   `InstallShield\0`, a 32-byte header (the file count, then zeros), and
//!   for each file a 312-byte block (the name in a 260-byte field, then
//!   `6`, `0`, the 64-bit stored size, ...) followed by the stored bytes:
//!   zlib (RFC 1950), scrambled by swapping each byte's nibbles and XORing
//!   it with a key made from the file name (see [`Unscramble`]). The `.msi`
//!   inside is an OLE2 file, read by `ole2.rs` one level down.
//!
//! No public specification exists: the layouts are as ClamAV's
//! `libclamav/ishield.c` and the unshield project describe them, checked
//! against InstallShield 2009-2012 installers. Every file is given to the
//! caller with the size its record declares; what an entry holds is
//! scanned as an object, where containers (MSI, cabinet, executable) are
//! recognised as for any other.

use std::io::{Read, Seek, SeekFrom, Take};

use flate2::bufread::DeflateDecoder;

use super::unpack::read_full;

/// One file of an installer as the reader meets it.
pub struct IsMember<'a> {
    /// The size its record declares (for the MSI layout, the stored,
    /// compressed size: the unpacked one is not recorded).
    pub size: u64,
    pub data: &'a mut dyn Read,
}

/// More files than `max_files`: the installer was not read to its end.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyFiles;

/// The PE headers are read this far to find the overlay.
const PE_HEADERS: usize = 8 * 1024;
/// The MSI layout's marker is searched this far into the overlay:
/// InstallShield's launchers put it after a few hundred bytes of debug
/// data; an overlay that does not hold it near its start is not theirs.
const MSI_SEARCH: u64 = 4 << 20;
/// A setup-stream string longer than this ends the stream (ClamAV reads
/// them the same way, with the same bound).
const STREAM_STRING: usize = 2048;
/// Largest `data1.hdr` parsed. Its file table takes 87 bytes and a name per
/// file, so 2 MiB is some 15,000 files; a larger one is not parsed (its
/// bytes, like every stream file's, were scanned as they are).
const MAX_HDR: u64 = 2 << 20;

const MSI_MARKER: &[u8] = b"InstallShield\0";
const MSI_HEADER: usize = 0x20;
const MSI_NAME: usize = 0x104;
const MSI_BLOCK: usize = MSI_NAME + 0x34;
/// The MSI layout's key starts from the file name XORed with these,
/// repeated.
const MSI_KEY: [u8; 4] = [0xEC, 0xCA, 0x79, 0xF8];

/// `ISc(`, the first word of `data1.hdr` and of every `data<N>.cab`.
const CAB_MAGIC: u32 = 0x2863_5349;
/// A file descriptor in `data1.hdr` (InstallShield 6 and later).
const FILE_DESCRIPTOR: usize = 87;
/// Descriptor flags: the file is in a `data<N>.cab`, compressed. Other
/// values are files left outside the cabinets or stored scrambled (not
/// read, as ClamAV does not).
const FILE_COMPRESSED: u16 = 4;

/// Calls `member` for each file of the InstallShield installer that `r`
/// (`size` bytes, a PE file) carries in its overlay, until it returns
/// false: the setup stream's files as they are, then the files that
/// `data1.hdr` lists in the stream's cabinets, then the files of an MSI
/// layout's stream. Damage ends a layout (the files before it were given).
pub fn installer<R: Read + Seek>(
    r: &mut R,
    size: u64,
    max_files: usize,
    mut member: impl FnMut(IsMember) -> std::io::Result<bool>,
) -> std::io::Result<Result<(), TooManyFiles>> {
    let mut head = vec![0u8; size.min(PE_HEADERS as u64) as usize];
    r.seek(SeekFrom::Start(0))?;
    let n = read_full(r, &mut head)?;
    let Some(overlay) = pe_overlay(&head[..n]).filter(|&o| o < size) else {
        return Ok(Ok(()));
    };
    drop(head);
    let mut files = 0;
    let mut count = || {
        files += 1;
        if files > max_files {
            Err(TooManyFiles)
        } else {
            Ok(())
        }
    };
    let mut go_on = true;
    let mut hdr = None;
    let mut cabs = Vec::new();
    let mut at = overlay;
    while go_on {
        let Some(f) = stream_file(r, at, size)? else {
            break;
        };
        if let Err(stop) = count() {
            return Ok(Err(stop));
        }
        if f.name.eq_ignore_ascii_case(b"data1.hdr") {
            hdr.get_or_insert((f.data, f.size));
        } else if let Some(n) = cab_number(&f.name) {
            cabs.push((n, f.data, f.size));
        }
        if f.size > 0 {
            r.seek(SeekFrom::Start(f.data))?;
            go_on = member(IsMember {
                size: f.size,
                data: &mut (&mut *r).take(f.size),
            })?;
        }
        at = f.data + f.size;
    }
    if let (true, Some((hdr_at, hdr_len))) = (go_on, hdr) {
        let table = cab_files(r, hdr_at, hdr_len)?;
        for f in table {
            let Some(&(_, cab_at, cab_len)) = cabs.iter().find(|c| c.0 == f.cab) else {
                continue;
            };
            if f.offset
                .checked_add(f.csize)
                .is_none_or(|end| end > cab_len)
            {
                continue;
            }
            if let Err(stop) = count() {
                return Ok(Err(stop));
            }
            r.seek(SeekFrom::Start(cab_at + f.offset))?;
            let mut data = CabFile::new((&mut *r).take(f.csize));
            go_on = member(IsMember {
                size: f.size,
                data: &mut data,
            })?;
            if !go_on {
                break;
            }
        }
    }
    if !go_on {
        return Ok(Ok(()));
    }
    let Some(mut at) = find_msi_stream(r, overlay, size)? else {
        return Ok(Ok(()));
    };
    let mut header = [0u8; MSI_HEADER];
    r.seek(SeekFrom::Start(at))?;
    read_full(r, &mut header)?;
    at += MSI_HEADER as u64;
    for _ in 0..u32_at(&header, 0).unwrap_or(0) {
        let mut block = vec![0u8; MSI_BLOCK];
        r.seek(SeekFrom::Start(at))?;
        if read_full(r, &mut block)? < MSI_BLOCK {
            break;
        }
        at += MSI_BLOCK as u64;
        let name = &block[..MSI_NAME];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(MSI_NAME)];
        let stored = u64_at(&block, MSI_NAME + 8).unwrap_or(u64::MAX);
        if name.is_empty() || stored > size - at {
            break;
        }
        if let Err(stop) = count() {
            return Ok(Err(stop));
        }
        let key = name
            .iter()
            .zip(MSI_KEY.iter().cycle())
            .map(|(n, k)| n ^ k)
            .collect();
        let scrambled = Unscramble {
            inner: (&mut *r).take(stored),
            key,
            at: 0,
        };
        let mut data = flate2::read::ZlibDecoder::new(scrambled);
        if !member(IsMember {
            size: stored,
            data: &mut data,
        })? {
            break;
        }
        at += stored;
    }
    Ok(Ok(()))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Where a PE file's overlay starts: the end of its sections' raw data
/// (PE/COFF section table, `PointerToRawData + SizeOfRawData`), or None
/// if `head` does not hold the headers.
fn pe_overlay(head: &[u8]) -> Option<u64> {
    let pe = u32_at(head, 0x3c)? as usize;
    if head.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let sections = u16_at(head, pe + 6)? as usize;
    let table = pe + 24 + u16_at(head, pe + 20)? as usize;
    let mut end = 0u64;
    for s in 0..sections.min(96) {
        let at = table + 40 * s;
        let raw_size = u32_at(head, at + 16)? as u64;
        let raw_at = u32_at(head, at + 20)? as u64;
        if raw_size > 0 {
            end = end.max(raw_at + raw_size);
        }
    }
    (end > 0).then_some(end)
}

/// A file of the InstallScript setup stream.
struct StreamFile {
    name: Vec<u8>,
    /// Offset of its bytes.
    data: u64,
    size: u64,
}

/// The setup-stream record at `at`, if one is there whole: four strings,
/// the last all decimal digits, and that many bytes before `end`.
fn stream_file(
    r: &mut (impl Read + Seek),
    at: u64,
    end: u64,
) -> std::io::Result<Option<StreamFile>> {
    let mut buf = vec![0u8; end.saturating_sub(at).min(4 * STREAM_STRING as u64) as usize];
    r.seek(SeekFrom::Start(at))?;
    let n = read_full(r, &mut buf)?;
    let mut strings = Vec::with_capacity(4);
    let mut from = 0;
    for _ in 0..4 {
        let rest = &buf[from..n];
        let Some(len) = rest[..rest.len().min(STREAM_STRING)]
            .iter()
            .position(|&b| b == 0)
        else {
            return Ok(None);
        };
        strings.push(&rest[..len]);
        from += len + 1;
    }
    let digits = strings[3];
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    let size = digits.iter().fold(0u64, |n, d| n * 10 + (d - b'0') as u64);
    let data = at + from as u64;
    if size > end - data {
        return Ok(None);
    }
    Ok(Some(StreamFile {
        name: strings[0].to_vec(),
        data,
        size,
    }))
}

/// N for a file named `data<N>.cab` (any case), N from 1 to 65535.
fn cab_number(name: &[u8]) -> Option<u16> {
    let lower = name.to_ascii_lowercase();
    let digits = lower.strip_prefix(b"data")?.strip_suffix(b".cab")?;
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u32, |n, d| n * 10 + (d - b'0') as u32);
    u16::try_from(n).ok().filter(|&n| n > 0)
}

/// A compressed file that `data1.hdr` lists.
#[derive(Debug, PartialEq, Eq)]
struct CabEntry {
    /// Its unpacked size.
    size: u64,
    /// Its bytes in the cabinet: `csize` from `offset`.
    csize: u64,
    offset: u64,
    /// N of the `data<N>.cab` holding it.
    cab: u16,
}

/// The compressed files `data1.hdr` (`len` bytes at `at`) lists, in table
/// order, without duplicates; an empty list if it is damaged or too
/// large. Its layout: `ISc(`, then at byte 12 the offset of the "common"
/// block, which holds at 12 the offset (from itself) of the directory
/// table, at 40 the file count and at 44 the directory table's size; the
/// file descriptors (87 bytes each) follow the directory table.
fn cab_files(r: &mut (impl Read + Seek), at: u64, len: u64) -> std::io::Result<Vec<CabEntry>> {
    if len > MAX_HDR {
        return Ok(Vec::new());
    }
    let mut hdr = vec![0u8; len as usize];
    r.seek(SeekFrom::Start(at))?;
    let n = read_full(r, &mut hdr)?;
    hdr.truncate(n);
    Ok(parse_hdr(&hdr).unwrap_or_default())
}

fn parse_hdr(hdr: &[u8]) -> Option<Vec<CabEntry>> {
    if u32_at(hdr, 0)? != CAB_MAGIC {
        return None;
    }
    // Offsets are header words: summed without overflow (on 32-bit
    // boards too), and whatever they point past `hdr` ends the table.
    let common = u32_at(hdr, 12)? as usize;
    let word = |off: usize| u32_at(hdr, common.checked_add(off)?);
    let dirs = common.checked_add(word(12)? as usize)?;
    let count = word(40)? as usize;
    let first = dirs.checked_add(word(44)? as usize)?;
    let table = hdr.get(first..)?;
    let mut files = Vec::new();
    for d in table.chunks_exact(FILE_DESCRIPTOR).take(count) {
        let size = u64_at(d, 2)?;
        let duplicate = d[84] & 1 != 0;
        if u16_at(d, 0)? != FILE_COMPRESSED || size == 0 || duplicate {
            continue;
        }
        files.push(CabEntry {
            size,
            csize: u64_at(d, 10)?,
            offset: u64_at(d, 18)?,
            cab: u16_at(d, 85)?,
        });
    }
    Some(files)
}

/// A file's data in an InstallShield cabinet: chunks, each a 16-bit
/// length and that many bytes of raw deflate, decoded one after the
/// other. Holds one chunk (at most 64 KiB) and one inflater.
struct CabFile<R: Read> {
    input: R,
    decoder: DeflateDecoder<std::io::Cursor<Vec<u8>>>,
    /// The decoder holds a chunk (an empty input is an error to it).
    live: bool,
}

impl<R: Read> CabFile<R> {
    fn new(input: R) -> CabFile<R> {
        CabFile {
            input,
            decoder: DeflateDecoder::new(std::io::Cursor::new(Vec::new())),
            live: false,
        }
    }
}

impl<R: Read> Read for CabFile<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.live {
                let n = self.decoder.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.live = false;
            }
            let mut len = [0u8; 2];
            if read_full(&mut self.input, &mut len)? < 2 {
                return Ok(0);
            }
            let len = u16::from_le_bytes(len) as usize;
            if len == 0 {
                continue;
            }
            let mut chunk = self
                .decoder
                .reset(std::io::Cursor::new(Vec::new()))
                .into_inner();
            chunk.resize(len, 0);
            let got = read_full(&mut self.input, &mut chunk)?;
            if got == 0 {
                return Ok(0);
            }
            // A short last chunk is decoded as far as it goes.
            chunk.truncate(got);
            self.decoder.reset(std::io::Cursor::new(chunk));
            self.live = true;
        }
    }
}

/// The MSI layout's scrambling, undone: each stored byte has its nibbles
/// swapped, then is XORed with the key byte at (its index modulo 1024)
/// modulo the key's length; the key is the file name XORed with
/// [`MSI_KEY`].
struct Unscramble<R> {
    inner: Take<R>,
    key: Vec<u8>,
    at: usize,
}

impl<R: Read> Read for Unscramble<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for b in &mut buf[..n] {
            *b = b.rotate_left(4) ^ self.key[(self.at & 0x3ff) % self.key.len()];
            self.at += 1;
        }
        Ok(n)
    }
}

/// Where the MSI layout's header is (after its marker), searched from
/// `from` for at most [`MSI_SEARCH`] bytes. A marker counts only with
/// what follows it as InstallShield writes it: a non-zero file count then
/// zeros, and the first block's `6`, `0` words and its `0`, `1` after the
/// size (as ClamAV's file type signature for it).
fn find_msi_stream(
    r: &mut (impl Read + Seek),
    from: u64,
    size: u64,
) -> std::io::Result<Option<u64>> {
    const WINDOW: usize = 64 * 1024;
    const NEED: usize = MSI_MARKER.len() + MSI_HEADER + MSI_NAME + 21;
    let end = size.min(from.saturating_add(MSI_SEARCH));
    let mut buf = vec![0u8; WINDOW + NEED];
    let mut base = from;
    while base < end {
        r.seek(SeekFrom::Start(base))?;
        let n = read_full(r, &mut buf)?;
        let window = &buf[..n];
        let mut i = 0;
        while let Some(k) = window[i..]
            .windows(MSI_MARKER.len())
            .position(|w| w == MSI_MARKER)
        {
            let at = i + k;
            if base + (at as u64) >= end {
                return Ok(None);
            }
            if let Some(h) = window.get(at + MSI_MARKER.len()..at + NEED) {
                let block = &h[MSI_HEADER..];
                let header_ok = u32_at(h, 0) != Some(0) && h[8..MSI_HEADER].iter().all(|&b| b == 0);
                let block_ok = u32_at(block, MSI_NAME) == Some(6)
                    && u32_at(block, MSI_NAME + 4) == Some(0)
                    && u32_at(block, MSI_NAME + 16) == Some(0)
                    && block[MSI_NAME + 20] == 1;
                if header_ok && block_ok {
                    return Ok(Some(base + (at + MSI_MARKER.len()) as u64));
                }
            } else if n == buf.len() {
                // Cut by the window: read again from the marker.
                break;
            }
            i = at + 1;
        }
        if n < buf.len() {
            break;
        }
        base += WINDOW as u64;
    }
    Ok(None)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Write;

    /// A PE file with one section (headers 0x200 bytes, the section's raw
    /// data 0x200 bytes) and `overlay` after it.
    pub fn pe(overlay: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x400];
        f[..2].copy_from_slice(b"MZ");
        f[0x3c] = 0x80;
        f[0x80..0x84].copy_from_slice(b"PE\0\0");
        f[0x86] = 1; // one section
        f[0x94] = 0xe0; // the optional header's size
        let section = 0x80 + 24 + 0xe0;
        f[section..section + 5].copy_from_slice(b".text");
        f[section + 16..section + 20].copy_from_slice(&0x200u32.to_le_bytes());
        f[section + 20..section + 24].copy_from_slice(&0x200u32.to_le_bytes());
        f.extend_from_slice(overlay);
        f
    }

    /// An InstallScript setup stream of `files` (name, bytes).
    pub fn setup_stream(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut s = Vec::new();
        for (name, data) in files {
            let path = format!("Disk1\\{name}");
            for field in [name, path.as_str(), "0.0.0.0", &data.len().to_string()] {
                s.extend_from_slice(field.as_bytes());
                s.push(0);
            }
            s.extend_from_slice(data);
        }
        s
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A file as an InstallShield cabinet stores it: `data` cut in two,
    /// each half raw deflate behind its 16-bit length.
    pub fn cab_chunks(data: &[u8]) -> Vec<u8> {
        let (a, b) = data.split_at(data.len() / 2);
        let mut s = Vec::new();
        for half in [a, b] {
            let c = deflate(half);
            s.extend_from_slice(&(c.len() as u16).to_le_bytes());
            s.extend_from_slice(&c);
        }
        s
    }

    /// `data1.hdr` and `data1.cab` holding `files` (name, unpacked size
    /// declared, bytes), compressed; `extra` descriptors (flags, size)
    /// with no data are listed first.
    pub fn is_cabinet(files: &[(&str, u64, &[u8])], extra: &[(u16, u64)]) -> (Vec<u8>, Vec<u8>) {
        let mut cab = b"ISc(".to_vec();
        cab.resize(512, 0);
        let common = 0x200usize;
        let dirs = 0x40usize;
        let mut hdr = vec![0u8; common + dirs + 8];
        hdr[..4].copy_from_slice(b"ISc(");
        hdr[12..16].copy_from_slice(&(common as u32).to_le_bytes());
        let count = (files.len() + extra.len()) as u32;
        hdr[common + 12..common + 16].copy_from_slice(&(dirs as u32).to_le_bytes());
        hdr[common + 40..common + 44].copy_from_slice(&count.to_le_bytes());
        hdr[common + 44..common + 48].copy_from_slice(&8u32.to_le_bytes());
        let mut descriptor = |flags: u16, size: u64, csize: u64, offset: u64| {
            let mut d = [0u8; FILE_DESCRIPTOR];
            d[..2].copy_from_slice(&flags.to_le_bytes());
            d[2..10].copy_from_slice(&size.to_le_bytes());
            d[10..18].copy_from_slice(&csize.to_le_bytes());
            d[18..26].copy_from_slice(&offset.to_le_bytes());
            d[85..87].copy_from_slice(&1u16.to_le_bytes());
            hdr.extend_from_slice(&d);
        };
        for &(flags, size) in extra {
            descriptor(flags, size, 0, 0);
        }
        for (_, size, data) in files {
            let stored = cab_chunks(data);
            descriptor(
                FILE_COMPRESSED,
                *size,
                stored.len() as u64,
                cab.len() as u64,
            );
            cab.extend_from_slice(&stored);
        }
        (hdr, cab)
    }

    /// An MSI-based launcher's stream of `files` (name, bytes), the count
    /// word `count`.
    pub fn msi_stream(files: &[(&str, &[u8])], count: u32) -> Vec<u8> {
        let mut s = b"some debug data\0".to_vec();
        s.extend_from_slice(MSI_MARKER);
        s.extend_from_slice(&count.to_le_bytes());
        s.resize(s.len() + MSI_HEADER - 4, 0);
        for (name, data) in files {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(data).unwrap();
            let mut stored = z.finish().unwrap();
            let key: Vec<u8> = name
                .bytes()
                .zip(MSI_KEY.iter().cycle())
                .map(|(n, k)| n ^ k)
                .collect();
            for (i, b) in stored.iter_mut().enumerate() {
                *b = (*b ^ key[(i & 0x3ff) % key.len()]).rotate_left(4);
            }
            let mut block = vec![0u8; MSI_BLOCK];
            block[..name.len()].copy_from_slice(name.as_bytes());
            block[MSI_NAME] = 6;
            block[MSI_NAME + 8..MSI_NAME + 16]
                .copy_from_slice(&(stored.len() as u64).to_le_bytes());
            block[MSI_NAME + 20] = 1;
            s.extend_from_slice(&block);
            s.extend_from_slice(&stored);
        }
        s
    }

    /// The (declared size, bytes) of each member, and how the reading
    /// ended.
    type Members = (Vec<(u64, Vec<u8>)>, Result<(), TooManyFiles>);

    fn members(f: &[u8], max_files: usize) -> Members {
        let mut got = Vec::new();
        let stop = installer(
            &mut std::io::Cursor::new(f),
            f.len() as u64,
            max_files,
            |m| {
                let mut d = Vec::new();
                // Damage ends a member: what was decoded is kept.
                let _ = m.data.read_to_end(&mut d);
                got.push((m.size, d));
                Ok(true)
            },
        )
        .unwrap();
        (got, stop)
    }

    #[test]
    fn setup_stream_files_then_cabinet_files() {
        let big: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 249) as u8).collect();
        let (hdr, cab) = is_cabinet(&[("a.dll", big.len() as u64, &big)], &[(0, 10), (4, 0)]);
        let f = pe(&setup_stream(&[
            ("setup.ini", b"[Startup]"),
            ("data1.hdr", &hdr),
            ("data1.cab", &cab),
        ]));
        let (got, stop) = members(&f, 100);
        assert_eq!(stop, Ok(()));
        let want: Vec<(u64, Vec<u8>)> = vec![
            (9, b"[Startup]".to_vec()),
            (hdr.len() as u64, hdr.clone()),
            (cab.len() as u64, cab.clone()),
            (big.len() as u64, big.clone()),
        ];
        assert_eq!(got, want);
        // Four files: the entry limit counts each.
        assert_eq!(members(&f, 3).1, Err(TooManyFiles));
    }

    #[test]
    fn msi_stream_files() {
        let f = pe(&msi_stream(
            &[("0x0409.ini", b"[0x0409]"), ("clam.msi", &[7; 3000])],
            2,
        ));
        let (got, stop) = members(&f, 100);
        assert_eq!(stop, Ok(()));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, b"[0x0409]");
        assert_eq!(got[1].1, vec![7; 3000]);
        // A count past what is there: the stream ends at the first block
        // that is not.
        let f = pe(&msi_stream(&[("x", b"y")], u32::MAX));
        assert_eq!(members(&f, 100).0.len(), 1);
        // Not InstallShield's: a marker without the header's zeros.
        let mut s = msi_stream(&[("x", b"y")], 1);
        s[16 + MSI_MARKER.len() + 10] = 1;
        assert!(members(&pe(&s), 100).0.is_empty());
    }

    #[test]
    fn not_an_installer() {
        assert!(pe_overlay(b"MZ").is_none());
        assert!(members(&pe(b""), 100).0.is_empty());
        assert!(members(&pe(b"arbitrary overlay\0\0\0"), 100).0.is_empty());
        // A record declaring more than the file holds.
        assert!(members(&pe(b"a\0b\0c\0999999\0short"), 100).0.is_empty());
        assert_eq!(cab_number(b"DATA12.CAB"), Some(12));
        assert_eq!(cab_number(b"data0.cab"), None);
        assert_eq!(cab_number(b"data.cab"), None);
        assert_eq!(cab_number(b"data99999.cab"), None);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_after_a_valid_header_never_panic(
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..2000),
            cut in 0usize..400,
        ) {
            let (hdr, _) = is_cabinet(&[], &[]);
            // A setup stream whose header table and cabinet are random.
            let mut hdr = hdr[..hdr.len().min(0x200 + cut)].to_vec();
            hdr.extend_from_slice(&tail);
            let f = pe(&setup_stream(&[("data1.hdr", &hdr), ("data1.cab", &tail)]));
            let _ = members(&f, 1000);
            // A file block and data that are random.
            let mut s = msi_stream(&[("n", b"x")], 3);
            s.truncate(16 + MSI_MARKER.len() + MSI_HEADER + cut.min(MSI_BLOCK));
            s.extend_from_slice(&tail);
            let _ = members(&pe(&s), 1000);
            // Chunks that are random.
            let mut r = CabFile::new(&tail[..]);
            let _ = r.read_to_end(&mut Vec::new());
        }
    }
}
