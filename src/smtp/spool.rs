//! A message being received: cut into store-sized chunks as it arrives,
//! hashed, and scanned for its MIME structure in the same pass, so it is
//! never copied whole or parsed twice.

use sha2::{Digest, Sha256};

use crate::message::{ScanLimits, StructureScanner};
use crate::store::{BlobId, CHUNK_SIZE};

pub struct Spool {
    chunks: Vec<Vec<u8>>,
    hasher: Sha256,
    scanner: StructureScanner,
    size: u64,
    limit: u64,
    /// More than `limit` bytes arrived; the excess was dropped.
    pub overflow: bool,
}

/// The finished content, ready for the store.
pub struct Spooled {
    pub blob: BlobId,
    pub chunks: Vec<Vec<u8>>,
    pub size: u64,
    pub meta: Vec<u8>,
}

impl Spool {
    pub fn new(limit: u64) -> Spool {
        Spool {
            chunks: Vec::new(),
            hasher: Sha256::new(),
            scanner: StructureScanner::new(ScanLimits::default()),
            size: 0,
            limit,
            overflow: false,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if self.size + bytes.len() as u64 > self.limit {
            self.overflow = true;
            // Free what we hold now: the message will be refused.
            self.chunks = Vec::new();
            return;
        }
        self.size += bytes.len() as u64;
        self.hasher.update(bytes);
        self.scanner.feed(bytes);
        while !bytes.is_empty() {
            let need_new = self.chunks.last().is_none_or(|c| c.len() == CHUNK_SIZE);
            if need_new {
                // Small messages get a small first chunk; later ones are full.
                let cap = if self.chunks.is_empty() {
                    bytes.len().clamp(1024, CHUNK_SIZE)
                } else {
                    CHUNK_SIZE
                };
                self.chunks.push(Vec::with_capacity(cap));
            }
            let Some(chunk) = self.chunks.last_mut() else {
                break;
            };
            let take = (CHUNK_SIZE - chunk.len()).min(bytes.len());
            chunk.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    pub fn finish(self) -> Spooled {
        Spooled {
            blob: self.hasher.finalize().into(),
            meta: self.scanner.finish().encode(),
            chunks: self.chunks,
            size: self.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_hash() {
        let mut s = Spool::new(10 << 20);
        let data: Vec<u8> = (0..CHUNK_SIZE * 2 + 5).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(1000) {
            s.push(piece);
        }
        let out = s.finish();
        assert_eq!(out.size, data.len() as u64);
        assert_eq!(out.chunks.len(), 3);
        assert!(out.chunks.iter().all(|c| c.len() <= CHUNK_SIZE));
        assert_eq!(out.chunks.concat(), data);
        let expected: BlobId = Sha256::digest(&data).into();
        assert_eq!(out.blob, expected);
    }

    #[test]
    fn overflow_drops_content() {
        let mut s = Spool::new(100);
        s.push(&[b'a'; 60]);
        assert!(!s.overflow);
        s.push(&[b'a'; 60]);
        assert!(s.overflow);
        assert!(s.chunks.is_empty());
    }
}
