//! `/etc/resolv.conf`: the name servers and the `options timeout:`/`attempts:`
//! the system's own stub resolver uses, read the way glibc reads them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// glibc uses at most this many `nameserver` lines (MAXNS).
pub const MAX_SERVERS: usize = 3;
/// glibc's defaults and caps (resolv.conf(5)).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_ATTEMPTS: u32 = 2;
pub const MAX_ATTEMPTS: u32 = 5;

/// What pimail takes from resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// In file order; `127.0.0.1:53` when the file names none.
    pub servers: Vec<SocketAddr>,
    /// Per try, per server.
    pub timeout: Duration,
    /// Rounds over all servers.
    pub attempts: u32,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            servers: vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

/// Parses resolv.conf text. Unknown keywords and malformed lines are
/// ignored, as the C library does; `search`/`domain` do not matter because
/// mail lookups are always for fully qualified names.
pub fn parse(text: &str) -> ResolvConf {
    let mut conf = ResolvConf {
        servers: Vec::new(),
        ..ResolvConf::default()
    };
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if conf.servers.len() >= MAX_SERVERS {
                    continue;
                }
                // A zone index (fe80::1%eth0) cannot be used without an
                // interface lookup; such servers are skipped.
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                    conf.servers.push(SocketAddr::new(ip, 53));
                }
            }
            Some("options") => {
                for option in words {
                    if let Some(n) = option.strip_prefix("timeout:") {
                        if let Ok(n) = n.parse::<u64>() {
                            conf.timeout = Duration::from_secs(n.max(1)).min(MAX_TIMEOUT);
                        }
                    } else if let Some(n) = option.strip_prefix("attempts:")
                        && let Ok(n) = n.parse::<u32>()
                    {
                        conf.attempts = n.clamp(1, MAX_ATTEMPTS);
                    }
                }
            }
            _ => {}
        }
    }
    if conf.servers.is_empty() {
        conf.servers = ResolvConf::default().servers;
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_in_order_ipv4_and_ipv6() {
        let c = parse("# comment\nsearch lan\nnameserver 192.0.2.1\nnameserver 2001:db8::53 ; x\n");
        assert_eq!(
            c.servers,
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.attempts, DEFAULT_ATTEMPTS);
    }

    #[test]
    fn default_server_when_none() {
        let c = parse("search example.org\nnameserver not-an-ip\n");
        assert_eq!(c.servers, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(parse(""), ResolvConf::default());
    }

    #[test]
    fn options_timeout_and_attempts_clamped() {
        let c = parse("nameserver 10.0.0.1\noptions ndots:2 timeout:3 attempts:4 rotate\n");
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.attempts, 4);
        let c = parse("options timeout:99 attempts:77\n");
        assert_eq!(c.timeout, MAX_TIMEOUT);
        assert_eq!(c.attempts, MAX_ATTEMPTS);
        let c = parse("options timeout:0 attempts:0\n");
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert_eq!(c.attempts, 1);
    }

    #[test]
    fn at_most_three_servers_and_zone_index_skipped() {
        let c = parse(
            "nameserver fe80::1%eth0\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
        );
        let ips: Vec<String> = c.servers.iter().map(|s| s.ip().to_string()).collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    }
}
