//! The IMAP server: IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501) with the
//! extensions real clients use.
//!
//! Pure parts, tested without sockets: [`parse`] (commands),
//! [`sequence`] (sequence sets), [`mutf7`] (mailbox name encoding),
//! [`body`] (FETCH sections, decoders), [`list`] (LIST patterns) and the
//! helpers here (flags, state rules). [`session`] is the I/O loop.

pub mod body;
pub mod list;
pub mod mutf7;
pub mod parse;
pub mod sequence;
pub mod session;
pub mod sort;
pub mod uids;

use crate::store::flags;
use parse::Kind;

/// System flags in the order they are rendered.
const SYSTEM_FLAGS: [(u32, &str); 5] = [
    (flags::ANSWERED, "\\Answered"),
    (flags::FLAGGED, "\\Flagged"),
    (flags::DELETED, "\\Deleted"),
    (flags::SEEN, "\\Seen"),
    (flags::DRAFT, "\\Draft"),
];

/// `(\Seen $Work)`: the flag list of FETCH FLAGS.
pub fn render_flags(bits: u32, keywords: &[String], out: &mut Vec<u8>) {
    out.push(b'(');
    let mut first = true;
    for (bit, name) in SYSTEM_FLAGS {
        if bits & bit != 0 {
            if !first {
                out.push(b' ');
            }
            out.extend_from_slice(name.as_bytes());
            first = false;
        }
    }
    for k in keywords {
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(k.as_bytes());
        first = false;
    }
    out.push(b')');
}

/// Splits flag names into system flag bits and keywords. `\Recent` cannot
/// be set and is dropped; another unknown `\Flag` is an error.
pub fn parse_flags(names: &[String]) -> Result<(u32, Vec<String>), String> {
    let mut bits = 0;
    let mut keywords: Vec<String> = Vec::new();
    for n in names {
        if let Some(sys) = n.strip_prefix('\\') {
            if sys.eq_ignore_ascii_case("Recent") {
                continue;
            }
            match SYSTEM_FLAGS
                .iter()
                .find(|(_, name)| name[1..].eq_ignore_ascii_case(sys))
            {
                Some((bit, _)) => bits |= bit,
                None => return Err(format!("{n} is not a flag that can be stored")),
            }
        } else if !keywords.iter().any(|k| k.eq_ignore_ascii_case(n)) {
            keywords.push(n.clone());
        }
    }
    Ok((bits, keywords))
}

/// The protocol states of RFC 9051 section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    NotAuthenticated,
    Authenticated,
    Selected,
}

/// Whether a command is legal in a state (RFC 9051 6.1-6.4). APPEND is
/// checked by the session, which reads it apart from other commands.
pub fn legal(kind: &Kind, state: StateKind) -> bool {
    use StateKind::*;
    match kind {
        Kind::Capability | Kind::Noop | Kind::Logout | Kind::Id => true,
        Kind::StartTls | Kind::Authenticate { .. } | Kind::Login { .. } => {
            state == NotAuthenticated
        }
        Kind::Check
        | Kind::Close
        | Kind::Unselect
        | Kind::Expunge
        | Kind::UidExpunge(_)
        | Kind::Search { .. }
        | Kind::Sort { .. }
        | Kind::Fetch { .. }
        | Kind::Store { .. }
        | Kind::Copy { .. } => state == Selected,
        _ => state != NotAuthenticated,
    }
}

/// CAPABILITY before login.
pub fn capabilities_before_login(starttls: bool, plaintext_ok: bool) -> String {
    let mut c = String::from("IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE");
    if starttls {
        c.push_str(" STARTTLS");
    }
    if plaintext_ok {
        c.push_str(" AUTH=PLAIN AUTH=LOGIN");
    } else {
        c.push_str(" LOGINDISABLED");
    }
    c
}

/// CAPABILITY after login.
pub const CAPABILITIES: &str = "IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE \
UIDPLUS MOVE UNSELECT CHILDREN CONDSTORE QRESYNC ESEARCH SEARCHRES SORT SPECIAL-USE CREATE-SPECIAL-USE \
LIST-EXTENDED LIST-STATUS STATUS=SIZE QUOTA QUOTA=RES-STORAGE BINARY MULTIAPPEND UTF8=ACCEPT";

/// `dd-Mon-yyyy hh:mm:ss +0000` (RFC 9051 date-time), in UTC.
pub fn render_date_time(unix: i64) -> String {
    let mut out = Vec::with_capacity(26);
    write_date_time(unix, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`render_date_time`] appended to `out` without a format string: FETCH
/// writes one per message.
pub fn write_date_time(unix: i64, out: &mut Vec<u8>) {
    use chrono::{Datelike, Timelike};
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let t = chrono::DateTime::from_timestamp(unix, 0)
        .filter(|t| (0..=9999).contains(&t.year()))
        .unwrap_or_default();
    let two = |out: &mut Vec<u8>, v: u32| {
        out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8])
    };
    two(out, t.day());
    out.push(b'-');
    out.extend_from_slice(MONTHS[t.month0() as usize]);
    out.push(b'-');
    let y = t.year() as u32;
    two(out, y / 100);
    two(out, y % 100);
    out.push(b' ');
    two(out, t.hour());
    out.push(b':');
    two(out, t.minute());
    out.push(b':');
    two(out, t.second());
    out.extend_from_slice(b" +0000");
}

/// Writes a string as a quoted string, or a literal if it cannot be quoted.
pub fn render_string(s: &[u8], out: &mut Vec<u8>) {
    if s.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')) {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
        return;
    }
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests;
