//! End-to-end IMAP tests against the real binary: a raw-socket client that
//! checks tagged and untagged responses byte for byte where it matters,
//! plus Python's imaplib (tests/imap_client.py).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Instance, Smtp, USER};

/// A blocking IMAP client that returns raw response lines; a literal's
/// bytes are appended to the line that announced it.
struct Imap<S: Read + Write> {
    r: BufReader<S>,
    n: u32,
}

impl Imap<TcpStream> {
    fn connect(addr: SocketAddr) -> Imap<TcpStream> {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Imap {
            r: BufReader::new(s),
            n: 0,
        };
        let greeting = c.read_response_line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }
}

impl<S: Read + Write> Imap<S> {
    fn send(&mut self, bytes: &[u8]) {
        let s = self.r.get_mut();
        s.write_all(bytes).unwrap();
        s.flush().unwrap();
    }

    /// One response, literals included (as raw bytes, lossily decoded).
    fn read_response_line(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.r.read_until(b'\n', &mut line).unwrap_or(0);
            if n == 0 {
                return String::from_utf8_lossy(&out).into_owned();
            }
            out.extend_from_slice(&line);
            let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
            if let Some(open) = trimmed.iter().rposition(|&b| b == b'{')
                && trimmed.ends_with(b"}")
                && let Ok(len) = std::str::from_utf8(&trimmed[open + 1..trimmed.len() - 1])
                    .unwrap_or("x")
                    .parse::<usize>()
            {
                let mut lit = vec![0; len];
                self.r.read_exact(&mut lit).unwrap();
                out.extend_from_slice(&lit);
                continue;
            }
            return String::from_utf8_lossy(&out)
                .trim_end_matches("\r\n")
                .to_string();
        }
    }

    /// Sends a command and returns (untagged lines, tagged line).
    fn cmd(&mut self, command: &str) -> (Vec<String>, String) {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.until_tagged(&tag)
    }

    fn until_tagged(&mut self, tag: &str) -> (Vec<String>, String) {
        let mut untagged = Vec::new();
        loop {
            let l = self.read_response_line();
            assert!(!l.is_empty(), "connection closed waiting for {tag}");
            if l.starts_with(&format!("{tag} ")) {
                return (untagged, l);
            }
            untagged.push(l);
        }
    }

    /// A command that must succeed; returns its untagged responses.
    fn ok(&mut self, command: &str) -> Vec<String> {
        let (u, t) = self.cmd(command);
        assert!(
            t.split(' ').nth(1) == Some("OK"),
            "{command} -> {t} ({u:?})"
        );
        u
    }

    fn login(&mut self) {
        self.ok(&format!("LOGIN {USER} secret"));
    }
}

fn instance(name: &str) -> Instance {
    let mut inst = Instance::new(name, |c| {
        c.replace("failure_delay_ms = 2000", "failure_delay_ms = 50")
    });
    inst.start();
    inst
}

fn imap_addr(inst: &Instance) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], inst.port_base + 143))
}

fn deliver(inst: &Instance, content: &[u8]) {
    let mut s = Smtp::connect(inst.smtp_addr());
    s.expect("EHLO client.example", 250);
    let (code, text) = s.send_mail("sender@other.example", &[USER], content);
    assert_eq!(code, 250, "{text}");
    s.cmd("QUIT");
}

const MULTIPART: &[u8] = b"From: Sender <sender@other.example>\r\nTo: alice@example.test\r\nSubject: multi\r\nMessage-ID: <m1@other.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello body\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gYmluYXJ5\r\n--b1--\r\n";

#[test]
fn login_capabilities_and_states() {
    let inst = instance("imap-login");
    let mut c = Imap::connect(imap_addr(&inst));
    let caps = c.ok("CAPABILITY");
    assert!(
        caps[0].contains("IMAP4rev2") && caps[0].contains("AUTH=PLAIN"),
        "{caps:?}"
    );
    assert!(caps[0].contains("STARTTLS"));
    let (_, t) = c.cmd("SELECT INBOX");
    assert!(t.contains("BAD"), "{t}");
    let (_, t) = c.cmd(&format!("LOGIN {USER} wrong"));
    assert!(t.contains("NO [AUTHENTICATIONFAILED]"), "{t}");
    // SASL-IR PLAIN.
    let ir = "AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ="; // \0alice@example.test\0secret
    let (_, t) = c.cmd(&format!("AUTHENTICATE PLAIN {ir}"));
    assert!(t.contains("OK [CAPABILITY") && t.contains("IDLE"), "{t}");
    let (_, t) = c.cmd("LOGIN a b");
    assert!(t.contains("BAD"));
    let u = c.ok("LIST \"\" \"*\"");
    assert!(
        u.iter()
            .any(|l| l == "* LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\""),
        "{u:?}"
    );
    assert!(
        u.iter()
            .any(|l| l == "* LIST (\\HasNoChildren) \"/\" \"INBOX\""),
        "{u:?}"
    );
    let u = c.ok("ENABLE IMAP4rev2 QRESYNC");
    assert_eq!(u, vec!["* ENABLED IMAP4rev2 QRESYNC"]);
    let u = c.ok("NAMESPACE");
    assert_eq!(u, vec!["* NAMESPACE ((\"\" \"/\")) NIL NIL"]);
    let (u, _) = c.cmd("LOGOUT");
    assert!(u[0].starts_with("* BYE"));

    // AUTHENTICATE with a continuation, and LOGIN mechanism.
    let mut c = Imap::connect(imap_addr(&inst));
    c.send(b"a AUTHENTICATE PLAIN\r\n");
    assert_eq!(c.read_response_line(), "+ ");
    c.send(format!("{ir}\r\n").as_bytes());
    let (_, t) = c.until_tagged("a");
    assert!(t.starts_with("a OK"), "{t}");
}

