//! Finding the hosts that receive mail for a domain (RFC 5321 5.1): MX
//! records in preference order, the domain's own address when it has no MX
//! (the implicit MX), nothing for a null MX (RFC 7505).

use std::net::SocketAddr;

use super::client::Failure;
use crate::dns::{DnsError, MxAnswer};
use crate::server::Server;

fn permanent(text: String) -> Failure {
    Failure {
        permanent: true,
        text,
    }
}

fn dns_failure(what: &str, e: DnsError) -> Failure {
    Failure {
        // A name that does not exist will not appear later; anything else
        // (timeouts, server failures, garbage) may be temporary.
        permanent: matches!(e, DnsError::NxDomain),
        text: format!("DNS lookup of {what}: {e}"),
    }
}

/// The MX hosts of `domain` in preference order, each with its addresses.
pub async fn hosts(
    server: &Server,
    domain: &str,
    port: u16,
) -> Result<Vec<(String, Vec<SocketAddr>)>, Failure> {
    let answer = server
        .resolver
        .mx(domain)
        .await
        .map_err(|e| dns_failure(&format!("the MX of {domain}"), e))?;
    let exchanges: Vec<String> = match answer {
        MxAnswer::Records(list) => list.into_iter().map(|mx| mx.exchange).collect(),
        MxAnswer::NoRecords => vec![domain.to_string()],
        MxAnswer::NullMx => {
            return Err(permanent(format!(
                "5.1.10 {domain} does not accept mail (null MX, RFC 7505)"
            )));
        }
        MxAnswer::NxDomain => {
            return Err(permanent(format!("5.1.2 domain {domain} does not exist")));
        }
    };
    let mut hosts = Vec::new();
    let mut last_error = None;
    for name in exchanges {
        match server.resolver.ip_addrs(&name).await {
            Ok(ips) if !ips.is_empty() => hosts.push((
                name,
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect(),
            )),
            Ok(_) => last_error = Some(format!("{name} has no address")),
            Err(e) => last_error = Some(format!("DNS lookup of {name}: {e}")),
        }
    }
    if hosts.is_empty() {
        return Err(Failure {
            permanent: false,
            text: last_error.unwrap_or_else(|| format!("no mail host for {domain}")),
        });
    }
    Ok(hosts)
}

/// The addresses of the smarthost, through the system's resolver on the
/// blocking pool: a smarthost may be named in /etc/hosts, which DNS does
/// not see. Any failure is temporary (it is our own configuration).
pub async fn addresses(host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    let name = format!("{host}:{port}");
    let found = smol::unblock(move || {
        std::net::ToSocketAddrs::to_socket_addrs(&name).map(|a| a.collect::<Vec<_>>())
    })
    .await;
    match found {
        Ok(a) if !a.is_empty() => Ok(a),
        Ok(_) => Err(Failure {
            permanent: false,
            text: format!("{host} has no address"),
        }),
        Err(e) => Err(Failure {
            permanent: false,
            text: format!("looking up {host}: {e}"),
        }),
    }
}
