//! The message walker: the raw message in windows, then every MIME part
//! decoded (one part buffered at a time), embedded messages, uuencoded files
//! in text, and zip entries, each checked against hash and body signatures.
//! Nesting, entry count and decoded bytes are bounded; going past a bound is
//! a [`Finding::Limit`] verdict, never an expansion.

use std::io::{Cursor, Read};

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::database::Database;
use super::decode::{self, Decoder};
use super::hashes::HashMatch;
use super::matcher::{ObjectKind, normalize_text};
use super::signature::HashKind;
use crate::message::{MessageMeta, Part};
use crate::store::CHUNK_SIZE;
use crate::store::content::Content;

/// Bounds on one message's scan. Every one has a config key (`scan.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nesting of embedded messages and archives below the message.
    pub max_depth: usize,
    /// Largest decoded part or archive entry held for scanning.
    pub max_object_size: u64,
    /// Decoded and decompressed bytes per message, all objects together.
    pub max_total_size: u64,
    /// Entries per zip archive.
    pub max_zip_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 8,
            max_object_size: 32 << 20,
            max_total_size: 64 << 20,
            max_zip_entries: 1000,
        }
    }
}

/// The outcome of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Clean,
    /// A signature matched; its name.
    Infected(String),
    /// A limit was reached before the whole content was scanned: a
    /// ClamAV-style `Heuristics.Limits.Exceeded.*` name.
    Limit(String),
}

pub const LIMIT_DEPTH: &str = "Heuristics.Limits.Exceeded.MaxRecursion";
pub const LIMIT_OBJECT: &str = "Heuristics.Limits.Exceeded.MaxFileSize";
pub const LIMIT_TOTAL: &str = "Heuristics.Limits.Exceeded.MaxScanSize";
pub const LIMIT_ENTRIES: &str = "Heuristics.Limits.Exceeded.MaxFiles";

/// Raw streams are matched in windows of this size, overlapping by
/// `OVERLAP`: a body signature spanning more than `OVERLAP` bytes across a
/// window boundary of a raw message is missed (decoded parts are matched
/// whole).
const WINDOW: usize = 1 << 20;
const OVERLAP: usize = 64 * 1024;

type Scan = Result<Finding, String>;

/// Hashes of one object, computed only for kinds that have signatures.
struct Hashers {
    md5: Option<Md5>,
    sha1: Option<Sha1>,
    sha256: Option<Sha256>,
}

impl Hashers {
    fn new(db: &Database) -> Hashers {
        Hashers {
            md5: db.hashes.has(HashKind::Md5).then(Md5::new),
            sha1: db.hashes.has(HashKind::Sha1).then(Sha1::new),
            sha256: db.hashes.has(HashKind::Sha256).then(Sha256::new),
        }
    }

    fn update(&mut self, b: &[u8]) {
        if let Some(h) = &mut self.md5 {
            h.update(b);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(b);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(b);
        }
    }

    fn check(self, db: &Database, size: u64) -> Result<HashMatch, String> {
        let mut found = HashMatch::None;
        let digests = [
            (HashKind::Md5, self.md5.map(|h| h.finalize().to_vec())),
            (HashKind::Sha1, self.sha1.map(|h| h.finalize().to_vec())),
            (HashKind::Sha256, self.sha256.map(|h| h.finalize().to_vec())),
        ];
        for (kind, digest) in digests {
            let Some(d) = digest else { continue };
            match db
                .hashes
                .lookup(kind, &d, size)
                .map_err(|e| format!("hash index: {e}"))?
            {
                HashMatch::Allowed => return Ok(HashMatch::Allowed),
                HashMatch::Found(n) if !db.is_ignored(&n) && found == HashMatch::None => {
                    found = HashMatch::Found(n)
                }
                _ => {}
            }
        }
        Ok(found)
    }
}

/// Matches a stream in overlapping windows while hashing it.
struct RawStream<'a> {
    db: &'a Database,
    kind: ObjectKind,
    total: u64,
    buf: Vec<u8>,
    base: u64,
    /// Bytes of `buf` not yet matched in a window.
    fresh: usize,
    hashers: Hashers,
    found: Option<String>,
}