#[test]
fn starttls_and_logindisabled() {
    let mut inst = Instance::new("imap-tls", |c| {
        c.replace(
            "allow_plaintext_on_loopback = true",
            "allow_plaintext_on_loopback = false",
        )
    });
    inst.start();
    let mut c = Imap::connect(imap_addr(&inst));
    let caps = c.ok("CAPABILITY");
    assert!(
        caps[0].contains("LOGINDISABLED") && !caps[0].contains("AUTH="),
        "{caps:?}"
    );
    let (_, t) = c.cmd(&format!("LOGIN {USER} secret"));
    assert!(t.contains("NO [PRIVACYREQUIRED]"), "{t}");
    c.ok("STARTTLS");
    let tcp = c.r.into_inner();
    let tls = common::tls_client(&inst.cert(), tcp);
    let mut c = Imap {
        r: BufReader::new(tls),
        n: 10,
    };
    let caps = c.ok("CAPABILITY");
    assert!(caps[0].contains("AUTH=PLAIN") && !caps[0].contains("STARTTLS"));
    c.login();
    c.ok("SELECT INBOX");
    // Implicit TLS port.
    let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], inst.port_base + 993))).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Imap {
        r: BufReader::new(common::tls_client(&inst.cert(), tcp)),
        n: 0,
    };
    assert!(c.read_response_line().starts_with("* OK"));
    c.login();
}

