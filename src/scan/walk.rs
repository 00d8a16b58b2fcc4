//! The message walker: the raw message, then every MIME part decoded,
//! embedded messages, uuencoded files in text, `data:` URIs in HTML, and
//! archive members (zip, tar, CHM, ARJ, SIS...), each
//! streamed through hash and body signatures (`object.rs`): no part or
//! entry is ever held whole.
//! Nesting, entry count and decoded bytes are bounded; going past a bound is
//! a [`Finding::Limit`] verdict, never an expansion.

use std::io::{Read, Seek, SeekFrom};

use super::cab::CabStop;
use super::database::Database;
use super::datauri::{self, DataEvent, DataUris};
use super::decode::{self, Decoder};
use super::hashes::HashMatch;
use super::matcher::ObjectKind;
use super::object::{HEAD, Hashers, Spool, TextStream, WindowStream};
use super::ole2::{self, Ole2, PptObject};
use super::pe_image::{self, Layout};
use super::sevenz;
use super::unpack::{self, Container};
use super::{
    arj, aspack, autoit, chm, ishield, mew, nsis, peimage, pespin, petite, sis, upack, upx, wwpack,
    yc,
};
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
    /// Entries per archive (zip, tar).
    pub max_zip_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 17,
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

type Scan = Result<Finding, String>;

/// A UPX pack header is looked for in a PE's first bytes: its headers,
/// which UPX ends with it.
const UPX_HEADERS: u64 = 8 * 1024;

/// A PE's headers and section table are looked for in its first 4 KiB.
const PE_HEADERS: u64 = 4096;

/// Bytes read at a time from an archive entry or a plain file.
const READ_CHUNK: usize = 16 * 1024;

/// Largest LZMA/LZMA2 dictionary (and PPMd model, header buffer) the 7z
/// decoder may allocate, in KiB: 16 MiB, 7-Zip's default for large
/// files (it writes smaller ones for smaller data), plus the
/// probability tables. A larger one is a limit verdict, not allocated.
const SEVENZ_DICT_KB: usize = 17 * 1024;
/// Decoded 7z header bytes allowed per entry of `max_zip_entries`: file
/// names of about 50 characters, sizes, CRC, times and attributes. The
/// crate's entry records cost at most ~100 bytes per header byte, so the
/// default 1,000 entries bound that to ~12 MB for a hostile header.
const SEVENZ_HEADER_PER_ENTRY: u64 = 128;
const SEVENZ_HEADER_MIN: u64 = 4096;

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

    /// A message copied from inside another object.
    pub fn spool(spool: Spool) -> std::io::Result<MessageSource> {
        match spool {
            Spool::File(f) => MessageSource::file(f),
            Spool::Memory(c) => {
                let data = c.into_inner();
                let size = data.len() as u64;
                let chunks = data.chunks(CHUNK_SIZE).map(<[u8]>::to_vec).collect();
                Ok(MessageSource {
                    content: Content::from_chunks(chunks),
                    size,
                })
            }
        }
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
    /// A bzip2 stream is being decoded: its block buffer can take a few
    /// MiB, so one inside another is a limit verdict, not a second buffer.
    in_bzip2: bool,
}

/// One object being scanned as its bytes arrive (see `object.rs`), with
/// what it may contain: an archive (copied, unpacked once complete) and
/// uuencoded files in text (scanned as they are decoded).
struct Object<'a> {
    db: &'a Database,
    depth: usize,
    /// A text/* part: also matched normalised, and searched for uuencode.
    text: bool,
    /// A text/html part: searched for `data:` URIs (as is anything that
    /// starts like HTML).
    html: bool,
    /// Look inside (archives, uuencode); not for a raw message.
    unpack: bool,
    size: u64,
    hashers: Hashers,
    raw: WindowStream,
    norm: Option<TextStream>,
    /// The first bytes, until they say what the object is.
    head: Vec<u8>,
    decided: bool,
    /// A copy of a container, to unpack once complete.
    spool: Option<(Container, Spool)>,
    uu: Option<UuFiles<'a>>,
    data: Option<DataFiles<'a>>,
    /// What a uuencoded file or a `data:` URI inside found.
    inner: Option<Finding>,
}

