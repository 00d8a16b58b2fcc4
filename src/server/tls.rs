//! TLS: certificate loading and self-signed generation, and the rustls
//! server configuration.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Writes a self-signed ECDSA P-256 certificate for `hostname` (cheaper
/// handshakes than RSA on a Pi, ../shared/TLS-NOTES.md). The key file is
/// created readable by its owner only.
pub fn generate_self_signed(hostname: &str, cert: &Path, key: &Path) -> Result<(), String> {
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
        .map_err(|e| format!("generating a certificate for {hostname}: {e}"))?;
    for p in [cert, key] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    write_private(key, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, ck.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Builds the server configuration: TLS 1.2 and 1.3, ChaCha20-Poly1305
/// preferred (Pi 3/4 and Zero 2 W lack AES instructions, so AES-GCM is
/// slow there), the server's order winning over the client's.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        let name = format!("{:?}", s.suite());
        !name.contains("CHACHA20")
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_loads() {
        let dir = std::env::temp_dir().join(format!("pimail-tls-{}", std::process::id()));
        let (cert, key) = (dir.join("c/cert.pem"), dir.join("c/key.pem"));
        generate_self_signed("mail.example.org", &cert, &key).unwrap();
        let config = server_config(&cert, &key).unwrap();
        assert!(config.ignore_client_order);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            server_config(&key, &key).is_err(),
            "a key is not a certificate"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
