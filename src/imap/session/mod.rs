//! One IMAP connection: the I/O loop around the pure parts (parser, state
//! rules, renderers). Reads go straight to the store (read transactions
//! take microseconds); writes go through the writer thread.

mod fetch;
mod mailboxes;
mod messages;
mod search;
mod select;

use mailboxes::canonical_inbox;

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_io::Timer;
use futures_lite::{AsyncWriteExt, future};
use redb::WriteTransaction;

use super::body::{self, Decoder, Extent, StreamSearch};
use super::parse::{
    self, AppendHead, DateCmp, FetchItem, Kind, List, Qresync, SearchKey, SearchReturn, StatusItem,
    StoreMode,
};
use super::sequence::{self, SequenceSet};
use super::uids::UidList;
use super::{StateKind, list, mutf7};
use crate::config::Config;
use crate::message::{MessageMeta, Part};
use crate::server::Server;
use crate::server::conn::{Incoming, Input, Line, Stream, with_timeout};
use crate::store::mailbox_ops::{self, DELIMITER, FlagChange};
use crate::store::writer::WriteOp;
use crate::store::{
    BLOBS, BlobId, BlobRow, CHUNKS, MAILBOX_NAMES, MAILBOXES, MESSAGES, Mailbox, MessageRow,
    SpecialUse, StoreError, flags,
};

/// Replies are written out once this much is buffered.
const FLUSH_AT: usize = 128 * 1024;
/// Header bytes read for HEADER.FIELDS and header search.
const MAX_HEADER_READ: u64 = 256 * 1024;

/// The mailbox a session has selected, as the session knows it.
struct Selected {
    id: u64,
    name: String,
    read_only: bool,
    /// UIDs by message sequence number - 1.
    uids: UidList,
    /// Changes up to this mod-sequence have been reported.
    modseq: u64,
    /// Messages below this UID are in `uids` (or were expunged).
    uidnext: u32,
    /// UIDs of the last `SEARCH RETURN (SAVE)`, what `$` stands for.
    saved: UidList,
}

enum State {
    NotAuthenticated,
    Authenticated { user: String },
    Selected { user: String, mailbox: Selected },
}

struct Session {
    server: Rc<Server>,
    config: Rc<Config>,
    peer: SocketAddr,
    stream: Stream,
    input: Input,
    out: Vec<u8>,
    state: State,
    /// IMAP4rev2 was enabled: UTF-8 mailbox names, ESEARCH for SEARCH.
    rev2: bool,
    /// UTF8=ACCEPT was enabled (RFC 6855): UTF-8 mailbox names.
    utf8_accept: bool,
    condstore: bool,
    qresync: bool,
    errors: usize,
    commands: usize,
}

/// What ends a command's handling.
enum Next {
    Continue,
    Close,
}

pub async fn run(server: Rc<Server>, stream: Stream, peer: SocketAddr) {
    let config = server.config();
    let mut s = Session {
        server,
        // Idle sessions hold 1 KiB; long lines grow it up to the limit.
        input: Input::with_sizes(1024, config.imap.max_line_length),
        config,
        peer,
        stream,
        out: Vec::with_capacity(256),
        state: State::NotAuthenticated,
        rev2: false,
        utf8_accept: false,
        condstore: false,
        qresync: false,
        errors: 0,
        commands: 0,
    };
    log::debug!("imap connect from {peer}");
    if let Err(e) = s.run().await {
        log::debug!("imap {peer}: {e}");
    }
    let _ = s.flush().await;
    let _ = s.stream.close().await;
}

/// What reading the next line found.
enum LineEvent {
    Line(Vec<u8>),
    TooLong,
    Eof,
    Timeout,
    Shutdown,
}

fn tag_of(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end.min(64)]).into_owned()
}

