//! `pimail scan [--signatures DIR] PATH...`: clamscan-style lines,
//! `<path>: OK` or `<path>: <Signature> FOUND` on standard output, and
//! clamscan's exit codes (0 clean, 1 found, 2 errors).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Database, Finding, Limits, MessageSource, Walker, structure};

/// What one run found.
#[derive(Debug, Default)]
pub struct Summary {
    pub scanned: u64,
    pub found: u64,
    pub errors: u64,
    pub bytes: u64,
}

impl Summary {
    /// clamscan's exit code: 1 if anything was found, else 2 on errors,
    /// else 0.
    pub fn exit_code(&self) -> u8 {
        if self.found > 0 {
            1
        } else if self.errors > 0 {
            2
        } else {
            0
        }
    }
}

/// Loads `signatures` (hash index in `work_dir`), scans `paths` and writes
/// one line per file to `out`; problems go to `err`.
pub fn run(
    signatures: &Path,
    work_dir: &Path,
    paths: &[PathBuf],
    limits: Limits,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Summary {
    let started = Instant::now();
    let mut summary = Summary::default();
    let db = match Database::load(signatures, work_dir) {
        Ok(db) => db,
        Err(e) => {
            let _ = writeln!(err, "pimail: signatures: {e}");
            summary.errors += 1;
            return summary;
        }
    };
    for e in &db.report.errors {
        let _ = writeln!(err, "pimail: skipped {e}");
    }
    let loaded = started.elapsed();
    for p in paths {
        walk(&db, limits, p, out, &mut summary);
    }
    let r = &db.report;
    let _ = writeln!(
        err,
        "pimail: {} body + {} hash signatures loaded in {:.3} s; {} files ({} bytes) scanned, {} found, {} errors, {:.3} s in all",
        r.body_signatures,
        r.hash_signatures,
        loaded.as_secs_f64(),
        summary.scanned,
        summary.bytes,
        summary.found,
        summary.errors,
        started.elapsed().as_secs_f64()
    );
    summary
}

fn walk(db: &Database, limits: Limits, path: &Path, out: &mut dyn Write, summary: &mut Summary) {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(out, "{}: {e} ERROR", path.display());
            summary.errors += 1;
            return;
        }
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                let _ = writeln!(out, "{}: {e} ERROR", path.display());
                summary.errors += 1;
                return;
            }
        };
        entries.sort();
        for e in entries {
            walk(db, limits, &e, out, summary);
        }
        return;
    }
    if !meta.is_file() {
        // Symlinks, sockets, devices: not followed, like clamscan's default.
        return;
    }
    summary.scanned += 1;
    summary.bytes += meta.len();
    match scan_file(db, limits, path) {
        Ok(Finding::Clean) => {
            let _ = writeln!(out, "{}: OK", path.display());
        }
        Ok(Finding::Infected(name)) | Ok(Finding::Limit(name)) => {
            summary.found += 1;
            let _ = writeln!(out, "{}: {name} FOUND", path.display());
        }
        Err(e) => {
            summary.errors += 1;
            let _ = writeln!(out, "{}: {e} ERROR", path.display());
        }
    }
}

/// A raw message: named *.eml, or starting like one.
fn is_message(path: &Path, head: &[u8]) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if matches!(ext.as_deref(), Some("eml")) {
        return true;
    }
    super::unpack::looks_like_message(head)
}

/// Scans one file: as a message, whole, or streamed when it is larger than
/// `limits.max_object_size`.
pub fn scan_file(db: &Database, limits: Limits, path: &Path) -> Result<Finding, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut head = [0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0).map_err(|e| e.to_string())?;
    let mut walker = Walker::new(db, limits);
    if is_message(path, &head[..n]) {
        let src = MessageSource::file(file).map_err(|e| e.to_string())?;
        let meta = structure(&src).map_err(|e| e.to_string())?;
        return walker.message(&src, &meta);
    }
    if size > limits.max_object_size {
        return walker.stream(file, size);
    }
    walker.file(file)
}