impl<'a> Object<'a> {
    fn new(db: &'a Database, kind: ObjectKind, depth: usize, text: bool) -> Object<'a> {
        Object {
            db,
            depth,
            text,
            html: false,
            unpack: kind == ObjectKind::Other,
            size: 0,
            hashers: Hashers::new(db),
            raw: WindowStream::new(kind),
            norm: text.then(TextStream::new),
            head: Vec::new(),
            decided: false,
            spool: None,
            uu: None,
            data: None,
            inner: None,
        }
    }

    /// Whether the object's own signatures or a file inside already found
    /// something (its hash, checked at the end, may still allow it).
    fn decided_by_content(&self) -> bool {
        self.raw.found.is_some() || self.inner.is_some()
    }

    fn push(&mut self, w: &mut Walker, bytes: &[u8]) -> Result<(), String> {
        self.size += bytes.len() as u64;
        self.hashers.update(bytes);
        if !self.decided_by_content() {
            self.raw.push(self.db, bytes);
            if let Some(t) = &mut self.norm {
                t.push(self.db, bytes);
            }
        }
        if !self.unpack {
            return Ok(());
        }
        let mut rest = bytes;
        if !self.decided {
            let take = (HEAD - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.head.len() < HEAD {
                return Ok(());
            }
            self.decide(w)?;
        }
        self.unpackers(w, rest)
    }

    /// Chooses what to look for inside from the first bytes, and gives
    /// those bytes to it.
    fn decide(&mut self, w: &mut Walker) -> Result<(), String> {
        self.decided = true;
        let head = std::mem::take(&mut self.head);
        if let Some(c) = unpack::container(&head) {
            self.spool = Some((c, Spool::new()));
        }
        if self.text || looks_like_text(&head) {
            self.uu = Some(UuFiles::new());
        }
        if self.html || datauri::looks_like_html(&head) {
            self.data = Some(DataFiles::new());
        }
        self.unpackers(w, &head)
    }

    fn unpackers(&mut self, w: &mut Walker, bytes: &[u8]) -> Result<(), String> {
        if self.decided_by_content() {
            self.spool = None;
            self.uu = None;
            self.data = None;
            return Ok(());
        }
        if let Some((_, s)) = &mut self.spool {
            s.write(self.db, bytes)
                .map_err(|e| format!("scan spool in {}: {e}", self.db.work_dir.display()))?;
        }
        if let Some(uu) = &mut self.uu
            && let Some(found) = uu.push(w, self.db, self.depth, bytes)?
        {
            self.inner = Some(found);
        }
        if let Some(data) = &mut self.data
            && self.inner.is_none()
            && let Some(found) = data.push(w, self.db, self.depth, bytes)?
        {
            self.inner = Some(found);
        }
        Ok(())
    }

    /// The object's verdict, then what its archive holds.
    fn finish(mut self, w: &mut Walker) -> Scan {
        if self.unpack && !self.decided {
            self.decide(w)?;
        }
        if let Some(uu) = self.uu.take()
            && !self.decided_by_content()
            && let Some(found) = uu.finish(w, self.db, self.depth)?
        {
            self.inner = Some(found);
        }
        if let Some(data) = self.data.take()
            && !self.decided_by_content()
            && let Some(found) = data.finish(w, self.db, self.depth)?
        {
            self.inner = Some(found);
        }
        let db = self.db;
        self.raw.finish(db);
        let text = self.norm.as_mut().and_then(|t| t.finish(db));
        match self.hashers.check(db, self.size)? {
            HashMatch::Allowed => return Ok(Finding::Clean),
            HashMatch::Found(n) => return Ok(Finding::Infected(n)),
            HashMatch::None => {}
        }
        if let Some(n) = self.raw.found.take().or(text) {
            return Ok(Finding::Infected(n));
        }
        if let Some(f) = self.inner {
            return Ok(f);
        }
        match self.spool {
            Some((container, spool)) => {
                let spool = spool.rewind().map_err(|e| format!("scan spool: {e}"))?;
                w.unpack(container, spool, self.depth + 1)
            }
            None => Ok(Finding::Clean),
        }
    }
}

/// How a zip entry's bytes are decoded. The common methods are decoded
/// here from the entry's raw bytes rather than by the zip crate: its one
/// read function holds every method's decoder, and shrink's 128 KiB table
/// built on the stack gives it a 256 KiB frame, probed page by page on
/// every call, so that any zip entry left that much stack in the RSS.
#[derive(Clone, Copy, PartialEq)]
enum ZipDecoder {
    Stored,
    Deflate,
    Deflate64,
    Bzip2,
    /// By the zip crate (the legacy methods), or unreadable.
    Zip,
}

fn zip_decoder(method: zip::CompressionMethod) -> ZipDecoder {
    use zip::CompressionMethod as M;
    if method == M::STORE {
        ZipDecoder::Stored
    } else if method == M::DEFLATE {
        ZipDecoder::Deflate
    } else if method == M::DEFLATE64 {
        ZipDecoder::Deflate64
    } else if method == M::BZIP2 {
        ZipDecoder::Bzip2
    } else {
        ZipDecoder::Zip
    }
}

/// No NUL in the first KiB: worth looking for uuencoded files in.
fn looks_like_text(head: &[u8]) -> bool {
    !head[..head.len().min(HEAD)].contains(&0)
}

/// Uuencoded files in a text, each decoded and scanned as its lines go by.
struct UuFiles<'a> {
    line: Vec<u8>,
    /// The file being decoded: its decoder and its object.
    file: Option<(Decoder, Box<Object<'a>>)>,
    out: Vec<u8>,
}

/// Longest text line looked at (the uuencode decoder's own bound).
const UU_LINE: usize = 1024;

impl<'a> UuFiles<'a> {
    fn new() -> UuFiles<'a> {
        UuFiles {
            line: Vec::new(),
            file: None,
            out: Vec::new(),
        }
    }

    fn push(
        &mut self,
        w: &mut Walker,
        db: &'a Database,
        depth: usize,
        bytes: &[u8],
    ) -> Result<Option<Finding>, String> {
        for &c in bytes {
            if c != b'\n' {
                if self.line.len() < UU_LINE {
                    self.line.push(c);
                }
                continue;
            }
            if let Some(found) = self.line_done(w, db, depth)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn line_done(
        &mut self,
        w: &mut Walker,
        db: &'a Database,
        depth: usize,
    ) -> Result<Option<Finding>, String> {
        let line = std::mem::take(&mut self.line);
        let mut result = None;
        match &mut self.file {
            None => {
                let text = line.strip_suffix(b"\r").unwrap_or(&line);
                if decode::is_uu_begin(text) {
                    if depth + 1 > w.limits.max_depth {
                        result = Some(Finding::Limit(LIMIT_DEPTH.into()));
                    } else {
                        let mut d = Decoder::for_encoding("X-UUENCODE");
                        d.push(&line, &mut self.out);
                        d.push(b"\n", &mut self.out);
                        let obj = Object::new(db, ObjectKind::Other, depth + 1, false);
                        self.file = Some((d, Box::new(obj)));
                    }
                }
            }
            Some((d, obj)) => {
                self.out.clear();
                d.push(&line, &mut self.out);
                d.push(b"\n", &mut self.out);
                obj.push(w, &self.out)?;
                if d.uu_done() {
                    result = self.end_file(w)?;
                }
            }
        }
        self.line = line;
        self.line.clear();
        Ok(result)
    }

    /// A file ends at its "end" line or with the text.
    fn end_file(&mut self, w: &mut Walker) -> Result<Option<Finding>, String> {
        let Some((_, obj)) = self.file.take() else {
            return Ok(None);
        };
        if let Some(limit) = w.count(obj.size) {
            return Ok(Some(limit));
        }
        let r = obj.finish(w)?;
        Ok((r != Finding::Clean).then_some(r))
    }

    fn finish(
        mut self,
        w: &mut Walker,
        db: &'a Database,
        depth: usize,
    ) -> Result<Option<Finding>, String> {
        if !self.line.is_empty()
            && let Some(found) = self.line_done(w, db, depth)?
        {
            return Ok(Some(found));
        }
        self.end_file(w)
    }
}

/// The payloads of `data:` URIs in HTML, each scanned as an object (at
/// the next depth) as it is decoded.
struct DataFiles<'a> {
    uris: DataUris,
    file: Option<Box<Object<'a>>>,
}

/// Why a text's URIs stop being read: a verdict, or a failure.
type DataStop = Result<Finding, String>;

impl<'a> DataFiles<'a> {
    fn new() -> DataFiles<'a> {
        DataFiles {
            uris: DataUris::new(),
            file: None,
        }
    }

    fn push(
        &mut self,
        w: &mut Walker,
        db: &'a Database,
        depth: usize,
        bytes: &[u8],
    ) -> Result<Option<Finding>, String> {
        let file = &mut self.file;
        let r = self
            .uris
            .push(bytes, |e| DataFiles::event(file, w, db, depth, e));
        stopped(r)
    }

    fn event(
        file: &mut Option<Box<Object<'a>>>,
        w: &mut Walker,
        db: &'a Database,
        depth: usize,
        e: DataEvent<'_>,
    ) -> Result<(), DataStop> {
        match e {
            DataEvent::Start if depth + 1 > w.limits.max_depth => {
                return Err(Ok(Finding::Limit(LIMIT_DEPTH.into())));
            }
            DataEvent::Start => {
                *file = Some(Box::new(Object::new(
                    db,
                    ObjectKind::Other,
                    depth + 1,
                    false,
                )));
            }
            DataEvent::Bytes(b) => {
                if let Some(obj) = file {
                    obj.push(w, b).map_err(Err)?;
                }
            }
            DataEvent::End => {
                let Some(obj) = file.take() else {
                    return Ok(());
                };
                if let Some(limit) = w.count(obj.size) {
                    return Err(Ok(limit));
                }
                match obj.finish(w).map_err(Err)? {
                    Finding::Clean => {}
                    found => return Err(Ok(found)),
                }
            }
        }
        Ok(())
    }

    fn finish(
        mut self,
        w: &mut Walker,
        db: &'a Database,
        depth: usize,
    ) -> Result<Option<Finding>, String> {
        let file = &mut self.file;
        let r = self
            .uris
            .finish(|e| DataFiles::event(file, w, db, depth, e));
        stopped(r)
    }
}

/// A verdict that stopped reading a text's URIs, or none.
fn stopped(r: Result<(), DataStop>) -> Result<Option<Finding>, String> {
    match r {
        Ok(()) => Ok(None),
        Err(Ok(found)) => Ok(Some(found)),
        Err(Err(e)) => Err(e),
    }
}

impl<'a> Walker<'a> {
    pub fn new(db: &'a Database, limits: Limits) -> Walker<'a> {
        Walker {
            db,
            limits,
            total: 0,
            in_bzip2: false,
        }
    }

    /// A received message: raw, then every part.
    pub fn message(&mut self, src: &MessageSource, meta: &MessageMeta) -> Scan {
        let r = self.raw(src, 0, src.size())?;
        if r != Finding::Clean {
            return Ok(r);
        }
        self.part(src, &meta.root, 0)
    }

    /// A plain file of any size, streamed: its own signatures only (it is
    /// past the size limit for looking inside).
    pub fn stream(&mut self, mut reader: impl Read, _size: u64) -> Scan {
        let mut obj = Object::new(self.db, ObjectKind::Other, 0, false);
        obj.unpack = false;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            obj.push(self, &buf[..n])?;
        }
        obj.finish(self)
    }

