//! A non-blocking stub resolver for the single-threaded executor: MX, A/AAAA,
//! TXT and PTR lookups over UDP (EDNS0, 1232 bytes) with TCP fallback on
//! truncation, servers from `/etc/resolv.conf` (or given, so tests can use a
//! fake server on loopback), and a bounded TTL cache.
//!
//! `Resolver` is not `Send`: it is shared by reference (or `Rc`) among the
//! tasks of one `LocalExecutor`, and any number of lookups may run at once.
//!
//! ```no_run
//! # async_io::block_on(async {
//! let resolver = pimail::dns::Resolver::from_resolv_conf("/etc/resolv.conf".as_ref())?;
//! match resolver.mx("example.org").await {
//!     Ok(pimail::dns::MxAnswer::Records(mxs)) => println!("{mxs:?}"),
//!     other => println!("{other:?}"),
//! }
//! # Ok::<(), std::io::Error>(()) });
//! ```

mod cache;
pub mod resolv_conf;
mod wire;

pub use cache::CacheLimits;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use ring::rand::{SecureRandom, SystemRandom};
use simple_dns::RCODE;

use cache::Cache;
use wire::Interpretation;

/// CNAME links followed for one lookup, within and across responses.
pub const MAX_CNAME_HOPS: u32 = 8;

/// The record types pimail asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
}

/// One record's data, names lower-cased without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx(u16, String),
    Txt(Vec<u8>),
    Ptr(String),
}

/// The outcome of one (name, type) lookup, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    Records(Vec<Rdata>),
    /// NOERROR with no records of the type (NODATA).
    NoData,
    NxDomain,
}

/// One mail exchanger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    pub preference: u16,
    /// Lower case, no trailing dot.
    pub exchange: String,
}

/// What the DNS says about where mail for a domain goes (RFC 5321 5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// Sorted by preference; equal preferences in random order, as RFC
    /// 5321 5.1 requires of the sender.
    Records(Vec<Mx>),
    /// The domain exists but has no MX (NODATA): deliver to its A/AAAA.
    NoRecords,
    /// RFC 7505 null MX (`MX 0 .`): the domain accepts no mail.
    NullMx,
    /// The domain does not exist.
    NxDomain,
}

/// Why a lookup gave no answer. `is_temporary()` tells temperror (try
/// later) from permerror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (`ip_addrs`, `txt` and `ptr`; `mx` answers
    /// `MxAnswer::NxDomain` instead).
    NxDomain,
    /// No server answered within the timeout, over every attempt.
    Timeout,
    /// Every server answered SERVFAIL, REFUSED or another error rcode.
    ServerFailure(String),
    /// Sockets failed (no route, no network).
    Network(String),
    /// An answer that cannot be read or does not fit the question.
    Malformed(String),
    /// A CNAME chain longer than `MAX_CNAME_HOPS`.
    CnameLimit(String),
    /// The name given is not a valid domain name.
    InvalidName(String),
}

impl DnsError {
    /// Timeouts, server failures and network errors may clear by
    /// themselves: SPF/DKIM/DMARC temperror, SMTP 4xx.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            DnsError::Timeout | DnsError::ServerFailure(_) | DnsError::Network(_)
        )
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NxDomain => write!(f, "no such domain (NXDOMAIN)"),
            DnsError::Timeout => write!(f, "DNS timeout: no server answered"),
            DnsError::ServerFailure(s) => write!(f, "DNS server failure: {s}"),
            DnsError::Network(s) => write!(f, "DNS network error: {s}"),
            DnsError::Malformed(s) => write!(f, "malformed DNS answer: {s}"),
            DnsError::CnameLimit(n) => {
                write!(f, "{n}: CNAME chain longer than {MAX_CNAME_HOPS}")
            }
            DnsError::InvalidName(s) => write!(f, "invalid domain name: {s}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// The stub resolver. See the module documentation.
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
    cache: RefCell<Cache>,
    /// Questions being asked now: a second caller of the same (name, type)
    /// waits for the first answer instead of sending the same query (many
    /// sessions look up one sender domain's SPF, DKIM and DMARC at once).
    in_flight: RefCell<HashMap<(String, RecordType), async_channel::Receiver<()>>>,
    rng: SystemRandom,
}

