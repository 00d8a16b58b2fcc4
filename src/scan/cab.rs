//! Microsoft Cabinet files ([MS-CAB]): a header, folders (compressed
//! streams of 32 KiB `CFDATA` blocks) and files (byte ranges of a folder's
//! uncompressed stream). Stored, MSZIP and LZX folders are decoded here, a
//! block at a time; Quantum (rare, never documented by Microsoft) is not.
//!
//! Files are visited in the order the file table lists them. A folder is
//! decoded once from its start for files listed in folder order (which is
//! what cabinet makers write); a file listed behind the decoder's position
//! restarts its folder, and every byte decoded only to be skipped counts
//! against a budget, so a crafted table cannot make the scan quadratic.
//!
//! [MS-CAB]: https://learn.microsoft.com/en-us/previous-versions/bb417343(v=msdn.10)

use std::io::{Read, Seek, SeekFrom};

use super::unpack::read_full;

/// What a cabinet starts with: "MSCF" and a reserved zero field.
pub const MAGIC: &[u8] = b"MSCF\0\0\0\0";

/// One file of a cabinet as the reader meets it.
pub struct CabMember<'a> {
    /// The size the file table declares.
    pub size: u64,
    pub data: &'a mut dyn Read,
}

/// Why a cabinet was not read to its end.
#[derive(Debug, PartialEq, Eq)]
pub enum CabStop {
    /// The header or file table is damaged: what came before was read.
    Damaged(String),
    /// More files than `max_files`.
    TooManyFiles,
    /// More bytes decoded only to be skipped than `max_skip`.
    SkipBudget,
}

/// Compression types, the low 4 bits of `typeCompress` (MS-CAB 2.2).
const STORED: u16 = 0;
const MSZIP: u16 = 1;
const LZX: u16 = 3;

/// A block holds at most 32 KiB uncompressed (MS-CAB 2.4); its compressed
/// size field is 16 bits.
const BLOCK: usize = 32 * 1024;

#[derive(Clone, Copy)]
struct Folder {
    /// Offset of the first CFDATA block, from the cabinet's start.
    first_block: u64,
    blocks: u16,
    compression: u16,
}