#[test]
fn fetch_store_search_copy_move_expunge() {
    let inst = instance("imap-fetch");
    deliver(&inst, MULTIPART);
    deliver(&inst, &common::message("second", 200_000));
    let mut c = Imap::connect(imap_addr(&inst));
    c.login();
    let u = c.ok("SELECT INBOX");
    assert!(u.contains(&"* 2 EXISTS".to_string()), "{u:?}");
    assert!(u.iter().any(|l| l.starts_with("* OK [UIDVALIDITY ")));
    assert!(
        u.contains(&"* OK [UIDNEXT 3] Predicted next UID".to_string()),
        "{u:?}"
    );

    let u = c.ok("FETCH 1 (BODYSTRUCTURE)");
    assert_eq!(
        u[0],
        "* 1 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7BIT\" 10 0 NIL NIL NIL NIL)(\"application\" \"octet-stream\" NIL NIL NIL \"BASE64\" 16 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"b1\") NIL NIL NIL))"
    );
    let u = c.ok("FETCH 1 (ENVELOPE)");
    assert!(
        u[0].starts_with(
            "* 1 FETCH (ENVELOPE (NIL \"multi\" ((\"Sender\" NIL \"sender\" \"other.example\"))"
        ),
        "{}",
        u[0]
    );
    let u = c.ok("UID FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.MIME] BINARY.PEEK[2] BINARY.SIZE[2])");
    assert_eq!(
        u[0],
        "* 1 FETCH (UID 1 BODY[1] {10}\r\nhello body BODY[2.MIME] {77}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n BINARY[2] ~{12}\r\nhello binary BINARY.SIZE[2] 12)"
    );
    let u = c.ok("FETCH 1 (FLAGS)");
    assert_eq!(u[0], "* 1 FETCH (FLAGS ())", "PEEK must not set \\Seen");
    let u = c.ok("FETCH 1 BODY[HEADER.FIELDS (SUBJECT)]");
    assert_eq!(
        u[0],
        "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: multi\r\n\r\n FLAGS (\\Seen))"
    );
    // Partial fetch from the middle of a large message, across a chunk.
    let whole = inst.show(USER, 2);
    let u = c.ok("FETCH 2 (BODY.PEEK[]<65000.1000> RFC822.SIZE)");
    let expected = format!(
        "* 2 FETCH (BODY[]<65000> {{1000}}\r\n{} RFC822.SIZE {})",
        String::from_utf8_lossy(&whole[65000..66000]),
        whole.len()
    );
    assert_eq!(u[0], expected);
    let u = c.ok("FETCH 2 BODY.PEEK[]");
    assert!(u[0].len() > whole.len());

    // STORE, SEARCH, ESEARCH.
    let u = c.ok("STORE 2 +FLAGS (\\Flagged $Work)");
    assert_eq!(u, vec!["* 2 FETCH (FLAGS (\\Flagged $Work))"]);
    let u = c.ok("SEARCH FLAGGED");
    assert_eq!(u, vec!["* SEARCH 2"]);
    let u = c.ok("UID SEARCH RETURN (MIN MAX COUNT ALL) OR SEEN KEYWORD $Work");
    assert_eq!(
        u,
        vec!["* ESEARCH (TAG \"t12\") UID MIN 1 MAX 2 COUNT 2 ALL 1:2"]
    );
    let u = c.ok("SEARCH TEXT \"hello binary\"");
    assert_eq!(u, vec!["* SEARCH 1"], "decoded base64 part");
    let u = c.ok("SEARCH BODY \"second line 1000\" SUBJECT second");
    assert_eq!(u, vec!["* SEARCH 2"]);
    let u = c.ok("SEARCH FROM sender@other NOT LARGER 1000");
    assert_eq!(u, vec!["* SEARCH 1"]);
    let u = c.ok("SEARCH SENTSINCE 1-Jan-2000 UID 2:*");
    assert_eq!(u, vec!["* SEARCH"]);

    // COPY with COPYUID, MOVE, EXPUNGE.
    let (_, t) = c.cmd("COPY 1:2 Nope");
    assert!(t.contains("NO [TRYCREATE]"));
    let (_, t) = c.cmd("COPY 1:2 Archive");
    assert!(t.contains("OK [COPYUID "), "{t}");
    assert!(t.contains(" 1:2 1:2]"), "{t}");
    let u = c.ok("MOVE 1 Trash");
    assert!(
        u[0].starts_with("* OK [COPYUID ") && u[1] == "* 1 EXPUNGE",
        "{u:?}"
    );
    let u = c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert!(u.is_empty());
    let u = c.ok("EXPUNGE");
    assert_eq!(u, vec!["* 1 EXPUNGE"]);
    let u = c.ok("STATUS Archive (MESSAGES UIDNEXT UNSEEN SIZE DELETED)");
    assert!(
        u[0].starts_with("* STATUS \"Archive\" (MESSAGES 2 UIDNEXT 3 UNSEEN 1 SIZE "),
        "{u:?}"
    );
    assert!(u[0].ends_with(" DELETED 0)"));
    // IMAP4rev1's first unseen message, from the store's unseen index:
    // Archive holds message 1 (seen) and message 2 (not seen).
    let u = c.ok("EXAMINE Archive");
    assert!(u.contains(&"* 2 EXISTS".to_string()), "{u:?}");
    assert!(
        u.contains(&"* OK [UNSEEN 2] First unseen".to_string()),
        "{u:?}"
    );
    c.ok("LOGOUT");
}

