//! Argon2id password hashes in PHC string form
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), so the cost can change
//! later without invalidating stored hashes: each hash carries its own.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;

/// Cost parameters for new hashes.
#[derive(Debug, Clone, Copy)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;

fn random_salt() -> Result<[u8; SALT_LEN], String> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(salt)
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// Hashes a password for storage. CPU- and memory-heavy: call it off the
/// executor thread.
pub fn hash(password: &str, cost: HashCost) -> Result<String, String> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, Some(OUTPUT_LEN))
        .map_err(|e| format!("argon2 parameters: {e}"))?;
    let salt = random_salt()?;
    let mut out = [0u8; OUTPUT_LEN];
    argon2(&params)
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .map_err(|e| format!("argon2: {e}"))?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p=1${}${}",
        cost.memory_kib,
        cost.iterations,
        B64.encode(salt),
        B64.encode(out)
    ))
}

/// Checks a password against a stored PHC string. A malformed stored hash
/// never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    let Some((params, salt, expected)) = parse(phc) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if argon2(&params)
        .hash_password_into(password.as_bytes(), &salt, &mut out)
        .is_err()
    {
        return false;
    }
    // Constant time, so a timing side channel reveals nothing of the hash.
    out.iter()
        .zip(&expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn parse(phc: &str) -> Option<(Params, Vec<u8>, Vec<u8>)> {
    let mut fields = phc.split('$');
    if !fields.next()?.is_empty() || fields.next()? != "argon2id" || fields.next()? != "v=19" {
        return None;
    }
    let (mut m, mut t, mut p) = (None, None, None);
    for kv in fields.next()?.split(',') {
        let (k, v) = kv.split_once('=')?;
        let v: u32 = v.parse().ok()?;
        match k {
            "m" => m = Some(v),
            "t" => t = Some(v),
            "p" => p = Some(v),
            _ => return None,
        }
    }
    let salt = B64.decode(fields.next()?).ok()?;
    let hash = B64.decode(fields.next()?).ok()?;
    if fields.next().is_some() || hash.len() < 16 || hash.len() > 64 {
        return None;
    }
    let params = Params::new(m?, t?, p?, Some(hash.len())).ok()?;
    Some((params, salt, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashCost = HashCost {
        memory_kib: 1024,
        iterations: 1,
    };

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse", CHEAP).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsf", &h));
        assert!(!verify("", &h));
        // Salted: the same password hashes differently each time.
        assert_ne!(h, hash("correct horse", CHEAP).unwrap());
    }

    #[test]
    fn malformed_hashes_never_match() {
        for bad in [
            "",
            "$argon2id$",
            "$argon2i$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "plain",
            "$argon2id$v=19$m=x,t=1,p=1$a$b",
        ] {
            assert!(!verify("x", bad), "{bad}");
        }
    }
}