/// The mark of a question in flight; dropping it (answer, error or a
/// cancelled lookup) wakes the callers waiting for it.
struct InFlight<'a> {
    map: &'a RefCell<HashMap<(String, RecordType), async_channel::Receiver<()>>>,
    key: (String, RecordType),
    _done: async_channel::Sender<()>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.map.borrow_mut().remove(&self.key);
    }
}

impl Resolver {
    /// `timeout` is per try and server; `attempts` is the number of rounds
    /// over all servers (at least 1). The cache has `CacheLimits::default()`.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration, attempts: u32) -> Resolver {
        Resolver {
            servers,
            timeout,
            attempts: attempts.max(1),
            cache: RefCell::new(Cache::new(CacheLimits::default())),
            in_flight: RefCell::new(HashMap::new()),
            rng: SystemRandom::new(),
        }
    }

    /// Servers, timeout and attempts from a resolv.conf file; a missing file
    /// means the C library's defaults (127.0.0.1, 5 s, 2 attempts).
    pub fn from_resolv_conf(path: &Path) -> std::io::Result<Resolver> {
        let conf = match std::fs::read_to_string(path) {
            Ok(text) => resolv_conf::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ));
            }
        };
        Ok(Resolver::new(conf.servers, conf.timeout, conf.attempts))
    }

    /// Replaces the cache (emptying it) with one of these bounds.
    pub fn with_cache_limits(self, limits: CacheLimits) -> Resolver {
        Resolver {
            cache: RefCell::new(Cache::new(limits)),
            ..self
        }
    }

    /// Entries currently cached.
    pub fn cached_entries(&self) -> usize {
        self.cache.borrow().len()
    }

    /// Where mail for `domain` goes. NXDOMAIN and NODATA are answers here,
    /// not errors; errors are temporary failures or broken answers.
    pub async fn mx(&self, domain: &str) -> Result<MxAnswer, DnsError> {
        let records = match self.lookup(domain, RecordType::Mx).await? {
            Lookup::NxDomain => return Ok(MxAnswer::NxDomain),
            Lookup::NoData => return Ok(MxAnswer::NoRecords),
            Lookup::Records(r) => r,
        };
        let mut mxs: Vec<Mx> = records
            .into_iter()
            .filter_map(|r| match r {
                Rdata::Mx(preference, exchange) => Some(Mx {
                    preference,
                    exchange,
                }),
                _ => None,
            })
            .collect();
        // RFC 7505 3: a null MX is the only MX of its domain. One mixed with
        // real exchanges is a misconfiguration; the real ones are used.
        let real = mxs.iter().filter(|m| !m.exchange.is_empty()).count();
        if real == 0 {
            return Ok(MxAnswer::NullMx);
        }
        mxs.retain(|m| !m.exchange.is_empty());
        self.shuffle(&mut mxs);
        mxs.sort_by_key(|m| m.preference);
        Ok(MxAnswer::Records(mxs))
    }

    /// The A and AAAA addresses of `host`, asked concurrently; IPv4 first.
    /// NODATA on both gives an empty vector; `Err(DnsError::NxDomain)` when
    /// the name does not exist. Addresses from one family are returned even
    /// if the other family's lookup failed; otherwise its error is.
    pub async fn ip_addrs(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let (v4, v6) = futures_lite::future::zip(
            self.lookup(host, RecordType::A),
            self.lookup(host, RecordType::Aaaa),
        )
        .await;
        let mut addrs = Vec::new();
        let mut nxdomain = false;
        let mut error = None;
        for result in [v4, v6] {
            match result {
                Ok(Lookup::Records(rs)) => addrs.extend(rs.into_iter().filter_map(|r| match r {
                    Rdata::A(a) => Some(IpAddr::V4(a)),
                    Rdata::Aaaa(a) => Some(IpAddr::V6(a)),
                    _ => None,
                })),
                Ok(Lookup::NxDomain) => nxdomain = true,
                Ok(Lookup::NoData) => {}
                Err(e) => error = Some(e),
            }
        }
        match error {
            Some(e) if addrs.is_empty() => Err(e),
            _ if addrs.is_empty() && nxdomain => Err(DnsError::NxDomain),
            _ => Ok(addrs),
        }
    }

    /// Each TXT record of `name`, its strings concatenated (RFC 7208 3.3).
    /// NODATA gives an empty vector, a missing name `Err(DnsError::NxDomain)`.
    pub async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        self.records(name, RecordType::Txt, |r| match r {
            Rdata::Txt(t) => Some(t),
            _ => None,
        })
        .await
    }

    /// The PTR names of `ip` (in-addr.arpa / ip6.arpa). NODATA gives an empty
    /// vector, a missing name `Err(DnsError::NxDomain)`.
    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        self.records(&reverse_name(ip), RecordType::Ptr, |r| match r {
            Rdata::Ptr(p) => Some(p),
            _ => None,
        })
        .await
    }

    async fn records<T>(
        &self,
        name: &str,
        rtype: RecordType,
        pick: impl Fn(Rdata) -> Option<T>,
    ) -> Result<Vec<T>, DnsError> {
        match self.lookup(name, rtype).await? {
            Lookup::Records(rs) => Ok(rs.into_iter().filter_map(pick).collect()),
            Lookup::NoData => Ok(Vec::new()),
            Lookup::NxDomain => Err(DnsError::NxDomain),
        }
    }

    /// A cached or fresh answer for (name, type), CNAMEs followed.
    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Lookup, DnsError> {
        let name = normalize_query_name(name)?;
        if let Some(hit) = self.cache.borrow_mut().get(&name, rtype, Instant::now()) {
            return Ok(hit);
        }
        let key = (name.clone(), rtype);
        let waiting = self.in_flight.borrow().get(&key).cloned();
        if let Some(done) = waiting {
            // Closed when the first asker finishes; its answer is then in
            // the cache unless it failed or was not cacheable (TTL 0), in
            // which case this caller asks for itself.
            let _ = done.recv().await;
            if let Some(hit) = self.cache.borrow_mut().get(&name, rtype, Instant::now()) {
                return Ok(hit);
            }
        }
        let (done_tx, done_rx) = async_channel::bounded(1);
        let _in_flight = match self.in_flight.borrow_mut().entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(done_rx);
                Some(InFlight {
                    map: &self.in_flight,
                    key,
                    _done: done_tx,
                })
            }
        };
        let mut current = name.clone();
        let mut hops = 0;
        let mut chain_ttl = u32::MAX;
        let (lookup, ttl) = loop {
            let response = self.exchange(&current, rtype).await?;
            match wire::interpret(&response, &current, rtype, MAX_CNAME_HOPS - hops)? {
                Interpretation::Done(lookup, ttl) => break (lookup, ttl.map(|t| t.min(chain_ttl))),
                Interpretation::Follow {
                    target,
                    ttl,
                    hops: more,
                } => {
                    hops += more;
                    chain_ttl = chain_ttl.min(ttl);
                    current = target;
                }
            }
        };
        self.cache
            .borrow_mut()
            .put(&name, rtype, lookup.clone(), ttl, Instant::now());
        Ok(lookup)
    }

    /// One question to the servers in order, `attempts` rounds; the first
    /// NOERROR or NXDOMAIN answer wins.
    async fn exchange(&self, name: &str, rtype: RecordType) -> Result<Vec<u8>, DnsError> {
        let mut last = DnsError::Network("no name servers configured".into());
        for _ in 0..self.attempts {
            for &server in &self.servers {
                match self.ask(server, name, rtype).await {
                    Ok((RCODE::NoError | RCODE::NameError, response)) => return Ok(response),
                    Ok((rcode, _)) => {
                        last = DnsError::ServerFailure(format!("{server} answered {rcode:?}"));
                    }
                    Err(e) => {
                        log::debug!("dns: {name} {rtype:?} via {server}: {e}");
                        last = e;
                    }
                }
            }
        }
        Err(last)
    }

    /// One try at one server: UDP, then TCP if the answer was truncated,
    /// each within the timeout.
    async fn ask(
        &self,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
    ) -> Result<(RCODE, Vec<u8>), DnsError> {
        let id = self.random_u16();
        let query = wire::build_query(id, name, rtype)?;
        let mut response = within(self.timeout, udp_exchange(server, &query, id)).await?;
        if wire::is_truncated(&response) {
            response = within(self.timeout, tcp_exchange(server, &query)).await?;
            if wire::message_id(&response) != Some(id) {
                return Err(DnsError::Malformed(format!(
                    "{server}: TCP answer id mismatch"
                )));
            }
        }
        let rcode = wire::check_answer(&response, name, rtype)?;
        Ok((rcode, response))
    }

    fn random_u16(&self) -> u16 {
        let mut b = [0u8; 2];
        // SystemRandom fails only if the OS has no entropy source; an id of
        // 0 then is still a valid (if guessable) id.
        let _ = self.rng.fill(&mut b);
        u16::from_ne_bytes(b)
    }

    /// Fisher-Yates, so that equal preferences come out in random order
    /// after the stable sort.
    fn shuffle(&self, mxs: &mut [Mx]) {
        for i in (1..mxs.len()).rev() {
            let j = usize::from(self.random_u16()) % (i + 1);
            mxs.swap(i, j);
        }
    }
}