#[test]
fn append_create_rename_and_literals() {
    let inst = instance("imap-append");
    let mut c = Imap::connect(imap_addr(&inst));
    c.login();
    let msg = b"Subject: appended\r\n\r\nbody\r\n";
    // Synchronizing literal: wait for the continuation.
    c.send(
        format!(
            "a1 APPEND Drafts (\\Draft $Todo) \"05-Jan-2024 10:00:00 +0100\" {{{}}}\r\n",
            msg.len()
        )
        .as_bytes(),
    );
    assert!(c.read_response_line().starts_with("+ "));
    c.send(msg);
    c.send(b"\r\n");
    let (_, t) = c.until_tagged("a1");
    assert!(
        t.starts_with("a1 OK [APPENDUID ") && t.contains(" 1]"),
        "{t}"
    );
    // LITERAL+: no continuation.
    c.send(format!("a2 APPEND Drafts {{{}+}}\r\n", msg.len()).as_bytes());
    c.send(msg);
    c.send(b"\r\n");
    let (_, t) = c.until_tagged("a2");
    assert!(t.contains("[APPENDUID ") && t.contains(" 2]"), "{t}");
    let (_, t) = c.cmd("APPEND Nowhere {3+}\r\nabc");
    assert!(t.contains("NO [TRYCREATE]"), "{t}");
    // An oversized literal is refused at once, nothing read.
    c.send(b"a3 LOGIN {99999999}\r\n");
    let (_, t) = c.until_tagged("a3");
    assert!(t.contains("BAD"), "{t}");
    c.send(b"a4 APPEND Drafts {999999999}\r\n");
    let (_, t) = c.until_tagged("a4");
    assert!(t.contains("NO [TOOBIG]"), "{t}");

    // MULTIAPPEND (RFC 3502): three messages in one command, mixed
    // literal kinds, one transaction, APPENDUID with a uid-set.
    let (m3, m4, m5) = (
        b"Subject: multi 3\r\n\r\nthree\r\n",
        b"Subject: multi 4\r\n\r\nfour\r\n",
        b"Subject: multi 5\r\n\r\nfive\r\n",
    );
    c.send(format!("a5 APPEND Drafts {{{}}}\r\n", m3.len()).as_bytes());
    assert!(c.read_response_line().starts_with("+ "));
    c.send(m3);
    c.send(format!(" (\\Seen) {{{}+}}\r\n", m4.len()).as_bytes());
    c.send(m4);
    c.send(format!(" \"05-Jan-2024 10:00:00 +0100\" {{{}}}\r\n", m5.len()).as_bytes());
    assert!(c.read_response_line().starts_with("+ "));
    c.send(m5);
    c.send(b"\r\n");
    let (_, t) = c.until_tagged("a5");
    assert!(
        t.starts_with("a5 OK [APPENDUID ") && t.contains(" 3:5]"),
        "{t}"
    );
    // A malformed second message: none of the command's messages is kept.
    c.send(b"a6 APPEND Drafts {3+}\r\nabc (\\Seen {3+}\r\nxyz\r\n");
    let (_, t) = c.until_tagged("a6");
    assert!(t.starts_with("a6 BAD"), "{t}");
    let u = c.ok("STATUS Drafts (MESSAGES UIDNEXT UNSEEN)");
    assert_eq!(
        u,
        vec!["* STATUS \"Drafts\" (MESSAGES 5 UIDNEXT 6 UNSEEN 4)"]
    );

    c.ok("EXAMINE Drafts");
    let u = c.ok("FETCH 1:* (FLAGS INTERNALDATE BODY[TEXT])");
    assert_eq!(
        u[0],
        "* 1 FETCH (FLAGS (\\Draft $Todo) INTERNALDATE \"05-Jan-2024 09:00:00 +0000\" BODY[TEXT] {6}\r\nbody\r\n)"
    );
    let u = c.ok("FETCH 3:5 (FLAGS BODY.PEEK[TEXT])");
    assert_eq!(
        u,
        vec![
            "* 3 FETCH (FLAGS () BODY[TEXT] {7}\r\nthree\r\n)",
            "* 4 FETCH (FLAGS (\\Seen) BODY[TEXT] {6}\r\nfour\r\n)",
            "* 5 FETCH (FLAGS () BODY[TEXT] {6}\r\nfive\r\n)",
        ]
    );
    let (_, t) = c.cmd("STORE 1 +FLAGS (\\Seen)");
    assert!(t.contains("NO [READ-ONLY]"));
    c.ok("UNSELECT");

    // Hierarchy, special use, non-ASCII names, rename, delete.
    c.ok("CREATE Projects/2024/Q1 (USE (\\Archive))");
    let (_, t) = c.cmd("CREATE Projects");
    assert!(t.contains("NO [ALREADYEXISTS]"));
    c.ok("CREATE \"Entw&APw-rfe\"");
    let (_, t) = c.cmd("CREATE \"bad&-name&Jjo\"");
    assert!(t.contains("NO"), "{t}");
    let u = c.ok("LIST \"\" \"Projects/%\"");
    assert_eq!(u, vec!["* LIST (\\HasChildren) \"/\" \"Projects/2024\""]);
    let u = c.ok("LIST (SPECIAL-USE) \"\" \"*\" RETURN (STATUS (MESSAGES))");
    assert!(
        u.contains(&"* LIST (\\HasNoChildren \\Archive) \"/\" \"Projects/2024/Q1\"".to_string()),
        "{u:?}"
    );
    assert!(
        u.contains(&"* STATUS \"Drafts\" (MESSAGES 5)".to_string()),
        "{u:?}"
    );
    c.ok("RENAME Projects Old");
    let u = c.ok("LIST \"\" \"Old*\"");
    assert_eq!(u.len(), 3, "{u:?}");
    c.ok("UNSUBSCRIBE Old/2024");
    let u = c.ok("LSUB \"\" \"Old*\"");
    assert_eq!(u.len(), 2, "{u:?}");
    c.ok("DELETE Old/2024/Q1");
    let u = c.ok("LIST \"\" \"*\"");
    assert!(u.iter().any(|l| l.ends_with("\"Entw&APw-rfe\"")), "{u:?}");
    c.ok("ENABLE IMAP4rev2");
    let u = c.ok("LIST \"\" \"Entw*\"");
    assert_eq!(u, vec!["* LIST (\\HasNoChildren) \"/\" \"Entwürfe\""]);
    // RENAME INBOX moves its messages.
    deliver(&inst, b"Subject: x\r\n\r\ny\r\n");
    c.ok("RENAME INBOX Saved");
    let u = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(u, vec!["* STATUS \"INBOX\" (MESSAGES 0)"]);
    let u = c.ok("STATUS Saved (MESSAGES)");
    assert_eq!(u, vec!["* STATUS \"Saved\" (MESSAGES 1)"]);
}

