//! The DNS records a mail domain needs, in zone-file form: what
//! `pimail dns-records` prints and `pimail firstboot` leaves on the card.

use std::fmt::Write;
use std::path::Path;

use super::DkimError;

/// MX, the host's A/AAAA (the public address is not known offline), SPF,
/// the DKIM keys stored in `dkim_dir` for `domain`, DMARC, and the reverse
/// DNS to ask the ISP for.
pub fn zone_text(domain: &str, hostname: &str, dkim_dir: &Path) -> Result<String, DkimError> {
    let host = hostname.trim_end_matches('.');
    let mut t = String::new();
    let _ = writeln!(t, "; Publish these at your DNS provider for {domain}:");
    let _ = writeln!(t, "{domain}.\tIN MX 10 {host}.");
    let _ = writeln!(t, "{host}.\tIN A <this box's public IPv4 address>");
    let _ = writeln!(
        t,
        "{host}.\tIN AAAA <its public IPv6 address, if it has one>"
    );
    let _ = writeln!(t, "{domain}.\tIN TXT \"v=spf1 mx -all\"");
    let mut any = false;
    for (d, selector, path) in super::keys::stored(dkim_dir)?
        .iter()
        .filter(|(d, _, _)| d == domain)
    {
        let key = super::keys::load(path)?;
        let _ = writeln!(t, "{}", super::keys::dns_record(d, selector, &key));
        any = true;
    }
    if !any {
        let _ = writeln!(t, "; no DKIM key yet: pimail dkim keygen --domain {domain}");
    }
    let _ = writeln!(
        t,
        "_dmarc.{domain}.\tIN TXT \"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}\""
    );
    let _ = writeln!(
        t,
        "; Ask your ISP to set the reverse DNS (PTR) of the public address to {host}."
    );
    let _ = writeln!(
        t,
        "; Forward TCP ports 25, 465, 587, 993 and 995 from your router to this box."
    );
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_domain_host_and_policies() {
        let r = zone_text("example.net", "mail.example.net", Path::new("/nonexistent")).unwrap();
        assert!(r.contains("example.net.\tIN MX 10 mail.example.net.\n"));
        assert!(r.contains("\"v=spf1 mx -all\""));
        assert!(r.contains("_dmarc.example.net.\tIN TXT \"v=DMARC1;"));
        assert!(r.contains("no DKIM key yet"));
    }
}
