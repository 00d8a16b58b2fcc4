//! DKIM verification (RFC 6376 6): every DKIM-Signature field (up to a
//! bound) is parsed, its key fetched from `selector._domainkey.domain`, its
//! body hash computed over the stored chunks (one streaming pass serves all
//! signatures) and its signature checked with ring. rsa-sha256 (1024 to
//! 8192 bits, RFC 8301) and ed25519-sha256 (RFC 8463); simple and relaxed.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{self, UnparsedPublicKey};

use super::canon::{self, BodyHasher, Canonicalization};
use crate::dns::{DnsError, Resolver};

/// The result of one signature (RFC 8601 2.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimResult {
    Pass,
    Fail,
    Neutral,
    TempError,
    PermError,
}

impl DkimResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimResult::Pass => "pass",
            DkimResult::Fail => "fail",
            DkimResult::Neutral => "neutral",
            DkimResult::TempError => "temperror",
            DkimResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for DkimResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlgorithm {
    RsaSha256,
    Ed25519Sha256,
}

/// A parsed DKIM-Signature field (RFC 6376 3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub algorithm: SigAlgorithm,
    pub header_canon: Canonicalization,
    pub body_canon: Canonicalization,
    /// d=, lower case.
    pub domain: String,
    pub selector: String,
    /// h=, lower case, in order.
    pub headers: Vec<String>,
    pub body_hash: Vec<u8>,
    pub signature: Vec<u8>,
    /// The b= value as written, unfolded (for header.b in results).
    pub b_text: String,
    pub length: Option<u64>,
    pub expiry: Option<u64>,
    pub timestamp: Option<u64>,
    /// i= (defaults to "@d").
    pub auid: String,
    /// The field value with the b= value removed: what is signed.
    pub unsigned_value: Vec<u8>,
}

fn tags(value: &str) -> Vec<(String, String)> {
    value
        .split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            let v: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            Some((k.trim().to_string(), v))
        })
        .collect()
}

/// Parses a DKIM-Signature value (everything after the colon).
pub fn parse_signature(raw: &[u8]) -> Result<Signature, String> {
    let value = std::str::from_utf8(raw).map_err(|_| "not UTF-8")?;
    let tags = tags(value);
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &tags {
        // 3.2: a tag given twice makes the signature invalid.
        if !seen.insert(k.as_str()) {
            return Err(format!("tag {k}= given twice"));
        }
    }
    let get = |k: &str| tags.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let need = |k: &str| get(k).ok_or_else(|| format!("missing {k}= tag"));
    if need("v")? != "1" {
        return Err("unsupported v= (expected 1)".into());
    }
    let algorithm = match need("a")?.to_ascii_lowercase().as_str() {
        "rsa-sha256" => SigAlgorithm::RsaSha256,
        "ed25519-sha256" => SigAlgorithm::Ed25519Sha256,
        // RFC 8301: rsa-sha1 must not be considered valid.
        other => return Err(format!("unsupported algorithm a={other}")),
    };
    let canon = |s: &str| match s.to_ascii_lowercase().as_str() {
        "simple" => Ok(Canonicalization::Simple),
        "relaxed" => Ok(Canonicalization::Relaxed),
        other => Err(format!("unknown canonicalization {other}")),
    };
    let (header_canon, body_canon) = match get("c") {
        None => (Canonicalization::Simple, Canonicalization::Simple),
        Some(c) => match c.split_once('/') {
            Some((h, b)) => (canon(h)?, canon(b)?),
            None => (canon(c)?, Canonicalization::Simple),
        },
    };
    let domain = need("d")?.to_ascii_lowercase();
    let selector = need("s")?.to_ascii_lowercase();
    if domain.is_empty() || selector.is_empty() {
        return Err("empty d= or s=".into());
    }
    let headers: Vec<String> = need("h")?
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    // 5.4: From must be signed.
    if !headers.iter().any(|h| h == "from") {
        return Err("h= does not include From".into());
    }
    let b64 = |k: &str| {
        B64.decode(need(k)?)
            .map_err(|_| format!("{k}= is not base64"))
    };
    let body_hash = b64("bh")?;
    let b_text = need("b")?.to_string();
    let signature = b64("b")?;
    let number = |k: &str| -> Result<Option<u64>, String> {
        get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{k}= is not a number"))
            })
            .transpose()
    };
    let auid = get("i").map_or_else(|| format!("@{domain}"), str::to_string);
    // 3.5: i= must be d= or a subdomain of it.
    let auid_domain = auid
        .rsplit_once('@')
        .map_or("", |x| x.1)
        .to_ascii_lowercase();
    if auid_domain != domain && !auid_domain.ends_with(&format!(".{domain}")) {
        return Err("i= is not within d=".into());
    }
    Ok(Signature {
        algorithm,
        header_canon,
        body_canon,
        domain,
        selector,
        headers,
        body_hash,
        signature,
        b_text,
        length: number("l")?,
        expiry: number("x")?,
        timestamp: number("t")?,
        auid,
        unsigned_value: strip_b_value(raw),
    })
}

