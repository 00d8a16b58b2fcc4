//! Parser and helper tests (no sockets).

use super::parse::*;
use super::*;

fn kind(line: &str) -> Kind {
    parse(line.as_bytes())
        .unwrap_or_else(|e| panic!("{line}: {e:?}"))
        .kind
}

fn refused(line: &[u8]) -> bool {
    parse(line).is_err()
}

#[test]
fn parses_login_with_literals_and_quoted() {
    assert_eq!(
        kind("a1 LOGIN {5}\r\nalice \"se\\\"cret\""),
        Kind::Login {
            user: b"alice".to_vec(),
            password: b"se\"cret".to_vec()
        }
    );
    assert!(refused(b"a1 LOGIN {9}\r\nalice"));
    assert!(refused(b"a1 LOGIN alice"));
    assert!(refused(b"+ LOGIN a b"));
}

#[test]
fn parses_fetch_items() {
    let Kind::Fetch {
        uid,
        items,
        changed_since,
        vanished,
        ..
    } = kind(
        "a UID FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100> BINARY[2] BINARY.SIZE[2] RFC822.SIZE) (CHANGEDSINCE 5 VANISHED)",
    )
    else {
        panic!()
    };
    assert!(uid && vanished);
    assert_eq!(changed_since, Some(5));
    assert_eq!(items[0], FetchItem::Flags);
    assert_eq!(
        items[1],
        FetchItem::Section {
            peek: true,
            section: Section {
                part: vec![1, 2],
                text: Some(SectionText::HeaderFields(vec!["from".into(), "to".into()]))
            },
            partial: Some((0, 100))
        }
    );
    assert_eq!(items.len(), 5);
    let Kind::Fetch { items, .. } = kind("a FETCH 1 ALL") else {
        panic!()
    };
    assert_eq!(items.len(), 4);
    assert!(refused(b"a FETCH 1 (BODY[1.MIM])"));
    assert!(refused(b"a FETCH 1 BODY[MIME]"));
    assert!(refused(b"a FETCH 1 (FLAGS) (VANISHED)"));
}

#[test]
fn parses_search() {
    let Kind::Search { uid, ret, criteria } = kind(
        "a UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR FROM bob NOT (SEEN 1:3) SINCE 1-Feb-2024 TEXT {3}\r\nabc",
    ) else {
        panic!()
    };
    assert!(uid);
    assert_eq!(ret, Some(vec![SearchReturn::Min, SearchReturn::Count]));
    assert_eq!(criteria.len(), 3);
    assert!(matches!(criteria[1], SearchKey::Date(DateCmp::Since, d) if d == 19754));
    assert!(refused(b"a SEARCH CHARSET KOI8-R ALL"));
    let deep = format!("a SEARCH {}ALL", "NOT ".repeat(100));
    assert!(refused(deep.as_bytes()));
}

#[test]
fn parses_store_select_list_status() {
    assert_eq!(
        kind("a STORE 1,3 (UNCHANGEDSINCE 7) +FLAGS.SILENT (\\Seen $Work)"),
        Kind::Store {
            uid: false,
            set: super::sequence::SequenceSet::parse(b"1,3").unwrap(),
            unchanged_since: Some(7),
            mode: StoreMode::Add,
            silent: true,
            flags: vec!["\\Seen".into(), "$Work".into()],
        }
    );
    let Kind::Select { qresync, .. } =
        kind("a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))")
    else {
        panic!()
    };
    assert_eq!(qresync.unwrap().modseq, 20050715194045000);
    let Kind::List(l) =
        kind("a LIST (SUBSCRIBED) \"\" (\"*\" %) RETURN (CHILDREN STATUS (MESSAGES SIZE))")
    else {
        panic!()
    };
    assert!(l.select_subscribed && l.return_children && l.extended);
    assert_eq!(l.patterns.len(), 2);
    assert_eq!(
        l.return_status,
        Some(vec![StatusItem::Messages, StatusItem::Size])
    );
    assert!(matches!(
        kind("a STATUS INBOX (UIDNEXT DELETED)"),
        Kind::Status { .. }
    ));
    assert!(matches!(
        kind("a CREATE Foo (USE (\\Junk))"),
        Kind::Create {
            special_use: Some(_),
            ..
        }
    ));
}

