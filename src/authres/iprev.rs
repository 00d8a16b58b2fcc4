//! iprev (RFC 8601 3): the client IP's PTR names, and whether one of them
//! resolves back to the IP (forward-confirmed reverse DNS).

use std::net::IpAddr;

use crate::dns::{DnsError, Resolver};

/// PTR names tried for forward confirmation (as SPF's ptr, RFC 7208 4.6.4).
const MAX_NAMES: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Iprev {
    /// The confirmed name.
    Pass(String),
    Fail,
    TempError,
    PermError,
}

impl Iprev {
    pub fn as_str(&self) -> &'static str {
        match self {
            Iprev::Pass(_) => "pass",
            Iprev::Fail => "fail",
            Iprev::TempError => "temperror",
            Iprev::PermError => "permerror",
        }
    }
}

pub async fn check(resolver: &Resolver, ip: IpAddr) -> Iprev {
    let names = match resolver.ptr(ip).await {
        Ok(n) => n,
        Err(DnsError::NxDomain) => return Iprev::Fail,
        Err(e) if e.is_temporary() => return Iprev::TempError,
        Err(_) => return Iprev::PermError,
    };
    if names.is_empty() {
        return Iprev::Fail;
    }
    let names: Vec<String> = names.into_iter().take(MAX_NAMES).collect();
    let lookups = names.iter().map(|n| resolver.ip_addrs(n)).collect();
    let mut temporary = false;
    for (name, result) in names.iter().zip(super::spf::join_all(lookups).await) {
        match result {
            Ok(addrs) if addrs.contains(&ip) => return Iprev::Pass(name.clone()),
            Err(e) if e.is_temporary() => temporary = true,
            _ => {}
        }
    }
    if temporary {
        Iprev::TempError
    } else {
        Iprev::Fail
    }
}