/// The value with the b= tag's value emptied, all else byte for byte
/// (3.7: "with the value of the b= tag ... deleted").
fn strip_b_value(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, tag) in raw.split(|&b| b == b';').enumerate() {
        if i > 0 {
            out.push(b';');
        }
        match tag.iter().position(|&b| b == b'=') {
            Some(eq) if tag[..eq].trim_ascii() == b"b" => out.extend_from_slice(&tag[..=eq]),
            _ => out.extend_from_slice(tag),
        }
    }
    out
}

/// A key record (3.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub ed25519: bool,
    /// p=, decoded; empty when revoked.
    pub public_key: Vec<u8>,
    /// h= acceptable hashes, when given.
    pub hashes: Option<Vec<String>>,
    /// t=s: i= must be in exactly d=.
    pub strict: bool,
    /// t=y: the domain is testing.
    pub testing: bool,
}

pub fn parse_key_record(text: &[u8]) -> Result<KeyRecord, String> {
    let text = std::str::from_utf8(text).map_err(|_| "key record is not UTF-8")?;
    let tags = tags(text);
    let get = |k: &str| tags.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(v) = get("v")
        && v != "DKIM1"
    {
        return Err(format!("key record v={v}"));
    }
    let ed25519 = match get("k").unwrap_or("rsa").to_ascii_lowercase().as_str() {
        "rsa" => false,
        "ed25519" => true,
        other => return Err(format!("unknown key type k={other}")),
    };
    let public_key = B64
        .decode(get("p").ok_or("key record has no p=")?)
        .map_err(|_| "key p= is not base64")?;
    let flags: Vec<&str> = get("t").map_or(Vec::new(), |t| t.split(':').collect());
    Ok(KeyRecord {
        ed25519,
        public_key,
        hashes: get("h").map(|h| h.split(':').map(|s| s.to_ascii_lowercase()).collect()),
        strict: flags.contains(&"s"),
        testing: flags.contains(&"y"),
    })
}

/// The RSAPublicKey inside a SubjectPublicKeyInfo (what DKIM publishes);
/// anything that is not an SPKI is returned as is (some publish the bare
/// RSAPublicKey).
pub fn rsa_public_key(der: &[u8]) -> &[u8] {
    fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *d.first()?;
        let first = *d.get(1)? as usize;
        let (len, start) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for &b in d.get(2..2 + n)? {
                len = (len << 8) | b as usize;
            }
            (len, 2 + n)
        };
        let end = start.checked_add(len)?;
        Some((tag, d.get(start..end)?, d.get(end..)?))
    }
    let spki = || -> Option<&[u8]> {
        let (0x30, seq, _) = tlv(der)? else {
            return None;
        };
        let (0x30, _alg, rest) = tlv(seq)? else {
            return None;
        };
        let (0x03, bits, _) = tlv(rest)? else {
            return None;
        };
        match bits.split_first()? {
            (0, key) => Some(key),
            _ => None,
        }
    };
    spki().unwrap_or(der)
}

/// One signature's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimOutcome {
    pub result: DkimResult,
    /// d= and s= (empty when the field could not be parsed).
    pub domain: String,
    pub selector: String,
    pub auid: String,
    /// The first characters of b= (header.b, RFC 6008).
    pub b_prefix: String,
    pub reason: Option<String>,
}

