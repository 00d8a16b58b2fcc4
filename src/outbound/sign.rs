//! DKIM signing of submitted mail (RFC 6376, relaxed/relaxed) with the keys
//! `pimail dkim keygen` stored under DATA_DIR/dkim.

use std::path::Path;
use std::sync::Arc;

use crate::dkim::{BodyHasher, Canonicalization, Signer};
use crate::smtp::spool::Body;

/// Header sections larger than this are not signed (they are abnormal,
/// and the section is held in memory to be signed).
const MAX_HEADER: u64 = 256 * 1024;

/// Loads every stored key; keys that cannot be read are logged and skipped.
pub fn load_signers(data_dir: &Path) -> Vec<Arc<Signer>> {
    let dir = data_dir.join("dkim");
    let stored = match crate::dkim::keys::stored(&dir) {
        Ok(s) => s,
        Err(e) => {
            log::error!("dkim: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (domain, selector, path) in stored {
        match crate::dkim::keys::load(&path) {
            Ok(key) => {
                log::info!("dkim: signing for {domain} with selector {selector}");
                out.push(Arc::new(Signer {
                    domain,
                    selector,
                    key,
                }));
            }
            Err(e) => log::error!("dkim: {}: {e}", path.display()),
        }
    }
    out
}

/// The signer for a message: the From: domain's (so DMARC aligns), else
/// the envelope sender's.
pub fn choose(
    signers: &[Arc<Signer>],
    from_header_domain: Option<&str>,
    envelope_domain: &str,
) -> Option<Arc<Signer>> {
    let find = |d: &str| {
        signers
            .iter()
            .find(|s| s.domain.eq_ignore_ascii_case(d))
            .cloned()
    };
    from_header_domain
        .and_then(find)
        .or_else(|| find(envelope_domain))
}

/// The DKIM-Signature field for a received body, streaming the body once.
pub fn sign(body: &Body, signer: &Signer) -> Result<String, String> {
    let header_end = body.meta.root.body_start;
    if header_end > MAX_HEADER {
        return Err(format!(
            "header section of {header_end} bytes is too large to sign"
        ));
    }
    let mut header = Vec::with_capacity(header_end as usize);
    let mut hasher = BodyHasher::new(Canonicalization::Relaxed);
    let mut pos = 0u64;
    body.content
        .for_each_chunk(|_, chunk| {
            let start = pos;
            pos += chunk.len() as u64;
            if start < header_end {
                let n = ((header_end - start) as usize).min(chunk.len());
                header.extend_from_slice(&chunk[..n]);
                hasher.update(&chunk[n..]);
            } else {
                hasher.update(chunk);
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    // The section ends with the empty line that separates it from the body.
    if header.ends_with(b"\r\n\r\n") {
        header.truncate(header.len() - 2);
    }
    let fields = crate::dkim::canon::parse_fields(&header);
    signer
        .sign(&fields, &hasher.finish())
        .map_err(|e| e.to_string())
}
