//! A fake recursive DNS server for tests: UDP and TCP on one loopback port,
//! answering from a table. It follows CNAMEs in its table like a recursive
//! resolver, adds an SOA (for negative caching) to NXDOMAIN and NODATA, can
//! set TC on every UDP answer (to force TCP), can drop every query (to force
//! timeouts), and counts what it was asked.
//!
//! ```ignore
//! let (addr, dns) = FakeDns::start(vec![
//!     FakeRecord::mx("example.test", 10, "mx1.example.test"),
//!     FakeRecord::a("mx1.example.test", "192.0.2.1"),
//! ]);
//! ```

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use simple_dns::rdata::{A, AAAA, CNAME, MX, PTR, RData, SOA, TXT};
use simple_dns::{
    CLASS, CharacterString, Name, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE,
};

/// One record of the table.
#[derive(Clone, Debug)]
pub struct FakeRecord {
    pub name: String,
    pub ttl: u32,
    pub data: FakeData,
}

#[derive(Clone, Debug)]
pub enum FakeData {
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Mx(u16, String),
    /// The character-strings of one TXT record.
    Txt(Vec<Vec<u8>>),
    Cname(String),
    Ptr(String),
    /// Answer every query for this name with this rcode (e.g. SERVFAIL=2).
    Rcode(u8),
}

impl FakeRecord {
    fn new(name: &str, data: FakeData) -> FakeRecord {
        FakeRecord {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            ttl: 300,
            data,
        }
    }
    pub fn a(name: &str, ip: &str) -> FakeRecord {
        Self::new(name, FakeData::A(ip.parse().expect("IPv4 literal")))
    }
    pub fn aaaa(name: &str, ip: &str) -> FakeRecord {
        Self::new(name, FakeData::Aaaa(ip.parse().expect("IPv6 literal")))
    }
    pub fn mx(name: &str, preference: u16, exchange: &str) -> FakeRecord {
        Self::new(name, FakeData::Mx(preference, exchange.to_string()))
    }
    /// One TXT record, split into 255-byte strings.
    pub fn txt(name: &str, text: &str) -> FakeRecord {
        let strings = text.as_bytes().chunks(255).map(<[u8]>::to_vec).collect();
        Self::new(name, FakeData::Txt(strings))
    }
    pub fn txt_strings(name: &str, strings: &[&[u8]]) -> FakeRecord {
        Self::new(
            name,
            FakeData::Txt(strings.iter().map(|s| s.to_vec()).collect()),
        )
    }
    pub fn cname(name: &str, target: &str) -> FakeRecord {
        Self::new(name, FakeData::Cname(target.to_string()))
    }
    pub fn ptr(ip: IpAddr, target: &str) -> FakeRecord {
        Self::new(
            &pimail::dns::reverse_name(ip),
            FakeData::Ptr(target.to_string()),
        )
    }
    pub fn rcode(name: &str, rcode: u8) -> FakeRecord {
        Self::new(name, FakeData::Rcode(rcode))
    }
    pub fn ttl(mut self, ttl: u32) -> FakeRecord {
        self.ttl = ttl;
        self
    }
    fn rtype(&self) -> Option<TYPE> {
        Some(match self.data {
            FakeData::A(_) => TYPE::A,
            FakeData::Aaaa(_) => TYPE::AAAA,
            FakeData::Mx(..) => TYPE::MX,
            FakeData::Txt(_) => TYPE::TXT,
            FakeData::Cname(_) => TYPE::CNAME,
            FakeData::Ptr(_) => TYPE::PTR,
            FakeData::Rcode(_) => return None,
        })
    }
}

/// A query the server saw: name, type, and whether it came over TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenQuery {
    pub name: String,
    pub rtype: u16,
    pub tcp: bool,
}

struct State {
    records: Vec<FakeRecord>,
    truncate_udp: bool,
    drop_queries: bool,
    negative_ttl: u32,
    seen: Vec<SeenQuery>,
}