#[test]
fn append_head_and_literals() {
    let h =
        append_head(b"A003 APPEND saved-messages (\\Seen) \"05-Jan-2024 10:00:00 +0100\" {310}")
            .unwrap()
            .unwrap();
    assert_eq!(h.mailbox, b"saved-messages");
    assert_eq!(h.opts.date, Some(1704445200));
    assert_eq!(h.opts.flags, vec!["\\Seen".to_string()]);
    assert!(!h.opts.utf8);
    let h = append_head(b"A4 APPEND x UTF8 (~{3}").unwrap().unwrap();
    assert!(h.opts.utf8);
    assert!(append_head(b"A4 APPEND x UTF8 ({3}").unwrap().is_err());
    assert_eq!(append_next(b""), None);
    let next = append_next(b" (\\Flagged) {7+}").unwrap().unwrap();
    assert_eq!(next.flags, vec!["\\Flagged".to_string()]);
    assert!(append_next(b"x {7}").unwrap().is_err());
    assert!(append_head(b"A003 NOOP {3}").is_none());
    assert!(append_head(b"A003 APPEND x (\\Seen {3}").unwrap().is_err());
    assert_eq!(trailing_literal(b"a LOGIN {5}"), Some((5, true)));
    assert_eq!(trailing_literal(b"a LOGIN {5+}"), Some((5, false)));
    assert_eq!(trailing_literal(b"a LOGIN {x}"), None);
    assert_eq!(trailing_literal(b"a LOGIN \"{5}\" x"), None);
}

#[test]
fn flags_and_state_rules() {
    let (bits, kw) =
        parse_flags(&["\\seen".into(), "\\Recent".into(), "$X".into(), "$x".into()]).unwrap();
    assert_eq!(bits, crate::store::flags::SEEN);
    assert_eq!(kw, vec!["$X".to_string()]);
    assert!(parse_flags(&["\\Bogus".into()]).is_err());
    let mut out = Vec::new();
    render_flags(
        crate::store::flags::SEEN | crate::store::flags::DELETED,
        &["$X".into()],
        &mut out,
    );
    assert_eq!(out, b"(\\Deleted \\Seen $X)");
    assert!(legal(
        &Kind::Login {
            user: vec![],
            password: vec![]
        },
        StateKind::NotAuthenticated
    ));
    assert!(
        !legal(&Kind::Noop, StateKind::NotAuthenticated) || legal(&Kind::Noop, StateKind::Selected)
    );
    assert!(!legal(&Kind::Expunge, StateKind::Authenticated));
    assert!(!legal(&Kind::Namespace, StateKind::NotAuthenticated));
    assert!(!legal(&Kind::StartTls, StateKind::Authenticated));
    assert_eq!(render_date_time(0), "01-Jan-1970 00:00:00 +0000");
    assert_eq!(
        render_date_time(1_700_000_000),
        "14-Nov-2023 22:13:20 +0000"
    );
    // Out of the four-digit range: the epoch rather than a malformed date.
    assert_eq!(render_date_time(i64::MAX), "01-Jan-1970 00:00:00 +0000");
}

proptest::proptest! {
    /// The hand-written date matches chrono's formatting of it.
    #[test]
    fn date_time_matches_chrono(unix in 0i64..253_402_300_799) {
        let t = chrono::DateTime::from_timestamp(unix, 0).unwrap();
        proptest::prop_assert_eq!(
            render_date_time(unix),
            t.format("%d-%b-%Y %H:%M:%S +0000").to_string()
        );
    }
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        let _ = parse(&bytes);
        let _ = append_head(&bytes);
        let _ = trailing_literal(&bytes);
    }

    #[test]
    fn parser_never_panics_on_commandish_input(
        cmd in "[a-z0-9]{1,4} (UID )?(FETCH|STORE|SEARCH|LIST|SELECT|STATUS|COPY) [ -~]{0,80}"
    ) {
        let _ = parse(cmd.as_bytes());
    }
}
