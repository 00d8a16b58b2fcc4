//! Hash signatures on disk, not in RAM: a file of fixed-size records sorted
//! by (kind, hash), looked up by binary search with positioned reads, and a
//! file of names. Memory stays flat whether there are ten hashes or ten
//! million; the kernel's page cache (reclaimable, outside our RSS) keeps hot
//! pages. Building sorts runs of `RUN_RECORDS` in memory and merges them
//! from temporary files (an external sort), so loading is bounded too.
//!
//! Both files are unlinked as soon as they are open: a crash leaves nothing
//! behind and a reload never disturbs scans still using the old ones.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::signature::{HashKind, HashSignature};

/// kind (1) + hash (32, zero-padded) + allow flag (1) + size (8, LE,
/// u64::MAX for any) + name offset (4, LE) + padding (2).
const RECORD: usize = 48;
/// Sort key: kind and hash.
const KEY: usize = 33;
const ANY_SIZE: u64 = u64::MAX;
/// Records sorted in memory at once while building (768 KiB).
const RUN_RECORDS: usize = 16384;
/// Runs merged into one at a time: bounds the files open and the reader
/// buffers (`MERGE_BUFFER` each) during a merge. Runs are merged in tiers,
/// like a counter in this base, so each record is rewritten once per tier.
const MERGE_WIDTH: usize = 32;
const MERGE_BUFFER: usize = 4096;
/// Longest name read back.
const MAX_NAME: usize = 512;

/// Builds an index from signatures fed one at a time.
pub struct HashIndexBuilder {
    dir: PathBuf,
    tag: String,
    run: Vec<[u8; RECORD]>,
    /// Sorted runs on disk with their tier (how many merges made them).
    runs: Vec<(File, u32)>,
    names: BufWriter<File>,
    names_len: u64,
    counts: [u64; 4],
}

/// A built index. Lookups take `&self` and may run on several threads.
pub struct HashIndex {
    records: Option<File>,
    len: u64,
    names: Option<File>,
    counts: [u64; 4],
}

fn temp(dir: &Path, tag: &str, what: &str) -> std::io::Result<File> {
    crate::store::content::unlinked_temp_file(dir, &format!("scan-{tag}-{what}"))
}

fn record(
    kind: HashKind,
    hash: &[u8],
    allow: bool,
    size: Option<u64>,
    name_off: u32,
) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0] = kind as u8;
    r[1..1 + hash.len()].copy_from_slice(hash);
    r[33] = allow as u8;
    r[34..42].copy_from_slice(&size.unwrap_or(ANY_SIZE).to_le_bytes());
    r[42..46].copy_from_slice(&name_off.to_le_bytes());
    r
}

fn key(kind: HashKind, hash: &[u8]) -> [u8; KEY] {
    let mut k = [0u8; KEY];
    k[0] = kind as u8;
    k[1..1 + hash.len()].copy_from_slice(hash);
    k
}

impl HashIndexBuilder {
    /// Temporary files go to `dir` (on disk, not tmpfs, for the memory
    /// figures to hold).
    pub fn new(dir: &Path) -> std::io::Result<HashIndexBuilder> {
        let tag = "hash".to_string();
        Ok(HashIndexBuilder {
            names: BufWriter::new(temp(dir, &tag, "names")?),
            dir: dir.to_path_buf(),
            tag,
            run: Vec::new(),
            runs: Vec::new(),
            names_len: 0,
            counts: [0; 4],
        })
    }

