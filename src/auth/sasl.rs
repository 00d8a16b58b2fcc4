//! SASL mechanisms PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Credentials from a SASL exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub authcid: String,
    pub password: String,
}

/// Decodes a base64 PLAIN response: `[authzid] NUL authcid NUL passwd`.
/// An authzid other than empty or the authcid itself is refused: we do not
/// offer proxy authorization.
pub fn decode_plain(b64: &str) -> Option<Credentials> {
    let raw = B64.decode(b64.trim()).ok()?;
    let mut fields = raw.split(|&b| b == 0);
    let authzid = fields.next()?;
    let authcid = std::str::from_utf8(fields.next()?).ok()?;
    let password = std::str::from_utf8(fields.next()?).ok()?;
    if fields.next().is_some() || authcid.is_empty() {
        return None;
    }
    if !authzid.is_empty() && authzid != authcid.as_bytes() {
        return None;
    }
    Some(Credentials {
        authcid: authcid.to_string(),
        password: password.to_string(),
    })
}

/// Decodes one base64 line of the LOGIN mechanism.
pub fn decode_line(b64: &str) -> Option<String> {
    let raw = B64.decode(b64.trim()).ok()?;
    String::from_utf8(raw).ok()
}

pub fn encode(s: &str) -> String {
    B64.encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let c = decode_plain(&encode("\0alice@example.org\0secret")).unwrap();
        assert_eq!(
            (c.authcid.as_str(), c.password.as_str()),
            ("alice@example.org", "secret")
        );
        assert!(decode_plain(&encode("alice@example.org\0alice@example.org\0pw")).is_some());
        assert!(decode_plain(&encode("bob@example.org\0alice@example.org\0pw")).is_none());
        assert!(decode_plain(&encode("\0\0pw")).is_none());
        assert!(decode_plain(&encode("no nuls")).is_none());
        assert!(decode_plain("***").is_none());
        assert_eq!(decode_line(&encode("user")), Some("user".into()));
    }
}
