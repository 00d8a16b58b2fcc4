//! The command parser (RFC 9051 section 9 grammar, with the RFC 3501,
//! 4731, 6154, 5258, 5819, 7162, 9208 and 4315 additions we serve).
//!
//! Input is one whole command as it came off the wire: the lines joined with
//! CRLF and every literal's bytes in place after its `{n}` CRLF (the session
//! reads literals before parsing). The parser never panics and never
//! allocates more than the input's size.

use super::sequence::SequenceSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad(pub String);

type R<T> = Result<T, Bad>;

fn bad<T>(why: impl Into<String>) -> R<T> {
    Err(Bad(why.into()))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub tag: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Capability,
    Noop,
    Logout,
    StartTls,
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Login {
        user: Vec<u8>,
        password: Vec<u8>,
    },
    Enable(Vec<String>),
    Id,
    Namespace,
    Select {
        mailbox: Vec<u8>,
        read_only: bool,
        condstore: bool,
        qresync: Option<Qresync>,
    },
    Create {
        mailbox: Vec<u8>,
        special_use: Option<String>,
    },
    Delete(Vec<u8>),
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Subscribe(Vec<u8>),
    Unsubscribe(Vec<u8>),
    List(List),
    Lsub {
        reference: Vec<u8>,
        pattern: Vec<u8>,
    },
    Status {
        mailbox: Vec<u8>,
        items: Vec<StatusItem>,
    },
    Idle,
    Check,
    Close,
    Unselect,
    Expunge,
    UidExpunge(SequenceSet),
    Search {
        uid: bool,
        ret: Option<Vec<SearchReturn>>,
        criteria: Vec<SearchKey>,
    },
    /// SORT (RFC 5256): criteria with their REVERSE flags, then a search.
    Sort {
        uid: bool,
        order: Vec<(super::sort::SortKey, bool)>,
        criteria: Vec<SearchKey>,
    },
    Fetch {
        uid: bool,
        set: SequenceSet,
        items: Vec<FetchItem>,
        changed_since: Option<u64>,
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SequenceSet,
        unchanged_since: Option<u64>,
        mode: StoreMode,
        silent: bool,
        flags: Vec<String>,
    },
    Copy {
        uid: bool,
        set: SequenceSet,
        mailbox: Vec<u8>,
        move_: bool,
    },
    GetQuota(Vec<u8>),
    GetQuotaRoot(Vec<u8>),
    SetQuota,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Qresync {
    pub uidvalidity: u32,
    pub modseq: u64,
    pub known_uids: Option<SequenceSet>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct List {
    pub reference: Vec<u8>,
    pub patterns: Vec<Vec<u8>>,
    pub select_subscribed: bool,
    pub select_special_use: bool,
    pub recursive_match: bool,
    pub return_subscribed: bool,
    pub return_children: bool,
    pub return_special_use: bool,
    pub return_status: Option<Vec<StatusItem>>,
    /// Any selection or return option was given (LIST-EXTENDED form).
    pub extended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    HighestModSeq,
    Recent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Replace,
    Add,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchReturn {
    Min,
    Max,
    All,
    Count,
    /// Keep the result for `$` (RFC 5182 SEARCHRES).
    Save,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SearchKey {
    All,
    /// Messages with these system flag bits set (`set`) or clear.
    Flag(u32, bool),
    Keyword(String, bool),
    /// Header field contains the string: From, To, Cc, Bcc, Subject or any.
    Header(String, Vec<u8>),
    Body(Vec<u8>),
    Text(Vec<u8>),
    /// Internal date, in days since the epoch: before, on, since.
    Date(DateCmp, i64),
    /// Date: header, in days since the epoch.
    SentDate(DateCmp, i64),
    Larger(u64),
    Smaller(u64),
    Seq(SequenceSet),
    Uid(SequenceSet),
    ModSeq(u64),
    Not(Box<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    And(Vec<SearchKey>),
    /// RECENT / NEW: we keep no \Recent (RFC 9051 dropped it), so never.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateCmp {
    Before,
    On,
    Since,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    Flags,
    InternalDate,
    Rfc822Size,
    Envelope,
    Body,
    BodyStructure,
    Uid,
    ModSeq,
    /// BODY[section]<partial>; `peek` leaves \Seen alone.
    Section {
        peek: bool,
        section: Section,
        partial: Option<(u64, u64)>,
    },
    Binary {
        peek: bool,
        part: Vec<u32>,
        partial: Option<(u64, u64)>,
    },
    BinarySize(Vec<u32>),
    Rfc822,
    Rfc822Header,
    Rfc822Text,
}

/// Reads a command's tokens.
pub struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

fn is_atom_char(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !matches!(c, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

fn is_astring_char(c: u8) -> bool {
    is_atom_char(c) || c == b']'
}

impl<'a> Parser<'a> {
    pub fn new(b: &'a [u8]) -> Parser<'a> {
        Parser { b, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    pub fn end(&self) -> R<()> {
        if self.at_end() {
            Ok(())
        } else {
            bad("unexpected text at the end of the command")
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            bad(format!("expected '{}'", c as char))
        }
    }

    pub fn sp(&mut self) -> R<()> {
        self.expect(b' ')
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.b[start..self.pos]
    }

    pub fn atom(&mut self) -> R<&'a str> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return bad("expected an atom");
        }
        // Atom characters are ASCII.
        std::str::from_utf8(a).map_err(|_| Bad("expected an atom".into()))
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let end = self.pos + kw.len();
        if end <= self.b.len()
            && self.b[self.pos..end].eq_ignore_ascii_case(kw.as_bytes())
            && !self.b.get(end).is_some_and(|&c| is_atom_char(c))
        {
            self.pos = end;
            true
        } else {
            false
        }
    }

    pub fn number(&mut self) -> R<u64> {
        let d = self.take_while(|c| c.is_ascii_digit());
        if d.is_empty() || d.len() > 19 {
            return bad("expected a number");
        }
        let mut n: u64 = 0;
        for &c in d {
            n = n * 10 + (c - b'0') as u64;
        }
        Ok(n)
    }

    fn nz_number(&mut self) -> R<u32> {
        match self.number()? {
            n @ 1..=0xffff_ffff => Ok(n as u32),
            _ => bad("expected a number from 1 to 4294967295"),
        }
    }

    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return bad("unterminated quoted string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(c),
                        _ => return bad("bad escape in quoted string"),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> R<Vec<u8>> {
        self.eat(b'~');
        self.expect(b'{')?;
        let n = self.number()? as usize;
        let _ = self.eat(b'+') || self.eat(b'-');
        self.expect(b'}')?;
        if !(self.eat(b'\r') && self.eat(b'\n')) {
            return bad("expected CRLF after a literal's size");
        }
        if self.b.len() - self.pos < n {
            return bad("literal shorter than announced");
        }
        let v = self.b[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(v)
    }

    pub fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') | Some(b'~') => self.literal(),
            _ => bad("expected a string"),
        }
    }

    pub fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') | Some(b'~') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    bad("expected a string or atom")
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    /// list-mailbox: astring or `*`/`%` wildcards.
    fn list_mailbox(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') | Some(b'~') => self.string(),
            _ => {
                let a = self.take_while(|c| is_astring_char(c) || c == b'%' || c == b'*');
                if a.is_empty() {
                    bad("expected a mailbox pattern")
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    pub fn sequence_set(&mut self) -> R<SequenceSet> {
        if self.peek() == Some(b'$') {
            self.pos += 1;
            return Ok(SequenceSet::parse(b"$").unwrap_or_else(|| SequenceSet::of([])));
        }
        let s = self.take_while(|c| c.is_ascii_digit() || matches!(c, b':' | b',' | b'*'));
        SequenceSet::parse(s).ok_or_else(|| Bad("bad sequence set".into()))
    }

    /// A flag: `\Atom` or a keyword atom.
    fn flag(&mut self) -> R<String> {
        let backslash = self.eat(b'\\');
        let a = self.atom()?;
        Ok(if backslash {
            format!("\\{a}")
        } else {
            a.to_string()
        })
    }

    fn flag_list(&mut self) -> R<Vec<String>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(self.flag()?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    /// A parenthesized list of atoms, or one atom if `single` allows it.
    fn atom_list(&mut self, single: bool) -> R<Vec<&'a str>> {
        if !self.eat(b'(') {
            if single {
                return Ok(vec![self.atom()?]);
            }
            return bad("expected '('");
        }
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(self.atom()?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    /// date = date-text / DQUOTE date-text DQUOTE; days since 1970-01-01.
    fn date(&mut self) -> R<i64> {
        let quoted = self.eat(b'"');
        let s = self.take_while(|c| c.is_ascii_alphanumeric() || c == b'-');
        if quoted {
            self.expect(b'"')?;
        }
        parse_date(s).ok_or_else(|| Bad("bad date (expected d-Mon-yyyy)".into()))
    }

    /// date-time: "dd-Mon-yyyy hh:mm:ss +zzzz", as Unix seconds.
    pub fn date_time(&mut self) -> R<i64> {
        let s = self.quoted()?;
        parse_date_time(&s).ok_or_else(|| Bad("bad date-time".into()))
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn parse_date(s: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?;
    let mut it = s.split('-');
    let day: u32 = it.next()?.parse().ok()?;
    let mon = it.next()?;
    let year: i32 = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(mon))? as u32 + 1;
    let d = chrono::NaiveDate::from_ymd_opt(year, m, day)?;
    Some(
        d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?)
            .num_days(),
    )
}

fn parse_date_time(s: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?.trim_start();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let days = parse_date(date.as_bytes())?;
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let se: i64 = t.next()?.parse().ok()?;
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let zb = zone.as_bytes();
    if zb.len() != 5 || !matches!(zb[0], b'+' | b'-') || !zb[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    let offset = (zh * 3600 + zm * 60) * if zb[0] == b'-' { -1 } else { 1 };
    Some(days * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Parses one whole command.
pub fn parse(input: &[u8]) -> Result<Command, (Option<String>, Bad)> {
    let mut p = Parser::new(input);
    let tag = p.take_while(|c| is_astring_char(c) && c != b'+');
    if tag.is_empty() {
        return Err((None, Bad("missing tag".into())));
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let kind = command(&mut p).map_err(|e| (Some(tag.clone()), e))?;
    Ok(Command { tag, kind })
}

fn command(p: &mut Parser) -> R<Kind> {
    p.sp()?;
    let name = p.atom()?.to_ascii_uppercase();
    let uid = name == "UID";
    let name = if uid {
        p.sp()?;
        p.atom()?.to_ascii_uppercase()
    } else {
        name
    };
    let kind = match (uid, name.as_str()) {
        (false, "CAPABILITY") => Kind::Capability,
        (false, "NOOP") => Kind::Noop,
        (false, "LOGOUT") => Kind::Logout,
        (false, "STARTTLS") => Kind::StartTls,
        (false, "CHECK") => Kind::Check,
        (false, "CLOSE") => Kind::Close,
        (false, "UNSELECT") => Kind::Unselect,
        (false, "EXPUNGE") => Kind::Expunge,
        (false, "IDLE") => Kind::Idle,
        (false, "NAMESPACE") => Kind::Namespace,
        (false, "ID") => {
            p.sp()?;
            // ID params: NIL or a list of string pairs; we do not use them.
            if !p.keyword("NIL") {
                p.expect(b'(')?;
                if !p.eat(b')') {
                    loop {
                        p.string()?;
                        p.sp()?;
                        if !p.keyword("NIL") {
                            p.string()?;
                        }
                        if p.eat(b')') {
                            break;
                        }
                        p.sp()?;
                    }
                }
            }
            Kind::Id
        }
        (false, "AUTHENTICATE") => {
            p.sp()?;
            let mechanism = p.atom()?.to_ascii_uppercase();
            let initial = if p.eat(b' ') {
                let s =
                    p.take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
                if s.is_empty() {
                    return bad("expected a base64 initial response");
                }
                Some(String::from_utf8_lossy(s).into_owned())
            } else {
                None
            };
            Kind::Authenticate { mechanism, initial }
        }
        (false, "LOGIN") => {
            p.sp()?;
            let user = p.astring()?;
            p.sp()?;
            let password = p.astring()?;
            Kind::Login { user, password }
        }
        (false, "ENABLE") => {
            let mut caps = Vec::new();
            while p.eat(b' ') {
                caps.push(p.atom()?.to_ascii_uppercase());
            }
            if caps.is_empty() {
                return bad("ENABLE needs a capability");
            }
            Kind::Enable(caps)
        }
        (false, "SELECT") | (false, "EXAMINE") => {
            p.sp()?;
            let mailbox = p.astring()?;
            let mut condstore = false;
            let mut qresync = None;
            if p.eat(b' ') {
                p.expect(b'(')?;
                loop {
                    let param = p.atom()?.to_ascii_uppercase();
                    match param.as_str() {
                        "CONDSTORE" => condstore = true,
                        "QRESYNC" => {
                            p.sp()?;
                            p.expect(b'(')?;
                            let uidvalidity = p.nz_number()?;
                            p.sp()?;
                            let modseq = p.number()?;
                            let mut known_uids = None;
                            if p.eat(b' ') {
                                if p.peek() != Some(b'(') {
                                    known_uids = Some(p.sequence_set()?);
                                    p.eat(b' ');
                                }
                                // seq-match-data: accepted, not used (we
                                // answer from the known UIDs or everything).
                                if p.eat(b'(') {
                                    p.sequence_set()?;
                                    p.sp()?;
                                    p.sequence_set()?;
                                    p.expect(b')')?;
                                }
                            }
                            p.expect(b')')?;
                            qresync = Some(Qresync {
                                uidvalidity,
                                modseq,
                                known_uids,
                            });
                        }
                        _ => return bad(format!("unknown SELECT parameter {param}")),
                    }
                    if p.eat(b')') {
                        break;
                    }
                    p.sp()?;
                }
            }
            Kind::Select {
                mailbox,
                read_only: name == "EXAMINE",
                condstore,
                qresync,
            }
        }
        (false, "CREATE") => {
            p.sp()?;
            let mailbox = p.astring()?;
            let mut special_use = None;
            if p.eat(b' ') {
                p.expect(b'(')?;
                if !p.keyword("USE") {
                    return bad("unknown CREATE parameter");
                }
                p.sp()?;
                p.expect(b'(')?;
                let f = p.flag()?;
                p.expect(b')')?;
                p.expect(b')')?;
                special_use = Some(f);
            }
            Kind::Create {
                mailbox,
                special_use,
            }
        }
        (false, "DELETE") => {
            p.sp()?;
            Kind::Delete(p.astring()?)
        }
        (false, "RENAME") => {
            p.sp()?;
            let from = p.astring()?;
            p.sp()?;
            let to = p.astring()?;
            Kind::Rename { from, to }
        }
        (false, "SUBSCRIBE") => {
            p.sp()?;
            Kind::Subscribe(p.astring()?)
        }
        (false, "UNSUBSCRIBE") => {
            p.sp()?;
            Kind::Unsubscribe(p.astring()?)
        }
        (false, "LIST") => Kind::List(list(p)?),
        (false, "LSUB") => {
            p.sp()?;
            let reference = p.astring()?;
            p.sp()?;
            let pattern = p.list_mailbox()?;
            Kind::Lsub { reference, pattern }
        }
        (false, "STATUS") => {
            p.sp()?;
            let mailbox = p.astring()?;
            p.sp()?;
            let items = status_items(p)?;
            Kind::Status { mailbox, items }
        }
        (_, "SEARCH") => search(p, uid)?,
        (_, "SORT") => sort(p, uid)?,
        (_, "FETCH") => fetch(p, uid)?,
        (_, "STORE") => store(p, uid)?,
        (_, "COPY") | (_, "MOVE") => {
            p.sp()?;
            let set = p.sequence_set()?;
            p.sp()?;
            let mailbox = p.astring()?;
            Kind::Copy {
                uid,
                set,
                mailbox,
                move_: name == "MOVE",
            }
        }
        (true, "EXPUNGE") => {
            p.sp()?;
            Kind::UidExpunge(p.sequence_set()?)
        }
        (false, "GETQUOTA") => {
            p.sp()?;
            Kind::GetQuota(p.astring()?)
        }
        (false, "GETQUOTAROOT") => {
            p.sp()?;
            Kind::GetQuotaRoot(p.astring()?)
        }
        (false, "SETQUOTA") => {
            // Quotas are set by the administrator; the arguments do not matter.
            p.pos = p.b.len();
            Kind::SetQuota
        }
        (false, "APPEND") => return bad("APPEND must be sent with a literal"),
        _ => return bad(format!("unknown command {name}")),
    };
    p.end()?;
    Ok(kind)
}

fn status_items(p: &mut Parser) -> R<Vec<StatusItem>> {
    let names = p.atom_list(false)?;
    let mut items = Vec::new();
    for n in names {
        items.push(match n.to_ascii_uppercase().as_str() {
            "MESSAGES" => StatusItem::Messages,
            "UIDNEXT" => StatusItem::UidNext,
            "UIDVALIDITY" => StatusItem::UidValidity,
            "UNSEEN" => StatusItem::Unseen,
            "DELETED" => StatusItem::Deleted,
            "SIZE" => StatusItem::Size,
            "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
            "RECENT" => StatusItem::Recent,
            other => return bad(format!("unknown STATUS item {other}")),
        });
    }
    Ok(items)
}

fn list(p: &mut Parser) -> R<List> {
    let mut l = List::default();
    p.sp()?;
    if p.eat(b'(') {
        l.extended = true;
        if !p.eat(b')') {
            loop {
                match p.atom()?.to_ascii_uppercase().as_str() {
                    "SUBSCRIBED" => l.select_subscribed = true,
                    "SPECIAL-USE" => l.select_special_use = true,
                    "RECURSIVEMATCH" => l.recursive_match = true,
                    "REMOTE" => {}
                    other => return bad(format!("unknown LIST selection option {other}")),
                }
                if p.eat(b')') {
                    break;
                }
                p.sp()?;
            }
        }
        p.sp()?;
    }
    l.reference = p.astring()?;
    p.sp()?;
    if p.eat(b'(') {
        l.extended = true;
        loop {
            l.patterns.push(p.list_mailbox()?);
            if p.eat(b')') {
                break;
            }
            p.sp()?;
        }
    } else {
        l.patterns.push(p.list_mailbox()?);
    }
    if p.eat(b' ') {
        if !p.keyword("RETURN") {
            return bad("expected RETURN");
        }
        l.extended = true;
        p.sp()?;
        p.expect(b'(')?;
        if !p.eat(b')') {
            loop {
                match p.atom()?.to_ascii_uppercase().as_str() {
                    "SUBSCRIBED" => l.return_subscribed = true,
                    "CHILDREN" => l.return_children = true,
                    "SPECIAL-USE" => l.return_special_use = true,
                    "STATUS" => {
                        p.sp()?;
                        l.return_status = Some(status_items(p)?);
                    }
                    other => return bad(format!("unknown LIST return option {other}")),
                }
                if p.eat(b')') {
                    break;
                }
                p.sp()?;
            }
        }
    }
    if l.recursive_match && !l.select_subscribed {
        return bad("RECURSIVEMATCH needs another selection option");
    }
    Ok(l)
}

/// `SORT (criteria) charset search-criteria` (RFC 5256 3; the charset is
/// required).
fn sort(p: &mut Parser, uid: bool) -> R<Kind> {
    use super::sort::SortKey;
    p.sp()?;
    let mut order = Vec::new();
    let mut reverse = false;
    for a in p.atom_list(false)? {
        let key = match a.to_ascii_uppercase().as_str() {
            "REVERSE" if !reverse => {
                reverse = true;
                continue;
            }
            "ARRIVAL" => SortKey::Arrival,
            "CC" => SortKey::Cc,
            "DATE" => SortKey::Date,
            "FROM" => SortKey::From,
            "SIZE" => SortKey::Size,
            "SUBJECT" => SortKey::Subject,
            "TO" => SortKey::To,
            other => return bad(format!("unknown SORT criterion {other}")),
        };
        order.push((key, reverse));
        reverse = false;
    }
    if order.is_empty() || reverse {
        return bad("SORT criteria expected");
    }
    p.sp()?;
    let criteria = charset_and_keys(p)?;
    Ok(Kind::Sort {
        uid,
        order,
        criteria,
    })
}

fn search(p: &mut Parser, uid: bool) -> R<Kind> {
    p.sp()?;
    let mut ret = None;
    if p.keyword("RETURN") {
        p.sp()?;
        let mut opts = Vec::new();
        for a in p.atom_list(false)? {
            opts.push(match a.to_ascii_uppercase().as_str() {
                "MIN" => SearchReturn::Min,
                "MAX" => SearchReturn::Max,
                "ALL" => SearchReturn::All,
                "COUNT" => SearchReturn::Count,
                "SAVE" => SearchReturn::Save,
                other => return bad(format!("unknown SEARCH return option {other}")),
            });
        }
        ret = Some(opts);
        p.sp()?;
    }
    let criteria = if p.keyword("CHARSET") {
        p.sp()?;
        charset_and_keys(p)?
    } else {
        search_keys(p)?
    };
    Ok(Kind::Search { uid, ret, criteria })
}

/// A charset (UTF-8 or US-ASCII) and the search keys after it.
fn charset_and_keys(p: &mut Parser) -> R<Vec<SearchKey>> {
    let cs = p.astring()?;
    if !(cs.eq_ignore_ascii_case(b"UTF-8") || cs.eq_ignore_ascii_case(b"US-ASCII")) {
        return bad("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset");
    }
    p.sp()?;
    search_keys(p)
}

/// One or more search keys separated by spaces (an implicit AND).
fn search_keys(p: &mut Parser) -> R<Vec<SearchKey>> {
    let mut criteria = vec![search_key(p, 0)?];
    while p.eat(b' ') {
        criteria.push(search_key(p, 0)?);
    }
    Ok(criteria)
}

/// Deepest nesting of NOT/OR/parentheses in a search: bounds recursion.
const MAX_SEARCH_DEPTH: usize = 32;

fn search_key(p: &mut Parser, depth: usize) -> R<SearchKey> {
    use crate::store::flags::*;
    if depth > MAX_SEARCH_DEPTH {
        return bad("search nested too deeply");
    }
    if p.eat(b'(') {
        let mut keys = vec![search_key(p, depth + 1)?];
        while p.eat(b' ') {
            keys.push(search_key(p, depth + 1)?);
        }
        p.expect(b')')?;
        return Ok(SearchKey::And(keys));
    }
    if p.peek()
        .is_some_and(|c| c.is_ascii_digit() || c == b'*' || c == b'$')
    {
        return Ok(SearchKey::Seq(p.sequence_set()?));
    }
    let name = p.atom()?.to_ascii_uppercase();
    let flag = |bit, set| Ok(SearchKey::Flag(bit, set));
    match name.as_str() {
        "ALL" => Ok(SearchKey::All),
        "ANSWERED" => flag(ANSWERED, true),
        "DELETED" => flag(DELETED, true),
        "DRAFT" => flag(DRAFT, true),
        "FLAGGED" => flag(FLAGGED, true),
        "SEEN" => flag(SEEN, true),
        "OLD" => Ok(SearchKey::All),
        "UNANSWERED" => flag(ANSWERED, false),
        "UNDELETED" => flag(DELETED, false),
        "UNDRAFT" => flag(DRAFT, false),
        "UNFLAGGED" => flag(FLAGGED, false),
        "UNSEEN" => flag(SEEN, false),
        "NEW" | "RECENT" => Ok(SearchKey::None),
        "KEYWORD" | "UNKEYWORD" => {
            p.sp()?;
            let k = p.flag()?;
            Ok(SearchKey::Keyword(k, name == "KEYWORD"))
        }
        "BCC" | "CC" | "FROM" | "SUBJECT" | "TO" => {
            p.sp()?;
            Ok(SearchKey::Header(name.to_ascii_lowercase(), p.astring()?))
        }
        "HEADER" => {
            p.sp()?;
            let field = p.astring()?;
            p.sp()?;
            let value = p.astring()?;
            Ok(SearchKey::Header(
                String::from_utf8_lossy(&field).to_ascii_lowercase(),
                value,
            ))
        }
        "BODY" => {
            p.sp()?;
            Ok(SearchKey::Body(p.astring()?))
        }
        "TEXT" => {
            p.sp()?;
            Ok(SearchKey::Text(p.astring()?))
        }
        "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
            p.sp()?;
            let d = p.date()?;
            let cmp = match name.trim_start_matches("SENT") {
                "BEFORE" => DateCmp::Before,
                "ON" => DateCmp::On,
                _ => DateCmp::Since,
            };
            Ok(if name.starts_with("SENT") {
                SearchKey::SentDate(cmp, d)
            } else {
                SearchKey::Date(cmp, d)
            })
        }
        "LARGER" => {
            p.sp()?;
            Ok(SearchKey::Larger(p.number()?))
        }
        "SMALLER" => {
            p.sp()?;
            Ok(SearchKey::Smaller(p.number()?))
        }
        "UID" => {
            p.sp()?;
            Ok(SearchKey::Uid(p.sequence_set()?))
        }
        "MODSEQ" => {
            p.sp()?;
            // Optional entry name and type (RFC 7162 3.1.5): ignored.
            if p.peek() == Some(b'"') {
                p.quoted()?;
                p.sp()?;
                p.atom()?;
                p.sp()?;
            }
            Ok(SearchKey::ModSeq(p.number()?))
        }
        "NOT" => {
            p.sp()?;
            Ok(SearchKey::Not(Box::new(search_key(p, depth + 1)?)))
        }
        "OR" => {
            p.sp()?;
            let a = search_key(p, depth + 1)?;
            p.sp()?;
            let b = search_key(p, depth + 1)?;
            Ok(SearchKey::Or(Box::new(a), Box::new(b)))
        }
        other => bad(format!("unknown search key {other}")),
    }
}

fn fetch(p: &mut Parser, uid: bool) -> R<Kind> {
    p.sp()?;
    let set = p.sequence_set()?;
    p.sp()?;
    let mut items = Vec::new();
    if p.eat(b'(') {
        loop {
            items.push(fetch_item(p)?);
            if p.eat(b')') {
                break;
            }
            p.sp()?;
        }
    } else {
        match p.atom_peek_upper().as_deref() {
            Some("ALL") => {
                p.atom()?;
                items.extend([
                    FetchItem::Flags,
                    FetchItem::InternalDate,
                    FetchItem::Rfc822Size,
                    FetchItem::Envelope,
                ]);
            }
            Some("FAST") => {
                p.atom()?;
                items.extend([
                    FetchItem::Flags,
                    FetchItem::InternalDate,
                    FetchItem::Rfc822Size,
                ]);
            }
            Some("FULL") => {
                p.atom()?;
                items.extend([
                    FetchItem::Flags,
                    FetchItem::InternalDate,
                    FetchItem::Rfc822Size,
                    FetchItem::Envelope,
                    FetchItem::Body,
                ]);
            }
            _ => items.push(fetch_item(p)?),
        }
    }
    let mut changed_since = None;
    let mut vanished = false;
    if p.eat(b' ') {
        p.expect(b'(')?;
        loop {
            match p.atom()?.to_ascii_uppercase().as_str() {
                "CHANGEDSINCE" => {
                    p.sp()?;
                    changed_since = Some(p.number()?);
                }
                "VANISHED" => vanished = true,
                other => return bad(format!("unknown FETCH modifier {other}")),
            }
            if p.eat(b')') {
                break;
            }
            p.sp()?;
        }
    }
    if vanished && (!uid || changed_since.is_none()) {
        return bad("VANISHED needs UID FETCH with CHANGEDSINCE");
    }
    Ok(Kind::Fetch {
        uid,
        set,
        items,
        changed_since,
        vanished,
    })
}

impl Parser<'_> {
    fn atom_peek_upper(&self) -> Option<String> {
        let rest = &self.b[self.pos..];
        let n = rest.iter().take_while(|&&c| is_atom_char(c)).count();
        (n > 0).then(|| String::from_utf8_lossy(&rest[..n]).to_ascii_uppercase())
    }

    /// An atom up to '[' or '<' (fetch attribute names).
    fn fetch_name(&mut self) -> R<String> {
        let a = self.take_while(|c| is_atom_char(c) && c != b'[' && c != b'<');
        if a.is_empty() {
            return bad("expected a fetch item");
        }
        Ok(String::from_utf8_lossy(a).to_ascii_uppercase())
    }

    fn part_numbers(&mut self) -> R<Vec<u32>> {
        let mut part = Vec::new();
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            part.push(self.nz_number()?);
            if !self.eat(b'.') {
                break;
            }
        }
        Ok(part)
    }

    fn partial(&mut self) -> R<Option<(u64, u64)>> {
        if !self.eat(b'<') {
            return Ok(None);
        }
        let start = self.number()?;
        self.expect(b'.')?;
        let len = self.number()?;
        if len == 0 {
            return bad("partial length must be positive");
        }
        self.expect(b'>')?;
        Ok(Some((start, len)))
    }

    fn header_list(&mut self) -> R<Vec<String>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            let f = self.astring()?;
            out.push(String::from_utf8_lossy(&f).to_ascii_lowercase());
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }
}

fn fetch_item(p: &mut Parser) -> R<FetchItem> {
    let name = p.fetch_name()?;
    Ok(match name.as_str() {
        "FLAGS" => FetchItem::Flags,
        "INTERNALDATE" => FetchItem::InternalDate,
        "RFC822.SIZE" => FetchItem::Rfc822Size,
        "ENVELOPE" => FetchItem::Envelope,
        "BODYSTRUCTURE" => FetchItem::BodyStructure,
        "UID" => FetchItem::Uid,
        "MODSEQ" => FetchItem::ModSeq,
        "RFC822" => FetchItem::Rfc822,
        "RFC822.HEADER" => FetchItem::Rfc822Header,
        "RFC822.TEXT" => FetchItem::Rfc822Text,
        "BODY" if p.peek() != Some(b'[') => FetchItem::Body,
        "BODY" | "BODY.PEEK" => {
            p.expect(b'[')?;
            let part = p.part_numbers()?;
            let text = if p.peek() == Some(b']') {
                None
            } else {
                let t = p.fetch_name()?;
                Some(match t.as_str() {
                    "HEADER" => SectionText::Header,
                    "TEXT" => SectionText::Text,
                    "MIME" if !part.is_empty() => SectionText::Mime,
                    "HEADER.FIELDS" => {
                        p.sp()?;
                        SectionText::HeaderFields(p.header_list()?)
                    }
                    "HEADER.FIELDS.NOT" => {
                        p.sp()?;
                        SectionText::HeaderFieldsNot(p.header_list()?)
                    }
                    other => return bad(format!("bad section {other}")),
                })
            };
            p.expect(b']')?;
            FetchItem::Section {
                peek: name == "BODY.PEEK",
                section: Section { part, text },
                partial: p.partial()?,
            }
        }
        "BINARY" | "BINARY.PEEK" => {
            p.expect(b'[')?;
            let part = p.part_numbers()?;
            p.expect(b']')?;
            FetchItem::Binary {
                peek: name == "BINARY.PEEK",
                part,
                partial: p.partial()?,
            }
        }
        "BINARY.SIZE" => {
            p.expect(b'[')?;
            let part = p.part_numbers()?;
            p.expect(b']')?;
            FetchItem::BinarySize(part)
        }
        other => return bad(format!("unknown fetch item {other}")),
    })
}

fn store(p: &mut Parser, uid: bool) -> R<Kind> {
    p.sp()?;
    let set = p.sequence_set()?;
    p.sp()?;
    let mut unchanged_since = None;
    if p.eat(b'(') {
        if !p.keyword("UNCHANGEDSINCE") {
            return bad("unknown STORE modifier");
        }
        p.sp()?;
        unchanged_since = Some(p.number()?);
        p.expect(b')')?;
        p.sp()?;
    }
    let mode = if p.eat(b'+') {
        StoreMode::Add
    } else if p.eat(b'-') {
        StoreMode::Remove
    } else {
        StoreMode::Replace
    };
    let silent = match p.atom()?.to_ascii_uppercase().as_str() {
        "FLAGS" => false,
        "FLAGS.SILENT" => true,
        other => return bad(format!("unknown STORE item {other}")),
    };
    p.sp()?;
    let flags = if p.peek() == Some(b'(') {
        p.flag_list()?
    } else {
        let mut v = vec![p.flag()?];
        while p.eat(b' ') {
            v.push(p.flag()?);
        }
        v
    };
    Ok(Kind::Store {
        uid,
        set,
        unchanged_since,
        mode,
        silent,
        flags,
    })
}

/// The part of an APPEND before its message literal.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendHead {
    pub tag: String,
    pub mailbox: Vec<u8>,
    pub opts: MessageOpts,
}

/// If `line` (up to and including the `{n}` of the first message) starts
/// an APPEND, parses it. `None`: not an APPEND; `Some(Err)`: a bad one.
pub fn append_head(line: &[u8]) -> Option<Result<AppendHead, (String, Bad)>> {
    let mut p = Parser::new(line);
    let tag = p.take_while(|c| is_astring_char(c) && c != b'+');
    if tag.is_empty() || !p.eat(b' ') || !p.keyword("APPEND") {
        return None;
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let head = (|| {
        p.sp()?;
        let mailbox = p.astring()?;
        p.sp()?;
        let opts = message_opts(&mut p)?;
        Ok(AppendHead {
            tag: String::new(),
            mailbox,
            opts,
        })
    })();
    Some(match head {
        Ok(mut h) => {
            h.tag = tag;
            Ok(h)
        }
        Err(e) => Err((tag, e)),
    })
}

/// Flags and INTERNALDATE of one appended message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageOpts {
    pub flags: Vec<String>,
    pub date: Option<i64>,
    /// `UTF8 (~{n}...)` (RFC 6855 4): the literal is followed by `)`.
    pub utf8: bool,
}

/// The flags and date of one message of an APPEND: `[flag-list SP]
/// [date-time SP]` up to its literal.
fn message_opts(p: &mut Parser) -> Result<MessageOpts, Bad> {
    let mut flags = Vec::new();
    if p.peek() == Some(b'(') {
        flags = p.flag_list()?;
        p.sp()?;
    }
    let mut date = None;
    if p.peek() == Some(b'"') {
        date = Some(p.date_time()?);
        p.sp()?;
    }
    let utf8 = p.keyword("UTF8");
    if utf8 {
        p.sp()?;
        p.expect(b'(')?;
        if p.peek() != Some(b'~') {
            return bad("UTF8 APPEND data is a literal8 (~{n})");
        }
    }
    if !matches!(p.peek(), Some(b'{') | Some(b'~')) {
        return bad("expected the message as a literal");
    }
    Ok(MessageOpts { flags, date, utf8 })
}

/// The line after a message of an APPEND (RFC 3502 MULTIAPPEND): `None`
/// when it ends the command (empty), else the next message's flags and date,
/// its literal following (`SP [flag-list SP] [date-time SP] literal`).
pub fn append_next(line: &[u8]) -> Option<Result<MessageOpts, Bad>> {
    if line.is_empty() {
        return None;
    }
    let mut p = Parser::new(line);
    Some(p.sp().and_then(|()| message_opts(&mut p)))
}

/// Whether a command line is a SEARCH with `RETURN (... SAVE ...)`: when
/// such a command fails, `$` becomes empty (RFC 5182 2.1).
pub fn search_saves(line: &[u8]) -> bool {
    let mut p = Parser::new(line);
    let tag = p.take_while(|c| is_astring_char(c) && c != b'+');
    if tag.is_empty() || !p.eat(b' ') {
        return false;
    }
    if p.keyword("UID") && !p.eat(b' ') {
        return false;
    }
    if !(p.keyword("SEARCH") && p.eat(b' ') && p.keyword("RETURN") && p.eat(b' ')) {
        return false;
    }
    p.atom_list(false)
        .is_ok_and(|opts| opts.iter().any(|o| o.eq_ignore_ascii_case("SAVE")))
}

/// A literal announced at the end of a line: its size and whether the
/// client waits for a continuation (`{n}`) or not (`{n+}`).
pub fn trailing_literal(line: &[u8]) -> Option<(u64, bool)> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&c| c == b'{')?;
    let inner = &body[open + 1..];
    let (digits, sync) = match inner.last() {
        Some(b'+') | Some(b'-') => (&inner[..inner.len() - 1], false),
        _ => (inner, true),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}
