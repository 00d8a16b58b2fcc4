//! Finding the hosts that receive mail for a domain (RFC 5321 5.1).

use std::net::SocketAddr;

use super::client::Failure;
use crate::server::Server;

/// The MX hosts of `domain` in preference order, each with its addresses.
pub async fn hosts(
    _server: &Server,
    domain: &str,
    _port: u16,
) -> Result<Vec<(String, Vec<SocketAddr>)>, Failure> {
    Err(Failure {
        permanent: false,
        text: format!("no DNS resolver configured to find the MX of {domain}"),
    })
}

/// The addresses of a host name (a smarthost), through the system
/// resolver on the blocking pool.
pub async fn addresses(
    _server: &Server,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Failure> {
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