    /// Adds a signature; `allow` for false-positive lists (.fp/.sfp).
    pub fn add(&mut self, sig: &HashSignature, allow: bool) -> std::io::Result<()> {
        let name_off = u32::try_from(self.names_len)
            .map_err(|_| std::io::Error::other("signature names exceed 4 GiB"))?;
        let name = &sig.name.as_bytes()[..sig.name.len().min(MAX_NAME - 1)];
        self.names.write_all(name)?;
        self.names.write_all(b"\n")?;
        self.names_len += name.len() as u64 + 1;
        if self.run.capacity() == 0 {
            // One allocation of the whole run, not a doubling series.
            self.run.reserve_exact(RUN_RECORDS);
        }
        self.run
            .push(record(sig.kind, &sig.hash, allow, sig.size, name_off));
        self.counts[sig.kind as usize] += 1;
        if self.run.len() >= RUN_RECORDS {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes out the records in memory and frees their buffer: called at
    /// the end of each signature file, so that loading body signatures
    /// afterwards does not hold it too.
    pub fn end_file(&mut self) -> std::io::Result<()> {
        if self.run.is_empty() {
            self.run = Vec::new();
            return Ok(());
        }
        self.spill()
    }

    fn spill(&mut self) -> std::io::Result<()> {
        self.run.sort_unstable_by(|a, b| a[..KEY].cmp(&b[..KEY]));
        let f = temp(&self.dir, &self.tag, "run")?;
        let mut w = BufWriter::new(f);
        for r in &self.run {
            w.write_all(r)?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        self.runs.push((f, 0));
        self.run = Vec::new();
        // Merge the last MERGE_WIDTH runs while they are of one tier.
        while self.runs.len() >= MERGE_WIDTH {
            let from = self.runs.len() - MERGE_WIDTH;
            let tier = self.runs[from].1;
            if self.runs[from..].iter().any(|r| r.1 != tier) {
                break;
            }
            let group = self.runs.drain(from..).map(|r| r.0).collect();
            let merged = merge(&self.dir, &self.tag, group)?;
            self.runs.push((merged, tier + 1));
        }
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<HashIndex> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return Ok(HashIndex {
                records: None,
                len: 0,
                names: None,
                counts: self.counts,
            });
        }
        if !self.run.is_empty() {
            self.spill()?;
        }
        let names = self.names.into_inner().map_err(|e| e.into_error())?;
        let records = if self.runs.len() == 1 {
            self.runs.remove(0).0
        } else {
            let runs = std::mem::take(&mut self.runs);
            merge(
                &self.dir,
                &self.tag,
                runs.into_iter().map(|r| r.0).collect(),
            )?
        };
        Ok(HashIndex {
            records: Some(records),
            len: total,
            names: Some(names),
            counts: self.counts,
        })
    }
}

/// K-way merge of sorted runs into one file.
fn merge(dir: &Path, tag: &str, runs: Vec<File>) -> std::io::Result<File> {
    struct Head([u8; RECORD], usize);
    impl PartialEq for Head {
        fn eq(&self, o: &Self) -> bool {
            self.cmp(o) == Ordering::Equal
        }
    }
    impl Eq for Head {}
    impl PartialOrd for Head {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Head {
        // Reversed: BinaryHeap is a max-heap.
        fn cmp(&self, o: &Self) -> Ordering {
            o.0[..KEY].cmp(&self.0[..KEY]).then(o.1.cmp(&self.1))
        }
    }
    let mut readers: Vec<BufReader<std::io::Take<File>>> = Vec::new();
    for f in runs {
        let len = f.metadata()?.len();
        let mut f = f;
        std::io::Seek::rewind(&mut f)?;
        readers.push(BufReader::with_capacity(MERGE_BUFFER, f.take(len)));
    }
    let mut heap = BinaryHeap::new();
    let next = |r: &mut BufReader<_>| -> std::io::Result<Option<[u8; RECORD]>> {
        let mut rec = [0u8; RECORD];
        match r.read_exact(&mut rec) {
            Ok(()) => Ok(Some(rec)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    };
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(rec) = next(r)? {
            heap.push(Head(rec, i));
        }
    }
    let mut out = BufWriter::new(temp(dir, tag, "index")?);
    while let Some(Head(rec, i)) = heap.pop() {
        out.write_all(&rec)?;
        if let Some(rec) = next(&mut readers[i])? {
            heap.push(Head(rec, i));
        }
    }
    out.into_inner().map_err(|e| e.into_error())
}

/// A hash lookup's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashMatch {
    None,
    /// On an allow-list (.fp/.sfp): the object is clean whatever else matches.
    Allowed,
    Found(String),
}

impl HashIndex {
    pub fn empty() -> HashIndex {
        HashIndex {
            records: None,
            len: 0,
            names: None,
            counts: [0; 4],
        }
    }

    #[cfg(test)]
    fn len(&self) -> u64 {
        self.len
    }

    /// Whether any signature of this kind exists (so the hash need not be
    /// computed otherwise).
    pub fn has(&self, kind: HashKind) -> bool {
        self.counts[kind as usize] > 0
    }

    fn read(&self, i: u64) -> std::io::Result<[u8; RECORD]> {
        let mut r = [0u8; RECORD];
        if let Some(f) = &self.records {
            f.read_exact_at(&mut r, i * RECORD as u64)?;
        }
        Ok(r)
    }

    fn name(&self, off: u32) -> std::io::Result<String> {
        let Some(f) = &self.names else {
            return Ok(String::new());
        };
        let mut buf = [0u8; MAX_NAME];
        let n = f.read_at(&mut buf, off as u64)?;
        let end = buf[..n].iter().position(|&b| b == b'\n').unwrap_or(n);
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// Looks up an object's hash and size.
    pub fn lookup(&self, kind: HashKind, hash: &[u8], size: u64) -> std::io::Result<HashMatch> {
        if !self.has(kind) {
            return Ok(HashMatch::None);
        }
        let want = key(kind, hash);
        // Lower bound.
        let (mut lo, mut hi) = (0u64, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.read(mid)?[..KEY] < want[..] {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut found = None;
        let mut i = lo;
        while i < self.len {
            let r = self.read(i)?;
            if r[..KEY] != want[..] {
                break;
            }
            let sig_size = u64::from_le_bytes(r[34..42].try_into().unwrap_or([0; 8]));
            if sig_size == ANY_SIZE || sig_size == size {
                if r[33] == 1 {
                    return Ok(HashMatch::Allowed);
                }
                if found.is_none() {
                    found = Some(u32::from_le_bytes(r[42..46].try_into().unwrap_or([0; 4])));
                }
            }
            i += 1;
        }
        match found {
            Some(off) => Ok(HashMatch::Found(self.name(off)?)),
            None => Ok(HashMatch::None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(kind: HashKind, n: u32, size: Option<u64>) -> HashSignature {
        let mut hash = vec![0u8; kind.digest_len()];
        hash[..4].copy_from_slice(&n.to_be_bytes());
        hash[kind.digest_len() - 1] = 0x5a;
        HashSignature {
            kind,
            hash,
            size,
            name: format!("Sig.{n}"),
        }
    }

    #[test]
    fn spilled_runs_merge_into_one_sorted_index() {
        let dir = std::env::temp_dir();
        let mut b = HashIndexBuilder::new(&dir).unwrap();
        // Out of order, enough runs for a merge tier.
        let n = (RUN_RECORDS * (MERGE_WIDTH + 2)) as u32 + 17;
        for i in 0..n {
            let k = (i.wrapping_mul(2_654_435_761)) % n;
            b.add(&sig(HashKind::Md5, k, Some(k as u64)), false)
                .unwrap();
        }
        b.add(&sig(HashKind::Sha256, 7, None), false).unwrap();
        let idx = b.finish().unwrap();
        assert_eq!(idx.len(), n as u64 + 1);
        for k in [0u32, 1, 12345, n - 1] {
            let s = sig(HashKind::Md5, k, None);
            assert_eq!(
                idx.lookup(HashKind::Md5, &s.hash, k as u64).unwrap(),
                HashMatch::Found(format!("Sig.{k}"))
            );
            assert_eq!(
                idx.lookup(HashKind::Md5, &s.hash, k as u64 + 1).unwrap(),
                HashMatch::None
            );
        }
        let s = sig(HashKind::Sha256, 7, None);
        assert_eq!(
            idx.lookup(HashKind::Sha256, &s.hash, 999).unwrap(),
            HashMatch::Found("Sig.7".into())
        );
        assert!(!idx.has(HashKind::Sha1));
        let s = sig(HashKind::Md5, n + 5, None);
        assert_eq!(
            idx.lookup(HashKind::Md5, &s.hash, 1).unwrap(),
            HashMatch::None
        );
    }

    #[test]
    fn allow_list_wins() {
        let dir = std::env::temp_dir();
        let mut b = HashIndexBuilder::new(&dir).unwrap();
        b.add(&sig(HashKind::Sha1, 3, Some(10)), false).unwrap();
        b.add(&sig(HashKind::Sha1, 3, None), true).unwrap();
        let idx = b.finish().unwrap();
        let s = sig(HashKind::Sha1, 3, None);
        assert_eq!(
            idx.lookup(HashKind::Sha1, &s.hash, 10).unwrap(),
            HashMatch::Allowed
        );
    }
}
