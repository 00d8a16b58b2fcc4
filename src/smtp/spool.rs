//! A message being received: cut into store-sized chunks as it arrives,
//! hashed, and scanned for its MIME structure in the same pass, so it is
//! never copied whole or parsed twice. Past `memory_limit` bytes the chunks
//! go to an unlinked temporary file, so memory per session stays bounded
//! whatever the message size.
//!
//! The header fields we add at delivery (trace, spam verdict...) depend on
//! the whole message, so they are not part of the spool: [`Body::store`]
//! puts them in front as a chunk of their own.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::message::{MessageMeta, ScanLimits, StructureScanner};
use crate::store::content::Content;
use crate::store::{BlobId, CHUNK_SIZE};

pub struct Spool {
    content: Content,
    /// The chunk being filled.
    current: Vec<u8>,
    hasher: Sha256,
    scanner: StructureScanner,
    size: u64,
    limit: u64,
    memory_limit: usize,
    spool_dir: Option<PathBuf>,
    /// More than `limit` bytes arrived; the excess was dropped.
    pub overflow: bool,
    /// Writing the temporary file failed; the message cannot be stored.
    pub error: Option<String>,
}

/// The message as the client sent it, fully received and scanned: what
/// inspection (attachment scanning, spam filtering) looks at.
pub struct Body {
    pub content: Content,
    pub size: u64,
    pub meta: MessageMeta,
    hash: [u8; 32],
}

/// The content to store: prefix and body, with its address and metadata.
pub struct Spooled {
    pub blob: BlobId,
    pub content: Content,
    pub size: u64,
    pub meta: Vec<u8>,
}

impl Spool {
    /// `spool_dir` None keeps everything in memory (tests, small tools).
    pub fn new(limit: u64, memory_limit: usize, spool_dir: Option<PathBuf>) -> Spool {
        Spool {
            content: Content::default(),
            current: Vec::new(),
            hasher: Sha256::new(),
            scanner: StructureScanner::new(ScanLimits::default()),
            size: 0,
            limit,
            memory_limit,
            spool_dir,
            overflow: false,
            error: None,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.overflow || self.error.is_some() {
            return;
        }
        if self.size + bytes.len() as u64 > self.limit {
            self.overflow = true;
            // Free what we hold now: the message will be refused.
            self.content = Content::default();
            self.current = Vec::new();
            return;
        }
        self.size += bytes.len() as u64;
        self.hasher.update(bytes);
        self.scanner.feed(bytes);
        while !bytes.is_empty() {
            if self.current.capacity() == 0 {
                // Small messages get a small first chunk.
                let cap = if self.size <= CHUNK_SIZE as u64 {
                    bytes.len().clamp(1024, CHUNK_SIZE)
                } else {
                    CHUNK_SIZE
                };
                self.current.reserve_exact(cap);
            }
            let take = (CHUNK_SIZE - self.current.len()).min(bytes.len());
            self.current.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.current.len() == CHUNK_SIZE {
                self.store_full_chunk();
            }
        }
    }

    fn store_full_chunk(&mut self) {
        let in_memory = self.content.head.len() * CHUNK_SIZE;
        let Some(dir) = self
            .spool_dir
            .as_ref()
            .filter(|_| in_memory + CHUNK_SIZE > self.memory_limit)
        else {
            self.content.head.push(std::mem::take(&mut self.current));
            return;
        };
        if self.content.file.is_none() {
            match crate::store::content::unlinked_temp_file(dir, "spool") {
                Ok(f) => self.content.file = Some(f),
                Err(e) => {
                    self.error = Some(format!("{}: {e}", dir.display()));
                    return;
                }
            }
        }
        let Some(file) = &self.content.file else {
            return;
        };
        let offset = self.content.file_chunks as u64 * CHUNK_SIZE as u64;
        match file.write_all_at(&self.current, offset) {
            Ok(()) => {
                self.content.file_chunks += 1;
                // Keep the buffer for the next chunk.
                self.current.clear();
            }
            Err(e) => self.error = Some(format!("{}: {e}", dir.display())),
        }
    }

    /// Ends reception. Fails if the temporary file could not be written.
    pub fn finish(mut self) -> Result<Body, String> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if !self.current.is_empty() {
            self.content.tail = Some(std::mem::take(&mut self.current));
        }
        Ok(Body {
            hash: self.hasher.finalize().into(),
            meta: self.scanner.finish(),
            content: self.content,
            size: self.size,
        })
    }
}

