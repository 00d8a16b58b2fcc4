//! Messages named on the command line: a message file, a directory of
//! message files (searched recursively, hidden files skipped), a Maildir
//! (its `cur/` and `new/`), or an mbox (a file whose first line starts with
//! "From "; a message starts at each "From " line that follows an empty
//! line or begins the file).
//!
//! Each message is read up to a byte budget (the rest is only hashed), so
//! a huge file costs time but never memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One message found under a PATH.
pub struct SourceMessage {
    /// The file, with `#N` (from 1) for the Nth message of an mbox that
    /// holds more than one.
    pub name: String,
    /// Its first `max_bytes` bytes (without an mbox "From " line).
    pub bytes: Vec<u8>,
    /// SHA-256 of all of it: the message's identity for training.
    pub id: [u8; 32],
}

/// Directory levels followed below a PATH.
const MAX_DEPTH: usize = 8;

/// Calls `f` with every message under `path`, in name order.
pub fn for_each_message(
    path: &Path,
    max_bytes: usize,
    f: &mut dyn FnMut(SourceMessage) -> Result<(), String>,
) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        walk(path, max_bytes, f, 0)
    } else {
        file(path, max_bytes, f)
    }
}

fn walk(
    dir: &Path,
    max_bytes: usize,
    f: &mut dyn FnMut(SourceMessage) -> Result<(), String>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let is_maildir = dir.join("cur").is_dir() && dir.join("new").is_dir();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            // A Maildir's tmp/ holds deliveries in progress.
            if is_maildir && p.file_name().is_some_and(|n| n == "tmp") {
                continue;
            }
            walk(&p, max_bytes, f, depth + 1)?;
        } else if p.is_file() {
            file(&p, max_bytes, f)?;
        }
    }
    Ok(())
}

fn file(
    path: &Path,
    max_bytes: usize,
    f: &mut dyn FnMut(SourceMessage) -> Result<(), String>,
) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut reader = BufReader::new(File::open(path).map_err(err)?);
    let is_mbox = reader.fill_buf().map_err(err)?.starts_with(b"From ");
    let name = path.display().to_string();
    if !is_mbox {
        let mut bytes = Vec::new();
        let mut hasher = Sha256::new();
        (&mut reader)
            .take(max_bytes as u64)
            .read_to_end(&mut bytes)
            .map_err(err)?;
        hasher.update(&bytes);
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        return f(SourceMessage {
            name,
            bytes,
            id: hasher.finalize().into(),
        });
    }
    // mbox: messages are emitted one behind, so the first can be named
    // without "#1" when it turns out to be the only one.
    let mut pending: Option<SourceMessage> = None;
    let mut current: Option<(Vec<u8>, Sha256)> = None;
    let mut count = 0usize;
    let mut prev_blank = true;
    let mut line = Vec::new();
    let mut finish = |cur: Option<(Vec<u8>, Sha256)>,
                      count: usize,
                      pending: &mut Option<SourceMessage>|
     -> Result<(), String> {
        if let Some((bytes, h)) = cur {
            if let Some(mut p) = pending.take() {
                if count == 2 {
                    p.name = format!("{name}#1");
                }
                f(p)?;
            }
            let n = if count == 1 {
                name.clone()
            } else {
                format!("{name}#{count}")
            };
            *pending = Some(SourceMessage {
                name: n,
                bytes,
                id: h.finalize().into(),
            });
        }
        Ok(())
    };
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(err)?;
        if n == 0 {
            break;
        }
        if prev_blank && line.starts_with(b"From ") {
            finish(current.take(), count, &mut pending)?;
            count += 1;
            current = Some((Vec::new(), Sha256::new()));
            prev_blank = false;
            continue;
        }
        prev_blank = line == b"\n" || line == b"\r\n";
        if let Some((bytes, h)) = current.as_mut() {
            h.update(&line);
            if bytes.len() < max_bytes {
                let take = line.len().min(max_bytes - bytes.len());
                bytes.extend_from_slice(&line[..take]);
            }
        }
    }
    finish(current.take(), count, &mut pending)?;
    if let Some(p) = pending {
        f(p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(path: &Path, max: usize) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for_each_message(path, max, &mut |m| {
            out.push((m.name, m.bytes));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn files_dirs_maildirs_and_mboxes() {
        let dir = std::env::temp_dir().join(format!("pimail-spam-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("md/cur")).unwrap();
        std::fs::create_dir_all(dir.join("md/new")).unwrap();
        std::fs::create_dir_all(dir.join("md/tmp")).unwrap();
        std::fs::write(dir.join("md/cur/1"), "Subject: a\n\nA\n").unwrap();
        std::fs::write(dir.join("md/new/2"), "Subject: b\n\nB\n").unwrap();
        std::fs::write(dir.join("md/tmp/3"), "Subject: partial\n").unwrap();
        std::fs::write(dir.join(".hidden"), "x").unwrap();
        std::fs::write(
            dir.join("box.mbox"),
            "From a@b Mon Jan 1 00:00:00 2024\nSubject: one\n\nbody\nFrom here on\n\nFrom c@d Tue\nSubject: two\n\nbody\n",
        )
        .unwrap();
        std::fs::write(dir.join("single"), "From x Mon\nSubject: only\n\nhi\n").unwrap();
        let got = collect(&dir, 1 << 20);
        let names: Vec<String> = got
            .iter()
            .map(|(n, _)| {
                n.strip_prefix(&dir.display().to_string())
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "/box.mbox#1",
                "/box.mbox#2",
                "/md/cur/1",
                "/md/new/2",
                "/single"
            ]
        );
        assert_eq!(got[0].1, b"Subject: one\n\nbody\nFrom here on\n\n");
        assert_eq!(got[1].1, b"Subject: two\n\nbody\n");
        assert_eq!(got[4].1, b"Subject: only\n\nhi\n");
        // The budget truncates but the identity covers everything.
        let short = collect(&dir.join("md/cur/1"), 4);
        assert_eq!(short[0].1, b"Subj");
        let mut ids = Vec::new();
        for_each_message(&dir, 4, &mut |m| {
            ids.push(m.id);
            Ok(())
        })
        .unwrap();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5);
        assert!(for_each_message(&dir.join("missing"), 10, &mut |_| Ok(())).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
