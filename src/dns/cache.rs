//! The answer cache: TTLs respected within configured bounds, negative
//! answers kept for the SOA minimum (RFC 2308 section 5), a bounded entry
//! count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Lookup, RecordType};

/// Bounds of the cache; every one is a knob the caller can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Entries held at most; the one closest to expiry is evicted first.
    /// 0 turns caching off.
    pub max_entries: usize,
    /// TTLs below this are raised to it (0: use the record's own TTL).
    pub min_ttl: Duration,
    /// TTLs above this are lowered to it.
    pub max_ttl: Duration,
    /// Cap on how long NXDOMAIN and NODATA answers are kept (RFC 2308
    /// section 5 suggests one to three hours at most; less is kinder when a
    /// user is fixing their DNS).
    pub max_negative_ttl: Duration,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_entries: 1024,
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(86_400),
            max_negative_ttl: Duration::from_secs(900),
        }
    }
}

struct Entry {
    expires: Instant,
    lookup: Lookup,
}

pub(crate) struct Cache {
    limits: CacheLimits,
    entries: HashMap<(String, RecordType), Entry>,
}

impl Cache {
    pub(crate) fn new(limits: CacheLimits) -> Cache {
        Cache {
            limits,
            entries: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&mut self, name: &str, rtype: RecordType, now: Instant) -> Option<Lookup> {
        let key = (name.to_string(), rtype);
        match self.entries.get(&key) {
            Some(e) if e.expires > now => Some(e.lookup.clone()),
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// `ttl` is the answer's TTL in seconds (for negative answers: the
    /// SOA-derived one); `None` means the answer must not be cached (a
    /// negative answer without SOA, RFC 2308 section 5).
    pub(crate) fn put(
        &mut self,
        name: &str,
        rtype: RecordType,
        lookup: Lookup,
        ttl: Option<u32>,
        now: Instant,
    ) {
        let Some(ttl) = ttl else { return };
        if self.limits.max_entries == 0 {
            return;
        }
        let ttl = Duration::from_secs(u64::from(ttl));
        let ttl = match lookup {
            Lookup::Records(_) => ttl.max(self.limits.min_ttl).min(self.limits.max_ttl),
            Lookup::NoData | Lookup::NxDomain => ttl
                .max(self.limits.min_ttl)
                .min(self.limits.max_negative_ttl),
        };
        if ttl.is_zero() {
            return;
        }
        let key = (name.to_string(), rtype);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.limits.max_entries {
            self.entries.retain(|_, e| e.expires > now);
            while self.entries.len() >= self.limits.max_entries {
                let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            key,
            Entry {
                expires: now + ttl,
                lookup,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Rdata;
    use std::net::Ipv4Addr;

    fn a(n: u8) -> Lookup {
        Lookup::Records(vec![Rdata::A(Ipv4Addr::new(192, 0, 2, n))])
    }

    #[test]
    fn ttl_respected_and_clamped() {
        let now = Instant::now();
        let mut c = Cache::new(CacheLimits {
            min_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(100),
            ..CacheLimits::default()
        });
        c.put("a.test", RecordType::A, a(1), Some(1), now);
        c.put("b.test", RecordType::A, a(2), Some(100_000), now);
        assert!(
            c.get("a.test", RecordType::A, now + Duration::from_secs(9))
                .is_some()
        );
        assert!(
            c.get("a.test", RecordType::A, now + Duration::from_secs(10))
                .is_none()
        );
        assert!(
            c.get("b.test", RecordType::A, now + Duration::from_secs(99))
                .is_some()
        );
        assert!(
            c.get("b.test", RecordType::A, now + Duration::from_secs(100))
                .is_none()
        );
        assert!(c.get("b.test", RecordType::Aaaa, now).is_none());
    }

    #[test]
    fn negative_answers_capped_and_soa_less_not_cached() {
        let now = Instant::now();
        let mut c = Cache::new(CacheLimits {
            max_negative_ttl: Duration::from_secs(60),
            ..CacheLimits::default()
        });
        c.put("nx.test", RecordType::Mx, Lookup::NxDomain, Some(3600), now);
        c.put("nosoa.test", RecordType::Mx, Lookup::NoData, None, now);
        assert!(
            c.get("nx.test", RecordType::Mx, now + Duration::from_secs(59))
                .is_some()
        );
        assert!(
            c.get("nx.test", RecordType::Mx, now + Duration::from_secs(60))
                .is_none()
        );
        assert!(c.get("nosoa.test", RecordType::Mx, now).is_none());
    }

    #[test]
    fn bounded_at_max_entries_evicting_soonest_expiry() {
        let now = Instant::now();
        let mut c = Cache::new(CacheLimits {
            max_entries: 2,
            ..CacheLimits::default()
        });
        c.put("long.test", RecordType::A, a(1), Some(300), now);
        c.put("short.test", RecordType::A, a(2), Some(30), now);
        assert_eq!(c.len(), 2);
        c.put("new.test", RecordType::A, a(3), Some(60), now);
        assert_eq!(c.len(), 2);
        assert!(c.get("short.test", RecordType::A, now).is_none());
        assert!(c.get("long.test", RecordType::A, now).is_some());
        assert!(c.get("new.test", RecordType::A, now).is_some());
        // Replacing an existing key does not evict.
        c.put("new.test", RecordType::A, a(4), Some(60), now);
        assert_eq!(c.len(), 2);
        let mut off = Cache::new(CacheLimits {
            max_entries: 0,
            ..CacheLimits::default()
        });
        off.put("a.test", RecordType::A, a(1), Some(300), now);
        assert_eq!(off.len(), 0);
    }
}