/// Verifies the DKIM-Signature fields of a message. `fields` are its header
/// fields (`canon::parse_fields`); `body_chunks` calls its argument with
/// the body bytes (after the empty line) in order, and may yield to the
/// executor between pieces of a large body; `now` is in Unix seconds.
pub async fn verify(
    resolver: &Resolver,
    fields: &[(String, Vec<u8>)],
    body_chunks: impl AsyncFnOnce(&mut dyn FnMut(&[u8])),
    max_signatures: usize,
    now: u64,
) -> Vec<DkimOutcome> {
    let sigs: Vec<Result<Signature, String>> = fields
        .iter()
        .filter(|(n, _)| n.trim_end().eq_ignore_ascii_case("dkim-signature"))
        .take(max_signatures)
        .map(|(_, v)| parse_signature(v))
        .collect();
    // Fetch keys concurrently while the body is hashed.
    let keys = crate::authres::spf::join_all(
        sigs.iter()
            .map(|s| async move {
                match s {
                    Ok(s) => Some(fetch_key(resolver, &s.selector, &s.domain).await),
                    Err(_) => None,
                }
            })
            .collect(),
    );
    let mut hashers: Vec<Option<BodyHasher>> = sigs
        .iter()
        .map(|s| {
            s.as_ref().ok().map(|s| match s.length {
                Some(l) => BodyHasher::with_limit(s.body_canon, l),
                None => BodyHasher::new(s.body_canon),
            })
        })
        .collect();
    // The body is read only if some signature needs it.
    if hashers.iter().any(Option::is_some) {
        body_chunks(&mut |chunk| {
            for h in hashers.iter_mut().flatten() {
                h.update(chunk);
            }
        })
        .await;
    }
    let keys = keys.await;
    sigs.into_iter()
        .zip(hashers)
        .zip(keys)
        .map(|((sig, hasher), key)| match (sig, hasher, key) {
            (Ok(sig), Some(hasher), Some(key)) => check(fields, &sig, hasher, key, now),
            (sig, _, _) => DkimOutcome {
                result: DkimResult::PermError,
                domain: String::new(),
                selector: String::new(),
                auid: String::new(),
                b_prefix: String::new(),
                reason: sig.err(),
            },
        })
        .collect()
}

/// The key record of selector._domainkey.domain; `Err` carries the result.
pub async fn fetch_key(
    resolver: &Resolver,
    selector: &str,
    domain: &str,
) -> Result<KeyRecord, (DkimResult, String)> {
    let name = format!("{selector}._domainkey.{domain}");
    let txts = match resolver.txt(&name).await {
        Ok(t) => t,
        Err(e) if e.is_temporary() => return Err((DkimResult::TempError, format!("{name}: {e}"))),
        Err(DnsError::NxDomain) => return Err((DkimResult::PermError, format!("{name}: no key"))),
        Err(e) => return Err((DkimResult::PermError, format!("{name}: {e}"))),
    };
    let Some(text) = txts.first() else {
        return Err((DkimResult::PermError, format!("{name}: no key record")));
    };
    parse_key_record(text).map_err(|e| (DkimResult::PermError, format!("{name}: {e}")))
}

