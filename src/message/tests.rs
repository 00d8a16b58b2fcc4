use super::*;
use proptest::prelude::*;

const CASES: &[&str] = &[
    "simple",
    "multipart-alternative",
    "nested-multipart-with-attachment",
    "message-rfc822",
    "group-addresses",
    "no-body",
    "broken-boundary",
    "empty-multipart",
];

fn testdata(name: &str) -> Vec<u8> {
    let path = format!("{}/src/message/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn scan_chunks(msg: &[u8], chunk: usize, limits: ScanLimits) -> MessageMeta {
    let mut s = StructureScanner::new(limits);
    for c in msg.chunks(chunk.max(1)) {
        s.feed(c);
    }
    s.finish()
}

fn scan(msg: &[u8]) -> MessageMeta {
    scan_chunks(msg, msg.len(), ScanLimits::default())
}

fn bodystructure(p: &Part, ext: bool) -> String {
    let mut out = Vec::new();
    render_bodystructure(p, ext, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn envelope(p: &Part) -> String {
    let mut out = Vec::new();
    render_envelope(p.envelope.as_ref().expect("envelope"), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn path(s: &str) -> Vec<u32> {
    s.split('.').map(|n| n.parse().expect("path")).collect()
}

#[test]
fn testdata_cases() {
    for case in CASES {
        let msg = testdata(&format!("{case}.eml"));
        let expected = String::from_utf8(testdata(&format!("{case}.expected"))).expect("utf8");
        let meta = scan(&msg);
        assert_eq!(meta.size, msg.len() as u64, "{case}");
        assert_eq!(meta.root.end, meta.size, "{case}");
        for chunk in [1, 2, 7, 4096] {
            let chunked = scan_chunks(&msg, chunk, ScanLimits::default());
            assert_eq!(chunked, meta, "{case}: chunk size {chunk}");
        }
        assert_eq!(
            MessageMeta::decode(&meta.encode()),
            Some(meta.clone()),
            "{case}"
        );
        assert_eq!(
            MessageMeta::decode_envelope(&meta.encode()),
            Some(meta.root.envelope.clone()),
            "{case}: envelope without the tree"
        );
        for line in expected.lines() {
            let (what, value) = line.split_once(' ').expect("expected line");
            match what {
                "BODYSTRUCTURE" => assert_eq!(bodystructure(&meta.root, true), value, "{case}"),
                "BODY" => assert_eq!(bodystructure(&meta.root, false), value, "{case}"),
                "ENVELOPE" => assert_eq!(envelope(&meta.root), value, "{case}"),
                "SECTION" => {
                    let mut it = value.split(' ');
                    let (p, ty, size) = (it.next(), it.next(), it.next());
                    let p = p.map(path).unwrap_or_default();
                    let part = meta.root.section(&p).expect("section exists");
                    let got = format!("{}/{}", part.content_type, part.subtype);
                    assert_eq!(Some(got.as_str()), ty, "{case} {value}");
                    if let Some(Ok(size)) = size.map(str::parse::<u64>) {
                        assert_eq!(part.body_size(), size, "{case} {value}");
                    }
                }
                other => panic!("unknown expectation {other}"),
            }
        }
    }
}

#[test]
fn child_offsets_exclude_boundary_crlf() {
    let msg = testdata("multipart-alternative.eml");
    let meta = scan(&msg);
    let p1 = meta.root.section(&[1]).expect("part 1");
    assert_eq!(&msg[p1.body_start as usize..p1.end as usize], b"plain text");
    assert!(msg[p1.header_start as usize..].starts_with(b"Content-Type: text/plain"));
    assert!(msg[p1.end as usize..].starts_with(b"\r\n--XYZ\r\n"));
    let p2 = meta.root.section(&[2]).expect("part 2");
    assert_eq!(
        &msg[p2.body_start as usize..p2.end as usize],
        b"<p>html</p>"
    );
    let inner = scan(&testdata("message-rfc822.eml"));
    let m = inner.root.section(&[2]).expect("part 2");
    let embedded = &m.children[0];
    assert_eq!(embedded.header_start, m.body_start);
    assert_eq!(embedded.end, m.end);
    assert!(m.envelope.is_some() && embedded.envelope.is_none());
}

#[test]
fn section_numbering() {
    let meta = scan(&testdata("simple.eml"));
    assert_eq!(meta.root.section(&[]), Some(&meta.root));
    assert_eq!(meta.root.section(&[1]), Some(&meta.root));
    assert_eq!(meta.root.section(&[2]), None);
    assert_eq!(meta.root.section(&[1, 1]), None);
    assert_eq!(meta.root.section(&[0]), None);
    let meta = scan(&testdata("message-rfc822.eml"));
    assert_eq!(meta.root.section(&[2, 2]), None);
    assert_eq!(meta.root.section(&[3]), None);
    // A multipart inside message/rfc822: 2.1 and 2.2 are its children.
    let msg = b"Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\na\r\n--x\r\nContent-Type: text/html\r\n\r\nb\r\n--x--\r\n";
    let meta = scan(msg);
    assert_eq!(meta.root.section(&[1]), Some(&meta.root));
    let p = meta.root.section(&[1, 2]).expect("1.2");
    assert_eq!(p.subtype, "html");
    assert_eq!(p.body_size(), 1);
}

#[test]
fn sender_and_reply_to_default_to_from() {
    let meta = scan(b"From: a@b.c\r\nSender:\r\nTo: d@e.f\r\n\r\nx");
    let env = meta.root.envelope.expect("env");
    assert_eq!(env.sender, env.from);
    assert_eq!(env.reply_to, env.from);
    assert_eq!(env.from.len(), 1);
    let meta = scan(b"From: a@b.c\r\nReply-To: r@b.c\r\n\r\n");
    let env = meta.root.envelope.expect("env");
    assert_eq!(env.reply_to[0].mailbox.as_deref(), Some(&b"r"[..]));
    assert_eq!(env.sender, env.from);
}

#[test]
fn address_edge_cases() {
    let a = header::addresses(
        b"\"Q\\\"uote\" <x@y>, (c) z@w (Zed), =?utf-8?b?w6Q=?= <e@f>, bare, <>, @@@,,;:<>",
    );
    let mut out = Vec::new();
    render_envelope(
        &Envelope {
            to: a,
            ..Envelope::default()
        },
        &mut out,
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "(NIL NIL NIL NIL NIL (({6}\r\nQ\"uote NIL \"x\" \"y\")(\"Zed\" NIL \"z\" \"w\")(\"=?utf-8?b?w6Q=?=\" NIL \"e\" \"f\")\
(NIL NIL \"bare\" \"MISSING_DOMAIN\")(NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")(NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")\
(NIL NIL \"\" NIL)(NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")(NIL NIL NIL NIL)) NIL NIL NIL NIL)"
    );
    let a = header::addresses(b"John Q. Public <\"john q\"@[1.2.3.4]>");
    assert_eq!(a[0].name.as_deref(), Some(&b"John Q. Public"[..]));
    assert_eq!(a[0].mailbox.as_deref(), Some(&b"\"john q\""[..]));
    assert_eq!(a[0].host.as_deref(), Some(&b"[1.2.3.4]"[..]));
}

#[test]
fn literals_for_unsafe_strings() {
    let env = Envelope {
        subject: Some("Grüße \"x\"".as_bytes().to_vec()),
        date: Some(b"a\\b".to_vec()),
        ..Envelope::default()
    };
    let mut out = Vec::new();
    render_envelope(&env, &mut out);
    let mut want = b"({3}\r\na\\b {11}\r\n".to_vec();
    want.extend_from_slice("Grüße \"x\"".as_bytes());
    want.extend_from_slice(b" NIL NIL NIL NIL NIL NIL NIL NIL)");
    assert_eq!(out, want);
}

#[test]
fn mime_params() {
    let msg = b"Content-Type: Text/Plain (comment) ; format=flowed;\r\n CHARSET=\"iso-8859-1\" ; name*0=\"long \" ; name*1=name.txt;\r\n title*0*=us-ascii'en'This%20is ; title*1*=%20fun; junk; x=\"q\\\"d\"\r\n\
Content-Transfer-Encoding: Base64 (why)\r\nContent-Disposition: INLINE\r\nContent-Language: en (English)\r\nContent-MD5: abc==\r\n\r\n";
    let meta = scan(msg);
    assert_eq!(
        bodystructure(&meta.root, true),
        "(\"text\" \"plain\" (\"format\" \"flowed\" \"charset\" \"iso-8859-1\" \"name\" \"long name.txt\" \
\"title*\" \"us-ascii'en'This%20is%20fun\" \"x\" {3}\r\nq\"d) NIL NIL \"BASE64\" 0 0 \"abc==\" (\"inline\" NIL) (\"en\") NIL)"
    );
}

#[test]
fn line_counting() {
    let body = |m: &[u8]| {
        let meta = scan(m);
        (meta.root.body_size(), meta.root.lines)
    };
    // Lines are line breaks in the body (Dovecot/Cyrus): a partial last line adds none.
    assert_eq!(body(b"S: x\r\n\r\na\r\nb"), (4, 1));
    assert_eq!(body(b"S: x\r\n\r\na\r\nb\r\n"), (6, 2));
    assert_eq!(body(b"S: x\r\n\r\n"), (0, 0));
    assert_eq!(body(b"S: x\r\n\r\n\r\n\r\n"), (4, 2));
    // Bare LF line endings are tolerated.
    assert_eq!(body(b"S: x\n\na\nb\n"), (4, 2));
    // Boundary: the CRLF before it is not part of the child.
    let meta = scan(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n\r\n--b--");
    let p = meta.root.section(&[1]).expect("1");
    assert_eq!((p.body_size(), p.lines), (3, 1));
    // A boundary right after the child's header: empty body.
    let meta = scan(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nA: b\r\n\r\n--b\r\nA: c\r\n--b--\r\n");
    let p1 = meta.root.section(&[1]).expect("1");
    assert_eq!((p1.body_size(), p1.lines), (0, 0));
    let p2 = meta.root.section(&[2]).expect("2");
    assert_eq!((p2.body_size(), p2.lines), (0, 0));
    assert_eq!(p2.end, p2.body_start);
}

#[test]
fn no_separator_and_empty_input() {
    let meta = scan(b"");
    assert_eq!(meta.size, 0);
    assert_eq!(meta.root.body_size(), 0);
    let meta = scan(b"Subject: a\r\nFrom: b@c\r\n");
    assert_eq!(meta.root.body_start, meta.size);
    assert_eq!(
        meta.root.envelope.expect("env").subject,
        Some(b"a".to_vec())
    );
    // Body starting with an empty line: no header at all.
    let meta = scan(b"\r\nbody");
    assert_eq!((meta.root.body_start, meta.root.lines), (2, 0));
}

#[test]
fn digest_default_and_boundary_prefixes() {
    let msg = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in\r\n\r\nhi\r\n--d--\r\n";
    let meta = scan(msg);
    let p = meta.root.section(&[1]).expect("1");
    assert!(p.is_message());
    assert_eq!(
        p.envelope.as_ref().and_then(|e| e.subject.clone()),
        Some(b"in".to_vec())
    );
    // "--bb" is not a delimiter for boundary "b", and trailing whitespace is allowed.
    let msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b \t\r\n\r\n--bb\r\n--b--\r\n";
    let meta = scan(msg);
    assert_eq!(meta.root.children.len(), 1);
    assert_eq!(meta.root.children[0].body_size(), 4);
}

#[test]
fn limits_are_enforced() {
    let mut msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
    for _ in 0..20 {
        msg.extend_from_slice(b"--b\r\n\r\nx\r\n");
    }
    msg.extend_from_slice(b"--b--\r\n");
    let limits = ScanLimits {
        max_parts: 5,
        ..ScanLimits::default()
    };
    let meta = scan_chunks(&msg, msg.len(), limits);
    assert_eq!(meta.root.children.len(), 4);
    // Nesting beyond max_depth becomes opaque.
    let mut msg = Vec::new();
    for i in 0..10 {
        msg.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    let limits = ScanLimits {
        max_depth: 3,
        ..ScanLimits::default()
    };
    let meta = scan_chunks(&msg, 3, limits);
    let deepest = meta.root.section(&[1, 1]).expect("1.1");
    assert_eq!(deepest.content_type, "application");
    assert!(deepest.children.is_empty());
    // Header bytes beyond the budget are skipped but offsets stay exact.
    let mut msg = b"Subject: kept\r\nX-Long: ".to_vec();
    msg.extend(std::iter::repeat_n(b'a', 100_000));
    msg.extend_from_slice(b"\r\nFrom: lost@x\r\n\r\nbody");
    let limits = ScanLimits {
        max_header_bytes: 1000,
        ..ScanLimits::default()
    };
    let meta = scan_chunks(&msg, 4096, limits);
    let env = meta.root.envelope.clone().expect("env");
    assert_eq!(env.subject, Some(b"kept".to_vec()));
    assert!(env.from.is_empty());
    assert_eq!(meta.root.body_size(), 4);
}

#[test]
fn decode_rejects_garbage() {
    let meta = scan(&testdata("nested-multipart-with-attachment.eml"));
    let enc = meta.encode();
    assert_eq!(enc[0], 1);
    for n in 0..enc.len() {
        assert_eq!(MessageMeta::decode(&enc[..n]), None, "truncated at {n}");
    }
    let mut extra = enc.clone();
    extra.push(0);
    assert_eq!(MessageMeta::decode(&extra), None);
    assert_eq!(MessageMeta::decode(&[2]), None);
    assert_eq!(
        MessageMeta::decode(&[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
        ]),
        None
    );
}

#[test]
fn deep_nesting_is_bounded_and_decodable() {
    let mut msg = Vec::new();
    for i in 0..2000 {
        msg.extend_from_slice(
            format!("Content-Type: message/rfc822\r\n\r\nSubject: {i}\r\n").as_bytes(),
        );
    }
    let limits = ScanLimits {
        max_depth: usize::MAX,
        max_parts: usize::MAX,
        ..ScanLimits::default()
    };
    let meta = scan_chunks(&msg, 4096, limits);
    assert_eq!(MessageMeta::decode(&meta.encode()), Some(meta.clone()));
    let mut out = Vec::new();
    render_bodystructure(&meta.root, true, &mut out);
    assert!(out.len() > 256 * 40);
    // A hand-made blob nested deeper than the decoder allows is rejected.
    let mut deep = Part::new(0);
    for _ in 0..300 {
        let mut p = Part::new(0);
        p.children.push(deep);
        deep = p;
    }
    let blob = MessageMeta {
        size: 0,
        root: deep,
    }
    .encode();
    assert_eq!(MessageMeta::decode(&blob), None);
}

fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"--b".to_vec()),
        Just(b"--b--".to_vec()),
        Just(b"--c ".to_vec()),
        Just(b"--c--".to_vec()),
        Just(b"".to_vec()),
        Just(b"Content-Type: multipart/mixed; boundary=b".to_vec()),
        Just(b"Content-Type: multipart/alternative; boundary=\"c\"".to_vec()),
        Just(b"Content-Type: message/rfc822".to_vec()),
        Just(b"Content-Type: text/plain; name*0*=x; name*1=y".to_vec()),
        Just(b"To: g: a@b, \"c\" <@x,@y:d@e>;, (f".to_vec()),
        Just(b" folded".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn eol_strategy() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        Just(&b"\r\n"[..]),
        Just(&b"\n"[..]),
        Just(&b""[..]),
        Just(&b"\r"[..])
    ]
}

fn check(msg: &[u8], chunk: usize) {
    let meta = scan(msg);
    assert_eq!(meta.size, msg.len() as u64);
    assert_eq!(scan_chunks(msg, chunk, ScanLimits::default()), meta);
    assert_eq!(MessageMeta::decode(&meta.encode()), Some(meta.clone()));
    let mut out = Vec::new();
    render_bodystructure(&meta.root, true, &mut out);
    render_bodystructure(&meta.root, false, &mut out);
    if let Some(env) = &meta.root.envelope {
        render_envelope(env, &mut out);
    }
    let _ = meta.root.section(&[1, 2, 1]);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(msg in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..64) {
        check(&msg, chunk);
    }

    #[test]
    fn random_mime_lines_never_panic(
        lines in proptest::collection::vec((line_strategy(), eol_strategy()), 0..60),
        chunk in 1usize..64,
    ) {
        let mut msg = Vec::new();
        for (l, eol) in lines {
            msg.extend_from_slice(&l);
            msg.extend_from_slice(eol);
        }
        check(&msg, chunk);
    }

    #[test]
    fn decode_random_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = bytes;
        if let Some(first) = b.first_mut() {
            *first = 1;
        }
        let _ = MessageMeta::decode(&b);
        let _ = MessageMeta::decode_envelope(&b);
    }
}