    /// A plain file within the limits: scanned as an object, archives
    /// unpacked.
    pub fn file(&mut self, reader: impl Read) -> Scan {
        self.entry(reader, 0)
    }

    fn raw(&mut self, src: &MessageSource, start: u64, end: u64) -> Scan {
        let mut obj = Object::new(self.db, ObjectKind::Mail, 0, false);
        let mut failed = Ok(());
        src.range(start, end, |b| {
            if failed.is_ok() {
                failed = obj.push(self, b);
            }
        })
        .map_err(|e| format!("reading the message: {e}"))?;
        failed?;
        obj.finish(self)
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
            let r = self.raw(src, part.body_start, part.end)?;
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
        // A leaf: decoded a chunk at a time into the object's checks.
        let mut decoder = Decoder::for_encoding(&part.encoding);
        let mut obj = Object::new(
            self.db,
            ObjectKind::Other,
            depth,
            part.content_type == "text",
        );
        obj.html = part.content_type == "text" && part.subtype == "html";
        let mut out = Vec::new();
        let mut stop: Result<Option<Finding>, String> = Ok(None);
        src.range(part.body_start, part.end, |b| {
            if matches!(stop, Ok(None)) {
                out.clear();
                decoder.push(b, &mut out);
                stop = self.feed(&mut obj, &out);
            }
        })
        .map_err(|e| format!("reading the message: {e}"))?;
        if let Some(limit) = stop? {
            return Ok(limit);
        }
        out.clear();
        decoder.finish(&mut out);
        if let Some(limit) = self.feed(&mut obj, &out)? {
            return Ok(limit);
        }
        obj.finish(self)
    }

    /// Gives decoded bytes to an object, within the object and total
    /// limits (a limit verdict stops the object).
    fn feed(&mut self, obj: &mut Object, bytes: &[u8]) -> Result<Option<Finding>, String> {
        if obj.size + bytes.len() as u64 > self.limits.max_object_size {
            return Ok(Some(Finding::Limit(LIMIT_OBJECT.into())));
        }
        if let Some(limit) = self.count(bytes.len() as u64) {
            return Ok(Some(limit));
        }
        obj.push(self, bytes)?;
        Ok(None)
    }

    fn count(&mut self, n: u64) -> Option<Finding> {
        self.total += n;
        (self.total > self.limits.max_total_size).then(|| Finding::Limit(LIMIT_TOTAL.into()))
    }

    /// An archive member (or a plain file) at `depth`, read to its end or
    /// to the first damage (what inflated so far is scanned).
    fn entry(&mut self, mut reader: impl Read, depth: usize) -> Scan {
        let mut obj = Object::new(self.db, ObjectKind::Other, depth, false);
        // On the heap and freed before unpacking what the entry holds: on
        // the stack it made every nesting level's frames 40 KB (the stack
        // pages a deep archive touched stayed in the RSS).
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(limit) = self.feed(&mut obj, &buf[..n])? {
                return Ok(limit);
            }
        }
        drop(buf);
        drop(reader);
        obj.finish(self)
    }

    /// A complete container at `depth` (below the object that holds it).
    fn unpack(&mut self, container: Container, spool: Spool, depth: usize) -> Scan {
        if depth > self.limits.max_depth {
            return Ok(Finding::Limit(LIMIT_DEPTH.into()));
        }
        let spool_error = |e: std::io::Error| format!("scan spool: {e}");
        match container {
            Container::Zip => self.zip(spool, depth),
            Container::Gzip => self.entry(flate2::read::MultiGzDecoder::new(spool), depth),
            Container::Bzip2 if self.in_bzip2 => Ok(Finding::Limit(LIMIT_DEPTH.into())),
            Container::Bzip2 => {
                self.in_bzip2 = true;
                let r = self.entry(bzip2::read::MultiBzDecoder::new(spool), depth);
                self.in_bzip2 = false;
                r
            }
            Container::Szdd => self.entry(unpack::Szdd::new(spool).map_err(spool_error)?, depth),
            Container::Rtf => self.entry(unpack::RtfObjects::new(spool), depth),
            Container::BinHex => {
                let mut r = unpack::BinHex::new(spool);
                match unpack::binhex_data_fork(&mut r).map_err(spool_error)? {
                    Some(len) => self.entry(r.take(len), depth),
                    None => Ok(Finding::Clean),
                }
            }
            Container::Tar => self.tar(spool, depth),
            Container::Cab => self.cab(spool, depth),
            Container::SevenZ => self.sevenz(spool, depth),
            Container::Ole2 => self.ole2(spool, depth),
            Container::Pe => self.pe(spool, depth),
            Container::Chm => self.chm(spool, depth),
            Container::Arj => self.arj(spool, depth),
            Container::Sis => self.sis(spool, depth),
            Container::Message => {
                let src = MessageSource::spool(spool).map_err(spool_error)?;
                let meta = super::structure(&src).map_err(spool_error)?;
                let r = self.raw(&src, 0, src.size())?;
                if r != Finding::Clean {
                    return Ok(r);
                }
                self.part(&src, &meta.root, depth)
            }
        }
    }

