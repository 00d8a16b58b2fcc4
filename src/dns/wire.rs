//! DNS messages: queries built and answers read with simple-dns, plus a
//! small walker over the raw answer section for TXT data (simple-dns keeps
//! character-strings private, and TXT data is bytes, not UTF-8).

use std::net::{Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::{OPT, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};

use super::{DnsError, Lookup, Rdata, RecordType};

/// EDNS0 UDP payload size (the DNS Flag Day 2020 value: no fragmentation).
pub const EDNS_UDP_SIZE: u16 = 1232;

pub fn build_query(id: u16, name: &str, rtype: RecordType) -> Result<Vec<u8>, DnsError> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|e| DnsError::InvalidName(format!("{name}: {e}")))?;
    packet.questions.push(Question::new(
        qname,
        QTYPE::TYPE(rtype.wire_type()),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    *packet.opt_mut() = Some(OPT {
        opt_codes: Vec::new(),
        udp_packet_size: EDNS_UDP_SIZE,
        version: 0,
    });
    packet
        .build_bytes_vec()
        .map_err(|e| DnsError::InvalidName(format!("{name}: {e}")))
}

/// The message id, without parsing the rest.
pub fn message_id(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

pub fn is_truncated(bytes: &[u8]) -> bool {
    bytes.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// Whether a message that carries our id is an answer to our question.
/// Anything else is refused as malformed rather than trusted.
pub fn check_answer(bytes: &[u8], name: &str, rtype: RecordType) -> Result<RCODE, DnsError> {
    let packet = Packet::parse(bytes).map_err(|e| DnsError::Malformed(e.to_string()))?;
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return Err(DnsError::Malformed("a query, not a response".into()));
    }
    let [q] = packet.questions.as_slice() else {
        return Err(DnsError::Malformed(format!(
            "{} questions in the response, expected 1",
            packet.questions.len()
        )));
    };
    if normalize(&q.qname) != name || q.qtype != QTYPE::TYPE(rtype.wire_type()) {
        return Err(DnsError::Malformed(format!(
            "response is for {} {:?}, asked {name} {rtype:?}",
            q.qname, q.qtype
        )));
    }
    Ok(packet.rcode())
}

/// Lower case, no trailing dot: the form names are compared and cached in.
pub fn normalize(name: &Name) -> String {
    name.to_string().trim_end_matches('.').to_ascii_lowercase()
}

/// What one response says about `name`/`rtype`.
pub enum Interpretation {
    /// Final: the records, NODATA or NXDOMAIN, with the TTL to cache it for
    /// (`None`: not cacheable).
    Done(Lookup, Option<u32>),
    /// The name is an alias whose target the response did not resolve:
    /// ask again for `target`. `ttl` is the chain's smallest TTL so far.
    Follow { target: String, ttl: u32, hops: u32 },
}

/// Reads a NOERROR or NXDOMAIN response (the rcode is checked before),
/// following a CNAME chain inside it for at most `max_hops` links.
pub fn interpret(
    bytes: &[u8],
    name: &str,
    rtype: RecordType,
    max_hops: u32,
) -> Result<Interpretation, DnsError> {
    let packet = Packet::parse(bytes).map_err(|e| DnsError::Malformed(e.to_string()))?;
    let raw = raw_answer_rdata(bytes, packet.questions.len())
        .ok_or_else(|| DnsError::Malformed("answer section cut short".into()))?;
    if raw.len() != packet.answers.len() {
        return Err(DnsError::Malformed("answer count mismatch".into()));
    }
    let negative_ttl = packet.name_servers.iter().find_map(|rr| match &rr.rdata {
        RData::SOA(soa) => Some(rr.ttl.min(soa.minimum)),
        _ => None,
    });
    let mut current = name.to_string();
    let mut ttl = u32::MAX;
    let mut hops = 0;
    loop {
        let mut records = Vec::new();
        for (rr, raw) in packet.answers.iter().zip(&raw) {
            if normalize(&rr.name) != current {
                continue;
            }
            let rdata = match (&rr.rdata, rtype) {
                (RData::A(a), RecordType::A) => Rdata::A(Ipv4Addr::from(a.address)),
                (RData::AAAA(a), RecordType::Aaaa) => Rdata::Aaaa(Ipv6Addr::from(a.address)),
                (RData::MX(mx), RecordType::Mx) => {
                    Rdata::Mx(mx.preference, normalize(&mx.exchange))
                }
                (RData::PTR(ptr), RecordType::Ptr) => Rdata::Ptr(normalize(&ptr.0)),
                (RData::TXT(_), RecordType::Txt) => Rdata::Txt(txt_concat(raw)?),
                _ => continue,
            };
            ttl = ttl.min(rr.ttl);
            records.push(rdata);
        }
        if !records.is_empty() {
            return Ok(Interpretation::Done(Lookup::Records(records), Some(ttl)));
        }
        let alias = packet.answers.iter().find_map(|rr| match &rr.rdata {
            RData::CNAME(c) if normalize(&rr.name) == current => Some((normalize(&c.0), rr.ttl)),
            _ => None,
        });
        match alias {
            Some((target, cname_ttl)) => {
                hops += 1;
                if hops > max_hops {
                    return Err(DnsError::CnameLimit(name.to_string()));
                }
                ttl = ttl.min(cname_ttl);
                current = target;
            }
            None if current != name && packet.rcode() == RCODE::NoError => {
                // The chain ends at a name this response says nothing about.
                return Ok(Interpretation::Follow {
                    target: current,
                    ttl,
                    hops,
                });
            }
            None => {
                // RFC 2308 section 5: the negative TTL is the SOA's minimum
                // (or its own TTL if smaller); no SOA, no caching.
                let neg_ttl = negative_ttl.map(|n| n.min(ttl));
                let lookup = if packet.rcode() == RCODE::NameError {
                    Lookup::NxDomain
                } else {
                    Lookup::NoData
                };
                return Ok(Interpretation::Done(lookup, neg_ttl));
            }
        }
    }
}

/// One TXT record's character-strings, concatenated (RFC 7208 section 3.3,
/// RFC 6376 section 3.6.2.2).
fn txt_concat(mut rdata: &[u8]) -> Result<Vec<u8>, DnsError> {
    let mut out = Vec::with_capacity(rdata.len());
    while let Some((&len, rest)) = rdata.split_first() {
        let len = usize::from(len);
        if rest.len() < len {
            return Err(DnsError::Malformed(
                "TXT string runs past its record".into(),
            ));
        }
        out.extend_from_slice(&rest[..len]);
        rdata = &rest[len..];
    }
    Ok(out)
}

/// The rdata of every answer record, in order, read straight from the wire.
fn raw_answer_rdata(bytes: &[u8], questions: usize) -> Option<Vec<&[u8]>> {
    let count = usize::from(u16::from_be_bytes([*bytes.get(6)?, *bytes.get(7)?]));
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(bytes, pos)? + 4;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        pos = skip_name(bytes, pos)?;
        let fixed = bytes.get(pos..pos + 10)?;
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        pos += 10;
        out.push(bytes.get(pos..pos + len)?);
        pos += len;
    }
    Some(out)
}

/// The offset just past a (possibly compressed) name.
fn skip_name(bytes: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *bytes.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xC0 == 0xC0 => return Some(pos + 2),
            l if l & 0xC0 == 0 => pos += 1 + usize::from(l),
            _ => return None,
        }
    }
}

impl RecordType {
    pub(crate) fn wire_type(self) -> TYPE {
        match self {
            RecordType::A => TYPE::A,
            RecordType::Aaaa => TYPE::AAAA,
            RecordType::Mx => TYPE::MX,
            RecordType::Txt => TYPE::TXT,
            RecordType::Ptr => TYPE::PTR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_concatenated_and_truncation_refused() {
        assert_eq!(txt_concat(b"\x03abc\x00\x02de").unwrap(), b"abcde");
        assert!(txt_concat(b"\x05abc").is_err());
    }

    #[test]
    fn query_has_edns_and_rd() {
        let q = build_query(0x1234, "example.org", RecordType::Mx).unwrap();
        assert_eq!(message_id(&q), Some(0x1234));
        let p = Packet::parse(&q).unwrap();
        assert!(p.has_flags(PacketFlag::RECURSION_DESIRED));
        assert_eq!(p.opt().map(|o| o.udp_packet_size), Some(EDNS_UDP_SIZE));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(0u8..=255, 0..600)) {
            let _ = check_answer(&bytes, "example.org", RecordType::Txt);
            let _ = interpret(&bytes, "example.org", RecordType::Txt, 8);
        }
    }
}