impl<'a> RawStream<'a> {
    fn new(db: &'a Database, kind: ObjectKind, total: u64) -> RawStream<'a> {
        RawStream {
            db,
            kind,
            total,
            buf: Vec::new(),
            base: 0,
            fresh: 0,
            hashers: Hashers::new(db),
            found: None,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        self.hashers.update(bytes);
        while !bytes.is_empty() {
            let take = (WINDOW - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            self.fresh += take;
            bytes = &bytes[take..];
            if self.buf.len() == WINDOW {
                self.match_window();
                let keep = self.buf.len() - OVERLAP;
                self.buf.drain(..keep);
                self.base += keep as u64;
            }
        }
    }

    fn match_window(&mut self) {
        if self.found.is_some() || self.fresh == 0 {
            return;
        }
        self.fresh = 0;
        let db = self.db;
        let skip = |n: &str| db.is_ignored(n);
        if let Some(n) = db
            .body
            .find(&self.buf, self.base, self.total, self.kind, &skip)
        {
            self.found = Some(n.to_string());
        }
    }

    fn finish(mut self) -> Scan {
        self.match_window();
        match self.hashers.check(self.db, self.total)? {
            HashMatch::Allowed => return Ok(Finding::Clean),
            HashMatch::Found(n) => return Ok(Finding::Infected(n)),
            HashMatch::None => {}
        }
        Ok(self.found.map_or(Finding::Clean, Finding::Infected))
    }
}

/// Reads byte ranges of a received message (offsets as in its MIME tree).
pub struct MessageSource {
    content: Content,
    size: u64,
}

impl MessageSource {
    /// Borrows nothing from `content`: the in-memory chunks are copied (at
    /// most `limits.spool_memory` bytes) and the spool file's descriptor is
    /// duplicated, so the scan can run on another thread.
    pub fn snapshot(content: &Content, size: u64) -> std::io::Result<MessageSource> {
        Ok(MessageSource {
            content: Content {
                prefix: None,
                head: content.head.clone(),
                file: match &content.file {
                    Some(f) => Some(f.try_clone()?),
                    None => None,
                },
                file_chunks: content.file_chunks,
                tail: content.tail.clone(),
            },
            size,
        })
    }

    /// A whole file on disk, read a chunk at a time.
    pub fn file(file: std::fs::File) -> std::io::Result<MessageSource> {
        use std::os::unix::fs::FileExt;
        let size = file.metadata()?.len();
        let full = size / CHUNK_SIZE as u64;
        let rest = (size % CHUNK_SIZE as u64) as usize;
        let mut tail = vec![0u8; rest];
        file.read_exact_at(&mut tail, full * CHUNK_SIZE as u64)?;
        Ok(MessageSource {
            content: Content {
                prefix: None,
                head: Vec::new(),
                file_chunks: u32::try_from(full).map_err(std::io::Error::other)?,
                file: Some(file),
                tail: (!tail.is_empty()).then_some(tail),
            },
            size,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Calls `f` with the bytes of `[start, end)` in order.
    pub fn range(&self, start: u64, end: u64, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = end.min(self.size);
        let c = &self.content;
        let mut buf = Vec::new();
        let mut pos = start;
        while pos < end {
            let k = pos / CHUNK_SIZE as u64;
            let chunk_start = k * CHUNK_SIZE as u64;
            let head = c.head.len() as u64;
            let chunk: &[u8] = if k < head {
                &c.head[k as usize]
            } else if k < head + c.file_chunks as u64 {
                let Some(file) = &c.file else {
                    return Err(std::io::Error::other("spool file missing"));
                };
                buf.resize(CHUNK_SIZE, 0);
                file.read_exact_at(&mut buf, (k - head) * CHUNK_SIZE as u64)?;
                &buf
            } else {
                c.tail.as_deref().unwrap_or(&[])
            };
            let from = (pos - chunk_start) as usize;
            let to = ((end - chunk_start) as usize).min(chunk.len());
            if from >= to {
                break;
            }
            f(&chunk[from..to]);
            pos = chunk_start + to as u64;
        }
        Ok(())
    }
}

/// One message's scan: the database, the limits and the bytes decoded so far.
pub struct Walker<'a> {
    db: &'a Database,
    limits: Limits,
    total: u64,
}

impl<'a> Walker<'a> {
    pub fn new(db: &'a Database, limits: Limits) -> Walker<'a> {
        Walker {
            db,
            limits,
            total: 0,
        }
    }

    /// A received message: raw, then every part.
    pub fn message(&mut self, src: &MessageSource, meta: &MessageMeta) -> Scan {
        let r = self.raw(src, 0, src.size(), ObjectKind::Mail)?;
        if r != Finding::Clean {
            return Ok(r);
        }
        self.part(src, &meta.root, 0)
    }

    /// A plain file of any size, streamed.
    pub fn stream(&mut self, mut reader: impl Read, size: u64) -> Scan {
        let mut raw = RawStream::new(self.db, ObjectKind::Other, size);
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            raw.push(&buf[..n]);
        }
        raw.finish()
    }

    fn raw(&mut self, src: &MessageSource, start: u64, end: u64, kind: ObjectKind) -> Scan {
        let mut raw = RawStream::new(self.db, kind, end - start);
        src.range(start, end, |b| raw.push(b))
            .map_err(|e| format!("reading the message: {e}"))?;
        raw.finish()
    }

    fn part(&mut self, src: &MessageSource, part: &Part, depth: usize) -> Scan {
        if part.is_multipart() {
            for child in &part.children {
                let r = self.part(src, child, depth)?;
                if r != Finding::Clean {
                    return Ok(r);
                }
            }
            return Ok(Finding::Clean);
        }
        if part.is_message() && part.encoding != "BASE64" && part.encoding != "QUOTED-PRINTABLE" {
            if depth + 1 > self.limits.max_depth {
                return Ok(Finding::Limit(LIMIT_DEPTH.into()));
            }
            let r = self.raw(src, part.body_start, part.end, ObjectKind::Mail)?;
            if r != Finding::Clean {
                return Ok(r);
            }
            for child in &part.children {
                let r = self.part(src, child, depth + 1)?;
                if r != Finding::Clean {
                    return Ok(r);
                }
            }
            return Ok(Finding::Clean);
        }
        if part.body_size() == 0 {
            return Ok(Finding::Clean);
        }
        // A leaf: decode it whole, within the limits.
        let mut decoder = Decoder::for_encoding(&part.encoding);
        let mut data = Vec::new();
        let max = self.limits.max_object_size;
        let mut over = false;
        src.range(part.body_start, part.end, |b| {
            if !over {
                decoder.push(b, &mut data);
                over = data.len() as u64 > max;
            }
        })
        .map_err(|e| format!("reading the message: {e}"))?;
        if over {
            return Ok(Finding::Limit(LIMIT_OBJECT.into()));
        }
        decoder.finish(&mut data);
        if data.len() as u64 > max {
            return Ok(Finding::Limit(LIMIT_OBJECT.into()));
        }
        if let Some(limit) = self.count(data.len() as u64) {
            return Ok(limit);
        }
        let text = part.content_type == "text";
        self.object(&data, text, depth)
    }

    fn count(&mut self, n: u64) -> Option<Finding> {
        self.total += n;
        (self.total > self.limits.max_total_size).then(|| Finding::Limit(LIMIT_TOTAL.into()))
    }

    /// A decoded object: hashes, body signatures, then what it contains.
    pub fn object(&mut self, data: &[u8], text: bool, depth: usize) -> Scan {
        let db = self.db;
        let mut h = Hashers::new(db);
        h.update(data);
        match h.check(db, data.len() as u64)? {
            HashMatch::Allowed => return Ok(Finding::Clean),
            HashMatch::Found(n) => return Ok(Finding::Infected(n)),
            HashMatch::None => {}
        }
        let skip = |n: &str| db.is_ignored(n);
        let total = data.len() as u64;
        if let Some(n) = db.body.find(data, 0, total, ObjectKind::Other, &skip) {
            return Ok(Finding::Infected(n.to_string()));
        }
        if text {
            let norm = normalize_text(data);
            if let Some(n) = db
                .body
                .find(&norm, 0, norm.len() as u64, ObjectKind::Text, &skip)
            {
                return Ok(Finding::Infected(n.to_string()));
            }
        }
        if data.starts_with(b"PK\x03\x04") {
            let r = self.zip(data, depth + 1)?;
            if r != Finding::Clean {
                return Ok(r);
            }
        }
        if text || looks_like_text(data) {
            for file in decode::uu_files(data) {
                if depth + 1 > self.limits.max_depth {
                    return Ok(Finding::Limit(LIMIT_DEPTH.into()));
                }
                if let Some(limit) = self.count(file.len() as u64) {
                    return Ok(limit);
                }
                let r = self.object(&file, false, depth + 1)?;
                if r != Finding::Clean {
                    return Ok(r);
                }
            }
        }
        Ok(Finding::Clean)
    }

    fn zip(&mut self, data: &[u8], depth: usize) -> Scan {
        if depth > self.limits.max_depth {
            return Ok(Finding::Limit(LIMIT_DEPTH.into()));
        }
        // Not a readable archive: its bytes were matched as they are.
        let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(data)) else {
            return Ok(Finding::Clean);
        };
        if archive.len() > self.limits.max_zip_entries {
            return Ok(Finding::Limit(LIMIT_ENTRIES.into()));
        }
        let max = self.limits.max_object_size;
        for i in 0..archive.len() {
            // Encrypted entries and unsupported methods cannot be read.
            let Ok(mut entry) = archive.by_index(i) else {
                continue;
            };
            if entry.is_dir() {
                continue;
            }
            // A bomb is refused on its declared size, before inflating...
            let declared = entry.size();
            if declared > max {
                return Ok(Finding::Limit(LIMIT_OBJECT.into()));
            }
            if self.total.saturating_add(declared) > self.limits.max_total_size {
                return Ok(Finding::Limit(LIMIT_TOTAL.into()));
            }
            // ...and a lying header on what actually comes out.
            let mut buf = Vec::with_capacity(declared.min(1 << 20) as usize);
            // A damaged entry (bad CRC...) is scanned as far as it inflated.
            let _ = (&mut entry).take(max + 1).read_to_end(&mut buf);
            drop(entry);
            if buf.len() as u64 > max {
                return Ok(Finding::Limit(LIMIT_OBJECT.into()));
            }
            if let Some(limit) = self.count(buf.len() as u64) {
                return Ok(limit);
            }
            let r = self.object(&buf, false, depth)?;
            if r != Finding::Clean {
                return Ok(r);
            }
        }
        Ok(Finding::Clean)
    }
}

/// No NUL in the first KiB: worth looking for uuencoded files in.
fn looks_like_text(data: &[u8]) -> bool {
    !data[..data.len().min(1024)].contains(&0)
}