/// Calls `member` for each file of the cabinet at the start of `r`, in
/// file-table order, until it returns false; it may read as much of the
/// data as it wants. Damaged compressed data ends a file early (what was
/// decoded is what it reads).
pub fn cab<R: Read + Seek>(
    r: &mut R,
    max_files: usize,
    max_skip: u64,
    mut member: impl FnMut(CabMember<'_>) -> std::io::Result<bool>,
) -> std::io::Result<Result<(), CabStop>> {
    let damaged = |what: &str| Ok(Err(CabStop::Damaged(format!("damaged cabinet: {what}"))));
    // CFHEADER (MS-CAB 2.1): 36 bytes, then optional reserve sizes and
    // the names of the previous and next cabinets of a set.
    let mut h = [0u8; 36];
    if read_full(r, &mut h)? < 36 || &h[..8] != MAGIC {
        return damaged("header");
    }
    let files_at = u64::from(le32(&h, 16));
    let folders = usize::from(le16(&h, 26));
    let files = usize::from(le16(&h, 28));
    let flags = le16(&h, 30);
    if files > max_files {
        return Ok(Err(CabStop::TooManyFiles));
    }
    let (mut folder_reserve, mut data_reserve) = (0, 0);
    if flags & 4 != 0 {
        let mut sizes = [0u8; 4];
        if read_full(r, &mut sizes)? < 4 {
            return damaged("reserve sizes");
        }
        r.seek(SeekFrom::Current(i64::from(le16(&sizes, 0))))?;
        folder_reserve = i64::from(sizes[2]);
        data_reserve = u64::from(sizes[3]);
    }
    // Previous and next cabinet and disk names: two strings per flag.
    for _ in 0..(usize::from(flags & 1 != 0) + usize::from(flags & 2 != 0)) * 2 {
        if read_name(r)?.is_none() {
            return damaged("cabinet set names");
        }
    }
    // At most 65,535 folders of 8 bytes each: 512 KiB at worst, but a
    // cabinet within the file limit cannot use more folders than files.
    let mut table = Vec::with_capacity(folders.min(files));
    for _ in 0..folders.min(files) {
        let mut f = [0u8; 8];
        if read_full(r, &mut f)? < 8 {
            return damaged("folder table");
        }
        r.seek(SeekFrom::Current(folder_reserve))?;
        table.push(Folder {
            first_block: u64::from(le32(&f, 0)),
            blocks: le16(&f, 4),
            compression: le16(&f, 6),
        });
    }
    let mut entry_at = files_at;
    let mut state: Option<(usize, FolderState)> = None;
    let mut skipped = 0u64;
    for _ in 0..files {
        // CFFILE (MS-CAB 2.3): size, offset in the folder, folder index,
        // date, time, attributes, then the NUL-terminated name.
        r.seek(SeekFrom::Start(entry_at))?;
        let mut e = [0u8; 16];
        if read_full(r, &mut e)? < 16 {
            return damaged("file table");
        }
        if read_name(r)?.is_none() {
            return damaged("file name");
        }
        entry_at = r.stream_position()?;
        let (size, offset) = (u64::from(le32(&e, 0)), u64::from(le32(&e, 4)));
        // 0xFFFD..=0xFFFF: continued from or into another cabinet of a set.
        let index = usize::from(le16(&e, 8));
        let Some(folder) = table.get(index) else {
            continue;
        };
        let restart = match &state {
            Some((i, s)) => *i != index || s.position > offset,
            None => true,
        };
        if restart {
            state = Some((index, FolderState::new(*folder, data_reserve)));
        }
        let (_, s) = state.as_mut().expect("set above");
        let gap = offset - s.position;
        skipped = skipped.saturating_add(gap);
        if skipped > max_skip {
            return Ok(Err(CabStop::SkipBudget));
        }
        let mut reader = FolderRead { r: &mut *r, s };
        std::io::copy(&mut (&mut reader).take(gap), &mut std::io::sink())?;
        let mut data = reader.take(size);
        let go_on = member(CabMember {
            size,
            data: &mut data,
        })?;
        if !go_on {
            break;
        }
    }
    Ok(Ok(()))
}

/// Decoding state of one folder.
struct FolderState {
    next_block: u64,
    blocks_left: u16,
    data_reserve: u64,
    codec: Codec,
    input: Vec<u8>,
    /// The current block's uncompressed bytes and how many were read.
    out: Vec<u8>,
    out_read: usize,
    /// Uncompressed bytes of the folder handed out so far.
    position: u64,
    done: bool,
}

enum Codec {
    Stored,
    /// The raw inflater, and the previous block's output: MSZIP's history
    /// window carries over from block to block (MS-MCI 2.1), each block
    /// being its own deflate stream.
    MsZip(Box<flate2::Decompress>, Vec<u8>),
    Lzx(Box<lzxd::Lzxd>),
    Unsupported,
}

impl FolderState {
    fn new(folder: Folder, data_reserve: u64) -> FolderState {
        let codec = match folder.compression & 0x0f {
            STORED => Codec::Stored,
            MSZIP => Codec::MsZip(Box::new(flate2::Decompress::new(false)), Vec::new()),
            // The window is 2^n bytes, n in bits 8-12 (MS-CAB 2.2): 15..=21.
            LZX => match lzx_window(folder.compression >> 8 & 0x1f) {
                Some(w) => Codec::Lzx(Box::new(lzxd::Lzxd::new(w))),
                None => Codec::Unsupported,
            },
            _ => Codec::Unsupported,
        };
        FolderState {
            next_block: folder.first_block,
            blocks_left: folder.blocks,
            data_reserve,
            codec,
            input: Vec::new(),
            out: Vec::new(),
            out_read: 0,
            position: 0,
            done: false,
        }
    }

    /// Decodes the next CFDATA block (MS-CAB 2.4) into `out`; false at the
    /// end of the folder or at damage.
    fn next_block<R: Read + Seek>(&mut self, r: &mut R) -> std::io::Result<bool> {
        if self.done || self.blocks_left == 0 || matches!(self.codec, Codec::Unsupported) {
            self.done = true;
            return Ok(false);
        }
        self.blocks_left -= 1;
        r.seek(SeekFrom::Start(self.next_block))?;
        let mut h = [0u8; 8];
        if read_full(r, &mut h)? < 8 {
            self.done = true;
            return Ok(false);
        }
        let (packed, unpacked) = (usize::from(le16(&h, 4)), usize::from(le16(&h, 6)));
        r.seek(SeekFrom::Current(self.data_reserve as i64))?;
        self.next_block += 8 + self.data_reserve + packed as u64;
        self.input.resize(packed, 0);
        if unpacked == 0 || unpacked > BLOCK || read_full(r, &mut self.input)? < packed {
            self.done = true;
            return Ok(false);
        }
        self.out_read = 0;
        let ok = match &mut self.codec {
            Codec::Stored => {
                self.out.clear();
                self.out
                    .extend_from_slice(&self.input[..packed.min(unpacked)]);
                true
            }
            Codec::MsZip(inflate, history) => {
                std::mem::swap(history, &mut self.out);
                self.out.resize(unpacked, 0);
                inflate.reset(false);
                let dictionary_ok = history.is_empty() || inflate.set_dictionary(history).is_ok();
                // Each block starts with the signature "CK" (MS-MCI 2.2).
                let produced = match self.input.strip_prefix(b"CK") {
                    Some(deflated) if dictionary_ok => inflate
                        .decompress(deflated, &mut self.out, flate2::FlushDecompress::Finish)
                        .map(|_| inflate.total_out() as usize)
                        .ok(),
                    _ => None,
                };
                self.out.truncate(produced.unwrap_or(0));
                produced == Some(unpacked)
            }
            Codec::Lzx(lzx) => match lzx.decompress_next(&self.input, unpacked) {
                Ok(bytes) => {
                    self.out.clear();
                    self.out.extend_from_slice(bytes);
                    true
                }
                Err(_) => false,
            },
            Codec::Unsupported => false,
        };
        // What a damaged block produced is still handed out; the folder
        // ends after it.
        self.done = !ok;
        Ok(!self.out.is_empty())
    }
}

fn lzx_window(bits: u16) -> Option<lzxd::WindowSize> {
    use lzxd::WindowSize as W;
    Some(match bits {
        15 => W::KB32,
        16 => W::KB64,
        17 => W::KB128,
        18 => W::KB256,
        19 => W::KB512,
        20 => W::MB1,
        21 => W::MB2,
        _ => return None,
    })
}

/// A folder's uncompressed stream, read from where its state stands.
struct FolderRead<'a, R> {
    r: &'a mut R,
    s: &'a mut FolderState,
}