#[test]
fn utf8_accept_names_and_append() {
    let inst = instance("imap-utf8");
    let mut c = Imap::connect(imap_addr(&inst));
    c.login();
    // Before ENABLE: modified UTF-7 on the wire.
    c.ok("CREATE \"Entw&APw-rfe\"");
    assert_eq!(c.ok("ENABLE UTF8=ACCEPT"), vec!["* ENABLED UTF8=ACCEPT"]);
    assert_eq!(
        c.ok("LIST \"\" \"Entw*\""),
        vec!["* LIST (\\HasNoChildren) \"/\" \"Entwürfe\""]
    );
    c.ok("CREATE \"Ärger/Größe\"");
    // RFC 6855 4: APPEND with UTF8 (literal8), then a second message.
    let msg = "Subject: Grüße\r\nFrom: jörg@example.org\r\n\r\nÄpfel\r\n".as_bytes();
    c.send(format!("u1 APPEND \"Ärger/Größe\" UTF8 (~{{{}}}\r\n", msg.len()).as_bytes());
    assert!(c.read_response_line().starts_with("+ "));
    c.send(msg);
    c.send(format!(") UTF8 (~{{{}+}}\r\n", msg.len()).as_bytes());
    c.send(msg);
    c.send(b")\r\n");
    let (_, t) = c.until_tagged("u1");
    assert!(
        t.starts_with("u1 OK [APPENDUID ") && t.contains(" 1:2]"),
        "{t}"
    );
    c.ok("SELECT \"Ärger/Größe\"");
    let u = c.ok("FETCH 1 BODY.PEEK[]");
    assert_eq!(
        u[0],
        format!(
            "* 1 FETCH (BODY[] {{{}}}\r\n{})",
            msg.len(),
            String::from_utf8_lossy(msg)
        )
    );
    // A missing parenthesis after the literal8 is refused.
    c.send(b"u2 APPEND INBOX UTF8 (~{3+}\r\nabc\r\n");
    let (_, t) = c.until_tagged("u2");
    assert!(t.starts_with("u2 BAD"), "{t}");
    assert_eq!(
        c.ok("STATUS INBOX (MESSAGES)"),
        vec!["* STATUS \"INBOX\" (MESSAGES 0)"]
    );
    c.ok("LOGOUT");
}

#[test]
fn sort_by_subject_date_from_and_size() {
    let inst = instance("imap-sort");
    for (subject, date, from, pad) in [
        (
            "Re: banana",
            "Tue, 14 Nov 2023 10:00:00 +0000",
            "Carol <carol@x.test>",
            10,
        ),
        (
            "apple",
            "Mon, 13 Nov 2023 10:00:00 +0000",
            "bob@x.test",
            300,
        ),
        (
            "[list] Fwd: Cherry",
            "Wed, 15 Nov 2023 10:00:00 +0000",
            "Alice <alice@x.test>",
            50,
        ),
        ("=?utf-8?q?Re:_=C3=84pfel?=", "not a date", "dave@x.test", 5),
    ] {
        let body = "x".repeat(pad);
        deliver(
            &inst,
            format!("Subject: {subject}\r\nDate: {date}\r\nFrom: {from}\r\n\r\n{body}\r\n")
                .as_bytes(),
        );
    }
    let mut c = Imap::connect(imap_addr(&inst));
    c.login();
    let (caps, _) = c.cmd("CAPABILITY");
    assert!(caps[0].contains(" SORT "), "{caps:?}");
    c.ok("SELECT INBOX");
    // RFC 5256 base subjects: banana, apple, cherry, äpfel.
    assert_eq!(c.ok("SORT (SUBJECT) UTF-8 ALL"), vec!["* SORT 2 1 3 4"]);
    // An unparseable Date: sorts by arrival (now), after the 2023 dates.
    assert_eq!(
        c.ok("SORT (REVERSE DATE) UTF-8 ALL"),
        vec!["* SORT 4 3 1 2"]
    );
    assert_eq!(c.ok("SORT (FROM) UTF-8 ALL"), vec!["* SORT 3 2 1 4"]);
    assert_eq!(
        c.ok("UID SORT (REVERSE SIZE) UTF-8 NOT UID 2"),
        vec!["* SORT 3 1 4"]
    );
    let (_, t) = c.cmd("SORT (COLOUR) UTF-8 ALL");
    assert!(t.contains(" BAD "), "{t}");
    let (_, t) = c.cmd("SORT (DATE) KOI8-R ALL");
    assert!(t.contains("BADCHARSET"), "{t}");
    c.ok("LOGOUT");
}

