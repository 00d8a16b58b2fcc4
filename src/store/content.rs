//! A message's content on its way into the store: the first chunks in
//! memory, the rest in an unlinked temporary file, so a session never holds
//! more than `limits.spool_memory` of a large message.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::CHUNK_SIZE;

/// A new file in `dir` that no other process can see: it is unlinked at
/// once, so a crash leaves nothing behind. `hint` goes into the short-lived
/// name.
pub fn unlinked_temp_file(dir: &std::path::Path, hint: &str) -> std::io::Result<File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "{hint}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[derive(Default)]
pub struct Content {
    /// Header fields added at delivery, stored as chunk 0 when present so
    /// the received body's chunks need not be cut again.
    pub(crate) prefix: Option<Vec<u8>>,
    /// Then chunks in memory.
    pub(crate) head: Vec<Vec<u8>>,
    /// Then `file_chunks` full chunks in the file, in order.
    pub(crate) file: Option<File>,
    pub(crate) file_chunks: u32,
    /// Then the last, partial chunk.
    pub(crate) tail: Option<Vec<u8>>,
}

impl Content {
    pub fn from_chunks(chunks: Vec<Vec<u8>>) -> Content {
        Content {
            head: chunks,
            ..Content::default()
        }
    }

    pub fn chunk_count(&self) -> u32 {
        self.prefix.is_some() as u32
            + self.head.len() as u32
            + self.file_chunks
            + self.tail.is_some() as u32
    }

    /// Chunk `i`: borrowed when in memory, read into `buf` from the spool
    /// file otherwise.
    fn chunk_at<'a>(&'a self, i: u32, buf: &'a mut Vec<u8>) -> Result<&'a [u8], super::StoreError> {
        let mut i = i as usize;
        if let Some(p) = &self.prefix {
            if i == 0 {
                return Ok(p);
            }
            i -= 1;
        }
        if let Some(c) = self.head.get(i) {
            return Ok(c);
        }
        i -= self.head.len();
        if let Some(file) = self.file.as_ref().filter(|_| i < self.file_chunks as usize) {
            buf.resize(CHUNK_SIZE, 0);
            file.read_exact_at(buf, i as u64 * CHUNK_SIZE as u64)
                .map_err(|e| super::StoreError::Db(format!("reading spooled message: {e}")))?;
            return Ok(buf);
        }
        match &self.tail {
            Some(t) if i == self.file_chunks as usize => Ok(t),
            _ => Err(super::StoreError::Invalid(format!("no chunk {i}"))),
        }
    }

    /// Calls `f` with each chunk in order. File chunks are read into one
    /// reused buffer.
    pub fn for_each_chunk(
        &self,
        mut f: impl FnMut(u32, &[u8]) -> Result<(), super::StoreError>,
    ) -> Result<(), super::StoreError> {
        let mut buf = Vec::new();
        for i in 0..self.chunk_count() {
            f(i, self.chunk_at(i, &mut buf)?)?;
        }
        Ok(())
    }

    /// [`Content::for_each_chunk`] that lets the executor run other tasks
    /// after every megabyte, for work such as hashing a large message.
    pub async fn for_each_chunk_yielding(
        &self,
        mut f: impl FnMut(u32, &[u8]) -> Result<(), super::StoreError>,
    ) -> Result<(), super::StoreError> {
        let mut buf = Vec::new();
        for i in 0..self.chunk_count() {
            f(i, self.chunk_at(i, &mut buf)?)?;
            if i % 16 == 15 {
                futures_lite::future::yield_now().await;
            }
        }
        Ok(())
    }

    /// Overwrites bytes at `offset` of the content (which must not change
    /// its length or cross the prefix), in memory or in the spool file.
    pub fn patch(&mut self, offset: u64, bytes: &[u8]) {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut at = offset.saturating_sub(prefix);
        let mut bytes = bytes;
        // Chunks in memory, then the file, then the tail, as for_each_chunk.
        for c in &mut self.head {
            if bytes.is_empty() {
                return;
            }
            let len = c.len() as u64;
            if at < len {
                let n = ((len - at) as usize).min(bytes.len());
                c[at as usize..at as usize + n].copy_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                at = 0;
            } else {
                at -= len;
            }
        }
        if let Some(file) = &self.file {
            let file_len = self.file_chunks as u64 * CHUNK_SIZE as u64;
            if at < file_len && !bytes.is_empty() {
                let n = ((file_len - at) as usize).min(bytes.len());
                let _ = file.write_all_at(&bytes[..n], at);
                bytes = &bytes[n..];
                at = 0;
            } else {
                at = at.saturating_sub(file_len);
            }
        }
        if let Some(t) = &mut self.tail
            && !bytes.is_empty()
            && at < t.len() as u64
        {
            let n = (t.len() - at as usize).min(bytes.len());
            t[at as usize..at as usize + n].copy_from_slice(&bytes[..n]);
        }
    }

    /// The whole content (tests and small messages only).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = self.for_each_chunk(|_, c| {
            v.extend_from_slice(c);
            Ok(())
        });
        v
    }
}
