//! DKIM signatures made by our signer, checked by an independent verifier
//! (dkimpy from PyPI, with PyNaCl for Ed25519), and the `dkim keygen` /
//! `dns-records` commands.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pimail::dkim::{self, Algorithm, BodyHasher, Canonicalization, Signer};

/// Deliberately awkward: folded and oddly spaced headers, two To fields,
/// trailing whitespace and empty lines at the end of the body, and a body
/// fed to the hasher in small chunks that split CRLFs.
const MESSAGE: &[u8] = b"Received: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n\
From:   Alice  Example <alice@example.test>\r\n\
To: bob@example.net,\r\n\tcarol@example.net\r\n\
To: dave@example.net\r\n\
Subject: Lunch   \r\n\ttomorrow?\r\n\
Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\
Message-ID: <1@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hello Bob,  \r\n\
\r\n\
\tsee you at  noon.\t\r\n\
 \r\n\
\r\n";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pimail-dkimtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Signs MESSAGE the way outbound delivery will: headers parsed, body
/// hashed in chunks.
fn sign(signer: &Signer, message: &[u8]) -> Vec<u8> {
    let split = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    let fields = dkim::canon::parse_fields(&message[..split]);
    let mut body = BodyHasher::new(Canonicalization::Relaxed);
    for chunk in message[split + 2..].chunks(3) {
        body.update(chunk);
    }
    let field = signer.sign(&fields, &body.finish()).unwrap();
    let mut signed = field.into_bytes();
    signed.extend_from_slice(message);
    signed
}

/// dkimpy importable, installing it (and PyNaCl) from PyPI if needed.
fn dkimpy() -> Option<&'static str> {
    let python = "python3";
    let importable = || {
        Command::new(python)
            .args(["-c", "import dkim, nacl"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if Command::new(python).arg("--version").output().is_err() {
        eprintln!("SKIP: python3 not available; dkimpy verification not run");
        return None;
    }
    if !importable() {
        let _ = Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "dkimpy", "pynacl"])
            .status();
    }
    if !importable() {
        eprintln!("SKIP: dkimpy/pynacl not installable (pip install dkimpy pynacl)");
        return None;
    }
    Some(python)
}

fn verify_with_dkimpy(python: &str, dir: &Path, signed: &[u8], name: &str, record: &str) -> String {
    let file = dir.join("signed.eml");
    std::fs::write(&file, signed).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dkim_verify.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&file)
        .arg(format!("{name}={record}"))
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_with_dkimpy(algorithm: Algorithm) {
    let Some(python) = dkimpy() else { return };
    let dir = temp_dir(algorithm.key_type());
    let (path, _) = dkim::keys::keygen("example.test", "sel", algorithm, &dir).unwrap();
    let key = dkim::keys::load(&path).unwrap();
    let record = key.txt_record();
    let signer = Signer {
        domain: "example.test".into(),
        selector: "sel".into(),
        key,
    };
    let signed = sign(&signer, MESSAGE);
    let name = "sel._domainkey.example.test";
    let out = verify_with_dkimpy(python, &dir, &signed, name, &record);
    assert_eq!(out.trim(), "pass", "{}", String::from_utf8_lossy(&signed));

    // A changed body or a second From must fail.
    let mut tampered = signed.clone();
    let at = tampered.windows(4).position(|w| w == b"noon").unwrap();
    tampered[at] = b'N';
    assert!(verify_with_dkimpy(python, &dir, &tampered, name, &record).contains("fail"));
    let mut added = b"From: mallory@example.test\r\n".to_vec();
    added.extend_from_slice(&signed);
    assert!(verify_with_dkimpy(python, &dir, &added, name, &record).contains("fail"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dkimpy_verifies_rsa_sha256() {
    check_with_dkimpy(Algorithm::Rsa);
}

#[test]
fn dkimpy_verifies_ed25519_sha256() {
    check_with_dkimpy(Algorithm::Ed25519);
}

#[test]
fn cli_keygen_and_dns_records() {
    let dir = temp_dir("cli");
    let run = |args: &[&str]| {
        Command::new(common::BIN)
            .args(args)
            .output()
            .expect("run pimail")
    };
    let out = run(&[
        "init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--domain",
        "example.test",
        "--dev",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("pimail.toml");
    let config = config.to_str().unwrap();

    let out = run(&[
        "dkim",
        "keygen",
        "--domain",
        "example.test",
        "--selector",
        "s1",
        "--algorithm",
        "ed25519",
        "--config",
        config,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("s1._domainkey.example.test. TXT \"v=DKIM1; k=ed25519; p="),
        "{stdout}"
    );
    assert!(dir.join("dkim/example.test.s1.key").exists());

    // Usage errors exit 2: unknown algorithm, domain not configured.
    let out = run(&[
        "dkim",
        "keygen",
        "--domain",
        "example.test",
        "--algorithm",
        "dsa",
        "--config",
        config,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "dkim",
        "keygen",
        "--domain",
        "other.test",
        "--config",
        config,
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&["dns-records", "--config", config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "example.test.\tIN MX 10 mail.example.test.",
        "example.test.\tIN TXT \"v=spf1 mx -all\"",
        "s1._domainkey.example.test. TXT \"v=DKIM1; k=ed25519; p=",
        "_dmarc.example.test.\tIN TXT \"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test\"",
        "PTR",
        "mail.example.test",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