    /// A Windows executable: the code and data UPX, MEW or Upack packed,
    /// then an NSIS or InstallShield installer's files, then a compiled
    /// AutoIt script's files. Other executables have nothing pimail unpacks (their own
    /// bytes were matched as they are).
    fn pe(&mut self, mut spool: Spool, depth: usize) -> Scan {
        let io = |e: std::io::Error| format!("scan spool: {e}");
        let size = spool.seek(SeekFrom::End(0)).map_err(io)?;
        // The headers every packer check starts from, read once.
        let head = peimage::read_at(&mut spool, 0, UPX_HEADERS as usize).map_err(io)?;
        let r = self.upx(&mut spool, &head, size, depth)?;
        if r != Finding::Clean {
            return Ok(r);
        }
        let r = self.aspack_petite(&mut spool, &head, depth)?;
        if r != Finding::Clean {
            return Ok(r);
        }
        let r = self.mew_upack(&mut spool, &head, depth)?;
        if r != Finding::Clean {
            return Ok(r);
        }
        let pe_headers = &head[..head.len().min(PE_HEADERS as usize)];
        let r = self.packed(&mut spool, pe_headers, size, depth)?;
        drop(head);
        if r != Finding::Clean {
            return Ok(r);
        }
        let r = match nsis::first_header(&mut spool, size).map_err(io)? {
            Some(fh) => self.nsis(&mut spool, fh, depth)?,
            None => self.installshield(&mut spool, size, depth)?,
        };
        if r != Finding::Clean {
            return Ok(r);
        }
        self.autoit(&mut spool, size, depth)
    }

    /// An InstallShield installer's files (see ishield.rs), each scanned
    /// as an entry within the entry and declared-size limits.
    fn installshield(&mut self, spool: &mut Spool, size: u64, depth: usize) -> Scan {
        let mut verdict = Ok(Finding::Clean);
        let stop = ishield::installer(spool, size, self.limits.max_zip_entries, |m| {
            verdict = match self.declared(m.size) {
                Some(limit) => Ok(limit),
                None => self.entry(m.data, depth),
            };
            Ok(matches!(verdict, Ok(Finding::Clean)))
        })
        .map_err(|e| format!("scan spool: {e}"))?;
        match stop {
            Err(ishield::TooManyFiles) => Ok(Finding::Limit(LIMIT_ENTRIES.into())),
            Ok(()) => verdict,
        }
    }

    /// A compiled AutoIt script's files (the script, then every file it
    /// installs), each scanned as an entry; every record counts against
    /// the entry limit, every declared size against the object limit.
    fn autoit(&mut self, file: &mut (impl Read + Seek), size: u64, depth: usize) -> Scan {
        let io = |e: std::io::Error| format!("scan spool: {e}");
        let Some(script) = autoit::find(file, size).map_err(io)? else {
            return Ok(Finding::Clean);
        };
        let mut at = script.records;
        let mut entries = 0;
        // Anything but a record ends them: what came before was scanned.
        while let Some(record) = autoit::record(file, &script, at).map_err(io)? {
            at = record.next();
            entries += 1;
            if entries > self.limits.max_zip_entries {
                return Ok(Finding::Limit(LIMIT_ENTRIES.into()));
            }
            if !record.file {
                continue;
            }
            file.seek(SeekFrom::Start(record.data)).map_err(io)?;
            let data = autoit::Decrypt::new((&mut *file).take(record.len as u64), &script);
            let r = if record.compressed {
                match autoit::Expand::new(data).map_err(io)? {
                    Some(expand) => match self.declared(expand.size()) {
                        Some(limit) => limit,
                        None => self.entry(expand, depth)?,
                    },
                    // Not AutoIt's compression: damaged, skipped.
                    None => Finding::Clean,
                }
            } else {
                match self.declared(record.len as u64) {
                    Some(limit) => limit,
                    None => self.entry(data, depth)?,
                }
            };
            if r != Finding::Clean {
                return Ok(r);
            }
        }
        Ok(Finding::Clean)
    }

    /// The packers recognised by their stub at the entry point: WWPack32
    /// (wwpack.rs), yC (yc.rs), PESpin (pespin.rs). Only the PE headers and the entry point's
    /// bytes are read unless the stub matches.
    fn packed(&mut self, spool: &mut Spool, head: &[u8], size: u64, depth: usize) -> Scan {
        let io = |e: std::io::Error| format!("scan spool: {e}");
        let Some(pe) = peimage::headers(head) else {
            return Ok(Finding::Clean);
        };
        let Some(&last) = pe.sections.last() else {
            return Ok(Finding::Clean);
        };
        if pe.entry == last.rva.wrapping_add(yc::EP_IN_SECTION) {
            let r = self.yc(spool, size, &pe, depth)?;
            if r != Finding::Clean {
                return Ok(r);
            }
        }
        if pe.entry != last.rva {
            return self.pespin(spool, size, &pe, depth);
        }
        let mut stub = vec![0u8; (last.raw_size as usize).min(wwpack::STUB_READ)];
        spool.seek(SeekFrom::Start(last.raw as u64)).map_err(io)?;
        let n = unpack::read_full(spool, &mut stub).map_err(io)?;
        stub.truncate(n);
        for block in wwpack::blocks(&pe, &stub) {
            if let Some(limit) = self.declared(block.room as u64) {
                return Ok(limit);
            }
            let mut packed = vec![0u8; block.len as usize];
            spool.seek(SeekFrom::Start(block.offset)).map_err(io)?;
            let n = unpack::read_full(spool, &mut packed).map_err(io)?;
            packed.truncate(n);
            let image = wwpack::expand(&packed, block.room as usize);
            drop(packed);
            let r = self.unpacked_section(&image, depth)?;
            if r != Finding::Clean {
                return Ok(r);
            }
        }
        Ok(Finding::Clean)
    }

