//! DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256 (RFC 8463),
//! relaxed/relaxed, on ring. The body is hashed in chunks as it is read from
//! the store (`BodyHasher`), then `Signer::sign` makes the header field.
//!
//! ```no_run
//! use pimail::dkim::{self, BodyHasher, Canonicalization, Signer};
//! let key = dkim::keys::load("/var/lib/pimail/dkim/example.org.pm2026.key".as_ref())?;
//! let signer = Signer { domain: "example.org".into(), selector: "pm2026".into(), key };
//! let mut body = BodyHasher::new(Canonicalization::Relaxed);
//! body.update(b"Hello,\r\n");
//! body.update(b"world.\r\n");
//! let fields = [("From", &b" alice@example.org"[..]), ("Subject", &b" hi"[..])];
//! let field = signer.sign(&fields, &body.finish())?; // "DKIM-Signature: v=1; ...\r\n"
//! # Ok::<(), pimail::dkim::DkimError>(())
//! ```

pub mod canon;
pub mod keys;
pub mod records;
pub mod verify;

pub use canon::{BodyHasher, Canonicalization};
pub use keys::{Algorithm, Key};

use std::fmt;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Header fields signed when present, in this order; From is also
/// oversigned (listed once more than it occurs) so that no From can be
/// added after signing (RFC 6376 8.15).
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "reply-to",
];

/// Folded lines stay within this many characters (RFC 5322 2.1.1 asks for
/// fewer than 78).
const LINE_MAX: usize = 76;

#[derive(Debug)]
pub enum DkimError {
    /// The message has no From field, which DKIM must sign (RFC 6376 5.4).
    NoFrom,
    /// A key file or key that cannot be used.
    Key {
        path: Option<PathBuf>,
        reason: String,
    },
    /// Reading or writing a key file.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The crypto library refused to sign.
    Sign(String),
}

impl fmt::Display for DkimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DkimError::NoFrom => write!(f, "DKIM: the message has no From field to sign"),
            DkimError::Key {
                path: Some(p),
                reason,
            } => {
                write!(f, "{}: DKIM key: {reason}", p.display())
            }
            DkimError::Key { path: None, reason } => write!(f, "DKIM key: {reason}"),
            DkimError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            DkimError::Sign(s) => write!(f, "DKIM signing failed: {s}"),
        }
    }
}

impl std::error::Error for DkimError {}

/// Signs for one domain with one selector's key.
pub struct Signer {
    pub domain: String,
    pub selector: String,
    pub key: Key,
}

impl Signer {
    /// The complete `DKIM-Signature: ...\r\n` field for a message whose
    /// header fields are `header_fields` (`(name, value after the colon)`, in
    /// message order, as `canon::parse_fields` gives them) and whose relaxed
    /// body hash is `body_hash`. Timestamped now.
    pub fn sign<N: AsRef<str>, V: AsRef<[u8]>>(
        &self,
        header_fields: &[(N, V)],
        body_hash: &[u8; 32],
    ) -> Result<String, DkimError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.sign_at(header_fields, body_hash, now)
    }

    /// As `sign`, with the `t=` timestamp given.
    pub fn sign_at<N: AsRef<str>, V: AsRef<[u8]>>(
        &self,
        header_fields: &[(N, V)],
        body_hash: &[u8; 32],
        timestamp: u64,
    ) -> Result<String, DkimError> {
        let present = |name: &str| {
            header_fields
                .iter()
                .filter(|(n, _)| {
                    n.as_ref()
                        .trim_end_matches([' ', '\t'])
                        .eq_ignore_ascii_case(name)
                })
                .count()
        };
        if present("from") == 0 {
            return Err(DkimError::NoFrom);
        }
        let mut signed: Vec<&str> = Vec::new();
        for &name in DEFAULT_SIGNED_HEADERS {
            signed.extend(std::iter::repeat_n(name, present(name)));
        }
        signed.push("from");

        let mut field = Folder::new("DKIM-Signature:");
        for tag in [
            "v=1;".to_string(),
            format!("a={};", self.key.algorithm().dkim_name()),
            "c=relaxed/relaxed;".to_string(),
            format!("d={};", self.domain),
            format!("s={};", self.selector),
            format!("t={timestamp};"),
        ] {
            field.word(" ", &tag);
        }
        for (i, name) in signed.iter().enumerate() {
            let last = i + 1 == signed.len();
            let word = format!(
                "{}{name}{}",
                if i == 0 { "h=" } else { "" },
                if last { ";" } else { ":" }
            );
            field.word(if i == 0 { " " } else { "" }, &word);
        }
        field.word(" ", &format!("bh={};", B64.encode(body_hash)));
        field.word(" ", "b=");

        let value = &field.text["DKIM-Signature:".len()..];
        let data = canon::signed_data(
            Canonicalization::Relaxed,
            header_fields,
            &signed,
            "DKIM-Signature",
            value.as_bytes(),
        );
        let signature = self.key.sign(&data)?;
        field.base64(&B64.encode(signature));
        field.text.push_str("\r\n");
        Ok(field.text)
    }
}