fn check(
    fields: &[(String, Vec<u8>)],
    sig: &Signature,
    hasher: BodyHasher,
    key: Result<KeyRecord, (DkimResult, String)>,
    now: u64,
) -> DkimOutcome {
    let outcome = |result, reason: Option<String>| DkimOutcome {
        result,
        domain: sig.domain.clone(),
        selector: sig.selector.clone(),
        auid: sig.auid.clone(),
        b_prefix: sig.b_text.chars().take(8).collect(),
        reason,
    };
    let key = match key {
        Ok(k) => k,
        Err((result, reason)) => return outcome(result, Some(reason)),
    };
    if let Some(x) = sig.expiry
        && x < now
    {
        return outcome(DkimResult::Fail, Some("signature expired".into()));
    }
    if key.public_key.is_empty() {
        return outcome(DkimResult::Fail, Some("key revoked".into()));
    }
    if key.ed25519 != (sig.algorithm == SigAlgorithm::Ed25519Sha256) {
        return outcome(
            DkimResult::PermError,
            Some("key type does not match a=".into()),
        );
    }
    if let Some(h) = &key.hashes
        && !h.iter().any(|h| h == "sha256")
    {
        return outcome(
            DkimResult::PermError,
            Some("key does not allow sha256".into()),
        );
    }
    if key.strict
        && !sig
            .auid
            .to_ascii_lowercase()
            .ends_with(&format!("@{}", sig.domain))
    {
        return outcome(
            DkimResult::PermError,
            Some("key t=s forbids a subdomain i=".into()),
        );
    }
    let (body_hash, canonical_len) = hasher.finish_counted();
    if let Some(l) = sig.length
        && l > canonical_len
    {
        return outcome(
            DkimResult::PermError,
            Some("l= longer than the body".into()),
        );
    }
    if body_hash[..] != sig.body_hash[..] {
        return outcome(DkimResult::Fail, Some("body hash did not verify".into()));
    }
    let headers: Vec<&str> = sig.headers.iter().map(String::as_str).collect();
    let data = canon::signed_data(
        sig.header_canon,
        fields,
        &headers,
        "DKIM-Signature",
        &sig.unsigned_value,
    );
    let verified = match sig.algorithm {
        SigAlgorithm::RsaSha256 => UnparsedPublicKey::new(
            &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            rsa_public_key(&key.public_key),
        )
        .verify(&data, &sig.signature),
        SigAlgorithm::Ed25519Sha256 => {
            let digest = ring::digest::digest(&ring::digest::SHA256, &data);
            UnparsedPublicKey::new(&signature::ED25519, &key.public_key)
                .verify(digest.as_ref(), &sig.signature)
        }
    };
    match verified {
        Ok(()) => outcome(DkimResult::Pass, None),
        Err(_) => outcome(DkimResult::Fail, Some("signature did not verify".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_value_is_stripped_in_place() {
        let raw = b" v=1; a=rsa-sha256;\r\n b=abc\r\n def; bh=xyz; h=from";
        assert_eq!(
            strip_b_value(raw),
            b" v=1; a=rsa-sha256;\r\n b=; bh=xyz; h=from".to_vec()
        );
        assert_eq!(strip_b_value(b" a=1; b=zz"), b" a=1; b=".to_vec());
    }

    #[test]
    fn signature_tags() {
        let s = parse_signature(
            b" v=1; a=ed25519-sha256; c=relaxed/simple; d=Example.COM; s=sel;\r\n \
              h=From : To; bh=AAAA; b=AQID; l=10; x=99; i=joe@sub.example.com",
        )
        .unwrap();
        assert_eq!(s.domain, "example.com");
        assert_eq!(s.headers, ["from", "to"]);
        assert_eq!(s.header_canon, Canonicalization::Relaxed);
        assert_eq!(s.body_canon, Canonicalization::Simple);
        assert_eq!(s.length, Some(10));
        assert_eq!(s.signature, [1, 2, 3]);
        for bad in [
            &b" v=1; a=rsa-sha1; d=a.b; s=s; h=from; bh=AA==; b=AA=="[..],
            b" v=1; a=rsa-sha256; d=a.b; s=s; h=to; bh=AA==; b=AA==",
            b" v=1; a=rsa-sha256; d=a.b; s=s; h=from; bh=AA==",
            b" v=1; a=rsa-sha256; d=a.b; s=s; h=from; bh=AA==; b=AA==; i=x@c.d",
            b" v=1; v=1; a=rsa-sha256; d=a.b; s=s; h=from; bh=AA==; b=AA==",
        ] {
            assert!(
                parse_signature(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn key_records() {
        let k = parse_key_record(b"v=DKIM1; k=ed25519; t=y:s; h=sha256; p=AQID").unwrap();
        assert!(k.ed25519 && k.strict && k.testing);
        assert_eq!(k.public_key, [1, 2, 3]);
        let revoked = parse_key_record(b"v=DKIM1; p=").unwrap();
        assert!(revoked.public_key.is_empty() && !revoked.ed25519);
        assert!(parse_key_record(b"v=DKIM2; p=AA==").is_err());
        assert!(parse_key_record(b"k=dsa; p=AA==").is_err());
    }

    proptest::proptest! {
        /// Peer bytes never make the parsers panic.
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_signature(&bytes);
            let _ = parse_key_record(&bytes);
            let _ = rsa_public_key(&bytes);
            let _ = strip_b_value(&bytes);
        }

        #[test]
        fn tag_lists_never_panic(s in "[a-z =;:/@.\\r\\n\\t0-9A-Z+]{0,200}") {
            let _ = parse_signature(s.as_bytes());
            let _ = parse_key_record(s.as_bytes());
        }
    }

    #[test]
    fn spki_unwrapped() {
        // SEQUENCE { SEQUENCE { NULL }, BIT STRING { 0, 0xAA 0xBB } }
        let der = [
            0x30, 0x09, 0x30, 0x02, 0x05, 0x00, 0x03, 0x03, 0x00, 0xAA, 0xBB,
        ];
        assert_eq!(rsa_public_key(&der), &[0xAA, 0xBB]);
        assert_eq!(rsa_public_key(&[0x02, 0x01]), &[0x02, 0x01]);
    }
}
