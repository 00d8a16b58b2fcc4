//! POP3 (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), SASL (RFC 5034)
//! and response codes (RFC 2449 8, RFC 3206).

pub mod session;

/// A POP3 command, parsed without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    User(String),
    Pass(String),
    /// Mechanism and optional initial response (RFC 5034 4).
    Auth(String, Option<String>),
    Stls,
    Stat,
    /// `LIST` or `LIST n`.
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Quit,
    Top(u32, u32),
    Uidl(Option<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Unknown,
    Syntax,
}

fn number(s: &str) -> Result<u32, ParseError> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Syntax);
    }
    s.parse().map_err(|_| ParseError::Syntax)
}

/// Parses one command line (without CRLF). Keywords are case-insensitive
/// (RFC 1939 3); arguments are separated by single spaces, but PASS takes
/// the rest of the line, since passwords may contain spaces.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Syntax)?;
    let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
    let keyword = keyword.to_ascii_uppercase();
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    let none = |c: Command| {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Syntax)
        }
    };
    let optional = |f: fn(Option<u32>) -> Command| match args.as_slice() {
        [] => Ok(f(None)),
        [n] => Ok(f(Some(number(n)?))),
        _ => Err(ParseError::Syntax),
    };
    let one = |f: fn(u32) -> Command| match args.as_slice() {
        [n] => Ok(f(number(n)?)),
        _ => Err(ParseError::Syntax),
    };
    match keyword.as_str() {
        "CAPA" => none(Command::Capa),
        "USER" => match args.as_slice() {
            [name] => Ok(Command::User(name.to_string())),
            _ => Err(ParseError::Syntax),
        },
        "PASS" if !rest.is_empty() => Ok(Command::Pass(rest.to_string())),
        "PASS" => Err(ParseError::Syntax),
        "AUTH" => match args.as_slice() {
            [mech] => Ok(Command::Auth(mech.to_ascii_uppercase(), None)),
            [mech, initial] => Ok(Command::Auth(
                mech.to_ascii_uppercase(),
                Some(initial.to_string()),
            )),
            _ => Err(ParseError::Syntax),
        },
        "STLS" => none(Command::Stls),
        "STAT" => none(Command::Stat),
        "LIST" => optional(Command::List),
        "RETR" => one(Command::Retr),
        "DELE" => one(Command::Dele),
        "NOOP" => none(Command::Noop),
        "RSET" => none(Command::Rset),
        "QUIT" => none(Command::Quit),
        "TOP" => match args.as_slice() {
            [n, lines] => Ok(Command::Top(number(n)?, number(lines)?)),
            _ => Err(ParseError::Syntax),
        },
        "UIDL" => optional(Command::Uidl),
        _ => Err(ParseError::Unknown),
    }
}

/// Byte-stuffs a message for RETR and TOP (RFC 1939 3): a line beginning
/// with "." gets another one. Works across chunk boundaries.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
        }
    }
}

impl DotStuffer {
    pub fn stuff(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
        }
    }

    /// The terminating line, with a CRLF first if the message did not end
    /// with one.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse(b"capa"), Ok(Command::Capa));
        assert_eq!(
            parse(b"USER alice@example.org"),
            Ok(Command::User("alice@example.org".into()))
        );
        assert_eq!(
            parse(b"PASS with spaces  in it"),
            Ok(Command::Pass("with spaces  in it".into()))
        );
        assert_eq!(parse(b"PASS"), Err(ParseError::Syntax));
        assert_eq!(
            parse(b"AUTH plain AGEAYg=="),
            Ok(Command::Auth("PLAIN".into(), Some("AGEAYg==".into())))
        );
        assert_eq!(parse(b"LIST"), Ok(Command::List(None)));
        assert_eq!(parse(b"LIST 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse(b"LIST x"), Err(ParseError::Syntax));
        assert_eq!(parse(b"LIST 1 2"), Err(ParseError::Syntax));
        assert_eq!(parse(b"RETR"), Err(ParseError::Syntax));
        assert_eq!(parse(b"RETR -1"), Err(ParseError::Syntax));
        assert_eq!(parse(b"RETR 99999999999"), Err(ParseError::Syntax));
        assert_eq!(parse(b"TOP 1 0"), Ok(Command::Top(1, 0)));
        assert_eq!(parse(b"UIDL 2"), Ok(Command::Uidl(Some(2))));
        assert_eq!(parse(b"APOP x y"), Err(ParseError::Unknown));
        assert_eq!(parse(b"QUIT now"), Err(ParseError::Syntax));
        assert_eq!(parse(b"\xff"), Err(ParseError::Syntax));
    }

    #[test]
    fn stuffing_across_chunks() {
        let msg = b"a\r\n.b\r\n..\r\n.\r\nend";
        let mut whole = Vec::new();
        let mut s = DotStuffer::default();
        s.stuff(msg, &mut whole);
        s.finish(&mut whole);
        assert_eq!(whole, b"a\r\n..b\r\n...\r\n..\r\nend\r\n.\r\n");
        for step in 1..5 {
            let mut out = Vec::new();
            let mut s = DotStuffer::default();
            for piece in msg.chunks(step) {
                s.stuff(piece, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(out, whole);
        }
        let mut out = Vec::new();
        let mut s = DotStuffer::default();
        s.stuff(b".x\r\n", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"..x\r\n.\r\n");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            let _ = parse(&line);
        }
    }
}
