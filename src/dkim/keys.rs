//! DKIM keys: PKCS#8 PEM files `DIR/<domain>.<selector>.key` (mode 0600),
//! generation (RSA 2048 through the `rsa` crate, which ring cannot do;
//! Ed25519 through ring) and the DNS TXT record that publishes a key.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, Ed25519KeyPair, KeyPair, RsaKeyPair};

use super::DkimError;

/// RSA modulus size of generated keys (RFC 8301: at least 1024, 2048 is
/// what receivers expect today; larger keys no longer fit one TXT string
/// and some DNS panels).
pub const RSA_BITS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    /// The `a=` value.
    pub fn dkim_name(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa-sha256",
            Algorithm::Ed25519 => "ed25519-sha256",
        }
    }

    /// The `k=` value of the key record.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" | "rsa-sha256" => Ok(Algorithm::Rsa),
            "ed25519" | "ed25519-sha256" => Ok(Algorithm::Ed25519),
            _ => Err(format!("expected rsa or ed25519, found {s:?}")),
        }
    }
}

/// A private key, ready to sign.
pub enum Key {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.algorithm())
    }
}

impl Key {
    /// A PKCS#8 DER private key (v1 or v2), Ed25519 or RSA.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Key, DkimError> {
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Ok(Key::Ed25519(k));
        }
        RsaKeyPair::from_pkcs8(der)
            .map(Key::Rsa)
            .map_err(|e| DkimError::Key {
                path: None,
                reason: format!("not a usable PKCS#8 RSA (2048-4096 bit) or Ed25519 key: {e}"),
            })
    }

    /// An Ed25519 key from its 32-byte seed and public key (the form RFC
    /// 8463 publishes its example key in).
    pub fn ed25519_from_seed(seed: &[u8], public: &[u8]) -> Result<Key, DkimError> {
        Ed25519KeyPair::from_seed_and_public_key(seed, public)
            .map(Key::Ed25519)
            .map_err(|e| DkimError::Key {
                path: None,
                reason: format!("Ed25519 seed/public key: {e}"),
            })
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Key::Rsa(_) => Algorithm::Rsa,
            Key::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// Signs the signed data of RFC 6376 3.7: RSASSA-PKCS1-v1_5 with
    /// SHA-256, or (RFC 8463 3) Ed25519 over the data's SHA-256.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, DkimError> {
        match self {
            Key::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    data,
                    &mut sig,
                )
                .map_err(|e| DkimError::Sign(e.to_string()))?;
                Ok(sig)
            }
            Key::Ed25519(k) => {
                let hash = ring::digest::digest(&ring::digest::SHA256, data);
                Ok(k.sign(hash.as_ref()).as_ref().to_vec())
            }
        }
    }

    /// The `p=` value: base64 of the SubjectPublicKeyInfo for RSA (RFC 6376
    /// 3.6.1), of the raw 32-byte key for Ed25519 (RFC 8463 4.2).
    pub fn public_key_base64(&self) -> String {
        match self {
            Key::Rsa(k) => B64.encode(rsa_spki(k.public_key().as_ref())),
            Key::Ed25519(k) => B64.encode(k.public_key().as_ref()),
        }
    }

    /// The key record's text: `v=DKIM1; k=...; p=...`.
    pub fn txt_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm().key_type(),
            self.public_key_base64()
        )
    }
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (RFC 5280 4.1,
/// rsaEncryption with NULL parameters, RFC 3279 2.3.1).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0u8];
    bit_string.extend_from_slice(pkcs1);
    let mut inner = ALGORITHM.to_vec();
    der(0x03, &bit_string, &mut inner);
    let mut out = Vec::with_capacity(inner.len() + 4);
    der(0x30, &inner, &mut out);
    out
}

fn der(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
}

/// `dir/<domain>.<selector>.key`.
pub fn key_path(dir: &Path, domain: &str, selector: &str) -> PathBuf {
    dir.join(format!("{domain}.{selector}.key"))
}

/// The zone-file line to publish: `<selector>._domainkey.<domain>. TXT "..."`,
/// the text split into strings of at most 255 bytes (RFC 1035 3.3.14).
pub fn dns_record(domain: &str, selector: &str, key: &Key) -> String {
    let text = key.txt_record();
    let strings: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{selector}._domainkey.{domain}. TXT {}", strings.join(" "))
}