    /// A yC-encrypted executable, decrypted in memory (within the object
    /// and total limits) and scanned as the file the stub rebuilds.
    fn yc(&mut self, spool: &mut Spool, size: u64, pe: &peimage::Headers, depth: usize) -> Scan {
        let io = |e: std::io::Error| format!("scan spool: {e}");
        let Some(&last) = pe.sections.last() else {
            return Ok(Finding::Clean);
        };
        let mut ep = [0u8; yc::EP_READ];
        let at = last.raw as u64 + yc::EP_IN_SECTION as u64;
        spool.seek(SeekFrom::Start(at)).map_err(io)?;
        let n = unpack::read_full(spool, &mut ep).map_err(io)?;
        let Some(stub) = yc::stub(&ep[..n], last.raw) else {
            return Ok(Finding::Clean);
        };
        if let Some(limit) = self.declared(size) {
            return Ok(limit);
        }
        let mut file = vec![0u8; size as usize];
        spool.seek(SeekFrom::Start(0)).map_err(io)?;
        let n = unpack::read_full(spool, &mut file).map_err(io)?;
        file.truncate(n);
        match yc::decrypt(&mut file, pe, stub) {
            Some(len) => self.entry(&file[..len.min(file.len())], depth),
            None => Ok(Finding::Clean),
        }
    }

    /// A PESpin-protected executable, decrypted in memory (within the
    /// object and total limits); each section is scanned, those PESpin
    /// compressed expanded to their virtual size (counted against the
    /// limits first). PESpin's partly compressed resources are scanned as
    /// they are.
    fn pespin(
        &mut self,
        spool: &mut Spool,
        size: u64,
        pe: &peimage::Headers,
        depth: usize,
    ) -> Scan {
        let io = |e: std::io::Error| format!("scan spool: {e}");
        let Some(&last) = pe.sections.last() else {
            return Ok(Finding::Clean);
        };
        if !last.holds(pe.entry) {
            return Ok(Finding::Clean);
        }
        let ep = last.raw as u64 + (pe.entry - last.rva) as u64;
        let mut stub = [0u8; pespin::EP_READ];
        spool.seek(SeekFrom::Start(ep)).map_err(io)?;
        let n = unpack::read_full(spool, &mut stub).map_err(io)?;
        if !pespin::is_stub(&stub[..n]) {
            return Ok(Finding::Clean);
        }
        if let Some(limit) = self.declared(size) {
            return Ok(limit);
        }
        let mut file = vec![0u8; size as usize];
        spool.seek(SeekFrom::Start(0)).map_err(io)?;
        let n = unpack::read_full(spool, &mut file).map_err(io)?;
        file.truncate(n);
        let Some(sections) = pespin::decrypt(&mut file, pe, ep as usize) else {
            return Ok(Finding::Clean);
        };
        for s in sections {
            let start = (s.section.raw as usize).min(file.len());
            let end = start
                .saturating_add(s.section.raw_size as usize)
                .min(file.len());
            let raw = &file[start..end];
            let r = if s.compressed {
                if let Some(limit) = self.declared(s.section.vsize as u64) {
                    return Ok(limit);
                }
                let data = pespin::aplib(raw, s.section.vsize as usize);
                self.unpacked_section(&data, depth)?
            } else if raw.is_empty() {
                Finding::Clean
            } else {
                self.unpacked_section(raw, depth)?
            };
            if r != Finding::Clean {
                return Ok(r);
            }
        }
        Ok(Finding::Clean)
    }

    /// A section a packer hid, scanned as an entry, then from the first zip
    /// local header in it on: a self-extracting archive's zip, found in the
    /// unpacked data as ClamAV finds it in any executable.
    fn unpacked_section(&mut self, data: &[u8], depth: usize) -> Scan {
        let r = self.entry(data, depth)?;
        if r != Finding::Clean {
            return Ok(r);
        }
        match unpack::find(data.get(1..).unwrap_or_default(), b"PK\x03\x04") {
            Some(at) => self.entry(&data[at + 1..], depth),
            None => Ok(Finding::Clean),
        }
    }

    /// UPX's packed data, found by its pack header in the PE headers and
    /// decompressed within the object and total limits (checked on the
    /// declared size before anything is allocated).
    fn upx(&mut self, spool: &mut Spool, head: &[u8], size: u64, depth: usize) -> Scan {
        let io = |e: std::io::Error| format!("scan spool: {e}");
        let found = upx::find(head, |at, len| {
            // At most what the file holds: the length is the header's word.
            let len = (len as u64).min(size.saturating_sub(at as u64));
            peimage::read_at(spool, at as u64, len as usize)
        })
        .map_err(io)?;
        let Some((header, packed)) = found else {
            return Ok(Finding::Clean);
        };
        if let Some(limit) = self.declared(header.u_len as u64) {
            return Ok(limit);
        }
        match header.method {
            upx::Method::Nrv(kind, width) => {
                let image = upx::nrv(kind, width, &packed, header.u_len as usize);
                drop(packed);
                let r = self.entry(&image[..], depth)?;
                if r != Finding::Clean {
                    return Ok(r);
                }
                // An AutoIt script in a resource UPX compressed.
                let len = image.len() as u64;
                self.autoit(&mut std::io::Cursor::new(&image[..]), len, depth)
            }
            upx::Method::Lzma => match upx::lzma(&packed, header.u_len) {
                Some(r) => self.entry(r.take(header.u_len as u64), depth),
                None => Ok(Finding::Clean),
            },
        }
    }

    /// The sections ASPack or Petite packed, recognised by the stub at the
    /// entry point and decompressed in a copy of the image as the loader
    /// maps it (its declared size checked against the object and total
    /// limits before it is allocated), then scanned from the first
    /// section on.
    fn aspack_petite(&mut self, spool: &mut Spool, head: &[u8], depth: usize) -> Scan {
        let io = |e: std::io::Error| format!("scan spool: {e}");
        let Some(h) = peimage::headers(head) else {
            return Ok(Finding::Clean);
        };
        let Some(at) = h.file_offset(h.entry) else {
            return Ok(Finding::Clean);
        };
        let code = peimage::read_at(spool, at, aspack::STUB_LEN).map_err(io)?;
        let last = h.sections.iter().map(|s| s.rva).max().unwrap_or(0);
        let aspack = aspack::stub(&code);
        let petite = petite::stub(&code, h.image_base.wrapping_add(last));
        drop(code);
        if aspack.is_none() && petite.is_none() {
            return Ok(Finding::Clean);
        }
        let image_size = h.image_size as u64;
        if image_size > self.limits.max_object_size {
            return Ok(Finding::Limit(LIMIT_OBJECT.into()));
        }
        if self.total.saturating_add(image_size) > self.limits.max_total_size {
            return Ok(Finding::Limit(LIMIT_TOTAL.into()));
        }
        let mut image = peimage::map(spool, &h).map_err(io)?;
        if let Some(stub) = aspack {
            aspack::unpack(&mut image, &stub);
        } else if let Some(version) = petite {
            petite::unpack(&mut image, last.wrapping_add(version.records()));
        }
        let sections = &image[(h.first_rva() as usize).min(image.len())..];
        let r = self.entry(sections, depth)?;
        if r != Finding::Clean {
            return Ok(r);
        }
        // A self-extractor's archive, compressed with the program.
        match peimage::embedded_zip(sections) {
            Some(zip) => self.entry(zip, depth),
            None => Ok(Finding::Clean),
        }
    }

