//! Passwords, SASL, and checking credentials without stalling the
//! executor.

pub mod password;
pub mod sasl;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::store::{Store, StoreError};

/// How long a verified password is remembered (as a keyed hash, never the
/// password), so clients that reconnect often do not cost an Argon2 hash
/// each time.
const CACHE_TTL: Duration = Duration::from_secs(3600);
const CACHE_MAX: usize = 1024;

/// Checks credentials. Argon2 runs on the blocking pool, at most
/// `auth.hash_concurrency` at once, so its memory stays bounded.
pub struct Authenticator {
    gate: smol::lock::Semaphore,
    key: [u8; 32],
    cache: RefCell<HashMap<[u8; 32], Instant>>,
    /// Failed logins per client address: count and time of the last one.
    failures: RefCell<HashMap<std::net::IpAddr, (u32, Instant)>>,
}

impl Authenticator {
    pub fn new(config: &Config) -> Authenticator {
        use ring::rand::SecureRandom;
        let mut key = [0u8; 32];
        // A failed random source leaves a zero key: the cache still works,
        // its entries are just predictable to someone reading our memory.
        let _ = ring::rand::SystemRandom::new().fill(&mut key);
        Authenticator {
            gate: smol::lock::Semaphore::new(config.auth.hash_concurrency.max(1)),
            key,
            cache: RefCell::new(HashMap::new()),
            failures: RefCell::new(HashMap::new()),
        }
    }

    /// Counts a failed login from `ip`.
    pub fn note_failure(&self, ip: std::net::IpAddr) {
        let mut f = self.failures.borrow_mut();
        if f.len() >= 10_000 {
            f.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(3600));
        }
        let e = f.entry(ip).or_insert((0, Instant::now()));
        e.0 += 1;
        e.1 = Instant::now();
    }

    /// Has `ip` failed `auth.max_failures_per_ip` times, the last one less
    /// than `auth.failure_window` ago?
    pub fn blocked(&self, ip: std::net::IpAddr, config: &Config) -> bool {
        let mut f = self.failures.borrow_mut();
        match f.get(&ip) {
            Some((n, at)) if at.elapsed() < config.auth.failure_window => {
                *n >= config.auth.max_failures_per_ip
            }
            Some(_) => {
                f.remove(&ip);
                false
            }
            None => false,
        }
    }

    fn cache_key(&self, address: &str, password: &str, phc: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            &self.key[..],
            address.as_bytes(),
            password.as_bytes(),
            phc.as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    /// Returns the account's canonical address if the password is right.
    pub async fn verify(
        &self,
        store: &Arc<Store>,
        address: &str,
        password: &str,
    ) -> Result<Option<String>, StoreError> {
        let address = crate::store::ops::normalize_address(address);
        let Some(account) = store.account(&address)? else {
            // Spend the same time as a real check, so that timing does not
            // tell which accounts exist.
            let _guard = self.gate.acquire().await;
            let dummy = DUMMY_HASH.to_string();
            let pw = password.to_string();
            smol::unblock(move || password::verify(&pw, &dummy)).await;
            return Ok(None);
        };
        let key = self.cache_key(&address, password, &account.password_hash);
        if let Some(at) = self.cache.borrow().get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(Some(address));
        }
        let ok = {
            let _guard = self.gate.acquire().await;
            let pw = password.to_string();
            let phc = account.password_hash.clone();
            smol::unblock(move || password::verify(&pw, &phc)).await
        };
        if !ok {
            return Ok(None);
        }
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, at| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, Instant::now());
        Ok(Some(address))
    }
}

/// A valid hash of a random password, checked for unknown accounts.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$OiVXSIkj3HUxlOLkGhV+0WeIRl6ew3wo1Qg5drvB2k0";

/// RFC 8314 / 3501 11.1 / 2595: passwords only inside TLS, except from
/// loopback when the config allows it.
pub fn plaintext_allowed(config: &Config, peer: &SocketAddr, tls: bool) -> bool {
    tls || config.auth.allow_plaintext_on_loopback && peer.ip().is_loopback()
}