impl<R: Read + Seek> Read for FolderRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.s.out_read == self.s.out.len() {
            if !self.s.next_block(self.r)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.s.out.len() - self.s.out_read);
        buf[..n].copy_from_slice(&self.s.out[self.s.out_read..][..n]);
        self.s.out_read += n;
        self.s.position += n as u64;
        Ok(n)
    }
}

/// Reads past a NUL-terminated name of at most 256 bytes (MS-CAB 2.1,
/// 2.3); `None` if there is none.
fn read_name<R: Read>(r: &mut R) -> std::io::Result<Option<()>> {
    let mut b = [0u8; 1];
    for _ in 0..=256 {
        if read_full(r, &mut b)? == 0 {
            return Ok(None);
        }
        if b[0] == 0 {
            return Ok(Some(()));
        }
    }
    Ok(None)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Database, Finding, LIMIT_ENTRIES, LIMIT_OBJECT, Limits, scan_message_bytes};

    /// How the test cabinets compress their one folder.
    #[derive(Clone, Copy)]
    enum Method {
        Stored,
        /// MSZIP, each block deflated with the previous block as its
        /// preset dictionary, as Microsoft's encoder does.
        MsZip,
        /// LZX with a 32 KiB window, every block an LZX "uncompressed"
        /// block (the one kind a test can write by hand).
        Lzx,
    }

    /// A cabinet of `files` (name, data) in one folder; `order` lists the
    /// file table's order (indexes into `files`).
    fn cabinet(files: &[(&str, &[u8])], method: Method, order: &[usize]) -> Vec<u8> {
        let stream: Vec<u8> = files.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        let mut offsets = Vec::new();
        let mut at = 0u32;
        for (_, d) in files {
            offsets.push(at);
            at += d.len() as u32;
        }
        let mut blocks = Vec::new();
        let mut prev: &[u8] = &[];
        for (i, chunk) in stream.chunks(BLOCK).enumerate() {
            let packed = match method {
                Method::Stored => chunk.to_vec(),
                Method::MsZip => {
                    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
                    if !prev.is_empty() {
                        c.set_dictionary(prev).unwrap();
                    }
                    let mut out = Vec::with_capacity(chunk.len() + 1024);
                    out.extend_from_slice(b"CK");
                    c.compress_vec(chunk, &mut out, flate2::FlushCompress::Finish)
                        .unwrap();
                    out
                }
                Method::Lzx => lzx_uncompressed(chunk, i == 0),
            };
            blocks.push((packed, chunk.len()));
            prev = chunk;
        }
        let type_compress: u16 = match method {
            Method::Stored => STORED,
            Method::MsZip => MSZIP,
            Method::Lzx => LZX | 15 << 8,
        };
        let table: Vec<u8> = order
            .iter()
            .flat_map(|&i| {
                let mut e = Vec::new();
                e.extend_from_slice(&(files[i].1.len() as u32).to_le_bytes());
                e.extend_from_slice(&offsets[i].to_le_bytes());
                e.extend_from_slice(&[0; 8]); // folder 0, date, time, attributes
                e.extend_from_slice(files[i].0.as_bytes());
                e.push(0);
                e
            })
            .collect();
        let files_at = 36 + 8;
        let data_at = files_at + table.len();
        let mut cab = Vec::new();
        cab.extend_from_slice(MAGIC);
        cab.extend_from_slice(&[0; 4]); // cbCabinet, filled in below
        cab.extend_from_slice(&[0; 4]);
        cab.extend_from_slice(&(files_at as u32).to_le_bytes());
        cab.extend_from_slice(&[0; 4]);
        cab.extend_from_slice(&[3, 1]); // version 1.3
        cab.extend_from_slice(&1u16.to_le_bytes());
        cab.extend_from_slice(&(order.len() as u16).to_le_bytes());
        cab.extend_from_slice(&[0; 6]); // flags, set id, index in set
        cab.extend_from_slice(&(data_at as u32).to_le_bytes());
        cab.extend_from_slice(&(blocks.len() as u16).to_le_bytes());
        cab.extend_from_slice(&type_compress.to_le_bytes());
        cab.extend_from_slice(&table);
        for (packed, unpacked) in &blocks {
            cab.extend_from_slice(&[0; 4]); // checksum (optional)
            cab.extend_from_slice(&(packed.len() as u16).to_le_bytes());
            cab.extend_from_slice(&(*unpacked as u16).to_le_bytes());
            cab.extend_from_slice(packed);
        }
        let len = (cab.len() as u32).to_le_bytes();
        cab[8..12].copy_from_slice(&len);
        cab
    }

    /// One LZX frame holding an uncompressed block ([MS-PATCH] 2.3): bits
    /// are packed into 16-bit little-endian words, most significant first.
    fn lzx_uncompressed(data: &[u8], first: bool) -> Vec<u8> {
        let mut bits: Vec<bool> = Vec::new();
        let mut put = |v: u32, n: u32| (0..n).rev().for_each(|i| bits.push(v >> i & 1 == 1));
        if first {
            put(0, 1); // no E8 translation
        }
        put(3, 3); // block type: uncompressed
        put(data.len() as u32, 24);
        // Padding to the next 16-bit boundary (16 bits when already there).
        let pad = 16 - bits.len() % 16;
        bits.extend(std::iter::repeat_n(false, pad));
        let mut out = Vec::new();
        for word in bits.chunks(16) {
            let w = word.iter().fold(0u16, |a, &b| a << 1 | u16::from(b));
            out.extend_from_slice(&w.to_le_bytes());
        }
        for r in [1u32, 1, 1] {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(0);
        }
        out
    }

    /// Every file's bytes, in the order the reader hands them out.
    fn members(cab: &[u8], max_files: usize, max_skip: u64) -> (Vec<Vec<u8>>, Result<(), CabStop>) {
        let mut got = Vec::new();
        let stop = super::cab(&mut std::io::Cursor::new(cab), max_files, max_skip, |m| {
            let mut d = Vec::new();
            m.data.read_to_end(&mut d)?;
            assert!(d.len() as u64 <= m.size);
            got.push(d);
            Ok(true)
        })
        .unwrap();
        (got, stop)
    }

    /// Data that compresses but is not one repeated byte, `n` long.
    fn text(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| b"abcdefghij klmnop\n"[(i * 7 + usize::from(seed)) % 18] ^ (i / 997) as u8)
            .collect()
    }

    #[test]
    fn stored_mszip_and_lzx_folders_across_blocks() {
        let (a, b, c) = (text(50_000, 1), text(20_000, 2), text(40_001, 3));
        let files: [(&str, &[u8]); 3] = [("a", &a), ("b", &b), ("c.exe", &c)];
        for method in [Method::Stored, Method::MsZip, Method::Lzx] {
            let cab = cabinet(&files, method, &[0, 1, 2]);
            let (got, stop) = members(&cab, 10, 0);
            assert_eq!(stop, Ok(()));
            assert_eq!(got, vec![a.clone(), b.clone(), c.clone()]);
        }
        // The MSZIP cabinet really refers back across blocks: its second
        // block does not inflate to the right bytes on its own.
        let cab = cabinet(&files, Method::MsZip, &[0, 1, 2]);
        let data_at = u32::from_le_bytes(cab[36..40].try_into().unwrap()) as usize;
        let first = usize::from(le16(&cab, data_at + 4));
        let second = data_at + 8 + first;
        let len = usize::from(le16(&cab, second + 4));
        let mut alone = vec![0; BLOCK];
        let inflated = flate2::Decompress::new(false).decompress(
            &cab[second + 8 + 2..second + 8 + len],
            &mut alone,
            flate2::FlushDecompress::Finish,
        );
        assert!(inflated.is_err() || alone[..] != a[BLOCK..2 * BLOCK]);
    }

    #[test]
    fn files_listed_out_of_folder_order_restart_the_folder_within_a_budget() {
        let (a, b) = (text(40_000, 1), text(30_000, 2));
        let files: [(&str, &[u8]); 2] = [("a", &a), ("b", &b)];
        let cab = cabinet(&files, Method::MsZip, &[1, 0, 1]);
        let (got, stop) = members(&cab, 10, 1 << 20);
        assert_eq!(stop, Ok(()));
        assert_eq!(got, vec![b.clone(), a.clone(), b.clone()]);
        // Each restart for `b` decodes `a` again only to skip it.
        let cab = cabinet(&files, Method::MsZip, &[1, 1]);
        let (got, stop) = members(&cab, 10, 50_000);
        assert_eq!(stop, Err(CabStop::SkipBudget));
        assert_eq!(got, vec![b.clone()]);
    }

    #[test]
    fn damage_ends_the_cabinet_without_a_panic() {
        let a = text(70_000, 4);
        for method in [Method::Stored, Method::MsZip, Method::Lzx] {
            let cab = cabinet(&[("a", &a)], method, &[0]);
            for cut in [10, 40, 60, cab.len() / 2, cab.len() - 1] {
                let (got, _) = members(&cab[..cut], 10, 0);
                assert!(got.iter().all(|d| a.starts_with(d)), "cut at {cut}");
            }
            for i in (36..cab.len()).step_by(997) {
                let mut bad = cab.clone();
                bad[i] ^= 0x5a;
                let _ = members(&bad, 10, 1 << 20);
            }
        }
        assert_eq!(
            members(b"MSCF\0\0\0\0", 10, 0).1,
            Err(CabStop::Damaged("damaged cabinet: header".into()))
        );
    }

    proptest::proptest! {
        /// Random bytes as LZX and MSZIP block data: never a panic (lzxd
        /// is a dependency; a panic in it would stop the server).
        #[test]
        fn random_block_data_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000), lzx: bool, window in 15u16..=21) {
            let a = text(3000, 5);
            let method = if lzx { Method::Lzx } else { Method::MsZip };
            let mut cab = cabinet(&[("a", &a)], method, &[0]);
            let data_at = u32::from_le_bytes(cab[36..40].try_into().unwrap()) as usize;
            if lzx {
                cab[42..44].copy_from_slice(&(LZX | window << 8).to_le_bytes());
            }
            cab.truncate(data_at + 8);
            cab[data_at + 4..data_at + 6].copy_from_slice(&(data.len() as u16).to_le_bytes());
            cab.extend_from_slice(&data);
            let _ = members(&cab, 10, 1 << 20);
        }
    }

    fn message(attachment: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(attachment);
        let mut m = b"Subject: cab\r\nContent-Type: application/vnd.ms-cab-compressed\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
            .to_vec();
        for line in b64.as_bytes().chunks(76) {
            m.extend_from_slice(line);
            m.extend_from_slice(b"\r\n");
        }
        m
    }

    #[test]
    fn eicar_in_a_cabinet_and_the_limits() {
        let db = Database::builtin().unwrap();
        let pad = text(45_000, 6);
        // EICAR straddles the first two MSZIP blocks.
        let mut eicar = text(32_000, 7);
        eicar.extend_from_slice(crate::scan::signature::EICAR);
        let files: [(&str, &[u8]); 2] = [("pad.txt", &pad), ("eicar.com", &eicar)];
        // Stored and LZX-uncompressed cabinets show EICAR in their raw
        // bytes; MSZIP only once inflated, so the limits show there.
        for method in [Method::Stored, Method::Lzx, Method::MsZip] {
            let msg = message(&cabinet(&files, method, &[0, 1]));
            let found = scan_message_bytes(&db, &msg, Limits::default()).unwrap();
            assert_eq!(
                found,
                Finding::Infected(crate::scan::signature::EICAR_NAME.into())
            );
        }
        {
            let msg = message(&cabinet(&files, Method::MsZip, &[0, 1]));
            let few = Limits {
                max_zip_entries: 1,
                ..Limits::default()
            };
            let found = scan_message_bytes(&db, &msg, few).unwrap();
            assert_eq!(found, Finding::Limit(LIMIT_ENTRIES.into()));
            let small = Limits {
                max_object_size: 40_000,
                ..Limits::default()
            };
            let found = scan_message_bytes(&db, &msg, small).unwrap();
            assert_eq!(found, Finding::Limit(LIMIT_OBJECT.into()));
        }
        let clean = message(&cabinet(&files[..1], Method::MsZip, &[0]));
        assert_eq!(
            scan_message_bytes(&db, &clean, Limits::default()).unwrap(),
            Finding::Clean
        );
    }
}