/// Builds a folded header field: words go on the current line while it
/// stays within `LINE_MAX`, else on a continuation line.
struct Folder {
    text: String,
    line_len: usize,
}

impl Folder {
    fn new(start: &str) -> Folder {
        Folder {
            text: start.to_string(),
            line_len: start.len(),
        }
    }

    /// `sep` goes before the word unless the word starts a new line (the
    /// fold is then the separator, which the grammar of every tag allows).
    fn word(&mut self, sep: &str, word: &str) {
        if self.line_len + sep.len() + word.len() > LINE_MAX {
            self.text.push_str("\r\n ");
            self.line_len = 1;
        } else {
            self.text.push_str(sep);
            self.line_len += sep.len();
        }
        self.text.push_str(word);
        self.line_len += word.len();
    }

    /// Base64 may be folded anywhere (RFC 6376 2.4, base64string).
    fn base64(&mut self, mut b64: &str) {
        while !b64.is_empty() {
            if self.line_len >= LINE_MAX {
                self.text.push_str("\r\n ");
                self.line_len = 1;
            }
            let take = (LINE_MAX - self.line_len).min(b64.len());
            self.text.push_str(&b64[..take]);
            self.line_len += take;
            b64 = &b64[take..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed25519_rfc8463() -> Key {
        let seed = B64
            .decode("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
            .unwrap();
        let public = B64
            .decode("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
            .unwrap();
        Key::ed25519_from_seed(&seed, &public).unwrap()
    }

    const RFC8463_HEADER: &[u8] = b"From: Joe SixPack <joe@football.example.com>\r\n\
To: Suzie Q <suzie@shopping.example.net>\r\n\
Subject: Is dinner ready?\r\n\
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n\
Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n";

    /// RFC 8463 appendix A.3: Ed25519 is deterministic, so signing the
    /// example's exact DKIM-Signature field with the published key must
    /// give the published b= value.
    #[test]
    fn rfc8463_ed25519_signature_reproduced() {
        let fields = canon::parse_fields(RFC8463_HEADER);
        let value = " v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n \
d=football.example.com; i=@football.example.com;\r\n \
q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n \
subject : date : message-id : from : subject : date;\r\n \
bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n b=";
        let signed = [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "from",
            "subject",
            "date",
        ];
        let data = canon::signed_data(
            Canonicalization::Relaxed,
            &fields,
            &signed,
            "DKIM-Signature",
            value.as_bytes(),
        );
        let b = B64.encode(ed25519_rfc8463().sign(&data).unwrap());
        assert_eq!(
            b,
            "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="
        );
    }

    #[test]
    fn signature_field_shape() {
        let signer = Signer {
            domain: "football.example.com".into(),
            selector: "brisbane".into(),
            key: ed25519_rfc8463(),
        };
        let mut fields = canon::parse_fields(RFC8463_HEADER);
        fields.push(("X-Other".into(), b" not signed".to_vec()));
        let field = signer.sign_at(&fields, &[0u8; 32], 1_700_000_000).unwrap();
        assert!(field.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;"));
        assert!(field.ends_with("\r\n"));
        for line in field.trim_end().split("\r\n") {
            assert!(line.len() < 78, "{line:?}");
        }
        let unfolded = field.replace("\r\n ", "");
        assert!(
            unfolded.contains(" h=from:to:subject:date:message-id:from;"),
            "{unfolded}"
        );
        assert!(unfolded.contains("t=1700000000;"));
        assert!(!unfolded.contains("x-other"));
        // Deterministic for Ed25519.
        assert_eq!(
            signer.sign_at(&fields, &[0u8; 32], 1_700_000_000).unwrap(),
            field
        );
        let no_from: Vec<(String, Vec<u8>)> =
            fields.into_iter().filter(|f| f.0 != "From").collect();
        assert!(matches!(
            signer.sign(&no_from, &[0; 32]),
            Err(DkimError::NoFrom)
        ));
    }
}