#[test]
fn searchres_saves_a_result_for_dollar() {
    let inst = instance("imap-searchres");
    for (i, word) in ["odd", "even", "odd", "even"].iter().enumerate() {
        deliver(
            &inst,
            format!("Subject: {word} {}\r\n\r\nx\r\n", i + 1).as_bytes(),
        );
    }
    let mut c = Imap::connect(imap_addr(&inst));
    c.login();
    let (caps, _) = c.cmd("CAPABILITY");
    assert!(caps[0].contains(" SEARCHRES"), "{caps:?}");
    c.ok("SELECT INBOX");
    // RFC 5182: SAVE alone answers with no ESEARCH.
    let u = c.ok("UID SEARCH RETURN (SAVE) SUBJECT odd");
    assert!(u.is_empty(), "{u:?}");
    let u = c.ok("FETCH $ (UID)");
    assert_eq!(u, vec!["* 1 FETCH (UID 1)", "* 3 FETCH (UID 3)"]);
    // The saved messages, not numbers: after an expunge `$` still means
    // the message with UID 3, now number 2.
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert_eq!(c.ok("EXPUNGE"), vec!["* 1 EXPUNGE"]);
    assert_eq!(c.ok("FETCH $ (FLAGS)"), vec!["* 2 FETCH (FLAGS ())"]);
    assert_eq!(c.ok("SEARCH $"), vec!["* SEARCH 2"]);
    c.ok("STORE $ +FLAGS (\\Flagged)");
    assert_eq!(c.ok("SEARCH FLAGGED"), vec!["* SEARCH 2"]);
    // With MAX only, just the maximum is saved.
    let u = c.ok("SEARCH RETURN (MAX SAVE) SUBJECT even");
    assert_eq!(u, vec!["* ESEARCH (TAG \"t12\") MAX 3"]);
    assert_eq!(c.ok("UID SEARCH UID $"), vec!["* SEARCH 4"]);
    c.ok("COPY $ Archive");
    // A SEARCH with SAVE that fails leaves `$` empty (RFC 5182 2.1).
    let (_, t) = c.cmd("SEARCH RETURN (SAVE) NOSUCHKEY");
    assert!(t.contains(" BAD "), "{t}");
    assert_eq!(c.ok("SEARCH $"), vec!["* SEARCH"]);
    c.ok("SEARCH RETURN (SAVE) ALL");
    let u = c.ok("STATUS Archive (MESSAGES)");
    assert_eq!(u, vec!["* STATUS \"Archive\" (MESSAGES 1)"]);
    // A new SELECT forgets the result.
    c.ok("SELECT INBOX");
    assert_eq!(c.ok("SEARCH $"), vec!["* SEARCH"]);
    c.ok("LOGOUT");
}

#[test]
fn two_sessions_see_each_other_and_idle_wakes() {
    let inst = instance("imap-idle");
    deliver(&inst, b"Subject: one\r\n\r\n1\r\n");
    deliver(&inst, b"Subject: two\r\n\r\n2\r\n");
    let mut a = Imap::connect(imap_addr(&inst));
    let mut b = Imap::connect(imap_addr(&inst));
    a.login();
    b.login();
    a.ok("SELECT INBOX");
    b.ok("SELECT INBOX");
    a.ok("STORE 1 +FLAGS (\\Seen)");
    let u = b.ok("NOOP");
    assert_eq!(u, vec!["* 1 FETCH (FLAGS (\\Seen))"]);
    // An expunge is not reported during FETCH, only on NOOP.
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    a.ok("EXPUNGE");
    let u = b.ok("FETCH 2 (FLAGS)");
    assert!(!u.iter().any(|l| l.contains("EXPUNGE")), "{u:?}");
    let u = b.ok("NOOP");
    assert!(u.contains(&"* 1 EXPUNGE".to_string()), "{u:?}");
    // IDLE wakes on delivery within a second.
    b.send(b"i1 IDLE\r\n");
    assert!(b.read_response_line().starts_with("+ "));
    let start = Instant::now();
    deliver(&inst, b"Subject: three\r\n\r\n3\r\n");
    let l = b.read_response_line();
    assert_eq!(l, "* 2 EXISTS");
    assert!(start.elapsed() < Duration::from_secs(3));
    b.send(b"DONE\r\n");
    let (_, t) = b.until_tagged("i1");
    assert!(t.starts_with("i1 OK"));
    // QRESYNC: VANISHED for what was expunged since a mod-sequence.
    let mut q = Imap::connect(imap_addr(&inst));
    q.login();
    q.ok("ENABLE QRESYNC");
    let u = q.ok("SELECT INBOX");
    let validity = u
        .iter()
        .find_map(|l| l.strip_prefix("* OK [UIDVALIDITY "))
        .and_then(|r| r.split(']').next())
        .unwrap()
        .to_string();
    let u = q.ok(&format!("SELECT INBOX (QRESYNC ({validity} 1))"));
    assert!(u.contains(&"* VANISHED (EARLIER) 1".to_string()), "{u:?}");
    assert!(
        u.iter()
            .any(|l| l.starts_with("* 1 FETCH (UID 2 FLAGS () MODSEQ (")),
        "{u:?}"
    );
    let hms = u
        .iter()
        .find_map(|l| l.strip_prefix("* OK [HIGHESTMODSEQ "))
        .and_then(|r| r.split(']').next())
        .unwrap()
        .parse::<u64>()
        .unwrap();
    a.ok("UID STORE 2 +FLAGS (\\Answered)");
    let u = q.ok(&format!(
        "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)"
    ));
    // The change may come once as an update and once as the answer.
    assert!(!u.is_empty(), "{u:?}");
    assert!(
        u.iter()
            .all(|l| l.starts_with("* 1 FETCH (UID 2 FLAGS (\\Answered) MODSEQ (")),
        "{u:?}"
    );
    let (_, t) = q.cmd(&format!(
        "STORE 1 (UNCHANGEDSINCE {hms}) +FLAGS (\\Flagged)"
    ));
    assert!(t.contains("OK [MODIFIED 1]"), "{t}");
}