/// Runs `fut`, giving up with `DnsError::Timeout` after `timeout`.
async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, DnsError>>,
) -> Result<T, DnsError> {
    futures_lite::future::or(fut, async {
        Timer::after(timeout).await;
        Err(DnsError::Timeout)
    })
    .await
}

fn net_err(server: SocketAddr, e: std::io::Error) -> DnsError {
    DnsError::Network(format!("{server}: {e}"))
}

/// Sends the query from a fresh socket (random source port) and waits for
/// a datagram from the server carrying our id; anything else (another
/// source address, another id: late or forged answers) is ignored.
async fn udp_exchange(server: SocketAddr, query: &[u8], id: u16) -> Result<Vec<u8>, DnsError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = Async::<UdpSocket>::bind(local).map_err(|e| net_err(server, e))?;
    socket
        .send_to(query, server)
        .await
        .map_err(|e| net_err(server, e))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = socket
            .recv_from(&mut buf)
            .await
            .map_err(|e| net_err(server, e))?;
        if from != server || wire::message_id(&buf[..n]) != Some(id) {
            log::debug!("dns: ignored a datagram from {from} (asked {server})");
            continue;
        }
        buf.truncate(n);
        return Ok(buf);
    }
}

/// RFC 1035 4.2.2 / RFC 7766: a two-byte length before each message.
async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>, DnsError> {
    let mut stream = Async::<TcpStream>::connect(server)
        .await
        .map_err(|e| net_err(server, e))?;
    let len = u16::try_from(query.len())
        .map_err(|_| DnsError::InvalidName("query longer than 65535 bytes".into()))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| net_err(server, e))?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| net_err(server, e))?;
    let mut response = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut response)
        .await
        .map_err(|e| net_err(server, e))?;
    Ok(response)
}

/// Lower case, no trailing dot, checked: labels of 1 to 63 bytes, at most
/// 253 bytes in all.
fn normalize_query_name(name: &str) -> Result<String, DnsError> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    let bad = n.is_empty()
        || n.len() > 253
        || n.split('.')
            .any(|l| l.is_empty() || l.len() > 63 || l.bytes().any(|b| b <= b' ' || b == b'\\'));
    if bad {
        return Err(DnsError::InvalidName(format!("{name:?}")));
    }
    Ok(n)
}

/// `4.3.2.1.in-addr.arpa` / nibbles `.ip6.arpa` (RFC 1035 3.5, RFC 3596 2.5).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xF, byte >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.1".parse().unwrap()),
            "1.2.0.192.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn query_names_checked_and_normalized() {
        assert_eq!(normalize_query_name("Example.ORG.").unwrap(), "example.org");
        for bad in ["", ".", "a..b", "a b.test", &"x".repeat(64)] {
            assert!(normalize_query_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn temporary_errors() {
        assert!(DnsError::Timeout.is_temporary());
        assert!(DnsError::ServerFailure("x".into()).is_temporary());
        assert!(!DnsError::NxDomain.is_temporary());
        assert!(!DnsError::Malformed("x".into()).is_temporary());
    }
}