    /// An executable whose stub decompresses it in place (MEW, Upack):
    /// the sections it rebuilds, scanned as an entry. The image is held
    /// whole (the stubs' back references reach anywhere in it): its
    /// declared size counts against the object and total limits before
    /// allocating.
    fn mew_upack(&mut self, spool: &mut Spool, head: &[u8], depth: usize) -> Scan {
        let io = |e: std::io::Error| format!("scan spool: {e}");
        let mew = mew::find(head, spool).map_err(io)?;
        let upack = match mew {
            Some(_) => None,
            None => upack::find(head, spool).map_err(io)?,
        };
        let layout: &Layout = match (&mew, &upack) {
            (Some(m), _) => &m.layout,
            (_, Some(u)) => &u.layout,
            _ => return Ok(Finding::Clean),
        };
        if let Some(limit) = self.declared(layout.size_of_image as u64) {
            return Ok(limit);
        }
        let mut image = layout.load(spool).map_err(io)?;
        let sections = match (&mew, &upack) {
            (Some(m), _) => {
                mew::unpack(&mut image, layout.image_base, m.table);
                // Without the headers: those still describe the packed
                // file, which would be unpacked again.
                let first = layout.sections.iter().map(|s| s.rva).min().unwrap_or(0);
                image.drain(..(first as usize).min(image.len()));
                image
            }
            (_, Some(u)) => {
                let Some(plan) = upack::plan(&image, u) else {
                    return Ok(Finding::Clean);
                };
                let mut out = Vec::new();
                if let Some(r) = upack::decoder(&image, &plan) {
                    // Damage ends the output: what was decoded is scanned.
                    let _ = r.take(plan.len as u64).read_to_end(&mut out);
                }
                out
            }
            _ => return Ok(Finding::Clean),
        };
        let r = self.entry(&sections[..], depth)?;
        match pe_image::embedded_zip(&sections) {
            Some(zip) if r == Finding::Clean => self.entry(&sections[zip], depth),
            _ => Ok(r),
        }
    }

    /// An NSIS installer's blocks (the script header, then each file), each
    /// scanned as an entry; every block counts against the entry limit.
    fn nsis(&mut self, spool: &mut Spool, fh: nsis::FirstHeader, depth: usize) -> Scan {
        let io = |e: std::io::Error| format!("scan spool: {e}");
        let mut first = [0u8; 5];
        spool.seek(SeekFrom::Start(fh.data())).map_err(io)?;
        if unpack::read_full(spool, &mut first).map_err(io)? < first.len() {
            return Ok(Finding::Clean);
        }
        spool.seek(SeekFrom::Start(fh.data())).map_err(io)?;
        let mut entries = 0;
        match nsis::layout(&first, &fh) {
            nsis::Layout::Solid(compression) => {
                let data = (&mut *spool).take(fh.end - fh.data());
                let Some(mut stream) = nsis::decoder(compression, data) else {
                    return Ok(Finding::Clean);
                };
                let mut word = [0u8; 4];
                // Damage ends the stream: a short length word.
                while unpack::read_full(&mut stream, &mut word).unwrap_or(0) == 4 {
                    let (_, len) = nsis::block(word);
                    entries += 1;
                    if entries > self.limits.max_zip_entries {
                        return Ok(Finding::Limit(LIMIT_ENTRIES.into()));
                    }
                    if len as u64 > self.limits.max_object_size {
                        return Ok(Finding::Limit(LIMIT_OBJECT.into()));
                    }
                    let r = self.entry((&mut stream).take(len as u64), depth)?;
                    if r != Finding::Clean {
                        return Ok(r);
                    }
                }
                Ok(Finding::Clean)
            }
            nsis::Layout::Blocks => {
                let mut at = fh.data();
                while at + 4 <= fh.end {
                    let mut word = [0u8; 4];
                    spool.seek(SeekFrom::Start(at)).map_err(io)?;
                    if unpack::read_full(spool, &mut word).map_err(io)? < 4 {
                        break;
                    }
                    let (compressed, len) = nsis::block(word);
                    let len = (len as u64).min(fh.end - at - 4);
                    entries += 1;
                    if entries > self.limits.max_zip_entries {
                        return Ok(Finding::Limit(LIMIT_ENTRIES.into()));
                    }
                    let mut data = (&mut *spool).take(len);
                    let r = if compressed {
                        let mut b = [0u8; 1];
                        if unpack::read_full(&mut data, &mut b).map_err(io)? < 1 {
                            break;
                        }
                        let stream = std::io::Cursor::new(b).chain(data);
                        match nsis::decoder(nsis::compression(b[0]), stream) {
                            Some(d) => self.entry(d, depth)?,
                            None => Finding::Clean,
                        }
                    } else {
                        self.entry(data, depth)?
                    };
                    if r != Finding::Clean {
                        return Ok(r);
                    }
                    at += 4 + len;
                }
                Ok(Finding::Clean)
            }
        }
    }