#[test]
fn bad_input_is_answered_and_limited() {
    let inst = instance("imap-bad");
    let mut c = Imap::connect(imap_addr(&inst));
    let (_, t) = c.cmd("FROB");
    assert!(t.contains("BAD"));
    c.send(b"\r\n");
    assert!(c.read_response_line().starts_with("* BAD"));
    let long = "x".repeat(20_000);
    c.send(format!("a {long}\r\n").as_bytes());
    assert!(c.read_response_line().contains("too long"));
    c.login();
    let (_, t) = c.cmd("SELECT \"caf\u{e9}\"");
    assert!(t.contains("NO") || t.contains("BAD"), "{t}");
    for _ in 0..10 {
        c.send(b"x BOGUS\r\n");
    }
    let mut closed = false;
    for _ in 0..20 {
        let l = c.read_response_line();
        if l.starts_with("* BYE") {
            closed = true;
            break;
        }
    }
    assert!(closed);
}

#[test]
fn python_imaplib_end_to_end() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 missing; skipped");
        return;
    }
    let inst = instance("imap-python");
    deliver(&inst, MULTIPART);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/imap_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg((inst.port_base + 143).to_string())
        .arg((inst.port_base + 993).to_string())
        .arg(inst.cert())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "imaplib: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_says_bye_to_idle_sessions() {
    let mut inst = instance("imap-term");
    let mut c = Imap::connect(imap_addr(&inst));
    c.login();
    c.ok("SELECT INBOX");
    c.send(b"i IDLE\r\n");
    assert!(c.read_response_line().starts_with("+ "));
    inst.signal("TERM");
    assert!(c.read_response_line().starts_with("* BYE"));
    assert_eq!(inst.wait(Duration::from_secs(10)), Some(0));
}

