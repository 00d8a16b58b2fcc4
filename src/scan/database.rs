//! Loading a signature directory: plain signature files and ClamAV's
//! `.cvd`/`.cld` containers (a 512-byte header, then a tar, gzipped or not),
//! with every line that cannot be used reported by file and line number and
//! skipped.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::hashes::{HashIndex, HashIndexBuilder};
use super::matcher::{BodyMatcher, BodyMatcherBuilder};
use super::signature;

/// Everything the scanner knows: shared read-only by every scan.
pub struct Database {
    pub(crate) body: BodyMatcher,
    pub(crate) hashes: HashIndex,
    pub(crate) ignored: HashSet<String>,
    /// Where archives too large for memory are copied while scanned.
    pub(crate) work_dir: PathBuf,
    pub report: LoadReport,
}

/// What loading found, for the log and the CLI.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub files: usize,
    pub body_signatures: usize,
    pub hash_signatures: u64,
    pub ignored_names: usize,
    /// Valid signatures of a kind not implemented (PE, OLE2, HTML targets...).
    pub unsupported: usize,
    /// "file:line: reason" for every line skipped.
    pub errors: Vec<String>,
}

/// At most this many line errors are kept (the count goes on).
const MAX_ERRORS_KEPT: usize = 100;

#[derive(Clone, Copy, PartialEq)]
enum FileKind {
    Body,
    Hash,
    Allow,
    Ignore,
}

fn kind_of(name: &str) -> Option<FileKind> {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    match ext.as_str() {
        "ndb" | "ndu" => Some(FileKind::Body),
        "hdb" | "hsb" | "hdu" | "hsu" => Some(FileKind::Hash),
        "fp" | "sfp" => Some(FileKind::Allow),
        "ign2" => Some(FileKind::Ignore),
        _ => None,
    }
}

struct Loader {
    body: BodyMatcherBuilder,
    hashes: HashIndexBuilder,
    ignored: HashSet<String>,
    report: LoadReport,
    error_count: usize,
}

impl Loader {
    fn error(&mut self, msg: String) {
        self.error_count += 1;
        if self.report.errors.len() < MAX_ERRORS_KEPT {
            log::warn!("scan signatures: {msg}");
            self.report.errors.push(msg);
        }
    }

    fn lines(&mut self, file: &str, kind: FileKind, reader: impl Read) -> std::io::Result<()> {
        self.report.files += 1;
        let mut r = BufReader::with_capacity(16 * 1024, reader);
        let mut buf = Vec::new();
        let mut n = 0u64;
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf)? == 0 {
                if kind == FileKind::Hash || kind == FileKind::Allow {
                    self.hashes.end_file()?;
                }
                return Ok(());
            }
            n += 1;
            let Ok(line) = std::str::from_utf8(&buf) else {
                self.error(format!("{file}:{n}: not UTF-8"));
                continue;
            };
            let line = line.trim_end_matches(['\r', '\n']).trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match kind {
                FileKind::Body => match signature::parse_ndb(line) {
                    Ok(Some(s)) => {
                        if let Err(e) = self.body.add(&s) {
                            self.error(format!("{file}:{n}: {e}"));
                        }
                    }
                    Ok(None) => self.report.unsupported += 1,
                    Err(e) => self.error(format!("{file}:{n}: {e}")),
                },
                FileKind::Hash | FileKind::Allow => match signature::parse_hash(line) {
                    Ok(s) => {
                        self.hashes.add(&s, kind == FileKind::Allow)?;
                        self.report.hash_signatures += 1;
                    }
                    Err(e) => self.error(format!("{file}:{n}: {e}")),
                },
                FileKind::Ignore => {
                    self.ignored.insert(line.to_string());
                }
            }
        }
    }

    /// A .cvd/.cld: "ClamAV-VDB:..." header of 512 bytes, then a tar.
    fn container(&mut self, file: &str, mut reader: impl Read) -> std::io::Result<()> {
        let mut header = [0u8; 512];
        reader.read_exact(&mut header)?;
        if !header.starts_with(b"ClamAV-VDB:") {
            self.error(format!(
                "{file}: not a ClamAV database (no ClamAV-VDB header)"
            ));
            return Ok(());
        }
        let mut magic = [0u8; 2];
        reader.read_exact(&mut magic)?;
        let rest = std::io::Cursor::new(magic).chain(reader);
        if magic == [0x1f, 0x8b] {
            self.tar(file, flate2::read::GzDecoder::new(rest))
        } else {
            self.tar(file, rest)
        }
    }

    fn tar(&mut self, file: &str, mut r: impl Read) -> std::io::Result<()> {
        let damaged = super::unpack::tar(&mut r, |m| {
            if let Some(kind) = kind_of(&m.name).filter(|_| m.regular) {
                self.lines(&format!("{file}/{}", m.name), kind, m.data)?;
            }
            Ok(true)
        })?;
        if let Err(e) = damaged {
            self.error(format!("{file}: {e}"));
        }
        Ok(())
    }
}

