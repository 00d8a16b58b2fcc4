//! One IMAP connection: the I/O loop around the pure parts (parser, state
//! rules, renderers). Reads go straight to the store (read transactions
//! take microseconds); writes go through the writer thread.

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
    BLOBS, BlobId, BlobRow, CHUNKS, EXPUNGED, MAILBOX_NAMES, MAILBOXES, MESSAGES, Mailbox,
    MessageRow, SpecialUse, StoreError, flags,
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

    async fn flush(&mut self) -> io::Result<()> {
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
        if self.out.capacity() > 16 * 1024 {
            self.out = Vec::with_capacity(256);
        }
        Ok(())
    }

    async fn maybe_flush(&mut self) -> io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
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

    fn mailbox_name(&self, raw: &[u8]) -> Result<String, String> {
        let name = if self.rev2 {
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
        if self.rev2 {
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
                if self.read_only() {
                    self.tagged(tag, "NO", "[READ-ONLY] Mailbox is read-only");
                } else {
                    self.expunge(Some(set), false).await?;
                    self.done(tag, "UID EXPUNGE completed", true).await?;
                }
            }
            Kind::Search { uid, ret, criteria } => self.search(tag, uid, ret, criteria).await?,
            Kind::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
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
                self.store(tag, uid, &set, unchanged_since, mode, silent, &flags)
                    .await?
            }
            Kind::Copy {
                uid,
                set,
                mailbox,
                move_,
            } => self.copy(tag, uid, &set, &mailbox, move_).await?,
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
                Timer::after(self.config.imap.login_failure_delay).await;
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

    async fn select(
        &mut self,
        tag: &str,
        raw: &[u8],
        read_only: bool,
        condstore: bool,
        qresync: Option<Qresync>,
    ) -> io::Result<()> {
        // A failed SELECT leaves no mailbox selected (RFC 9051 6.3.2).
        if let State::Selected { user, .. } = &self.state {
            self.state = State::Authenticated { user: user.clone() };
            if self.qresync {
                self.line("* OK [CLOSED] Previous mailbox closed");
            }
        }
        let Some(mb) = self.mailbox_or_no(tag, raw)? else {
            return Ok(());
        };
        if qresync.is_some() && !self.qresync {
            self.bad(tag, "Enable QRESYNC first");
            return Ok(());
        }
        if condstore {
            self.condstore = true;
        }
        // The UID set and the first unseen message come from the store's
        // indexes: a read of a few entries, not of every message row.
        let txn = self.store_read()?;
        // The row again, in the same snapshot as the UIDs, so that UIDNEXT
        // and EXISTS agree even if a delivery committed in between.
        let Some(mb) = crate::store::ops::mailbox_in(
            &txn.open_table(MAILBOX_NAMES).map_err(|e| db(e.into()))?,
            &txn.open_table(MAILBOXES).map_err(|e| db(e.into()))?,
            self.user(),
            &mb.name,
        )
        .map_err(db)?
        else {
            self.tagged(tag, "NO", "[NONEXISTENT] No such mailbox");
            return Ok(());
        };
        let uids = UidList::from_runs(&crate::store::index::uid_runs(&txn, mb.id).map_err(db)?);
        let first_unseen = if !self.rev2 && mb.unseen > 0 {
            crate::store::index::first_unseen(&txn, mb.id)
                .map_err(db)?
                .map(|uid| uids.count_below(uid) + 1)
        } else {
            None
        };
        drop(txn);
        self.line("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)");
        self.line(
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
        );
        self.line(&format!("* {} EXISTS", uids.len()));
        if !self.rev2 {
            self.line("* 0 RECENT");
            if let Some(n) = first_unseen {
                self.line(&format!("* OK [UNSEEN {n}] First unseen"));
            }
        }
        self.line(&format!("* OK [UIDVALIDITY {}] UIDs valid", mb.uidvalidity));
        self.line(&format!("* OK [UIDNEXT {}] Predicted next UID", mb.uidnext));
        if self.condstore {
            self.line(&format!(
                "* OK [HIGHESTMODSEQ {}] Highest",
                mb.highest_modseq
            ));
        }
        if self.rev2 {
            let shown = self.mailbox_display(&mb.name);
            self.line(&format!("* LIST () \"/\" {shown}"));
        }
        let selected = Selected {
            id: mb.id,
            name: mb.name.clone(),
            read_only,
            uids,
            modseq: mb.highest_modseq,
            uidnext: mb.uidnext,
        };
        self.state = State::Selected {
            user: self.user().to_string(),
            mailbox: selected,
        };
        if let Some(q) = qresync
            && q.uidvalidity == mb.uidvalidity
        {
            self.qresync_report(q.modseq, q.known_uids.as_ref(), true)?;
        }
        let mode = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        let what = if read_only { "EXAMINE" } else { "SELECT" };
        self.tagged(tag, "OK", &format!("[{mode}] {what} completed"));
        Ok(())
    }

    /// VANISHED (EARLIER) for UIDs expunged since `modseq`, and FETCH for
    /// messages changed since then (RFC 7162 3.2.5.2 / 3.2.6).
    fn qresync_report(
        &mut self,
        modseq: u64,
        known: Option<&SequenceSet>,
        earlier_label: bool,
    ) -> io::Result<()> {
        let Some(sel) = self.selected() else {
            return Ok(());
        };
        let (id, uidnext) = (sel.id, sel.uidnext);
        let txn = self.store_read()?;
        let log = txn.open_table(EXPUNGED).map_err(|e| db(e.into()))?;
        let mut vanished = Vec::new();
        for entry in log
            .range((id, modseq + 1, 0)..=(id, u64::MAX, u32::MAX))
            .map_err(|e| db(e.into()))?
        {
            let (k, _) = entry.map_err(|e| db(e.into()))?;
            let uid = k.value().2;
            if known.is_none_or(|k| k.contains(uid, uidnext.saturating_sub(1))) {
                vanished.push(uid);
            }
        }
        vanished.sort_unstable();
        vanished.dedup();
        if !vanished.is_empty() {
            let label = if earlier_label { " (EARLIER)" } else { "" };
            self.line(&format!("* VANISHED{label} {}", sequence::render(vanished)));
        }
        let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
        let Some(sel) = self.selected() else {
            return Ok(());
        };
        let mut lines = Vec::new();
        for (i, uid) in sel.uids.iter().enumerate() {
            if let Some(row) = messages.get((id, uid)).map_err(|e| db(e.into()))? {
                let row = MessageRow::decode(row.value()).map_err(|e| db(e.into()))?;
                if row.modseq > modseq {
                    let mut l = format!("* {} FETCH (UID {uid} FLAGS ", i + 1).into_bytes();
                    super::render_flags(row.flags, &row.keywords, &mut l);
                    l.extend_from_slice(format!(" MODSEQ ({}))\r\n", row.modseq).as_bytes());
                    lines.push(l);
                }
            }
        }
        for l in lines {
            self.out.extend_from_slice(&l);
        }
        Ok(())
    }

    /// Reports changes other sessions made to the selected mailbox:
    /// expunges (only when `expunges_allowed`, RFC 9051 7.5.1), new
    /// messages and flag changes.
    async fn sync(&mut self, expunges_allowed: bool) -> io::Result<()> {
        let qresync = self.qresync;
        let condstore = self.condstore;
        let store = self.server.store.clone();
        let Some(sel) = self.selected() else {
            return Ok(());
        };
        let txn = store.begin_read().map_err(db)?;
        let boxes = txn.open_table(MAILBOXES).map_err(|e| db(e.into()))?;
        let Some(row) = boxes.get(sel.id).map_err(|e| db(e.into()))? else {
            // Deleted by another session.
            self.line("* BYE The selected mailbox was deleted");
            return Err(io::Error::other("selected mailbox deleted"));
        };
        let mb = Mailbox::decode(sel.id, row.value()).map_err(|e| db(e.into()))?;
        if mb.highest_modseq == sel.modseq && mb.uidnext == sel.uidnext {
            return Ok(());
        }
        let mut out = Vec::new();
        let mut expunges_pending = false;
        // Expunges first: sequence numbers of later responses depend on them.
        let log = txn.open_table(EXPUNGED).map_err(|e| db(e.into()))?;
        let mut gone = Vec::new();
        for entry in log
            .range((sel.id, sel.modseq + 1, 0)..=(sel.id, u64::MAX, u32::MAX))
            .map_err(|e| db(e.into()))?
        {
            let (k, _) = entry.map_err(|e| db(e.into()))?;
            let uid = k.value().2;
            if sel.uids.binary_search(&uid).is_ok() {
                gone.push(uid);
            }
        }
        if !gone.is_empty() {
            if expunges_allowed {
                gone.sort_unstable();
                gone.dedup();
                if qresync {
                    out.extend_from_slice(
                        format!("* VANISHED {}\r\n", sequence::render(gone.iter().copied()))
                            .as_bytes(),
                    );
                }
                // Highest first, so each number is as the client knows it.
                for uid in gone.iter().rev() {
                    if let Ok(i) = sel.uids.binary_search(uid) {
                        sel.uids.remove(i);
                        if !qresync {
                            out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                        }
                    }
                }
            } else {
                expunges_pending = true;
            }
        }
        // Flag changes of messages the client knows.
        let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
        if mb.highest_modseq > sel.modseq {
            // Only the rows whose mod-sequence moved (the `changes` index),
            // never a scan of the mailbox.
            let changes = txn
                .open_table(crate::store::CHANGES)
                .map_err(|e| db(e.into()))?;
            let mut changed = Vec::new();
            for entry in changes
                .range((sel.id, sel.modseq + 1, 0)..=(sel.id, u64::MAX, u32::MAX))
                .map_err(|e| db(e.into()))?
            {
                let uid = entry.map_err(|e| db(e.into()))?.0.value().2;
                if uid < sel.uidnext {
                    changed.push(uid);
                }
            }
            changed.sort_unstable();
            for uid in changed {
                let Ok(i) = sel.uids.binary_search(&uid) else {
                    continue;
                };
                let Some(v) = messages.get((sel.id, uid)).map_err(|e| db(e.into()))? else {
                    continue;
                };
                let row = MessageRow::decode(v.value()).map_err(|e| db(e.into()))?;
                out.extend_from_slice(format!("* {} FETCH (", i + 1).as_bytes());
                if qresync || condstore {
                    out.extend_from_slice(format!("UID {uid} ").as_bytes());
                }
                out.extend_from_slice(b"FLAGS ");
                super::render_flags(row.flags, &row.keywords, &mut out);
                if condstore {
                    out.extend_from_slice(format!(" MODSEQ ({})", row.modseq).as_bytes());
                }
                out.extend_from_slice(b")\r\n");
            }
        }
        // New messages.
        if mb.uidnext > sel.uidnext {
            let before = sel.uids.len();
            for entry in messages
                .range((sel.id, sel.uidnext)..=(sel.id, u32::MAX))
                .map_err(|e| db(e.into()))?
            {
                let (k, _) = entry.map_err(|e| db(e.into()))?;
                sel.uids.push(k.value().1);
            }
            sel.uidnext = mb.uidnext;
            if sel.uids.len() != before || expunges_allowed {
                out.extend_from_slice(format!("* {} EXISTS\r\n", sel.uids.len()).as_bytes());
            }
        }
        if !expunges_pending {
            sel.modseq = mb.highest_modseq;
        }
        self.out.extend_from_slice(&out);
        Ok(())
    }

    async fn create(&mut self, tag: &str, raw: &[u8], special: Option<String>) -> io::Result<()> {
        let Some(name) = self.name_or_no(tag, raw) else {
            return Ok(());
        };
        let special_use = match special.as_deref().map(special_use_of) {
            None => SpecialUse::None,
            Some(Some(s)) => s,
            Some(None) => {
                self.tagged(tag, "NO", "[USEATTR] Unsupported special use");
                return Ok(());
            }
        };
        let user = self.user().to_string();
        let now = chrono::Utc::now().timestamp();
        let r = self
            .write(move |t| mailbox_ops::create(t, &user, &name, special_use, now))
            .await;
        match r {
            Ok(_) => self.done(tag, "CREATE completed", true).await?,
            Err(StoreError::Exists(_)) => {
                self.tagged(tag, "NO", "[ALREADYEXISTS] Mailbox already exists")
            }
            Err(e) => self.tagged(tag, "NO", &format!("[SERVERBUG] {e}")),
        }
        Ok(())
    }

    async fn delete(&mut self, tag: &str, raw: &[u8]) -> io::Result<()> {
        let Some(name) = self.name_or_no(tag, raw) else {
            return Ok(());
        };
        if let State::Selected { mailbox, .. } = &self.state
            && mailbox.name == name
        {
            self.tagged(tag, "NO", "[INUSE] Unselect the mailbox first");
            return Ok(());
        }
        let user = self.user().to_string();
        let r = self
            .write(move |t| mailbox_ops::delete(t, &user, &name))
            .await;
        self.server.notify_change();
        match r {
            Ok(()) => self.done(tag, "DELETE completed", true).await?,
            Err(StoreError::NotFound(_)) => self.tagged(tag, "NO", "[NONEXISTENT] No such mailbox"),
            Err(e) => self.tagged(tag, "NO", &e.to_string()),
        }
        Ok(())
    }

    async fn rename(&mut self, tag: &str, from: &[u8], to: &[u8]) -> io::Result<()> {
        let (from, to) = match (self.mailbox_name(from), self.mailbox_name(to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => {
                self.tagged(tag, "NO", &e);
                return Ok(());
            }
        };
        if to == "INBOX" {
            self.tagged(tag, "NO", "[CANNOT] Cannot rename to INBOX");
            return Ok(());
        }
        let user = self.user().to_string();
        let now = chrono::Utc::now().timestamp();
        let r = self
            .write(move |t| mailbox_ops::rename(t, &user, &from, &to, now))
            .await;
        self.server.notify_change();
        match r {
            Ok(()) => self.done(tag, "RENAME completed", true).await?,
            Err(StoreError::NotFound(_)) => self.tagged(tag, "NO", "[NONEXISTENT] No such mailbox"),
            Err(StoreError::Exists(_)) => {
                self.tagged(tag, "NO", "[ALREADYEXISTS] Target mailbox exists")
            }
            Err(e) => self.tagged(tag, "NO", &e.to_string()),
        }
        Ok(())
    }

    async fn subscribe(&mut self, tag: &str, raw: &[u8], on: bool) -> io::Result<()> {
        let Some(name) = self.name_or_no(tag, raw) else {
            return Ok(());
        };
        let user = self.user().to_string();
        let r = self
            .write(move |t| mailbox_ops::subscribe(t, &user, &name, on))
            .await;
        match r {
            Ok(()) => self.done(tag, "Subscription changed", true).await?,
            Err(StoreError::NotFound(_)) if !on => {
                self.done(tag, "Subscription changed", true).await?
            }
            Err(StoreError::NotFound(_)) => self.tagged(tag, "NO", "[NONEXISTENT] No such mailbox"),
            Err(e) => self.tagged(tag, "NO", &e.to_string()),
        }
        Ok(())
    }

    async fn list(&mut self, tag: &str, l: List, lsub: bool) -> io::Result<()> {
        let decode = |s: &Session, raw: &[u8]| -> Option<String> {
            if raw.is_empty() {
                return Some(String::new());
            }
            if s.rev2 {
                String::from_utf8(raw.to_vec()).ok()
            } else {
                mutf7::decode(raw)
            }
        };
        let Some(reference) = decode(self, &l.reference) else {
            self.tagged(tag, "NO", "Invalid reference name");
            return Ok(());
        };
        let mut patterns = Vec::new();
        for p in &l.patterns {
            let Some(p) = decode(self, p) else {
                self.tagged(tag, "NO", "Invalid mailbox pattern");
                return Ok(());
            };
            patterns.push(p);
        }
        let command = if lsub { "LSUB" } else { "LIST" };
        if patterns.len() == 1 && patterns[0].is_empty() && !l.extended {
            // The hierarchy delimiter query (RFC 9051 6.3.9).
            self.line(&format!("* {command} (\\Noselect) \"/\" \"\""));
            self.done(tag, &format!("{command} completed"), true)
                .await?;
            return Ok(());
        }
        let boxes = self.server.store.mailboxes(self.user()).map_err(db)?;
        let has_children = |name: &str| {
            boxes.iter().any(|b| {
                b.name.len() > name.len()
                    && b.name.starts_with(name)
                    && b.name[name.len()..].starts_with(DELIMITER)
            })
        };
        for mb in &boxes {
            let matched = patterns.iter().any(|p| {
                let full = list::join(&reference, p, DELIMITER);
                let full = canonical_inbox(&full);
                list::matches(&full, &mb.name, DELIMITER)
            });
            if !matched || (l.select_subscribed && !mb.subscribed) {
                continue;
            }
            if l.select_special_use && mb.special_use == SpecialUse::None {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if !lsub {
                attrs.push(if has_children(&mb.name) {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                });
                if (l.return_subscribed || l.select_subscribed) && mb.subscribed {
                    attrs.push("\\Subscribed");
                }
                if let Some(a) = mb.special_use.attribute()
                    && (!l.extended || l.return_special_use || l.select_special_use)
                {
                    attrs.push(a);
                }
            }
            let mut line = format!("* {command} ({}) \"/\" ", attrs.join(" ")).into_bytes();
            self.render_mailbox(&mb.name, &mut line);
            line.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(&line);
            if let Some(items) = &l.return_status {
                self.status_line(mb, items)?;
            }
        }
        self.done(tag, &format!("{command} completed"), true).await
    }

    fn status_line(&mut self, mb: &Mailbox, items: &[StatusItem]) -> io::Result<()> {
        let mut parts = Vec::new();
        for item in items {
            parts.push(match item {
                StatusItem::Messages => format!("MESSAGES {}", mb.exists),
                StatusItem::UidNext => format!("UIDNEXT {}", mb.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", mb.uidvalidity),
                StatusItem::Unseen => format!("UNSEEN {}", mb.unseen),
                StatusItem::Size => format!("SIZE {}", mb.size),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", mb.highest_modseq),
                StatusItem::Recent => "RECENT 0".to_string(),
                StatusItem::Deleted => {
                    let txn = self.store_read()?;
                    let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
                    let mut n = 0;
                    for entry in messages
                        .range((mb.id, 0)..=(mb.id, u32::MAX))
                        .map_err(|e| db(e.into()))?
                    {
                        let (_, v) = entry.map_err(|e| db(e.into()))?;
                        if mailbox_ops::flags_and_modseq(v.value())
                            .is_some_and(|(f, _)| f & flags::DELETED != 0)
                        {
                            n += 1;
                        }
                    }
                    format!("DELETED {n}")
                }
            });
        }
        let mut line = b"* STATUS ".to_vec();
        self.render_mailbox(&mb.name, &mut line);
        line.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        self.out.extend_from_slice(&line);
        Ok(())
    }

    async fn status(&mut self, tag: &str, raw: &[u8], items: &[StatusItem]) -> io::Result<()> {
        let Some(mb) = self.mailbox_or_no(tag, raw)? else {
            return Ok(());
        };
        if items.contains(&StatusItem::HighestModSeq) {
            self.condstore = true;
        }
        self.status_line(&mb, items)?;
        self.done(tag, "STATUS completed", true).await
    }

    async fn idle(&mut self, tag: &str) -> io::Result<Next> {
        self.line("+ idling");
        let deadline = std::time::Instant::now() + self.config.imap.idle_timeout;
        loop {
            let generation = self.server.generation();
            self.sync(true).await?;
            self.flush().await?;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                self.line("* BYE IDLE for too long");
                return Ok(Next::Close);
            }
            let server = self.server.clone();
            let max = self.config.imap.max_line_length;
            let (input, stream) = (&mut self.input, &mut self.stream);
            enum Wake {
                Line(io::Result<Line>),
                Changed,
                Shutdown,
            }
            let wake = future::or(
                async { Wake::Line(with_timeout(left, input.read_line(stream, max)).await) },
                future::or(
                    async {
                        server.changed_since(generation).await;
                        Wake::Changed
                    },
                    async {
                        server.shutting_down().await;
                        Wake::Shutdown
                    },
                ),
            )
            .await;
            match wake {
                Wake::Changed => continue,
                Wake::Shutdown => {
                    self.line("* BYE Server shutting down");
                    return Ok(Next::Close);
                }
                Wake::Line(Ok(Line::Complete(r))) => {
                    if self.input.get(r).eq_ignore_ascii_case(b"DONE") {
                        self.done(tag, "IDLE terminated", true).await?;
                    } else {
                        self.bad(tag, "Expected DONE");
                    }
                    return Ok(Next::Continue);
                }
                Wake::Line(Ok(Line::TooLong)) => {
                    self.bad(tag, "Expected DONE");
                    return Ok(Next::Continue);
                }
                Wake::Line(Ok(Line::Eof)) => return Ok(Next::Close),
                Wake::Line(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                    self.line("* BYE IDLE for too long");
                    return Ok(Next::Close);
                }
                Wake::Line(Err(e)) => return Err(e),
            }
        }
    }

    /// Messages of a sequence set as (sequence number, UID), ascending.
    fn resolve(&mut self, uid: bool, set: &SequenceSet) -> Vec<(u32, u32)> {
        let Some(sel) = self.selected() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if uid {
            let max = sel.uids.last().unwrap_or(0);
            // RFC 9051 6.4.9: with UIDs, `*` is the highest UID, and a range
            // naming only UIDs above it still includes it.
            for (lo, hi) in set.resolved(max) {
                let start = sel.uids.count_below(lo);
                for (i, u) in sel.uids.iter_from(start) {
                    if u > hi {
                        break;
                    }
                    out.push(((i + 1) as u32, u));
                }
            }
            out.sort_unstable();
            out.dedup();
        } else {
            let max = sel.uids.len() as u32;
            for (lo, hi) in set.resolved(max) {
                for n in lo.max(1)..=hi.min(max) {
                    out.push((n, sel.uids.get(n as usize - 1).unwrap_or(0)));
                }
            }
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    fn seq_in_range(&mut self, uid: bool, set: &SequenceSet) -> bool {
        if uid {
            return true;
        }
        let max = self.selected().map_or(0, |s| s.uids.len() as u32);
        set.highest_explicit() <= max
    }

    async fn fetch(
        &mut self,
        uid: bool,
        set: &SequenceSet,
        mut items: Vec<FetchItem>,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> io::Result<()> {
        if !self.seq_in_range(uid, set) {
            // RFC 9051 6.4.5: an invalid sequence number is an error; we
            // answer the ones that exist.
        }
        if uid && !items.contains(&FetchItem::Uid) {
            items.insert(0, FetchItem::Uid);
        }
        if items.contains(&FetchItem::ModSeq) {
            self.condstore = true;
        }
        if (changed_since.is_some() || self.condstore) && !items.contains(&FetchItem::ModSeq) {
            if changed_since.is_some() {
                self.condstore = true;
            }
            if changed_since.is_some() {
                items.push(FetchItem::ModSeq);
            }
        }
        if vanished {
            if !self.qresync {
                return Ok(());
            }
            let since = changed_since.unwrap_or(0);
            let sel_id = self.selected().map(|s| s.id).unwrap_or(0);
            let txn = self.store_read()?;
            let log = txn.open_table(EXPUNGED).map_err(|e| db(e.into()))?;
            let mut gone = Vec::new();
            for entry in log
                .range((sel_id, since + 1, 0)..=(sel_id, u64::MAX, u32::MAX))
                .map_err(|e| db(e.into()))?
            {
                let (k, _) = entry.map_err(|e| db(e.into()))?;
                if set.contains(k.value().2, u32::MAX) {
                    gone.push(k.value().2);
                }
            }
            gone.sort_unstable();
            gone.dedup();
            if !gone.is_empty() {
                self.line(&format!("* VANISHED (EARLIER) {}", sequence::render(gone)));
            }
        }
        let targets = self.resolve(uid, set);
        let read_only = self.read_only();
        let sets_seen = !read_only
            && items.iter().any(|i| {
                matches!(
                    i,
                    FetchItem::Section { peek: false, .. }
                        | FetchItem::Binary { peek: false, .. }
                        | FetchItem::Rfc822
                        | FetchItem::Rfc822Text
                )
            });
        let Some(mailbox) = self.selected().map(|s| s.id) else {
            return Ok(());
        };
        if sets_seen {
            let uids: Vec<u32> = targets.iter().map(|&(_, u)| u).collect();
            let r = self
                .write(move |t| {
                    mailbox_ops::store_flags(
                        t,
                        mailbox,
                        &uids,
                        FlagChange::Add,
                        flags::SEEN,
                        &[],
                        None,
                    )
                })
                .await
                .map_err(db)?;
            if r.modseq_after != r.modseq_before {
                self.own_change(r.modseq_before, r.modseq_after);
                self.server.notify_change();
                if !items.contains(&FetchItem::Flags) {
                    items.push(FetchItem::Flags);
                }
            }
        }
        // What the items need of the delivery-time meta: nothing, the
        // top-level envelope alone (decoded without the part tree, the
        // common header-list fetch), or the whole part tree.
        let needs_tree = items.iter().any(|i| {
            matches!(
                i,
                FetchItem::Body
                    | FetchItem::BodyStructure
                    | FetchItem::Section { .. }
                    | FetchItem::Binary { .. }
                    | FetchItem::BinarySize(_)
                    | FetchItem::Rfc822
                    | FetchItem::Rfc822Header
                    | FetchItem::Rfc822Text
            )
        });
        let needs_envelope = !needs_tree && items.contains(&FetchItem::Envelope);
        // Rows are read in batches, one short read transaction per batch:
        // a transaction per message would cost more than the rendering,
        // and one for the whole range would pin old pages while a slow
        // client reads.
        const BATCH: usize = 256;
        for batch in targets.chunks(BATCH) {
            future::yield_now().await;
            let mut rows = Vec::with_capacity(batch.len());
            {
                let txn = self.store_read()?;
                let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
                let blobs = if needs_tree || needs_envelope {
                    Some(txn.open_table(BLOBS).map_err(|e| db(e.into()))?)
                } else {
                    None
                };
                for &(seq, uid_) in batch {
                    let Some(row) = messages.get((mailbox, uid_)).map_err(|e| db(e.into()))? else {
                        continue;
                    };
                    let row = MessageRow::decode(row.value()).map_err(|e| db(e.into()))?;
                    if changed_since.is_some_and(|c| row.modseq <= c) {
                        continue;
                    }
                    let (mut blob, mut envelope) = (None, None);
                    if let Some(t) = &blobs
                        && let Some(b) = t.get(&row.blob).map_err(|e| db(e.into()))?
                    {
                        if needs_tree {
                            blob = Some(BlobRow::decode(b.value()).map_err(|e| db(e.into()))?);
                        } else {
                            envelope = BlobRow::meta_of(b.value())
                                .ok()
                                .and_then(MessageMeta::decode_envelope)
                                .flatten();
                        }
                    }
                    rows.push((seq, uid_, row, blob, envelope));
                }
            }
            for (seq, uid_, row, blob, envelope) in rows {
                let meta = blob
                    .as_ref()
                    .map(|b| MessageMeta::decode(&b.meta).unwrap_or_else(|| fallback_meta(b.size)));
                let envelope = envelope
                    .as_ref()
                    .or_else(|| meta.as_ref().and_then(|m| m.root.envelope.as_ref()));
                write!(self.out, "* {seq} FETCH (")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b' ');
                    }
                    let parts = Fetched {
                        uid: uid_,
                        row: &row,
                        blob: blob.as_ref(),
                        meta: meta.as_ref(),
                        envelope,
                    };
                    self.fetch_item(item, parts).await?;
                }
                self.out.extend_from_slice(b")\r\n");
                self.maybe_flush().await?;
            }
        }
        Ok(())
    }

    async fn fetch_item(&mut self, item: &FetchItem, parts: Fetched<'_>) -> io::Result<()> {
        let Fetched {
            uid,
            row,
            blob,
            meta,
            envelope,
        } = parts;
        let out = &mut self.out;
        match item {
            FetchItem::Uid => write!(out, "UID {uid}")?,
            FetchItem::Flags => {
                out.extend_from_slice(b"FLAGS ");
                super::render_flags(row.flags, &row.keywords, out);
            }
            FetchItem::InternalDate => {
                out.extend_from_slice(b"INTERNALDATE \"");
                super::write_date_time(row.internal_date, out);
                out.push(b'"');
            }
            FetchItem::Rfc822Size => write!(out, "RFC822.SIZE {}", row.size)?,
            FetchItem::ModSeq => write!(out, "MODSEQ ({})", row.modseq)?,
            FetchItem::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                match envelope {
                    Some(env) => crate::message::render_envelope(env, out),
                    None => crate::message::render_envelope(&Default::default(), out),
                }
            }
            FetchItem::Body | FetchItem::BodyStructure => {
                let ext = matches!(item, FetchItem::BodyStructure);
                out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                let fallback = fallback_meta(row.size);
                let m = meta.unwrap_or(&fallback);
                crate::message::render_bodystructure(&m.root, ext, out);
            }
            FetchItem::Rfc822 | FetchItem::Rfc822Header | FetchItem::Rfc822Text => {
                let (label, section) = match item {
                    FetchItem::Rfc822 => ("RFC822", parse::Section::default()),
                    FetchItem::Rfc822Header => (
                        "RFC822.HEADER",
                        parse::Section {
                            part: vec![],
                            text: Some(parse::SectionText::Header),
                        },
                    ),
                    _ => (
                        "RFC822.TEXT",
                        parse::Section {
                            part: vec![],
                            text: Some(parse::SectionText::Text),
                        },
                    ),
                };
                out.extend_from_slice(label.as_bytes());
                out.push(b' ');
                self.emit_section(row, blob, meta, &section, None).await?;
            }
            FetchItem::Section {
                section, partial, ..
            } => {
                out.extend_from_slice(format!("BODY[{}]", body::section_name(section)).as_bytes());
                if let Some((origin, _)) = partial {
                    out.extend_from_slice(format!("<{origin}>").as_bytes());
                }
                out.push(b' ');
                self.emit_section(row, blob, meta, section, *partial)
                    .await?;
            }
            FetchItem::Binary { part, partial, .. } => {
                let name = part
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(".");
                out.extend_from_slice(format!("BINARY[{name}]").as_bytes());
                if let Some((origin, _)) = partial {
                    out.extend_from_slice(format!("<{origin}>").as_bytes());
                }
                out.push(b' ');
                self.emit_binary(row, blob, meta, part, *partial, false)
                    .await?;
            }
            FetchItem::BinarySize(part) => {
                let name = part
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(".");
                out.extend_from_slice(format!("BINARY.SIZE[{name}] ").as_bytes());
                self.emit_binary(row, blob, meta, part, None, true).await?;
            }
        }
        Ok(())
    }

    /// Calls `f` with the stored bytes `start..end` of a message, chunk by
    /// chunk, in one read transaction; `f` returns false to stop.
    fn pieces(
        &self,
        id: &BlobId,
        blob: &BlobRow,
        start: u64,
        end: u64,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<()> {
        let txn = self.store_read()?;
        let chunks = txn.open_table(CHUNKS).map_err(|e| db(e.into()))?;
        let mut pos = start;
        while pos < end {
            let (index, chunk_start) = blob.chunk_of(pos);
            let Some(chunk) = chunks.get((id, index)).map_err(|e| db(e.into()))? else {
                break;
            };
            let c = chunk.value();
            let off = (pos - chunk_start) as usize;
            if off >= c.len() {
                break;
            }
            let take = ((c.len() - off) as u64).min(end - pos) as usize;
            if !f(&c[off..off + take]) {
                break;
            }
            pos += take as u64;
        }
        Ok(())
    }

    fn read_range(&self, id: &BlobId, blob: &BlobRow, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.pieces(id, blob, start, end, |p| {
            v.extend_from_slice(p);
            true
        })?;
        Ok(v)
    }

    /// Writes a literal of exactly the bytes `start..end`, streamed chunk
    /// by chunk and flushed as it goes; missing content is padded so the
    /// literal's length stays true.
    async fn emit_range(
        &mut self,
        id: &BlobId,
        blob: &BlobRow,
        start: u64,
        end: u64,
    ) -> io::Result<()> {
        self.out
            .extend_from_slice(format!("{{{}}}\r\n", end - start).as_bytes());
        let mut pos = start;
        while pos < end {
            let (index, chunk_start) = blob.chunk_of(pos);
            let piece_end = {
                let txn = self.store_read()?;
                let chunks = txn.open_table(CHUNKS).map_err(|e| db(e.into()))?;
                match chunks.get((id, index)).map_err(|e| db(e.into()))? {
                    Some(chunk) => {
                        let c = chunk.value();
                        let off = (pos - chunk_start) as usize;
                        if off >= c.len() {
                            None
                        } else {
                            let take = ((c.len() - off) as u64).min(end - pos) as usize;
                            self.out.extend_from_slice(&c[off..off + take]);
                            Some(pos + take as u64)
                        }
                    }
                    None => None,
                }
            };
            match piece_end {
                Some(p) => pos = p,
                None => {
                    log::error!("message content shorter than recorded; padding");
                    self.out.resize(self.out.len() + (end - pos) as usize, b' ');
                    pos = end;
                }
            }
            self.maybe_flush().await?;
        }
        Ok(())
    }

    async fn emit_section(
        &mut self,
        row: &MessageRow,
        blob: Option<&BlobRow>,
        meta: Option<&MessageMeta>,
        section: &parse::Section,
        partial: Option<(u64, u64)>,
    ) -> io::Result<()> {
        let Some(blob) = blob else {
            self.out.extend_from_slice(b"NIL");
            return Ok(());
        };
        let fallback = fallback_meta(blob.size);
        let meta = meta.unwrap_or(&fallback);
        let clip = |start: u64, end: u64| match partial {
            Some((origin, len)) => {
                let s = (start + origin).min(end);
                (s, (s + len).min(end))
            }
            None => (start, end),
        };
        match body::extent(meta, section) {
            Extent::Range(start, end) => {
                let end = end.min(blob.size);
                let start = start.min(end);
                let (s, e) = clip(start, end);
                self.emit_range(&row.blob, blob, s, e).await
            }
            Extent::Fields {
                start,
                end,
                names,
                not,
            } => {
                let end = end.min(start + MAX_HEADER_READ).min(blob.size);
                let header = self.read_range(&row.blob, blob, start.min(end), end)?;
                let fields = body::filter_fields(&header, &names, not);
                let (s, e) = clip(0, fields.len() as u64);
                self.out
                    .extend_from_slice(format!("{{{}}}\r\n", e - s).as_bytes());
                self.out.extend_from_slice(&fields[s as usize..e as usize]);
                Ok(())
            }
            Extent::Empty => {
                self.out.extend_from_slice(b"\"\"");
                Ok(())
            }
        }
    }

    /// BINARY[part] (decoded content, as a literal8) or BINARY.SIZE.
    async fn emit_binary(
        &mut self,
        row: &MessageRow,
        blob: Option<&BlobRow>,
        meta: Option<&MessageMeta>,
        part: &[u32],
        partial: Option<(u64, u64)>,
        size_only: bool,
    ) -> io::Result<()> {
        let (Some(blob), Some(meta)) = (blob, meta) else {
            self.out.extend_from_slice(b"NIL");
            return Ok(());
        };
        let target = if part.is_empty() {
            Some(&meta.root)
        } else {
            meta.root.section(part)
        };
        let Some(target) = target else {
            self.out.extend_from_slice(b"NIL");
            return Ok(());
        };
        let (start, end, encoding) = if part.is_empty() {
            (0, blob.size, "7BIT".to_string())
        } else {
            (
                target.body_start,
                target.end.min(blob.size),
                target.encoding.clone(),
            )
        };
        let Some(mut decoder) = Decoder::for_encoding(&encoding) else {
            // RFC 3516 4.3: the response code names the problem.
            self.out.extend_from_slice(b"NIL");
            return Ok(());
        };
        // Pass 1: the decoded size.
        let mut size = 0u64;
        let mut buf = Vec::new();
        self.pieces(&row.blob, blob, start, end, |p| {
            decoder.feed(p, &mut buf);
            size += buf.len() as u64;
            buf.clear();
            true
        })?;
        decoder.finish(&mut buf);
        size += buf.len() as u64;
        if size_only {
            self.out.extend_from_slice(size.to_string().as_bytes());
            return Ok(());
        }
        let (from, to) = match partial {
            Some((origin, len)) => (origin.min(size), (origin + len).min(size)),
            None => (0, size),
        };
        self.out
            .extend_from_slice(format!("~{{{}}}\r\n", to - from).as_bytes());
        // Pass 2: the bytes, a chunk at a time.
        let Some(mut decoder) = Decoder::for_encoding(&encoding) else {
            return Ok(());
        };
        let mut pos = start;
        let mut decoded_at = 0u64;
        let mut emitted = 0u64;
        while pos < end || decoded_at < to {
            buf.clear();
            let mut next = pos;
            if pos < end {
                let (index, chunk_start) = blob.chunk_of(pos);
                let chunk_end = self.piece_into(
                    &row.blob,
                    blob,
                    index,
                    chunk_start,
                    pos,
                    end,
                    &mut decoder,
                    &mut buf,
                )?;
                next = chunk_end.max(pos + 1).min(end);
                if chunk_end <= pos {
                    next = end;
                }
            }
            if next >= end {
                decoder.finish(&mut buf);
            }
            let lo = from.saturating_sub(decoded_at).min(buf.len() as u64) as usize;
            let hi = to.saturating_sub(decoded_at).min(buf.len() as u64) as usize;
            if lo < hi {
                self.out.extend_from_slice(&buf[lo..hi]);
                emitted += (hi - lo) as u64;
            }
            decoded_at += buf.len() as u64;
            pos = next;
            self.maybe_flush().await?;
            if pos >= end {
                break;
            }
        }
        if emitted < to - from {
            self.out
                .resize(self.out.len() + (to - from - emitted) as usize, 0);
        }
        Ok(())
    }

    /// Decodes the part of chunk `index` from `pos` up to `end` into `buf`;
    /// returns the message offset reached.
    #[allow(clippy::too_many_arguments)]
    fn piece_into(
        &self,
        id: &BlobId,
        _blob: &BlobRow,
        index: u32,
        chunk_start: u64,
        pos: u64,
        end: u64,
        decoder: &mut Decoder,
        buf: &mut Vec<u8>,
    ) -> io::Result<u64> {
        let txn = self.store_read()?;
        let chunks = txn.open_table(CHUNKS).map_err(|e| db(e.into()))?;
        let Some(chunk) = chunks.get((id, index)).map_err(|e| db(e.into()))? else {
            return Ok(end);
        };
        let c = chunk.value();
        let off = (pos - chunk_start) as usize;
        if off >= c.len() {
            return Ok(end);
        }
        let take = ((c.len() - off) as u64).min(end - pos) as usize;
        decoder.feed(&c[off..off + take], buf);
        Ok(pos + take as u64)
    }

    /// After this session's own write: if nothing else changed the mailbox
    /// meanwhile, the client already knows everything up to `after`.
    fn own_change(&mut self, before: u64, after: u64) {
        if let Some(sel) = self.selected()
            && sel.modseq == before
        {
            sel.modseq = after;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SequenceSet,
        unchanged_since: Option<u64>,
        mode: StoreMode,
        silent: bool,
        flag_names: &[String],
    ) -> io::Result<()> {
        if self.read_only() {
            self.tagged(tag, "NO", "[READ-ONLY] Mailbox is read-only");
            return Ok(());
        }
        let (bits, keywords) = match super::parse_flags(flag_names) {
            Ok(f) => f,
            Err(e) => {
                self.bad(tag, &e);
                return Ok(());
            }
        };
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let targets = self.resolve(uid, set);
        let Some(mailbox) = self.selected().map(|s| s.id) else {
            return Ok(());
        };
        let uids: Vec<u32> = targets.iter().map(|&(_, u)| u).collect();
        let change = match mode {
            StoreMode::Replace => FlagChange::Replace,
            StoreMode::Add => FlagChange::Add,
            StoreMode::Remove => FlagChange::Remove,
        };
        let r = self
            .write(move |t| {
                mailbox_ops::store_flags(
                    t,
                    mailbox,
                    &uids,
                    change,
                    bits,
                    &keywords,
                    unchanged_since,
                )
            })
            .await
            .map_err(db)?;
        if r.modseq_after != r.modseq_before {
            self.own_change(r.modseq_before, r.modseq_after);
            self.server.notify_change();
        }
        let condstore = self.condstore;
        for st in &r.states {
            // .SILENT still reports a change made meanwhile by someone
            // else... which we cannot tell apart here; RFC 7162 3.1.3 asks
            // for MODSEQ of changed messages even when silent.
            if silent && !(condstore && st.changed && unchanged_since.is_some()) {
                continue;
            }
            let Ok(i) = targets
                .binary_search_by_key(&st.uid, |&(_, u)| u)
                .or_else(|_| targets.iter().position(|&(_, u)| u == st.uid).ok_or(()))
            else {
                continue;
            };
            let seq = targets[i].0;
            let mut l = format!("* {seq} FETCH (").into_bytes();
            if uid {
                l.extend_from_slice(format!("UID {} ", st.uid).as_bytes());
            }
            if !silent {
                l.extend_from_slice(b"FLAGS ");
                super::render_flags(st.flags, &st.keywords, &mut l);
            }
            if condstore {
                if !silent {
                    l.push(b' ');
                }
                l.extend_from_slice(format!("MODSEQ ({})", st.modseq).as_bytes());
            }
            l.extend_from_slice(b")\r\n");
            self.out.extend_from_slice(&l);
        }
        self.sync(uid).await?;
        if r.modified.is_empty() {
            self.tagged(tag, "OK", "STORE completed");
        } else {
            let set = if uid {
                sequence::render(r.modified.iter().copied())
            } else {
                let mut seqs: Vec<u32> = r
                    .modified
                    .iter()
                    .filter_map(|u| targets.iter().find(|&&(_, x)| x == *u).map(|&(s, _)| s))
                    .collect();
                seqs.sort_unstable();
                sequence::render(seqs)
            };
            self.tagged(
                tag,
                "OK",
                &format!("[MODIFIED {set}] Conditional STORE failed"),
            );
        }
        Ok(())
    }

    /// Removes \Deleted messages (all, or those in `uid_set`); `silent` for
    /// CLOSE, which sends no EXPUNGE responses.
    async fn expunge(&mut self, uid_set: Option<SequenceSet>, silent: bool) -> io::Result<()> {
        let Some(sel) = self.selected() else {
            return Ok(());
        };
        if sel.read_only {
            return Ok(());
        }
        let id = sel.id;
        let uids = sel.uids.clone();
        let max_uid = uids.last().unwrap_or(0);
        let mut doomed = Vec::new();
        {
            let txn = self.store_read()?;
            let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
            for entry in messages
                .range((id, 0)..=(id, u32::MAX))
                .map_err(|e| db(e.into()))?
            {
                let (k, v) = entry.map_err(|e| db(e.into()))?;
                let uid = k.value().1;
                if mailbox_ops::flags_and_modseq(v.value())
                    .is_some_and(|(f, _)| f & flags::DELETED != 0)
                    && uids.binary_search(&uid).is_ok()
                    && uid_set.as_ref().is_none_or(|s| s.contains(uid, max_uid))
                {
                    doomed.push(uid);
                }
            }
        }
        if doomed.is_empty() {
            return Ok(());
        }
        let list = doomed.clone();
        let (removed, modseq) = self
            .write(move |t| crate::store::ops::expunge(t, id, &list))
            .await
            .map_err(db)?;
        self.server.notify_change();
        self.report_expunged(&removed, silent);
        self.own_change(modseq.saturating_sub(1), modseq);
        Ok(())
    }

    /// Removes UIDs from the session's view and tells the client.
    fn report_expunged(&mut self, removed: &[u32], silent: bool) {
        let qresync = self.qresync;
        let Some(sel) = self.selected() else {
            return;
        };
        let mut lines = Vec::new();
        let mut sorted = removed.to_vec();
        sorted.sort_unstable();
        for uid in sorted.iter().rev() {
            if let Ok(i) = sel.uids.binary_search(uid) {
                sel.uids.remove(i);
                if !qresync {
                    lines.push(format!("* {} EXPUNGE", i + 1));
                }
            }
        }
        if silent {
            return;
        }
        if qresync && !sorted.is_empty() {
            lines.push(format!("* VANISHED {}", sequence::render(sorted)));
        }
        for l in lines {
            self.line(&l);
        }
    }

    async fn copy(
        &mut self,
        tag: &str,
        uid: bool,
        set: &SequenceSet,
        raw: &[u8],
        move_: bool,
    ) -> io::Result<()> {
        let Some(name) = self.name_or_no(tag, raw) else {
            return Ok(());
        };
        if move_ && self.read_only() {
            self.tagged(tag, "NO", "[READ-ONLY] Mailbox is read-only");
            return Ok(());
        }
        let Some(dst) = self.lookup(&name)? else {
            self.tagged(tag, "NO", "[TRYCREATE] No such mailbox");
            return Ok(());
        };
        let targets = self.resolve(uid, set);
        let Some(src) = self.selected().map(|s| s.id) else {
            return Ok(());
        };
        if targets.is_empty() {
            self.done(
                tag,
                if move_ {
                    "MOVE completed"
                } else {
                    "COPY completed"
                },
                uid,
            )
            .await?;
            return Ok(());
        }
        let uids: Vec<u32> = targets.iter().map(|&(_, u)| u).collect();
        let dst_id = dst.id;
        let spam_settings = self.server.config().spam.clone();
        let r = self
            .write(move |t| {
                // Moving mail into or out of Junk teaches the spam filter,
                // in the same commit (src/spam/learn.rs).
                mailbox_ops::learn_from_transfer(t, &spam_settings, src, &uids, dst_id)?;
                let (validity, pairs) = mailbox_ops::copy(t, src, &uids, dst_id)?;
                let expunged = if move_ && src != dst_id {
                    let moved: Vec<u32> = pairs.iter().map(|&(s, _)| s).collect();
                    Some(crate::store::ops::expunge(t, src, &moved)?)
                } else {
                    None
                };
                Ok((validity, pairs, expunged))
            })
            .await;
        let (validity, pairs, expunged) = match r {
            Ok(v) => v,
            Err(StoreError::Invalid(e)) if e.starts_with("OVERQUOTA") => {
                self.tagged(tag, "NO", "[OVERQUOTA] Quota exceeded");
                return Ok(());
            }
            Err(e) => {
                self.tagged(tag, "NO", &e.to_string());
                return Ok(());
            }
        };
        self.server.notify_change();
        let code = if pairs.is_empty() {
            String::new()
        } else {
            format!(
                "[COPYUID {validity} {} {}] ",
                sequence::render(pairs.iter().map(|&(s, _)| s)),
                sequence::render(pairs.iter().map(|&(_, d)| d))
            )
        };
        if move_ {
            if !code.is_empty() {
                self.line(&format!("* OK {code}Moved"));
            }
            if let Some((removed, modseq)) = expunged {
                self.report_expunged(&removed, false);
                self.own_change(modseq.saturating_sub(1), modseq);
            }
            self.done(tag, "MOVE completed", true).await?;
        } else {
            self.done(tag, &format!("{code}COPY completed"), uid)
                .await?;
        }
        Ok(())
    }

    async fn search(
        &mut self,
        tag: &str,
        uid: bool,
        ret: Option<Vec<SearchReturn>>,
        criteria: Vec<SearchKey>,
    ) -> io::Result<()> {
        let key = SearchKey::And(criteria);
        let uses_modseq = mentions_modseq(&key);
        if uses_modseq {
            self.condstore = true;
        }
        let Some(sel) = self.selected() else {
            return Ok(());
        };
        let id = sel.id;
        let uids = sel.uids.clone();
        let max_uid = uids.last().unwrap_or(0);
        let mut hits: Vec<(u32, u32)> = Vec::new();
        let mut highest_modseq = 0u64;
        for (i, u) in uids.iter().enumerate() {
            if i % 128 == 127 {
                future::yield_now().await;
            }
            let row = {
                let txn = self.store_read()?;
                let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
                match messages.get((id, u)).map_err(|e| db(e.into()))? {
                    Some(r) => MessageRow::decode(r.value()).map_err(|e| db(e.into()))?,
                    None => continue,
                }
            };
            let mut m = Candidate {
                seq: i as u32 + 1,
                uid: u,
                max_seq: uids.len() as u32,
                max_uid,
                row: &row,
                blob: None,
                meta: None,
            };
            if self.matches(&key, &mut m)? {
                hits.push((m.seq, u));
                highest_modseq = highest_modseq.max(row.modseq);
            }
        }
        let numbers: Vec<u32> = hits.iter().map(|&(s, u)| if uid { u } else { s }).collect();
        let ret = match ret {
            Some(r) if r.is_empty() => Some(vec![SearchReturn::All]),
            Some(r) => Some(r),
            None if self.rev2 => Some(vec![SearchReturn::All]),
            None => None,
        };
        match ret {
            None => {
                let mut l = String::from("* SEARCH");
                for n in &numbers {
                    l.push(' ');
                    l.push_str(&n.to_string());
                }
                if uses_modseq && !numbers.is_empty() {
                    l.push_str(&format!(" (MODSEQ {highest_modseq})"));
                }
                self.line(&l);
            }
            Some(r) => {
                let mut l = format!("* ESEARCH (TAG \"{tag}\")");
                if uid {
                    l.push_str(" UID");
                }
                if !numbers.is_empty() {
                    let sorted_min = numbers.iter().min().copied().unwrap_or(0);
                    let sorted_max = numbers.iter().max().copied().unwrap_or(0);
                    if r.contains(&SearchReturn::Min) {
                        l.push_str(&format!(" MIN {sorted_min}"));
                    }
                    if r.contains(&SearchReturn::Max) {
                        l.push_str(&format!(" MAX {sorted_max}"));
                    }
                }
                if r.contains(&SearchReturn::Count) {
                    l.push_str(&format!(" COUNT {}", numbers.len()));
                }
                if r.contains(&SearchReturn::All) && !numbers.is_empty() {
                    let mut sorted = numbers.clone();
                    sorted.sort_unstable();
                    l.push_str(&format!(" ALL {}", sequence::render(sorted)));
                }
                if uses_modseq && !numbers.is_empty() {
                    l.push_str(&format!(" MODSEQ {highest_modseq}"));
                }
                self.line(&l);
            }
        }
        self.done(tag, "SEARCH completed", uid).await
    }

    fn load_meta(&self, m: &mut Candidate) -> io::Result<()> {
        if m.blob.is_some() {
            return Ok(());
        }
        let txn = self.store_read()?;
        let blobs = txn.open_table(BLOBS).map_err(|e| db(e.into()))?;
        if let Some(b) = blobs.get(&m.row.blob).map_err(|e| db(e.into()))? {
            let b = BlobRow::decode(b.value()).map_err(|e| db(e.into()))?;
            m.meta = Some(MessageMeta::decode(&b.meta).unwrap_or_else(|| fallback_meta(b.size)));
            m.blob = Some(b);
        }
        Ok(())
    }

    fn matches(&self, key: &SearchKey, m: &mut Candidate) -> io::Result<bool> {
        Ok(match key {
            SearchKey::All => true,
            SearchKey::None => false,
            SearchKey::Flag(bit, set) => (m.row.flags & bit != 0) == *set,
            SearchKey::Keyword(k, set) => {
                m.row.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) == *set
            }
            SearchKey::Larger(n) => m.row.size > *n,
            SearchKey::Smaller(n) => m.row.size < *n,
            SearchKey::Seq(s) => s.contains(m.seq, m.max_seq),
            SearchKey::Uid(s) => s.contains(m.uid, m.max_uid),
            SearchKey::ModSeq(n) => m.row.modseq >= *n,
            SearchKey::Date(cmp, day) => {
                date_matches(*cmp, m.row.internal_date.div_euclid(86400), *day)
            }
            SearchKey::SentDate(cmp, day) => {
                self.load_meta(m)?;
                let sent = m
                    .meta
                    .as_ref()
                    .and_then(|x| x.root.envelope.as_ref())
                    .and_then(|e| e.date.as_ref())
                    .and_then(|d| sent_day(d));
                sent.is_some_and(|d| date_matches(*cmp, d, *day))
            }
            SearchKey::Not(k) => !self.matches(k, m)?,
            SearchKey::Or(a, b) => self.matches(a, m)? || self.matches(b, m)?,
            SearchKey::And(keys) => {
                for k in keys {
                    if !self.matches(k, m)? {
                        return Ok(false);
                    }
                }
                true
            }
            SearchKey::Header(field, needle) => {
                self.load_meta(m)?;
                let (Some(blob), Some(meta)) = (&m.blob, &m.meta) else {
                    return Ok(false);
                };
                let end = meta.root.body_start.min(MAX_HEADER_READ).min(blob.size);
                let header = self.read_range(&m.row.blob, blob, 0, end)?;
                body::header_contains(&header, field, needle)
                    || (needle.is_empty() && body::header_contains(&header, field, b""))
            }
            SearchKey::Body(needle) | SearchKey::Text(needle) => {
                self.load_meta(m)?;
                let (Some(blob), Some(meta)) = (&m.blob, &m.meta) else {
                    return Ok(false);
                };
                let mut s = StreamSearch::new(needle);
                if matches!(key, SearchKey::Text(_)) {
                    let end = meta.root.body_start.min(blob.size);
                    self.pieces(&m.row.blob, blob, 0, end, |p| {
                        s.feed(p);
                        !s.found
                    })?;
                }
                if !s.found {
                    self.search_leaves(&meta.root, &m.row.blob, blob, &mut s)?;
                }
                s.found
            }
        })
    }

    /// Feeds the decoded body of every leaf part to `s`.
    fn search_leaves(
        &self,
        part: &Part,
        id: &BlobId,
        blob: &BlobRow,
        s: &mut StreamSearch,
    ) -> io::Result<()> {
        if s.found {
            return Ok(());
        }
        if !part.children.is_empty() {
            for c in &part.children {
                self.search_leaves(c, id, blob, s)?;
            }
            return Ok(());
        }
        let mut decoder = Decoder::for_encoding(&part.encoding).unwrap_or(Decoder::Identity);
        let mut buf = Vec::new();
        self.pieces(id, blob, part.body_start, part.end.min(blob.size), |p| {
            decoder.feed(p, &mut buf);
            s.feed(&buf);
            buf.clear();
            !s.found
        })?;
        decoder.finish(&mut buf);
        s.feed(&buf);
        Ok(())
    }

    async fn append(
        &mut self,
        head: Result<AppendHead, (String, parse::Bad)>,
        n: u64,
        sync: bool,
    ) -> io::Result<()> {
        let refuse = |s: &mut Session, tag: &str, status: &str, text: &str| {
            if status == "BAD" {
                s.bad(tag, text);
            } else {
                s.tagged(tag, status, text);
            }
        };
        let head = match head {
            Ok(h) => h,
            Err((tag, e)) => {
                refuse(self, &tag, "BAD", &e.0);
                return self.skip_literal(n, sync).await;
            }
        };
        let tag = head.tag.clone();
        if matches!(self.state, State::NotAuthenticated) {
            refuse(self, &tag, "BAD", "Log in first");
            return self.skip_literal(n, sync).await;
        }
        let name = match self.mailbox_name(&head.mailbox) {
            Ok(n) => n,
            Err(e) => {
                refuse(self, &tag, "NO", &e);
                return self.skip_literal(n, sync).await;
            }
        };
        let (bits, keywords) = match super::parse_flags(&head.flags) {
            Ok(f) => f,
            Err(e) => {
                refuse(self, &tag, "BAD", &e);
                return self.skip_literal(n, sync).await;
            }
        };
        if self.lookup(&name)?.is_none() {
            refuse(self, &tag, "NO", "[TRYCREATE] No such mailbox");
            return self.skip_literal(n, sync).await;
        }
        // RFC 3502 MULTIAPPEND: messages follow one another on the command
        // line; they are appended all in one transaction or none. Message
        // bodies past the memory budget go to temp files.
        let limits = &self.config.limits;
        let (max_size, mut memory) = (limits.max_message_size, limits.spool_memory);
        let mut messages = Vec::new();
        let (mut flags, mut date, mut n, mut sync) = ((bits, keywords), head.date, n, sync);
        loop {
            if n > max_size {
                refuse(self, &tag, "NO", "[TOOBIG] Message too large");
                return self.skip_literal(n, sync).await;
            }
            if messages.len() >= MAX_MULTIAPPEND {
                refuse(self, &tag, "NO", "[LIMIT] Too many messages in one APPEND");
                return self.skip_literal(n, sync).await;
            }
            if sync {
                self.line("+ Ready for literal data");
                self.flush().await?;
            }
            let budget = memory.min(usize::try_from(n).unwrap_or(usize::MAX));
            let mut spool =
                crate::smtp::spool::Spool::new(max_size, memory, Some(self.config.spool_dir()));
            memory -= budget;
            self.read_literal(n, |b| spool.push(b)).await?;
            messages.push((spool, flags, date));
            let line = match self.next_line(self.config.limits.data_timeout).await? {
                LineEvent::Line(l) => l,
                LineEvent::TooLong => {
                    self.bad(&tag, "Expected the end of APPEND after the message");
                    return Ok(());
                }
                _ => return Err(io::ErrorKind::UnexpectedEof.into()),
            };
            let (next_flags, next_date) = match parse::append_next(&line) {
                None => break,
                Some(Ok(next)) => next,
                Some(Err(e)) => {
                    self.bad(&tag, &e.0);
                    return match parse::trailing_literal(&line) {
                        Some((n, sync)) => self.skip_literal(n, sync).await,
                        None => Ok(()),
                    };
                }
            };
            let Some((next_n, next_sync)) = parse::trailing_literal(&line) else {
                self.bad(&tag, "Expected the next message as a literal");
                return Ok(());
            };
            (n, sync) = (next_n, next_sync);
            flags = match super::parse_flags(&next_flags) {
                Ok(f) => f,
                Err(e) => {
                    refuse(self, &tag, "BAD", &e);
                    return self.skip_literal(n, sync).await;
                }
            };
            date = next_date;
        }
        let user = self.user().to_string();
        let mut deliveries = Vec::with_capacity(messages.len());
        for (spool, (bits, keywords), date) in messages {
            let body = match spool.finish() {
                Ok(b) => b,
                Err(e) => {
                    log::error!("imap append: spooling: {e}");
                    self.tagged(&tag, "NO", "[SERVERBUG] Cannot store the message now");
                    return Ok(());
                }
            };
            let spooled = body.store(Vec::new());
            let delivery = crate::store::ops::Delivery {
                queue: Vec::new(),
                blob: spooled.blob,
                content: spooled.content,
                size: spooled.size,
                meta: spooled.meta,
                internal_date: date.unwrap_or_else(|| chrono::Utc::now().timestamp()),
                targets: mailbox_ops::append_target(&user, &name, bits),
            };
            deliveries.push((delivery, keywords));
        }
        let r = self
            .write(move |t| {
                let mut uids = Vec::with_capacity(deliveries.len());
                let mut validity = 0;
                for (delivery, keywords) in &deliveries {
                    let (v, uid) = mailbox_ops::append(t, &user, &name, delivery, keywords)?;
                    validity = v;
                    uids.push(uid);
                }
                Ok((validity, uids))
            })
            .await;
        match r {
            Ok((validity, uids)) => {
                self.server.notify_change();
                self.sync(true).await?;
                // RFC 4315 3: a uid-set for a MULTIAPPEND.
                let uids = sequence::render(uids);
                self.tagged(
                    &tag,
                    "OK",
                    &format!("[APPENDUID {validity} {uids}] APPEND completed"),
                );
            }
            Err(StoreError::NotFound(_)) => self.tagged(&tag, "NO", "[TRYCREATE] No such mailbox"),
            Err(StoreError::Invalid(e)) if e.starts_with("OVERQUOTA") => {
                self.tagged(&tag, "NO", "[OVERQUOTA] Quota exceeded")
            }
            Err(e) => self.tagged(&tag, "NO", &e.to_string()),
        }
        Ok(())
    }

    /// After refusing a command with a literal: a synchronizing literal is
    /// never sent; a non-synchronizing one is read past without keeping it.
    async fn skip_literal(&mut self, n: u64, sync: bool) -> io::Result<()> {
        if sync {
            return Ok(());
        }
        self.read_literal(n, |_| {}).await?;
        match self.next_line(self.config.limits.data_timeout).await? {
            LineEvent::Line(_) | LineEvent::TooLong => Ok(()),
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// A message under SEARCH, its content loaded only if a key needs it.
struct Candidate<'a> {
    seq: u32,
    uid: u32,
    max_seq: u32,
    max_uid: u32,
    row: &'a MessageRow,
    blob: Option<BlobRow>,
    meta: Option<MessageMeta>,
}

fn mentions_modseq(k: &SearchKey) -> bool {
    match k {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(k) => mentions_modseq(k),
        SearchKey::Or(a, b) => mentions_modseq(a) || mentions_modseq(b),
        SearchKey::And(v) => v.iter().any(mentions_modseq),
        _ => false,
    }
}

fn date_matches(cmp: DateCmp, day: i64, wanted: i64) -> bool {
    match cmp {
        DateCmp::Before => day < wanted,
        DateCmp::On => day == wanted,
        DateCmp::Since => day >= wanted,
    }
}

/// The day of a Date: header, in its own time zone (RFC 9051 6.4.4:
/// "disregarding time and timezone").
fn sent_day(raw: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(raw).ok()?;
    let t = chrono::DateTime::parse_from_rfc2822(s.trim()).ok()?;
    let d = t.date_naive();
    Some(
        d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?)
            .num_days(),
    )
}

/// Messages in one MULTIAPPEND: bounded like everything else.
const MAX_MULTIAPPEND: usize = 1000;

/// What one FETCH response is rendered from.
#[derive(Clone, Copy)]
struct Fetched<'a> {
    uid: u32,
    row: &'a MessageRow,
    blob: Option<&'a BlobRow>,
    meta: Option<&'a MessageMeta>,
    envelope: Option<&'a crate::message::Envelope>,
}

/// Structure for a message whose stored metadata cannot be read: one
/// opaque text part.
fn fallback_meta(size: u64) -> MessageMeta {
    let mut root = Part::new(0);
    root.end = size;
    MessageMeta { size, root }
}

fn canonical_inbox(name: &str) -> String {
    if let Some(head) = name.get(..5)
        && head.eq_ignore_ascii_case("INBOX")
    {
        let rest = &name[5..];
        if rest.is_empty() || rest.starts_with(DELIMITER) {
            return format!("INBOX{rest}");
        }
    }
    name.to_string()
}

fn special_use_of(flag: &str) -> Option<SpecialUse> {
    Some(match flag.to_ascii_lowercase().as_str() {
        "\\sent" => SpecialUse::Sent,
        "\\drafts" => SpecialUse::Drafts,
        "\\junk" => SpecialUse::Junk,
        "\\trash" => SpecialUse::Trash,
        "\\archive" => SpecialUse::Archive,
        "\\all" => SpecialUse::All,
        "\\flagged" => SpecialUse::Flagged,
        _ => return None,
    })
}