/// The running server; stops when dropped.
pub struct FakeDns {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeDns {
    /// Serves `records` on 127.0.0.1, UDP and TCP on the same port.
    pub fn start(records: Vec<FakeRecord>) -> (SocketAddr, FakeDns) {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
            let addr = udp.local_addr().expect("local addr");
            if let Ok(tcp) = TcpListener::bind(addr) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("local addr");
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        tcp.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(State {
            records,
            truncate_udp: false,
            drop_queries: false,
            negative_ttl: 60,
            seen: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s1, st1) = (state.clone(), stop.clone());
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st1.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&s1, &buf[..n], false) {
                    let _ = udp.send_to(&reply, from);
                }
            }
        });
        let (s2, st2) = (state.clone(), stop.clone());
        let tcp_thread = std::thread::spawn(move || {
            while !st2.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((stream, _)) => serve_tcp(&s2, stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let dns = FakeDns {
            addr,
            state,
            stop,
            threads: vec![udp_thread, tcp_thread],
        };
        (addr, dns)
    }

    /// Set TC on every UDP answer (and send no records over UDP).
    pub fn set_truncate_udp(&self, on: bool) {
        self.state.lock().unwrap().truncate_udp = on;
    }

    /// Never answer, over UDP or TCP.
    pub fn set_drop_queries(&self, on: bool) {
        self.state.lock().unwrap().drop_queries = on;
    }

    /// TTL and minimum of the SOA added to negative answers (default 60).
    pub fn set_negative_ttl(&self, ttl: u32) {
        self.state.lock().unwrap().negative_ttl = ttl;
    }

    pub fn add(&self, record: FakeRecord) {
        self.state.lock().unwrap().records.push(record);
    }

    /// Every query received so far, in order.
    pub fn queries(&self) -> Vec<SeenQuery> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn query_count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(state: &Mutex<State>, mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut len = [0u8; 2];
    while stream.read_exact(&mut len).is_ok() {
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).is_err() {
            return;
        }
        let Some(reply) = answer(state, &query, true) else {
            return;
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).is_err() {
            return;
        }
    }
}

fn rr(name: &str, ttl: u32, data: &FakeData) -> Option<ResourceRecord<'static>> {
    let name = Name::new_unchecked(name).into_owned();
    let rdata = match data {
        FakeData::A(ip) => RData::A(A {
            address: (*ip).into(),
        }),
        FakeData::Aaaa(ip) => RData::AAAA(AAAA {
            address: (*ip).into(),
        }),
        FakeData::Mx(pref, exchange) => RData::MX(MX {
            preference: *pref,
            exchange: Name::new_unchecked(exchange).into_owned(),
        }),
        FakeData::Txt(strings) => {
            let mut txt = TXT::new();
            for s in strings {
                txt.add_char_string(CharacterString::new(s).ok()?.into_owned());
            }
            RData::TXT(txt.into_owned())
        }
        FakeData::Cname(t) => RData::CNAME(CNAME(Name::new_unchecked(t).into_owned())),
        FakeData::Ptr(t) => RData::PTR(PTR(Name::new_unchecked(t).into_owned())),
        FakeData::Rcode(_) => return None,
    };
    Some(ResourceRecord::new(name, CLASS::IN, ttl, rdata))
}

fn answer(state: &Mutex<State>, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let query = Packet::parse(query).ok()?;
    let q = query.questions.first()?;
    let qname = q
        .qname
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let QTYPE::TYPE(qtype) = q.qtype else {
        return None;
    };
    let mut st = state.lock().unwrap();
    st.seen.push(SeenQuery {
        name: qname.clone(),
        rtype: qtype.into(),
        tcp,
    });
    if st.drop_queries {
        return None;
    }
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE | PacketFlag::RECURSION_DESIRED);
    reply.questions.push(q.clone());
    if !tcp && st.truncate_udp {
        reply.set_flags(PacketFlag::TRUNCATION);
        return reply.build_bytes_vec().ok();
    }
    // Follow CNAMEs within the table, like a recursive server.
    let mut current = qname.clone();
    let mut visited = HashSet::new();
    let mut found = false;
    while visited.insert(current.clone()) {
        let here: Vec<&FakeRecord> = st.records.iter().filter(|r| r.name == current).collect();
        if let Some(FakeData::Rcode(code)) = here
            .iter()
            .map(|r| &r.data)
            .find(|d| matches!(d, FakeData::Rcode(_)))
        {
            *reply.rcode_mut() = rcode_from(*code);
            return reply.build_bytes_vec().ok();
        }
        let matching: Vec<&&FakeRecord> =
            here.iter().filter(|r| r.rtype() == Some(qtype)).collect();
        if !matching.is_empty() {
            for r in matching {
                reply.answers.push(rr(&r.name, r.ttl, &r.data)?);
            }
            found = true;
            break;
        }
        match here.iter().find(|r| matches!(r.data, FakeData::Cname(_))) {
            Some(c) if qtype != TYPE::CNAME => {
                reply.answers.push(rr(&c.name, c.ttl, &c.data)?);
                let FakeData::Cname(t) = &c.data else {
                    unreachable!()
                };
                current = t.trim_end_matches('.').to_ascii_lowercase();
            }
            _ => break,
        }
    }
    if !found {
        let exists = st.records.iter().any(|r| r.name == current);
        if !exists {
            *reply.rcode_mut() = RCODE::NameError;
        }
        let neg = st.negative_ttl;
        reply.name_servers.push(ResourceRecord::new(
            Name::new_unchecked("test").into_owned(),
            CLASS::IN,
            neg,
            RData::SOA(SOA {
                mname: Name::new_unchecked("ns.test").into_owned(),
                rname: Name::new_unchecked("hostmaster.test").into_owned(),
                serial: 1,
                refresh: 3600,
                retry: 600,
                expire: 86400,
                minimum: neg,
            }),
        ));
    }
    reply.build_bytes_vec().ok()
}

fn rcode_from(code: u8) -> RCODE {
    match code {
        0 => RCODE::NoError,
        1 => RCODE::FormatError,
        2 => RCODE::ServerFailure,
        3 => RCODE::NameError,
        4 => RCODE::NotImplemented,
        _ => RCODE::Refused,
    }
}
