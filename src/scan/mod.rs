//! Attachment scanning with ClamAV-compatible signatures, at SMTP time, on a
//! small board's memory budget.
//!
//! - [`signature`]: the subset of ClamAV's formats understood (`.ndb` body
//!   signatures, `.hdb`/`.hsb` hashes, `.fp`/`.sfp` and `.ign2` allow-lists,
//!   `.cvd`/`.cld` containers); EICAR is built in.
//! - [`Database`]: a signature directory loaded once and shared. Body
//!   signatures are searched with one Aho-Corasick automaton over their
//!   literal anchors; hash signatures live in an on-disk sorted index, so RAM
//!   does not grow with their number.
//! - [`Walker`]: the raw message, every MIME part decoded (base64,
//!   quoted-printable, uuencode), embedded messages, archive entries (zip,
//!   tar, 7z, cabinets...), OLE2 streams, unpacked executables and `data:`
//!   URIs in HTML, within [`Limits`].
//! - [`delivery`]: the SMTP inspection stage (refuse with `554 5.7.1` or
//!   quarantine), and [`cli`]: `pimail scan`.
//!
//! ```
//! use pimail::scan::{Database, Finding, Limits, scan_message_bytes};
//! let db = Database::builtin().unwrap();
//! let mail = b"Subject: t\r\nContent-Transfer-Encoding: base64\r\n\r\n\
//!     WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo=\r\n";
//! let found = scan_message_bytes(&db, mail, Limits::default()).unwrap();
//! assert_eq!(found, Finding::Infected("Eicar-Test-Signature".into()));
//! ```

mod arj;
mod aspack;
mod autoit;
mod cab;
mod chm;
pub mod cli;
mod compiled;
mod database;
mod datauri;
mod decode;
pub mod delivery;
mod hashes;
mod ishield;
mod matcher;
mod mew;
mod nsis;
mod object;
mod ole2;
mod pe_image;
mod peimage;
mod pespin;
mod petite;
mod sevenz;
pub mod signature;
mod sis;
mod unpack;
mod upack;
mod upx;
mod walk;
mod wwpack;
mod yc;

#[cfg(test)]
mod tests;

pub use database::{Database, LoadReport};
pub use walk::{
    Finding, LIMIT_DEPTH, LIMIT_ENTRIES, LIMIT_OBJECT, LIMIT_TOTAL, Limits, MessageSource, Walker,
};

use crate::message::{MessageMeta, ScanLimits, StructureScanner};
use crate::store::CHUNK_SIZE;
use crate::store::content::Content;

/// The MIME structure of a message held in `src`, computed the way SMTP
/// reception does.
pub fn structure(src: &MessageSource) -> std::io::Result<MessageMeta> {
    let mut scanner = StructureScanner::new(ScanLimits::default());
    src.range(0, src.size(), |b| scanner.feed(b))?;
    Ok(scanner.finish())
}

/// Scans a whole message held in memory (tests, small tools).
pub fn scan_message_bytes(
    db: &Database,
    message: &[u8],
    limits: Limits,
) -> Result<Finding, String> {
    let content = Content::from_chunks(message.chunks(CHUNK_SIZE).map(<[u8]>::to_vec).collect());
    let src = MessageSource::snapshot(&content, message.len() as u64).map_err(|e| e.to_string())?;
    let meta = structure(&src).map_err(|e| e.to_string())?;
    Walker::new(db, limits).message(&src, &meta)
}
