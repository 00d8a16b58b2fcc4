//! One object (a decoded part, an archive entry, a uuencoded file, a whole
//! message) streamed through every check as its bytes arrive: hashes,
//! body signatures in overlapping windows, normalised text, and a copy of
//! archives for unpacking once complete. Memory is a window and a head per
//! object, whatever the object's size.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::database::Database;
use super::hashes::HashMatch;
use super::matcher::{Chains, ObjectKind, Window};
use super::signature::HashKind;

/// New bytes matched per window (plus what the previous window carries).
pub const WINDOW: usize = 64 * 1024;
/// The first bytes of an object, kept to recognise what it is.
pub const HEAD: usize = 1024;
/// An archive is copied to memory up to this size, then to a temporary
/// file (unlinked: nothing is left behind).
const SPOOL_MEMORY: usize = 64 * 1024;

/// Hashes of one object, computed only for kinds that have signatures.
pub struct Hashers {
    md5: Option<Md5>,
    sha1: Option<Sha1>,
    sha256: Option<Sha256>,
}

impl Hashers {
    pub fn new(db: &Database) -> Hashers {
        Hashers {
            md5: db.hashes.has(HashKind::Md5).then(Md5::new),
            sha1: db.hashes.has(HashKind::Sha1).then(Sha1::new),
            sha256: db.hashes.has(HashKind::Sha256).then(Sha256::new),
        }
    }