impl Database {
    /// Only the built-in EICAR signature.
    pub fn builtin() -> Result<Database, String> {
        Ok(Database {
            body: BodyMatcher::new(vec![signature::eicar()])?,
            hashes: HashIndex::empty(),
            ignored: HashSet::new(),
            work_dir: std::env::temp_dir(),
            report: LoadReport {
                body_signatures: 1,
                ..LoadReport::default()
            },
        })
    }

    /// Loads every signature file in `dir` (not recursive; a missing
    /// directory means EICAR only). The hash index's files go to `work_dir`.
    /// Fails only if a file cannot be read or the index cannot be written.
    pub fn load(dir: &Path, work_dir: &Path) -> Result<Database, String> {
        let mut body = BodyMatcherBuilder::default();
        body.add(&signature::eicar())?;
        let mut l = Loader {
            body,
            hashes: HashIndexBuilder::new(work_dir)
                .map_err(|e| format!("{}: {e}", work_dir.display()))?,
            ignored: HashSet::new(),
            report: LoadReport::default(),
            error_count: 0,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::info!("scan: no signature directory {}; EICAR only", dir.display());
                return Database::builtin();
            }
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let shown = path.display().to_string();
            let lower = name.to_ascii_lowercase();
            let result = if lower.ends_with(".cvd") || lower.ends_with(".cld") {
                std::fs::File::open(&path).and_then(|f| l.container(&shown, f))
            } else if let Some(kind) = kind_of(&name) {
                std::fs::File::open(&path).and_then(|f| l.lines(&shown, kind, f))
            } else {
                log::debug!("scan: ignoring {shown} (not a supported signature file)");
                Ok(())
            };
            if let Err(e) = result {
                return Err(format!("{shown}: {e}"));
            }
        }
        let mut report = l.report;
        if l.error_count > report.errors.len() {
            report.errors.push(format!(
                "... and {} more lines skipped",
                l.error_count - report.errors.len()
            ));
        }
        report.body_signatures = l.body.len();
        report.ignored_names = l.ignored.len();
        let body = l.body.build()?;
        let hashes = l
            .hashes
            .finish()
            .map_err(|e| format!("{}: building the hash index: {e}", work_dir.display()))?;
        Ok(Database {
            body,
            hashes,
            ignored: l.ignored,
            work_dir: work_dir.to_path_buf(),
            report,
        })
    }

    pub fn is_ignored(&self, name: &str) -> bool {
        self.ignored.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pimail-sigs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn bad_lines_are_reported_with_file_and_line_and_skipped() {
        let d = dir("bad");
        std::fs::write(
            d.join("a.ndb"),
            "# comment\n\nGood:0:*:41424344\nBad:0:*:4g\nPE:1:*:41424344\n",
        )
        .unwrap();
        std::fs::write(
            d.join("b.hdb"),
            "nothex:1:X\n44d88612fea8a8f36de82e1278abb02f:68:E\n",
        )
        .unwrap();
        std::fs::write(d.join("c.ign2"), "Good\n").unwrap();
        std::fs::write(d.join("readme.txt"), "not signatures\n").unwrap();
        let db = Database::load(&d, &std::env::temp_dir()).unwrap();
        let r = &db.report;
        assert_eq!(r.body_signatures, 2, "EICAR + Good");
        assert_eq!(r.hash_signatures, 1);
        assert_eq!(r.unsupported, 1);
        assert_eq!(r.files, 3);
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
        assert!(
            r.errors[0].ends_with("a.ndb:4: unexpected 'g' at 1"),
            "{}",
            r.errors[0]
        );
        assert!(r.errors[1].contains("b.hdb:1: hash"), "{}", r.errors[1]);
        assert!(db.is_ignored("Good"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn missing_directory_means_eicar_only() {
        let db = Database::load(Path::new("/nonexistent/pimail"), &std::env::temp_dir()).unwrap();
        assert_eq!(db.report.body_signatures, 1);
    }

    /// A .cvd built here: header, then a gzipped tar holding an .ndb.
    #[test]
    fn cvd_container() {
        use std::io::Write;
        let body = b"Cvd.Test:0:*:6376642d74657374\n";
        let mut tar = Vec::new();
        let mut h = [0u8; 512];
        h[..9].copy_from_slice(b"daily.ndb");
        h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
        h[156] = b'0';
        tar.extend_from_slice(&h);
        tar.extend_from_slice(body);
        tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut cvd = b"ClamAV-VDB:01 Jan 2026:1:1:90:x:x:test:0".to_vec();
        cvd.resize(512, b' ');
        cvd.extend(gz.finish().unwrap());
        let d = dir("cvd");
        std::fs::write(d.join("daily.cvd"), &cvd).unwrap();
        // The same tar uncompressed, as in a .cld.
        let mut cld = cvd[..512].to_vec();
        cld.extend(&tar);
        std::fs::write(d.join("main.cld"), &cld).unwrap();
        let db = Database::load(&d, &std::env::temp_dir()).unwrap();
        assert_eq!(db.report.body_signatures, 3, "{:?}", db.report);
        assert!(db.report.errors.is_empty(), "{:?}", db.report.errors);
        std::fs::remove_dir_all(d).unwrap();
    }
}