    /// Every file of a Symbian installation file, inflated unless stored.
    fn sis(&mut self, mut spool: Spool, depth: usize) -> Scan {
        let spool_error = |e: std::io::Error| format!("scan spool: {e}");
        let size = spool.seek(SeekFrom::End(0)).map_err(spool_error)?;
        let sis = sis::read(&mut spool, size, self.limits.max_zip_entries);
        let (files, compressed) = match sis.map_err(spool_error)? {
            sis::Sis::Files { files, compressed } => (files, compressed),
            sis::Sis::TooMany => return Ok(Finding::Limit(LIMIT_ENTRIES.into())),
            sis::Sis::Damaged => return Ok(Finding::Clean),
        };
        for f in files {
            // Release 6 declares the inflated size: a bomb is refused on
            // it; older ones are bounded as they inflate.
            let declared = f.original.unwrap_or(f.length);
            if declared > self.limits.max_object_size {
                return Ok(Finding::Limit(LIMIT_OBJECT.into()));
            }
            if self.total.saturating_add(declared) > self.limits.max_total_size {
                return Ok(Finding::Limit(LIMIT_TOTAL.into()));
            }
            spool.seek(SeekFrom::Start(f.offset)).map_err(spool_error)?;
            let data = (&mut spool).take(f.length);
            let r = if compressed {
                self.entry(flate2::read::ZlibDecoder::new(data), depth)?
            } else {
                self.entry(data, depth)?
            };
            if r != Finding::Clean {
                return Ok(r);
            }
        }
        Ok(Finding::Clean)
    }

    /// Every file of an ARJ archive but garbled (encrypted) ones.
    fn arj(&mut self, mut spool: Spool, depth: usize) -> Scan {
        let mut entries = 0;
        let mut verdict = Ok(Finding::Clean);
        // A damaged header ends the archive: what came before was scanned.
        arj::members(&mut spool, |m| {
            if !m.file || m.garbled {
                return Ok(true);
            }
            entries += 1;
            // A bomb is refused on its declared size, before decoding.
            verdict = if entries > self.limits.max_zip_entries {
                Ok(Finding::Limit(LIMIT_ENTRIES.into()))
            } else if m.original > self.limits.max_object_size {
                Ok(Finding::Limit(LIMIT_OBJECT.into()))
            } else if self.total.saturating_add(m.original) > self.limits.max_total_size {
                Ok(Finding::Limit(LIMIT_TOTAL.into()))
            } else if m.method == 0 {
                self.entry(m.data, depth)
            } else if m.method <= 4 {
                self.entry(arj::ArjDecoder::new(m.data, m.method, m.original), depth)
            } else {
                // A method ARJ does not define: unreadable.
                Ok(Finding::Clean)
            };
            Ok(matches!(verdict, Ok(Finding::Clean)))
        })
        .map_err(|e| format!("scan spool: {e}"))?;
        verdict
    }

    /// Every user file of a CHM, stored or LZX-compressed.
    fn chm(&mut self, mut spool: Spool, depth: usize) -> Scan {
        let spool_error = |e: std::io::Error| format!("scan spool: {e}");
        let dir = chm::Directory::read(&mut spool, self.limits.max_zip_entries);
        let (files, content, mut section1) = match dir.map_err(spool_error)? {
            chm::Directory::Files {
                files,
                content,
                section1,
            } => (files, content, section1),
            chm::Directory::TooMany => return Ok(Finding::Limit(LIMIT_ENTRIES.into())),
            // Not readable: its bytes were matched as they are.
            chm::Directory::Damaged => return Ok(Finding::Clean),
        };
        for f in files {
            if f.length > self.limits.max_object_size {
                return Ok(Finding::Limit(LIMIT_OBJECT.into()));
            }
            if self.total.saturating_add(f.length) > self.limits.max_total_size {
                return Ok(Finding::Limit(LIMIT_TOTAL.into()));
            }
            let r = match (f.section, &mut section1) {
                (0, _) => {
                    spool
                        .seek(SeekFrom::Start(content.saturating_add(f.offset)))
                        .map_err(spool_error)?;
                    self.entry((&mut spool).take(f.length), depth)?
                }
                (1, Some(s)) => {
                    // What is decoded on the way to a file counts too.
                    let skipped = s.seek(&mut spool, f.offset).map_err(spool_error)?;
                    if let Some(limit) = self.count(skipped) {
                        return Ok(limit);
                    }
                    self.entry(s.file(&mut spool, f.length), depth)?
                }
                // Another section, or section 1 unreadable.
                _ => continue,
            };
            if r != Finding::Clean {
                return Ok(r);
            }
        }
        Ok(Finding::Clean)
    }

    fn tar(&mut self, mut spool: Spool, depth: usize) -> Scan {
        let mut entries = 0;
        let mut verdict = Ok(Finding::Clean);
        // A damaged header ends the archive: what came before was scanned.
        let _ = unpack::tar(&mut spool, |m| {
            if !m.regular {
                return Ok(true);
            }
            entries += 1;
            verdict = if entries > self.limits.max_zip_entries {
                Ok(Finding::Limit(LIMIT_ENTRIES.into()))
            } else {
                self.entry(m.data, depth)
            };
            Ok(matches!(verdict, Ok(Finding::Clean)))
        })
        .map_err(|e| format!("scan spool: {e}"))?;
        verdict
    }

    fn cab(&mut self, mut spool: Spool, depth: usize) -> Scan {
        let mut verdict = Ok(Finding::Clean);
        let max_skip = self.limits.max_total_size;
        let stop = super::cab::cab(&mut spool, self.limits.max_zip_entries, max_skip, |m| {
            verdict = match self.declared(m.size) {
                Some(limit) => Ok(limit),
                None => self.entry(m.data, depth),
            };
            Ok(matches!(verdict, Ok(Finding::Clean)))
        })
        .map_err(|e| format!("scan spool: {e}"))?;
        match stop {
            Err(CabStop::TooManyFiles) => Ok(Finding::Limit(LIMIT_ENTRIES.into())),
            Err(CabStop::SkipBudget) => Ok(Finding::Limit(LIMIT_TOTAL.into())),
            // A damaged table ends the cabinet: what came before was scanned.
            Err(CabStop::Damaged(_)) | Ok(()) => verdict,
        }
    }

    /// Whether an entry of `declared` bytes may be read: a bomb is refused
    /// on its declared size, before inflating (and a lying header on what
    /// actually comes out).
    fn declared(&self, declared: u64) -> Option<Finding> {
        if declared > self.limits.max_object_size {
            return Some(Finding::Limit(LIMIT_OBJECT.into()));
        }
        if self.total.saturating_add(declared) > self.limits.max_total_size {
            return Some(Finding::Limit(LIMIT_TOTAL.into()));
        }
        None
    }