    pub fn update(&mut self, b: &[u8]) {
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

    pub fn check(self, db: &Database, size: u64) -> Result<HashMatch, String> {
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

/// Body-signature matching over a stream in windows that overlap by what
/// the loaded signatures need (`BodyMatcher::keep`).
pub struct WindowStream {
    kind: ObjectKind,
    /// New bytes per window: `WINDOW` (smaller in tests).
    window: usize,
    buf: Vec<u8>,
    /// Offset of `buf[0]` in the stream.
    base: u64,
    /// Bytes at the end of `buf` not yet matched in a window.
    fresh: usize,
    chains: Chains,
    pub found: Option<String>,
}

impl WindowStream {
    pub fn new(kind: ObjectKind) -> WindowStream {
        WindowStream::with_window(kind, WINDOW)
    }

    pub fn with_window(kind: ObjectKind, window: usize) -> WindowStream {
        WindowStream {
            kind,
            window: window.max(1),
            buf: Vec::new(),
            base: 0,
            fresh: 0,
            chains: Chains::default(),
            found: None,
        }
    }

    pub fn push(&mut self, db: &Database, mut bytes: &[u8]) {
        let keep = db.body.keep();
        while !bytes.is_empty() && self.found.is_none() {
            let full = self.window + keep;
            let room = full.saturating_sub(self.buf.len());
            let take = room.min(bytes.len());
            if self.buf.len() + take > self.buf.capacity() {
                // Small objects get a small buffer; past that, the whole
                // window at once (not doubling past it).
                let want = if self.buf.is_empty() {
                    take.max(4096)
                } else {
                    full
                };
                self.buf.reserve_exact(want.min(full) - self.buf.len());
            }
            self.buf.extend_from_slice(&bytes[..take]);
            self.fresh += take;
            bytes = &bytes[take..];
            if self.buf.len() >= full {
                self.match_window(db, None);
                let drop = self.buf.len() - keep;
                self.buf.drain(..drop);
                self.base += drop as u64;
            }
        }
    }

    fn match_window(&mut self, db: &Database, total: Option<u64>) {
        if self.found.is_some() || (self.fresh == 0 && total.is_none()) {
            return;
        }
        self.fresh = 0;
        let w = Window {
            data: &self.buf,
            base: self.base,
            total,
            carried: if total.is_some() {
                0
            } else {
                db.body.overlap()
            },
            kind: self.kind,
        };
        let skip = |n: &str| db.is_ignored(n);
        if let Some(n) = db.body.scan(&w, &mut self.chains, &skip) {
            self.found = Some(n.to_string());
        }
    }

    /// The last window, where `EOF-n` signatures are matched too.
    pub fn finish(&mut self, db: &Database) {
        let total = self.base + self.buf.len() as u64;
        self.match_window(db, Some(total));
        self.buf = Vec::new();
    }
}

/// Target-type-7 text: ASCII lowercased and every run of whitespace as one
/// space (an approximation of ClamAV's normaliser), matched as a stream of
/// its own.
pub struct TextStream {
    window: WindowStream,
    space: bool,
    scratch: Vec<u8>,
}

impl TextStream {
    pub fn new() -> TextStream {
        TextStream {
            window: WindowStream::new(ObjectKind::Text),
            space: false,
            scratch: Vec::new(),
        }
    }

    pub fn push(&mut self, db: &Database, bytes: &[u8]) {
        self.scratch.clear();
        for &b in bytes {
            if b.is_ascii_whitespace() {
                if !self.space {
                    self.scratch.push(b' ');
                }
                self.space = true;
            } else {
                self.scratch.push(b.to_ascii_lowercase());
                self.space = false;
            }
        }
        self.window.push(db, &self.scratch);
    }

    pub fn finish(&mut self, db: &Database) -> Option<String> {
        self.window.finish(db);
        self.window.found.take()
    }
}

/// A copy of an object to unpack once it is complete: in memory while
/// small, then in an unlinked temporary file.
pub enum Spool {
    Memory(Cursor<Vec<u8>>),
    File(File),
}

impl Spool {
    pub fn new() -> Spool {
        Spool::Memory(Cursor::new(Vec::new()))
    }

    pub fn write(&mut self, db: &Database, bytes: &[u8]) -> std::io::Result<()> {
        if let Spool::Memory(c) = self {
            if c.get_ref().len() + bytes.len() <= SPOOL_MEMORY {
                c.get_mut().extend_from_slice(bytes);
                return Ok(());
            }
            let mut f = crate::store::content::unlinked_temp_file(&db.work_dir, "scan-spool")?;
            f.write_all(c.get_ref())?;
            *self = Spool::File(f);
        }
        match self {
            Spool::File(f) => f.write_all(bytes),
            Spool::Memory(_) => Ok(()),
        }
    }

    /// Ready to be read from the start.
    pub fn rewind(mut self) -> std::io::Result<Spool> {
        self.seek(SeekFrom::Start(0))?;
        Ok(self)
    }
}

impl Read for Spool {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Spool::Memory(c) => c.read(buf),
            Spool::File(f) => f.read(buf),
        }
    }
}

impl Seek for Spool {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match self {
            Spool::Memory(c) => c.seek(pos),
            Spool::File(f) => f.seek(pos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::matcher::BodyMatcher;
    use super::super::signature::{Token, parse_ndb};
    use super::*;
    use proptest::prelude::*;

    /// The whole-buffer reference: backtracking over every gap, bounded or
    /// not, with no budget.
    fn reference(tokens: &[Token], data: &[u8], at: usize) -> bool {
        let Some((first, rest)) = tokens.split_first() else {
            return true;
        };
        match first {
            Token::Fixed(b) => data.get(at..at + b.len()).is_some_and(|s| {
                s.iter().zip(b).all(|(&d, &(v, m))| d & m == v & m)
                    && reference(rest, data, at + b.len())
            }),
            Token::Alt(alts) => alts.iter().any(|a| {
                data.get(at..at + a.len()) == Some(a.as_slice())
                    && reference(rest, data, at + a.len())
            }),
            Token::Gap { min, max } => {
                let lo = at + *min as usize;
                let hi = max.map_or(data.len(), |m| (at + m as usize).min(data.len()));
                (lo..=hi).any(|p| reference(rest, data, p))
            }
        }
    }

    fn db_with(sig: &str) -> Database {
        let mut db = Database::builtin().unwrap();
        db.body = BodyMatcher::new(vec![parse_ndb(sig).unwrap().unwrap()]).unwrap();
        db
    }

    fn streamed(db: &Database, data: &[u8], window: usize, piece: usize) -> bool {
        let mut w = WindowStream::with_window(ObjectKind::Other, window);
        for p in data.chunks(piece.max(1)) {
            w.push(db, p);
        }
        w.finish(db);
        w.found.is_some()
    }

    #[test]
    fn a_signature_with_stars_is_found_across_many_windows() {
        let db = db_with("S:0:*:414243*44454647{3-}48494a");
        let mut data = vec![b'.'; 10_000];
        data[10..13].copy_from_slice(b"ABC");
        data[5000..5004].copy_from_slice(b"DEFG");
        data[9000..9003].copy_from_slice(b"HIJ");
        assert!(streamed(&db, &data, 64, 100));
        // The parts out of order are no match.
        data[5000..5004].copy_from_slice(b"....");
        data[20..24].copy_from_slice(b"DEFG");
        data[12] = b'.';
        data[8000..8003].copy_from_slice(b"ABC");
        assert!(!streamed(&db, &data, 64, 100));
    }

    #[test]
    fn eof_offsets_are_matched_in_the_kept_tail() {
        let db = db_with("S:0:EOF-5000:41424344");
        let mut data = vec![b'.'; 20_000];
        data[15_000..15_004].copy_from_slice(b"ABCD");
        assert!(streamed(&db, &data, 100, 333));
        data.push(b'.');
        assert!(!streamed(&db, &data, 100, 333));
    }

    #[test]
    fn text_is_normalised_across_pushes() {
        let db = db_with("T:7:*:6120622063");
        let mut t = TextStream::new();
        t.push(&db, b"xx A \r\n");
        t.push(&db, b"\t B   C");
        assert!(t.finish(&db).is_some());
    }

    proptest! {
        /// Any window size and any chunking find what matching the whole
        /// buffer finds.
        #[test]
        fn windows_agree_with_the_whole_buffer(
            hex in "4142(43|\\?\\?|4\\?|\\*|\\{[0-3]\\}|\\{-[0-3]\\}|\\{[0-3]-\\}|\\{1-3\\}|\\(44\\|4546\\)){0,6}47",
            offset in "\\*|[0-9]|[0-9],[0-9]|EOF-[0-9]{1,2}",
            data in proptest::collection::vec(0x40u8..0x48, 0..300),
            window in 1usize..40,
            piece in 1usize..50,
        ) {
            let sig = parse_ndb(&format!("P:0:{offset}:{hex}")).unwrap().unwrap();
            let db = db_with(&format!("P:0:{offset}:{hex}"));
            let total = data.len() as u64;
            let want = (0..=data.len()).any(|s| {
                let at = s as u64;
                let placed = match sig.offset {
                    super::super::signature::Offset::Any => true,
                    super::super::signature::Offset::Start(n, sh) => at >= n && at - n <= sh,
                    super::super::signature::Offset::End(n, sh) => {
                        total.checked_sub(n).is_some_and(|f| at >= f && at - f <= sh)
                    }
                };
                placed && reference(&sig.tokens, &data, s)
            });
            prop_assert_eq!(streamed(&db, &data, window, piece), want);
        }
    }
}