/// Generates a key, stores it as `dir/<domain>.<selector>.key` (mode 0600,
/// `dir` created with mode 0700; an existing key is never overwritten) and
/// returns the path and the DNS record to publish.
pub fn keygen(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    dir: &Path,
) -> Result<(PathBuf, String), DkimError> {
    let bad = |v: &str| {
        v.is_empty()
            || v.starts_with(['.', '-'])
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if bad(domain) || bad(selector) {
        return Err(DkimError::Key {
            path: None,
            reason: format!(
                "domain {domain:?} / selector {selector:?}: expected letters, digits, '-' and '.'"
            ),
        });
    }
    let path = key_path(dir, domain, selector);
    let io = |error| DkimError::Io {
        path: path.clone(),
        error,
    };
    let der = match algorithm {
        Algorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| DkimError::Sign(format!("Ed25519 key generation: {e}")))?
            .as_ref()
            .to_vec(),
        Algorithm::Rsa => generate_rsa_pkcs8()?,
    };
    let key = Key::from_pkcs8_der(&der)?;
    std::fs::create_dir_all(dir).map_err(|error| DkimError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    file.write_all(pem(&der).as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok((path.clone(), dns_record(domain, selector, &key)))
}

fn generate_rsa_pkcs8() -> Result<Vec<u8>, DkimError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::PrivateKey::new(&mut RingRng(SystemRandom::new()), RSA_BITS)
        .map_err(|e| DkimError::Sign(format!("RSA key generation: {e}")))?;
    let doc = key
        .to_pkcs8_der()
        .map_err(|e| DkimError::Sign(format!("RSA key encoding: {e}")))?;
    Ok(doc.as_bytes().to_vec())
}

/// ring's system random source for the `rsa` crate's key generation.
struct RingRng(SystemRandom);

#[derive(Debug)]
struct RngError;

impl fmt::Display for RngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the system random source failed")
    }
}

impl std::error::Error for RngError {}

impl rsa::rand_core::TryRng for RingRng {
    type Error = RngError;
    fn try_next_u32(&mut self) -> Result<u32, RngError> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, RngError> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngError> {
        self.0.fill(dst).map_err(|_| RngError)
    }
}

impl rsa::rand_core::TryCryptoRng for RingRng {}

fn pem(der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// Loads a PKCS#8 PEM (`BEGIN PRIVATE KEY`) key file.
pub fn load(path: &Path) -> Result<Key, DkimError> {
    let text = std::fs::read_to_string(path).map_err(|error| DkimError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let key_err = |reason: String| DkimError::Key {
        path: Some(path.to_path_buf()),
        reason,
    };
    let body = text
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END PRIVATE KEY-----").next())
        .ok_or_else(|| key_err("expected a PKCS#8 PEM block (BEGIN PRIVATE KEY)".into()))?;
    let b64: String = body.split_whitespace().collect();
    let der = B64
        .decode(b64)
        .map_err(|e| key_err(format!("bad base64 in the PEM block: {e}")))?;
    Key::from_pkcs8_der(&der).map_err(|e| match e {
        DkimError::Key { reason, .. } => key_err(reason),
        other => other,
    })
}

/// The keys stored in `dir`: `(domain, selector, path)`, sorted. The
/// selector is the last dot-separated part before `.key`.
pub fn stored(dir: &Path) -> Result<Vec<(String, String, PathBuf)>, DkimError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(DkimError::Io {
                path: dir.to_path_buf(),
                error,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".key") else {
            continue;
        };
        if let Some((domain, selector)) = stem.rsplit_once('.') {
            out.push((domain.to_string(), selector.to_string(), path.clone()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pimail-dkim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn ed25519_keygen_store_load() {
        let dir = tempdir("ed");
        let (path, record) = keygen("example.org", "pm2026", Algorithm::Ed25519, &dir).unwrap();
        assert_eq!(path, dir.join("example.org.pm2026.key"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(record.starts_with("pm2026._domainkey.example.org. TXT \"v=DKIM1; k=ed25519; p="));
        let key = load(&path).unwrap();
        assert_eq!(B64.decode(key.public_key_base64()).unwrap().len(), 32);
        assert_eq!(dns_record("example.org", "pm2026", &key), record);
        // Never overwritten.
        assert!(keygen("example.org", "pm2026", Algorithm::Ed25519, &dir).is_err());
        assert_eq!(
            stored(&dir).unwrap(),
            vec![("example.org".into(), "pm2026".into(), path)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rsa_keygen_gives_ring_usable_key_and_split_record() {
        let dir = tempdir("rsa");
        let (path, record) = keygen("example.org", "s1", Algorithm::Rsa, &dir).unwrap();
        let key = load(&path).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Rsa);
        assert_eq!(key.sign(b"data").unwrap().len(), 256);
        // A 2048-bit SPKI is 294 bytes: the record needs two strings.
        assert_eq!(B64.decode(key.public_key_base64()).unwrap().len(), 294);
        let strings: Vec<&str> = record.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), key.txt_record());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempdir("bad");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.y.key");
        std::fs::write(&p, "not a key").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("x.y.key") && e.contains("PKCS#8"), "{e}");
        assert!(keygen("bad domain", "s", Algorithm::Ed25519, &dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