/// mbsync (Debian isync) two-way sync: messages down, flags and deletions
/// both ways, content checked end to end. Skipped when mbsync is missing
/// (.ci/run installs it).
#[test]
fn mbsync_two_way_sync() {
    if std::process::Command::new("mbsync")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("mbsync missing; skipped");
        return;
    }
    let inst = instance("imap-mbsync");
    deliver(
        &inst,
        b"Subject: keep\r\nMessage-ID: <keep@x>\r\n\r\nkeep me\r\n",
    );
    deliver(
        &inst,
        b"Subject: drop\r\nMessage-ID: <drop@x>\r\n\r\ndrop me\r\n",
    );
    let local = inst.dir.join("maildir");
    std::fs::create_dir_all(&local).unwrap();
    let rc = inst.dir.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount pimail\nHost 127.0.0.1\nPort {}\nUser {USER}\nPass secret\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount pimail\n\n\
             MaildirStore local\nPath {}/\nInbox {}/INBOX\nSubFolders Verbatim\n\n\
             Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX Archive\nCreate Both\nExpunge Both\nSyncState *\n",
            inst.port_base + 143,
            local.display(),
            local.display()
        ),
    )
    .unwrap();
    let sync = || {
        let out = std::process::Command::new("mbsync")
            .arg("-c")
            .arg(&rc)
            .arg("-a")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mbsync: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            inst.log()
        );
    };
    let files = || -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(local.join("INBOX").join(sub)) {
                for e in rd.flatten() {
                    v.push((e.path(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        v
    };
    sync();
    let got = files();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .any(|(_, c)| String::from_utf8_lossy(c).contains("keep me"))
    );
    // mbsync stores LF line ends locally and adds X-TUID; the text is ours.
    // Locally: mark "keep" seen, delete "drop".
    for (path, content) in &got {
        if String::from_utf8_lossy(content).contains("drop me") {
            std::fs::remove_file(path).unwrap();
        } else {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let base = name.split(":2,").next().unwrap().to_string();
            std::fs::rename(path, local.join("INBOX/cur").join(format!("{base}:2,S"))).unwrap();
        }
    }
    sync();
    let mut c = Imap::connect(imap_addr(&inst));
    c.login();
    c.ok("SELECT INBOX");
    let u = c.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert_eq!(u.len(), 1, "{u:?}");
    assert!(
        u[0].contains("\\Seen") && u[0].contains("Subject: keep"),
        "{u:?}"
    );
    // On the server: flag it, and a new message arrives.
    c.ok("STORE 1 +FLAGS (\\Flagged)");
    deliver(&inst, b"Subject: new\r\n\r\nnew one\r\n");
    sync();
    let got = files();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .any(|(p, c)| String::from_utf8_lossy(c).contains("keep me")
                && p.to_string_lossy().ends_with(":2,FS"))
    );
    assert!(
        got.iter()
            .any(|(_, c)| String::from_utf8_lossy(c).contains("new one"))
    );
    // Deleted on the server: gone locally after the next sync.
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    sync();
    assert_eq!(files().len(), 1);
}

/// offlineimap (Debian offlineimap3), a second real client: two syncs,
/// content checked byte for byte (but for its own header), a flag set on
/// the server reaches the local copy, a local deletion reaches the server.
/// Skipped when offlineimap is missing (.ci/run installs it).
#[test]
fn offlineimap_sync() {
    if std::process::Command::new("offlineimap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("offlineimap missing; skipped");
        return;
    }
    let inst = instance("imap-offlineimap");
    let first = b"Subject: one\r\nMessage-ID: <one@x>\r\n\r\nfirst body\r\n.dot line\r\n";
    deliver(&inst, first);
    deliver(
        &inst,
        b"Subject: two\r\nMessage-ID: <two@x>\r\n\r\nsecond body\r\n",
    );
    let local = inst.dir.join("offline");
    let meta = inst.dir.join("offline-meta");
    let rc = inst.dir.join("offlineimaprc");
    std::fs::write(
        &rc,
        format!(
            "[general]\naccounts = test\nmetadata = {}\n\n[Account test]\nlocalrepository = local\nremoterepository = remote\n\n\
             [Repository local]\ntype = Maildir\nlocalfolders = {}\n\n\
             [Repository remote]\ntype = IMAP\nremotehost = 127.0.0.1\nremoteport = {}\nremoteuser = {USER}\nremotepass = secret\n\
             ssl = no\nstarttls = no\nfolderfilter = lambda f: f == 'INBOX'\n",
            meta.display(),
            local.display(),
            inst.port_base + 143
        ),
    )
    .unwrap();
    let sync = || {
        let out = std::process::Command::new("offlineimap")
            .arg("-c")
            .arg(&rc)
            .args(["-o", "-u", "basic"])
            .env("HOME", &inst.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "offlineimap: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            inst.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let files = || -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(local.join("INBOX").join(sub)) {
                for e in rd.flatten() {
                    v.push((e.path(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        v
    };
    sync();
    let got = files();
    assert_eq!(got.len(), 2, "{got:?}");
    // The stored message (with our trace headers) is what arrives; the
    // original text is its tail, with CRLF or LF line ends.
    let one = got
        .iter()
        .find(|(_, c)| String::from_utf8_lossy(c).contains("first body"))
        .unwrap();
    let text = String::from_utf8_lossy(&one.1).replace("\r\n", "\n");
    assert!(
        text.ends_with(&String::from_utf8_lossy(first).replace("\r\n", "\n")),
        "{text}"
    );
    // A flag set on the server is synced down; a local deletion goes up.
    let mut c = Imap::connect(imap_addr(&inst));
    c.login();
    c.ok("SELECT INBOX");
    c.ok("STORE 1 +FLAGS (\\Flagged)");
    c.ok("LOGOUT");
    let two = got
        .iter()
        .find(|(_, c)| String::from_utf8_lossy(c).contains("second body"))
        .unwrap();
    std::fs::remove_file(&two.0).unwrap();
    sync();
    let got = files();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].0.to_string_lossy().contains(":2,F"),
        "flag not synced: {:?}",
        got[0].0
    );
    assert_eq!(inst.uids(USER, "INBOX"), vec![1]);
}