fn db(e: StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Session {
    fn state_kind(&self) -> StateKind {
        match self.state {
            State::NotAuthenticated => StateKind::NotAuthenticated,
            State::Authenticated { .. } => StateKind::Authenticated,
            State::Selected { .. } => StateKind::Selected,
        }
    }

    fn user(&self) -> &str {
        match &self.state {
            State::NotAuthenticated => "",
            State::Authenticated { user } | State::Selected { user, .. } => user,
        }
    }

    fn selected(&mut self) -> Option<&mut Selected> {
        match &mut self.state {
            State::Selected { mailbox, .. } => Some(mailbox),
            _ => None,
        }
    }

    fn line(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn tagged(&mut self, tag: &str, status: &str, text: &str) {
        let l = format!("{tag} {status} {text}");
        self.line(&l);
    }

    fn bad(&mut self, tag: &str, text: &str) {
        self.errors += 1;
        self.tagged(tag, "BAD", text);
    }

    /// Sends what is buffered and gives a large buffer back: the end of a
    /// response, before the session waits for its next command.
    async fn flush(&mut self) -> io::Result<()> {
        self.send_buffered().await?;
        if self.out.capacity() > 16 * 1024 {
            self.out = Vec::with_capacity(256);
        }
        Ok(())
    }

    async fn send_buffered(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.config.limits.command_timeout;
        let (stream, out) = (&mut self.stream, &self.out);
        with_timeout(timeout, async {
            stream.write_all(out).await?;
            stream.flush().await
        })
        .await?;
        self.out.clear();
        Ok(())
    }

    /// In the middle of a long response: sends past [`FLUSH_AT`] and keeps
    /// the buffer, so it is not grown again from nothing (a copy and, past
    /// the allocator's mmap threshold, fresh zeroed pages) every time.
    async fn maybe_flush(&mut self) -> io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.send_buffered().await?;
        }
        Ok(())
    }

    async fn next_line(&mut self, timeout: Duration) -> io::Result<LineEvent> {
        let max = self.config.imap.max_line_length;
        let server = self.server.clone();
        Ok(
            match self
                .input
                .next_command(&mut self.stream, max, timeout, &server)
                .await?
            {
                Incoming::Shutdown => LineEvent::Shutdown,
                Incoming::Timeout => LineEvent::Timeout,
                Incoming::Eof => LineEvent::Eof,
                Incoming::TooLong => LineEvent::TooLong,
                Incoming::Line(r) => LineEvent::Line(self.input.get(r).to_vec()),
            },
        )
    }

    /// Reads `n` literal bytes, handing them to `sink` piece by piece.
    async fn read_literal(&mut self, mut n: u64, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        let timeout = self.config.limits.data_timeout;
        while n > 0 {
            if self.input.buffered().is_empty()
                && with_timeout(timeout, self.input.fill(&mut self.stream)).await? == 0
            {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let b = self.input.buffered();
            let take = (b.len() as u64).min(n) as usize;
            sink(&b[..take]);
            self.input.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        match self.state {
            State::NotAuthenticated => self.config.limits.command_timeout,
            _ => self.config.imap.autologout,
        }
    }

    async fn run(&mut self) -> io::Result<()> {
        if self.server.is_shutting_down() {
            self.line("* BYE Server shutting down");
            return Ok(());
        }
        let caps = self.capabilities();
        self.line(&format!("* OK [CAPABILITY {caps}] pimail ready"));
        loop {
            if self.input.buffered().is_empty() {
                self.flush().await?;
            }
            let first = match self.next_line(self.timeout()).await? {
                LineEvent::Line(l) => l,
                LineEvent::Eof => return Ok(()),
                LineEvent::Timeout => {
                    self.line("* BYE Autologout; idle for too long");
                    return Ok(());
                }
                LineEvent::Shutdown => {
                    self.line("* BYE Server shutting down");
                    return Ok(());
                }
                LineEvent::TooLong => {
                    self.errors += 1;
                    self.line("* BAD Command line too long");
                    if self.too_many_errors() {
                        return Ok(());
                    }
                    continue;
                }
            };
            self.commands += 1;
            if self.commands > self.config.imap.max_commands {
                self.line("* BYE Too many commands in one session");
                return Ok(());
            }
            if let Some((n, sync)) = parse::trailing_literal(&first)
                && let Some(head) = parse::append_head(&first)
            {
                self.append(head, n, sync).await?;
                if self.too_many_errors() {
                    return Ok(());
                }
                continue;
            }
            let Some(command) = self.assemble(first).await? else {
                if self.too_many_errors() {
                    return Ok(());
                }
                continue;
            };
            let next = match parse::parse(&command) {
                Ok(cmd) => {
                    if super::legal(&cmd.kind, self.state_kind()) {
                        self.handle(cmd.tag, cmd.kind).await?
                    } else {
                        let why = match self.state {
                            State::NotAuthenticated => "Log in first",
                            State::Authenticated { .. } => "Select a mailbox first",
                            State::Selected { .. } => "Not allowed now",
                        };
                        self.bad(&cmd.tag, why);
                        Next::Continue
                    }
                }
                Err((tag, e)) => {
                    if parse::search_saves(&command)
                        && let Some(sel) = self.selected()
                    {
                        sel.saved = UidList::new();
                    }
                    match tag {
                        Some(t) => self.bad(&t, &e.0),
                        None => {
                            self.errors += 1;
                            self.line(&format!("* BAD {}", e.0));
                        }
                    }
                    Next::Continue
                }
            };
            if matches!(next, Next::Close) || self.too_many_errors() {
                return Ok(());
            }
        }
    }

    fn too_many_errors(&mut self) -> bool {
        if self.errors >= self.config.limits.max_errors {
            self.line("* BYE Too many errors");
            return true;
        }
        false
    }

    /// Reads the rest of a command whose first line ends in a literal.
    /// `None` when it was refused (already answered).
    async fn assemble(&mut self, first: Vec<u8>) -> io::Result<Option<Vec<u8>>> {
        let max = self.config.imap.max_command_size as u64;
        let mut cmd = first;
        let mut last_line_start = 0;
        while let Some((n, sync)) = parse::trailing_literal(&cmd[last_line_start..]) {
            if cmd.len() as u64 + n > max {
                // RFC 7888 4: a too large literal gets a tagged response at
                // once; a non-synchronizing one must still be read past.
                let tag = tag_of(&cmd);
                self.bad(&tag, "[TOOBIG] Literal too large");
                if !sync {
                    self.read_literal(n, |_| {}).await?;
                    // The rest of the command follows; skip it.
                    loop {
                        match self.next_line(self.config.limits.data_timeout).await? {
                            LineEvent::Line(l) => match parse::trailing_literal(&l) {
                                Some((n, false)) => self.read_literal(n, |_| {}).await?,
                                _ => break,
                            },
                            LineEvent::TooLong => {}
                            _ => return Err(io::ErrorKind::UnexpectedEof.into()),
                        }
                    }
                }
                return Ok(None);
            }
            if sync {
                self.line("+ Ready for literal data");
                self.flush().await?;
            }
            cmd.extend_from_slice(b"\r\n");
            let mut lit = Vec::with_capacity(n as usize);
            self.read_literal(n, |b| lit.extend_from_slice(b)).await?;
            cmd.extend_from_slice(&lit);
            match self.next_line(self.config.limits.data_timeout).await? {
                LineEvent::Line(l) => {
                    last_line_start = cmd.len();
                    cmd.extend_from_slice(&l);
                    if cmd.len() as u64 > max {
                        let tag = tag_of(&cmd);
                        self.bad(&tag, "[TOOBIG] Command too long");
                        return Ok(None);
                    }
                }
                LineEvent::TooLong => {
                    let tag = tag_of(&cmd);
                    self.bad(&tag, "Command line too long");
                    return Ok(None);
                }
                _ => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
        Ok(Some(cmd))
    }

    fn capabilities(&self) -> String {
        match self.state {
            State::NotAuthenticated => {
                let tls = self.stream.is_tls();
                let plaintext = crate::auth::plaintext_allowed(&self.config, &self.peer, tls);
                super::capabilities_before_login(!tls && self.server.tls().is_some(), plaintext)
            }
            _ => super::CAPABILITIES.to_string(),
        }
    }

    /// A mailbox name from the client, as stored (UTF-8, INBOX uppercase).
    /// The decoded mailbox name, or None after answering NO.
    fn name_or_no(&mut self, tag: &str, raw: &[u8]) -> Option<String> {
        match self.mailbox_name(raw) {
            Ok(n) => Some(n),
            Err(e) => {
                self.tagged(tag, "NO", &e);
                None
            }
        }
    }

    /// The named mailbox, or None after answering NO (bad name or
    /// [NONEXISTENT]).
    fn mailbox_or_no(&mut self, tag: &str, raw: &[u8]) -> io::Result<Option<Mailbox>> {
        let Some(name) = self.name_or_no(tag, raw) else {
            return Ok(None);
        };
        let mb = self.lookup(&name)?;
        if mb.is_none() {
            self.tagged(tag, "NO", "[NONEXISTENT] No such mailbox");
        }
        Ok(mb)
    }

    /// Mailbox names travel as UTF-8 (IMAP4rev2 or UTF8=ACCEPT), not as
    /// modified UTF-7.
    fn utf8_names(&self) -> bool {
        self.rev2 || self.utf8_accept
    }

    fn mailbox_name(&self, raw: &[u8]) -> Result<String, String> {
        let name = if self.utf8_names() {
            String::from_utf8(raw.to_vec()).map_err(|_| "Mailbox name is not UTF-8".to_string())?
        } else {
            mutf7::decode(raw)
                .ok_or_else(|| "Mailbox name is not valid modified UTF-7".to_string())?
        };
        if name.is_empty()
            || name.len() > 1000
            || name.chars().any(|c| c.is_control())
            || name.starts_with(DELIMITER)
            || name.ends_with(DELIMITER)
            || name.contains("//")
        {
            return Err("Invalid mailbox name".into());
        }
        Ok(canonical_inbox(&name))
    }

    /// A stored name as the client reads it, quoted.
    fn render_mailbox(&self, name: &str, out: &mut Vec<u8>) {
        if self.utf8_names() {
            super::render_string(name.as_bytes(), out);
        } else {
            super::render_string(mutf7::encode(name).as_bytes(), out);
        }
    }

    fn mailbox_display(&self, name: &str) -> String {
        let mut v = Vec::new();
        self.render_mailbox(name, &mut v);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Runs `f` on the writer thread in a transaction of its own and
    /// returns its result once committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot = Arc::new(Mutex::new(None));
        let inner = slot.clone();
        self.server
            .writer
            .submit(WriteOp::Admin(Box::new(move |txn| {
                let v = f(txn)?;
                if let Ok(mut s) = inner.lock() {
                    *s = Some(v);
                }
                Ok(String::new())
            })))
            .await?;
        let v = slot.lock().ok().and_then(|mut s| s.take());
        v.ok_or_else(|| StoreError::Db("write returned nothing".into()))
    }

    async fn handle(&mut self, tag: String, kind: Kind) -> io::Result<Next> {
        let tag = tag.as_str();
        match kind {
            Kind::Capability => {
                let c = self.capabilities();
                self.line(&format!("* CAPABILITY {c}"));
                self.done(tag, "CAPABILITY completed", true).await?;
            }
            Kind::Noop | Kind::Check => self.done(tag, "NOOP completed", true).await?,
            Kind::Logout => {
                self.line("* BYE Logging out");
                self.tagged(tag, "OK", "LOGOUT completed");
                return Ok(Next::Close);
            }
            Kind::Id => {
                self.line("* ID (\"name\" \"pimail\")");
                self.done(tag, "ID completed", true).await?;
            }
            Kind::StartTls => return self.starttls(tag).await,
            Kind::Login { user, password } => {
                let user = String::from_utf8_lossy(&user).into_owned();
                let password = String::from_utf8_lossy(&password).into_owned();
                self.login(tag, &user, &password).await?;
            }
            Kind::Authenticate { mechanism, initial } => {
                self.authenticate(tag, &mechanism, initial).await?
            }
            Kind::Enable(caps) => {
                let mut enabled = Vec::new();
                for c in caps {
                    match c.as_str() {
                        "IMAP4REV2" => {
                            self.rev2 = true;
                            enabled.push("IMAP4rev2");
                        }
                        "UTF8=ACCEPT" => {
                            self.utf8_accept = true;
                            enabled.push("UTF8=ACCEPT");
                        }
                        "CONDSTORE" => {
                            self.condstore = true;
                            enabled.push("CONDSTORE");
                        }
                        "QRESYNC" => {
                            self.condstore = true;
                            self.qresync = true;
                            enabled.push("QRESYNC");
                        }
                        _ => {}
                    }
                }
                self.line(format!("* ENABLED {}", enabled.join(" ")).trim_end());
                self.tagged(tag, "OK", "ENABLE completed");
            }
            Kind::Namespace => {
                self.line("* NAMESPACE ((\"\" \"/\")) NIL NIL");
                self.done(tag, "NAMESPACE completed", true).await?;
            }
            Kind::Select {
                mailbox,
                read_only,
                condstore,
                qresync,
            } => {
                self.select(tag, &mailbox, read_only, condstore, qresync)
                    .await?
            }
            Kind::Create {
                mailbox,
                special_use,
            } => self.create(tag, &mailbox, special_use).await?,
            Kind::Delete(mailbox) => self.delete(tag, &mailbox).await?,
            Kind::Rename { from, to } => self.rename(tag, &from, &to).await?,
            Kind::Subscribe(m) => self.subscribe(tag, &m, true).await?,
            Kind::Unsubscribe(m) => self.subscribe(tag, &m, false).await?,
            Kind::List(l) => self.list(tag, l, false).await?,
            Kind::Lsub { reference, pattern } => {
                let l = List {
                    reference,
                    patterns: vec![pattern],
                    select_subscribed: true,
                    ..List::default()
                };
                self.list(tag, l, true).await?
            }
            Kind::Status { mailbox, items } => self.status(tag, &mailbox, &items).await?,
            Kind::Idle => return self.idle(tag).await,
            Kind::Close | Kind::Unselect => {
                let close = matches!(kind, Kind::Close);
                if close {
                    self.expunge(None, true).await?;
                }
                if let State::Selected { user, .. } = &self.state {
                    self.state = State::Authenticated { user: user.clone() };
                }
                self.tagged(
                    tag,
                    "OK",
                    if close {
                        "CLOSE completed"
                    } else {
                        "UNSELECT completed"
                    },
                );
            }
            Kind::Expunge => {
                if self.read_only() {
                    self.tagged(tag, "NO", "[READ-ONLY] Mailbox is read-only");
                } else {
                    self.expunge(None, false).await?;
                    self.done(tag, "EXPUNGE completed", true).await?;
                }
            }
            Kind::UidExpunge(set) => {
                let set = self.concrete(true, set);
                if self.read_only() {
                    self.tagged(tag, "NO", "[READ-ONLY] Mailbox is read-only");
                } else {
                    self.expunge(Some(set), false).await?;
                    self.done(tag, "UID EXPUNGE completed", true).await?;
                }
            }
            Kind::Sort {
                uid,
                order,
                criteria,
            } => {
                let criteria = criteria.into_iter().map(|k| self.concrete_key(k)).collect();
                self.sort(tag, uid, order, criteria).await?
            }
            Kind::Search { uid, ret, criteria } => {
                let criteria = criteria.into_iter().map(|k| self.concrete_key(k)).collect();
                self.search(tag, uid, ret, criteria).await?
            }
            Kind::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
                let set = self.concrete(uid, set);
                // Pending changes go first, so FETCH output is not repeated.
                self.sync(uid).await?;
                self.fetch(uid, &set, items, changed_since, vanished)
                    .await?;
                self.tagged(tag, "OK", "FETCH completed");
            }
            Kind::Store {
                uid,
                set,
                unchanged_since,
                mode,
                silent,
                flags,
            } => {
                let set = self.concrete(uid, set);
                self.store(tag, uid, &set, unchanged_since, mode, silent, &flags)
                    .await?
            }
            Kind::Copy {
                uid,
                set,
                mailbox,
                move_,
            } => {
                let set = self.concrete(uid, set);
                self.copy(tag, uid, &set, &mailbox, move_).await?
            }
            Kind::GetQuota(root) => {
                if !root.is_empty() {
                    self.tagged(tag, "NO", "[NONEXISTENT] No such quota root");
                } else if self.quota_line()? {
                    self.tagged(tag, "OK", "GETQUOTA completed");
                } else {
                    self.tagged(tag, "NO", "[NONEXISTENT] No quota");
                }
            }
            Kind::GetQuotaRoot(mailbox) => {
                let Some(name) = self.name_or_no(tag, &mailbox) else {
                    return Ok(Next::Continue);
                };
                let quota = self
                    .server
                    .store
                    .account(self.user())
                    .map_err(db)?
                    .map_or(0, |a| a.quota_bytes);
                let shown = self.mailbox_display(&name);
                if quota > 0 {
                    self.line(&format!("* QUOTAROOT {shown} \"\""));
                    self.quota_line()?;
                } else {
                    self.line(&format!("* QUOTAROOT {shown}"));
                }
                self.tagged(tag, "OK", "GETQUOTAROOT completed");
            }
            Kind::SetQuota => {
                self.tagged(tag, "NO", "[NOPERM] Quotas are set by the administrator")
            }
        }
        Ok(Next::Continue)
    }

    /// `$` replaced by the saved result's messages that still exist, as
    /// UIDs or as sequence numbers (RFC 5182 2.1); other sets unchanged.
    fn concrete(&mut self, uid: bool, set: SequenceSet) -> SequenceSet {
        if !set.is_saved() {
            return set;
        }
        let Some(sel) = self.selected() else {
            return SequenceSet::of([]);
        };
        let present = sel
            .saved
            .iter()
            .filter_map(|u| sel.uids.binary_search(&u).ok().map(|i| (i as u32 + 1, u)));
        if uid {
            SequenceSet::of(present.map(|(_, u)| u))
        } else {
            SequenceSet::of(present.map(|(seq, _)| seq))
        }
    }

    fn concrete_key(&mut self, key: SearchKey) -> SearchKey {
        match key {
            SearchKey::Seq(s) => SearchKey::Seq(self.concrete(false, s)),
            SearchKey::Uid(s) => SearchKey::Uid(self.concrete(true, s)),
            SearchKey::Not(k) => SearchKey::Not(Box::new(self.concrete_key(*k))),
            SearchKey::Or(a, b) => SearchKey::Or(
                Box::new(self.concrete_key(*a)),
                Box::new(self.concrete_key(*b)),
            ),
            SearchKey::And(v) => {
                SearchKey::And(v.into_iter().map(|k| self.concrete_key(k)).collect())
            }
            other => other,
        }
    }

    fn read_only(&self) -> bool {
        match &self.state {
            State::Selected { mailbox, .. } => mailbox.read_only,
            _ => true,
        }
    }

    /// Sends pending updates of the selected mailbox, then the tagged OK.
    async fn done(&mut self, tag: &str, text: &str, expunges_allowed: bool) -> io::Result<()> {
        self.sync(expunges_allowed).await?;
        self.tagged(tag, "OK", text);
        Ok(())
    }

    /// `* QUOTA "" (STORAGE used limit)`; false if the user has no quota.
    fn quota_line(&mut self) -> io::Result<bool> {
        let store = &self.server.store;
        let Some(account) = store.account(self.user()).map_err(db)? else {
            return Ok(false);
        };
        if account.quota_bytes == 0 {
            return Ok(false);
        }
        let txn = store.begin_read().map_err(db)?;
        let used = mailbox_ops::usage(
            &txn.open_table(MAILBOX_NAMES).map_err(|e| db(e.into()))?,
            &txn.open_table(MAILBOXES).map_err(|e| db(e.into()))?,
            self.user(),
        )
        .map_err(db)?;
        self.line(&format!(
            "* QUOTA \"\" (STORAGE {} {})",
            used.div_ceil(1024),
            account.quota_bytes / 1024
        ));
        Ok(true)
    }

    async fn starttls(&mut self, tag: &str) -> io::Result<Next> {
        let acceptor = match self.server.tls() {
            Some(a) if !self.stream.is_tls() => a,
            _ => {
                self.tagged(tag, "BAD", "TLS is already active or not available");
                return Ok(Next::Continue);
            }
        };
        self.tagged(tag, "OK", "Begin TLS negotiation now");
        self.flush().await?;
        // RFC 9051 6.2.1: nothing sent before the handshake counts.
        self.input.clear();
        self.stream
            .start_tls(&acceptor, self.config.limits.tls_handshake_timeout)
            .await?;
        Ok(Next::Continue)
    }

    async fn login(&mut self, tag: &str, user: &str, password: &str) -> io::Result<()> {
        if !crate::auth::plaintext_allowed(&self.config, &self.peer, self.stream.is_tls()) {
            self.tagged(tag, "NO", "[PRIVACYREQUIRED] Use STARTTLS first");
            return Ok(());
        }
        if self.server.auth.blocked(self.peer.ip(), &self.config) {
            self.tagged(
                tag,
                "NO",
                "[UNAVAILABLE] Too many failed logins from your address; try later",
            );
            return Ok(());
        }
        let verified = self
            .server
            .auth
            .verify(&self.server.store, user, password)
            .await
            .map_err(db)?;
        match verified {
            Some(address) => {
                log::info!("imap {}: login {address}", self.peer);
                self.state = State::Authenticated { user: address };
                let caps = self.capabilities();
                self.tagged(tag, "OK", &format!("[CAPABILITY {caps}] Logged in"));
            }
            None => {
                log::info!("imap {}: failed login for {user:?}", self.peer);
                self.server.auth.note_failure(self.peer.ip());
                Timer::after(self.config.auth.failure_delay).await;
                self.errors += 1;
                self.tagged(tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed");
            }
        }
        Ok(())
    }

    /// Reads one SASL response line after a `+` continuation.
    async fn sasl_line(&mut self, challenge: &str) -> io::Result<Option<String>> {
        self.line(&format!("+ {challenge}"));
        self.flush().await?;
        match self.next_line(self.config.limits.command_timeout).await? {
            LineEvent::Line(l) => Ok(Some(String::from_utf8_lossy(&l).into_owned())),
            LineEvent::TooLong => Ok(None),
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    async fn authenticate(
        &mut self,
        tag: &str,
        mechanism: &str,
        initial: Option<String>,
    ) -> io::Result<()> {
        use crate::auth::sasl;
        if !crate::auth::plaintext_allowed(&self.config, &self.peer, self.stream.is_tls()) {
            self.tagged(tag, "NO", "[PRIVACYREQUIRED] Use STARTTLS first");
            return Ok(());
        }
        let cancelled = |s: &Option<String>| s.as_deref().map(str::trim) == Some("*");
        let creds = match mechanism {
            "PLAIN" => {
                let resp = match initial {
                    Some(i) => Some(i),
                    None => self.sasl_line("").await?,
                };
                if cancelled(&resp) {
                    self.bad(tag, "AUTHENTICATE cancelled");
                    return Ok(());
                }
                // "=" is an empty initial response (RFC 4959).
                resp.and_then(|r| sasl::decode_plain(if r == "=" { "" } else { &r }))
                    .map(|c| (c.authcid, c.password))
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => Some(i),
                    None => self.sasl_line("VXNlcm5hbWU6").await?,
                };
                if cancelled(&user) {
                    self.bad(tag, "AUTHENTICATE cancelled");
                    return Ok(());
                }
                let pass = self.sasl_line("UGFzc3dvcmQ6").await?;
                if cancelled(&pass) {
                    self.bad(tag, "AUTHENTICATE cancelled");
                    return Ok(());
                }
                match (
                    user.and_then(|u| sasl::decode_line(&u)),
                    pass.and_then(|p| sasl::decode_line(&p)),
                ) {
                    (Some(u), Some(p)) => Some((u, p)),
                    _ => None,
                }
            }
            _ => {
                self.tagged(tag, "NO", "Unsupported mechanism");
                return Ok(());
            }
        };
        match creds {
            Some((u, p)) => self.login(tag, &u, &p).await,
            None => {
                self.bad(tag, "Malformed SASL response");
                Ok(())
            }
        }
    }

    fn store_read(&self) -> io::Result<redb::ReadTransaction> {
        self.server.store.begin_read().map_err(db)
    }

    fn lookup(&self, name: &str) -> io::Result<Option<Mailbox>> {
        self.server.store.mailbox(self.user(), name).map_err(db)
    }
}