impl Body {
    /// Puts `prefix` (header fields, CRLF-terminated) in front of the body.
    /// The content address is SHA-256 over a domain tag, the prefix and the
    /// body's own SHA-256, so the body is never hashed twice.
    pub fn store(self, prefix: Vec<u8>) -> Spooled {
        let mut h = Sha256::new();
        h.update(b"pimail-blob-1\0");
        h.update((prefix.len() as u64).to_le_bytes());
        h.update(&prefix);
        h.update(self.hash);
        let mut meta = self.meta;
        meta.prepend_header(prefix.len() as u64);
        let mut content = self.content;
        let size = self.size + prefix.len() as u64;
        if !prefix.is_empty() {
            content.prefix = Some(prefix);
        }
        Spooled {
            blob: h.finalize().into(),
            content,
            size,
            meta: meta.encode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn chunks_and_hash_in_memory() {
        let mut s = Spool::new(10 << 20, usize::MAX, None);
        let data = data(CHUNK_SIZE * 2 + 5);
        for piece in data.chunks(1000) {
            s.push(piece);
        }
        let body = s.finish().unwrap();
        assert_eq!(body.size, data.len() as u64);
        assert_eq!(body.content.to_vec(), data);
        let expected: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(body.hash, expected);
        let stored = body.store(Vec::new());
        assert_eq!(stored.content.chunk_count(), 3);
        assert_eq!(stored.content.to_vec(), data);
    }

    #[test]
    fn prefix_goes_in_front_and_shifts_the_structure() {
        let msg = b"Subject: x\r\nContent-Type: text/plain\r\n\r\nhello\r\n";
        let mut s = Spool::new(1 << 20, usize::MAX, None);
        s.push(msg);
        let body = s.finish().unwrap();
        let body_start = body.meta.root.body_start;
        let prefix = b"Received: from x\r\n".to_vec();
        let n = prefix.len() as u64;
        let stored = body.store(prefix.clone());
        let mut all = prefix;
        all.extend_from_slice(msg);
        assert_eq!(stored.content.to_vec(), all);
        assert_eq!(stored.size, all.len() as u64);
        let meta = MessageMeta::decode(&stored.meta).unwrap();
        assert_eq!(meta.root.header_start, 0);
        assert_eq!(meta.root.body_start, body_start + n);
        assert_eq!(&all[meta.root.body_start as usize..], b"hello\r\n");
        // Same content, same address; different prefix, different address.
        let again = |p: &[u8]| {
            let mut s = Spool::new(1 << 20, usize::MAX, None);
            s.push(msg);
            s.finish().unwrap().store(p.to_vec()).blob
        };
        assert_eq!(again(b"A: 1\r\n"), again(b"A: 1\r\n"));
        assert_ne!(again(b"A: 1\r\n"), again(b"A: 2\r\n"));
    }

    #[test]
    fn large_messages_spill_to_a_file() {
        let dir = std::env::temp_dir().join(format!("pimail-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Spool::new(10 << 20, CHUNK_SIZE, Some(dir.clone()));
        let data = data(CHUNK_SIZE * 5 + 77);
        for piece in data.chunks(4000) {
            s.push(piece);
        }
        let body = s.finish().unwrap();
        assert_eq!(body.content.head.len(), 1);
        assert_eq!(body.content.file_chunks, 4);
        assert!(body.content.tail.is_some());
        assert_eq!(body.content.to_vec(), data);
        // The yielding walk sees the same chunks, memory and file alike.
        let mut walked = Vec::new();
        let mut indexes = Vec::new();
        async_io::block_on(body.content.for_each_chunk_yielding(|i, c| {
            indexes.push(i);
            walked.extend_from_slice(c);
            Ok(())
        }))
        .unwrap();
        assert_eq!(walked, data);
        assert_eq!(indexes, (0..6).collect::<Vec<u32>>());
        // The file is unlinked: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn overflow_drops_content() {
        let mut s = Spool::new(100, usize::MAX, None);
        s.push(&[b'a'; 60]);
        assert!(!s.overflow);
        s.push(&[b'a'; 60]);
        assert!(s.overflow);
        assert_eq!(s.finish().unwrap().content.chunk_count(), 0);
    }
}