    /// A 7z archive, block by block; in a solid block the entries stream
    /// one after the other out of one decoder (the block is never held).
    /// A block that cannot be decoded (encrypted, PPMd, damaged) is
    /// skipped: its packed bytes were matched as they are.
    fn sevenz(&mut self, spool: Spool, depth: usize) -> Scan {
        use sevenz_rust2::{Archive, BlockDecoder, Error, Password};
        let mut spool = std::io::BufReader::with_capacity(READ_CHUNK, spool);
        // The header, decoded, before the crate reads it: it allocates a
        // ~100-byte record per file the header declares, and bounds their
        // number only by the header's length (see sevenz.rs).
        let header = match sevenz::header_size(&mut spool) {
            Ok(Some(n)) => n,
            // Not a readable archive: its bytes were matched as they are.
            _ => return Ok(Finding::Clean),
        };
        let entries = self.limits.max_zip_entries as u64;
        if header
            > entries
                .saturating_mul(SEVENZ_HEADER_PER_ENTRY)
                .max(SEVENZ_HEADER_MIN)
        {
            return Ok(Finding::Limit(LIMIT_ENTRIES.into()));
        }
        let password = Password::empty();
        let archive = match Archive::read_with_memory_limit(&mut spool, &password, SEVENZ_DICT_KB) {
            Ok(a) => a,
            Err(Error::MaxMemLimited { .. }) => return Ok(Finding::Limit(LIMIT_OBJECT.into())),
            Err(_) => return Ok(Finding::Clean),
        };
        if archive.files.iter().filter(|f| f.has_stream()).count() > self.limits.max_zip_entries {
            return Ok(Finding::Limit(LIMIT_ENTRIES.into()));
        }
        for block in 0..archive.blocks.len() {
            let mut verdict = Ok(Finding::Clean);
            let decoder = BlockDecoder::new_with_memory_limit(
                1,
                SEVENZ_DICT_KB,
                block,
                &archive,
                &password,
                &mut spool,
            );
            let decoded = decoder.for_each_entries(&mut |entry, reader| {
                if !entry.has_stream() || entry.is_directory() {
                    return Ok(true);
                }
                verdict = match self.declared(entry.size()) {
                    Some(limit) => Ok(limit),
                    None => self.entry(reader, depth),
                };
                Ok(matches!(verdict, Ok(Finding::Clean)))
            });
            if let Err(Error::MaxMemLimited { .. }) = decoded {
                return Ok(Finding::Limit(LIMIT_OBJECT.into()));
            }
            // Other errors (a method not built in, damage, a CRC that
            // does not match) end the block: what came out was scanned.
            if !matches!(verdict, Ok(Finding::Clean)) {
                return verdict;
            }
        }
        Ok(Finding::Clean)
    }

    /// An OLE2 compound file: every stream is an object, and a
    /// PowerPoint document's embedded objects too (see ole2.rs).
    fn ole2(&mut self, spool: Spool, depth: usize) -> Scan {
        // Not a readable compound file: its bytes were matched as they are.
        let Ok(Some(mut ole)) = Ole2::open(spool) else {
            return Ok(Finding::Clean);
        };
        // A damaged directory ends the list: the streams before it are
        // scanned.
        let streams = ole.streams(self.limits.max_zip_entries);
        if streams.len() > self.limits.max_zip_entries {
            return Ok(Finding::Limit(LIMIT_ENTRIES.into()));
        }
        for s in &streams {
            if let Some(limit) = self.declared(s.size) {
                return Ok(limit);
            }
            let r = self.entry(ole.open_stream(s), depth)?;
            if r != Finding::Clean {
                return Ok(r);
            }
            if s.name == ole2::POWERPOINT_DOCUMENT {
                let r = self.ppt_objects(ole.open_stream(s), depth + 1)?;
                if r != Finding::Clean {
                    return Ok(r);
                }
            }
        }
        Ok(Finding::Clean)
    }

    /// The embedded objects of a PowerPoint Document stream, each an
    /// object at `depth`.
    fn ppt_objects(&mut self, mut stream: impl Read, depth: usize) -> Scan {
        if depth > self.limits.max_depth {
            return Ok(Finding::Limit(LIMIT_DEPTH.into()));
        }
        let mut verdict = Finding::Clean;
        ole2::ppt_objects(&mut stream, |object, data| {
            verdict = match object {
                PptObject::Stored(len) => match self.declared(len) {
                    Some(limit) => limit,
                    None => self.entry(data, depth)?,
                },
                PptObject::Zlib {
                    compressed,
                    declared,
                } => match self.declared(declared) {
                    Some(limit) => limit,
                    // What inflates past the declared size is not read.
                    None => self.entry(
                        flate2::read::ZlibDecoder::new(data.take(compressed)).take(declared),
                        depth,
                    )?,
                },
            };
            Ok(verdict == Finding::Clean)
        })?;
        Ok(verdict)
    }

    /// A Deflate64 zip entry, from its raw bytes: deflate64 builds its
    /// 128 KiB window on the stack, so only Deflate64 entries should pay
    /// for that frame.
    #[inline(never)]
    fn deflate64_entry(&mut self, raw: impl Read, depth: usize) -> Scan {
        self.entry(deflate64::Deflate64Decoder::new(raw), depth)
    }

    /// An entry decoded by the zip crate (the legacy methods: shrink,
    /// reduce, implode). Kept out of `zip` so that its frame stays small.
    #[inline(never)]
    fn zip_decoded_entry(&mut self, entry: impl Read, depth: usize) -> Scan {
        self.entry(entry, depth)
    }

    fn zip(&mut self, spool: Spool, depth: usize) -> Scan {
        // Not a readable archive: its bytes were matched as they are.
        let Ok(mut archive) = zip::ZipArchive::new(spool) else {
            return Ok(Finding::Clean);
        };
        if archive.len() > self.limits.max_zip_entries {
            return Ok(Finding::Limit(LIMIT_ENTRIES.into()));
        }
        for i in 0..archive.len() {
            // Encrypted entries and unsupported methods cannot be read.
            let method = match archive.by_index_raw(i) {
                Ok(e) if !e.encrypted() => e.compression(),
                _ => continue,
            };
            let decoder = zip_decoder(method);
            let entry = match decoder {
                ZipDecoder::Zip => archive.by_index(i),
                _ => archive.by_index_raw(i),
            };
            let Ok(entry) = entry else {
                continue;
            };
            if entry.is_dir() {
                continue;
            }
            if let Some(limit) = self.declared(entry.size()) {
                return Ok(limit);
            }
            // By value: the entry's decompressor is freed before what it
            // holds is unpacked.
            let r = match decoder {
                ZipDecoder::Stored => self.entry(entry, depth)?,
                ZipDecoder::Deflate => {
                    self.entry(flate2::read::DeflateDecoder::new(entry), depth)?
                }
                ZipDecoder::Bzip2 => self.entry(bzip2::read::BzDecoder::new(entry), depth)?,
                ZipDecoder::Deflate64 => self.deflate64_entry(entry, depth)?,
                ZipDecoder::Zip => self.zip_decoded_entry(entry, depth)?,
            };
            if r != Finding::Clean {
                return Ok(r);
            }
        }
        Ok(Finding::Clean)
    }
}
