//! One POP3 session: AUTHORIZATION, TRANSACTION and UPDATE states
//! (RFC 1939 3), over a plain (STLS-upgradable) or TLS stream.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;

use super::{Command, DotStuffer, ParseError, parse};
use crate::auth::{plaintext_allowed, sasl};
use crate::config::Config;
use crate::server::Server;
use crate::server::conn::{Incoming, Input, Line, Output, Stream, with_timeout};
use crate::store::writer::WriteOp;
use crate::store::{BlobRow, MessageRow, StoreError};

/// RFC 2449 4: command lines are at most 255 octets; we allow the
/// configured line length, at least that.
const INPUT_CAPACITY: usize = 1024;

/// The maildrop as of login (RFC 1939 8: later arrivals are not shown).
struct Maildrop {
    user: String,
    mailbox: u64,
    uidvalidity: u32,
    /// UID and size of each message, by message number - 1.
    messages: Vec<(u32, u32)>,
    deleted: Vec<bool>,
}

impl Maildrop {
    fn get(&self, n: u32) -> Result<(u32, u32), &'static str> {
        let i = (n as usize).checked_sub(1).ok_or("-ERR no such message")?;
        match (self.messages.get(i), self.deleted.get(i)) {
            (Some(m), Some(false)) => Ok(*m),
            (Some(_), Some(true)) => Err("-ERR message already deleted"),
            _ => Err("-ERR no such message"),
        }
    }
    fn live(&self) -> impl Iterator<Item = (usize, &(u32, u32))> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }
    fn uidl(&self, uid: u32) -> String {
        // Unique and stable as long as the mailbox's UIDVALIDITY holds.
        format!("{:08x}{:08x}", self.uidvalidity, uid)
    }
}

enum State {
    Authorization { user: Option<String> },
    Transaction(Maildrop),
}

struct Session {
    server: Rc<Server>,
    config: Rc<Config>,
    peer: SocketAddr,
    stream: Stream,
    input: Input,
    out: Output,
    state: State,
    errors: usize,
}

/// Releases the maildrop lock when the session ends, however it ends.
struct MaildropLock {
    server: Rc<Server>,
    user: String,
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        self.server.pop3_unlock(&self.user);
    }
}

pub async fn run(server: Rc<Server>, stream: Stream, peer: SocketAddr) {
    let config = server.config();
    let mut s = Session {
        server,
        input: Input::new(INPUT_CAPACITY.max(config.limits.max_line_length)),
        config,
        peer,
        stream,
        out: Output::new(),
        state: State::Authorization { user: None },
        errors: 0,
    };
    let mut lock = None;
    if let Err(e) = s.run(&mut lock).await {
        log::debug!("pop3 {peer}: {e}");
    }
    let _ = s
        .out
        .flush(&mut s.stream, s.config.limits.command_timeout)
        .await;
    let _ = s.stream.close().await;
    drop(lock);
}

impl Session {
    fn reply(&mut self, line: &str) {
        self.out.push(line.as_bytes());
        self.out.push(b"\r\n");
    }

    fn error(&mut self, line: &str) {
        self.errors += 1;
        self.reply(line);
    }

    fn tls_or_allowed(&self) -> bool {
        plaintext_allowed(&self.config, &self.peer, self.stream.is_tls())
    }

    async fn run(&mut self, lock: &mut Option<MaildropLock>) -> io::Result<()> {
        if self.server.is_shutting_down() {
            self.reply("-ERR [SYS/TEMP] Server shutting down");
            return Ok(());
        }
        self.reply("+OK pimail POP3 server ready");
        loop {
            if self.input.buffered().is_empty() {
                self.out
                    .flush(&mut self.stream, self.config.limits.command_timeout)
                    .await?;
            }
            if self.errors >= self.config.limits.max_errors {
                self.reply("-ERR Too many errors; closing");
                return Ok(());
            }
            let timeout = self.config.pop3.timeout;
            let max = self.config.limits.max_line_length;
            let server = self.server.clone();
            let line = self
                .input
                .next_command(&mut self.stream, max, timeout, &server)
                .await?;
            let range = match line {
                // RFC 1939 3: no UPDATE on anything but QUIT, so deletions
                // are not applied.
                Incoming::Shutdown => {
                    self.reply("-ERR [SYS/TEMP] Server shutting down");
                    return Ok(());
                }
                Incoming::Timeout => {
                    self.reply("-ERR Autologout: idle for too long");
                    return Ok(());
                }
                Incoming::Eof => return Ok(()),
                Incoming::TooLong => {
                    self.error("-ERR Line too long");
                    continue;
                }
                Incoming::Line(r) => r,
            };
            let command = match parse(self.input.get(range)) {
                Ok(c) => c,
                Err(ParseError::Unknown) => {
                    self.error("-ERR Unknown command");
                    continue;
                }
                Err(ParseError::Syntax) => {
                    self.error("-ERR Syntax error in arguments");
                    continue;
                }
            };
            if self.handle(command, lock).await? {
                return Ok(());
            }
        }
    }

    /// Returns true when the session is over.
    async fn handle(
        &mut self,
        command: Command,
        lock: &mut Option<MaildropLock>,
    ) -> io::Result<bool> {
        match command {
            Command::Capa => self.capa(),
            Command::Quit => return self.quit().await.map(|_| true),
            Command::Noop if matches!(self.state, State::Transaction(_)) => self.reply("+OK"),
            Command::Stls => self.stls().await?,
            Command::User(name) => {
                if !matches!(self.state, State::Authorization { .. }) {
                    self.error("-ERR Already authenticated");
                } else if !self.tls_or_allowed() {
                    self.error(
                        "-ERR [AUTH] Plaintext authentication is not allowed without TLS; use STLS",
                    );
                } else {
                    self.state = State::Authorization { user: Some(name) };
                    self.reply("+OK Send your password");
                }
            }
            Command::Pass(password) => {
                let user = match &self.state {
                    State::Authorization { user: Some(u) } => u.clone(),
                    _ => {
                        self.error("-ERR Send USER first");
                        return Ok(false);
                    }
                };
                self.state = State::Authorization { user: None };
                self.login(&user, &password, lock).await;
            }
            Command::Auth(mechanism, initial) => {
                if !matches!(self.state, State::Authorization { .. }) {
                    self.error("-ERR Already authenticated");
                } else if !self.tls_or_allowed() {
                    self.error(
                        "-ERR [AUTH] Plaintext authentication is not allowed without TLS; use STLS",
                    );
                } else {
                    self.authenticate(&mechanism, initial, lock).await?;
                }
            }
            other => match &self.state {
                State::Authorization { .. } => self.error("-ERR Not allowed before authentication"),
                State::Transaction(_) => self.transaction(other).await?,
            },
        }
        Ok(false)
    }

    fn capa(&mut self) {
        let mut lines = vec![
            "+OK Capability list follows".to_string(),
            "TOP".into(),
            "UIDL".into(),
            "RESP-CODES".into(),
            "AUTH-RESP-CODE".into(),
            "PIPELINING".into(),
        ];
        let authorization = matches!(self.state, State::Authorization { .. });
        if authorization && self.tls_or_allowed() {
            lines.push("USER".into());
            lines.push("SASL PLAIN LOGIN".into());
        }
        if authorization && !self.stream.is_tls() && self.server.tls().is_some() {
            lines.push("STLS".into());
        }
        // We never delete mail on our own (RFC 2449 6.7).
        lines.push("EXPIRE NEVER".into());
        lines.push(format!(
            "LOGIN-DELAY {}",
            self.config.pop3.login_delay.as_secs()
        ));
        lines.push("IMPLEMENTATION pimail".into());
        lines.push(".".into());
        for l in lines {
            self.reply(&l);
        }
    }

    async fn stls(&mut self) -> io::Result<()> {
        if !matches!(self.state, State::Authorization { .. }) || self.stream.is_tls() {
            self.error("-ERR STLS not allowed now");
            return Ok(());
        }
        let Some(acceptor) = self.server.tls() else {
            self.error("-ERR TLS not available");
            return Ok(());
        };
        self.reply("+OK Begin TLS negotiation");
        self.out
            .flush(&mut self.stream, self.config.limits.command_timeout)
            .await?;
        // RFC 2595 4: nothing sent before the handshake is acted upon.
        self.input.clear();
        self.state = State::Authorization { user: None };
        self.stream
            .start_tls(&acceptor, self.config.limits.tls_handshake_timeout)
            .await
    }

    async fn authenticate(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
        lock: &mut Option<MaildropLock>,
    ) -> io::Result<()> {
        let credentials = match mechanism {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => r,
                    None => match self.sasl_response("").await? {
                        Some(r) => r,
                        None => return Ok(()),
                    },
                };
                if response == "=" {
                    None
                } else {
                    sasl::decode_plain(&response).map(|c| (c.authcid, c.password))
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(r) => sasl::decode_line(&r),
                    None => match self.sasl_response(&sasl::encode("Username:")).await? {
                        Some(r) => sasl::decode_line(&r),
                        None => return Ok(()),
                    },
                };
                match user {
                    None => None,
                    Some(user) => match self.sasl_response(&sasl::encode("Password:")).await? {
                        Some(r) => sasl::decode_line(&r).map(|p| (user, p)),
                        None => return Ok(()),
                    },
                }
            }
            _ => {
                self.error("-ERR Unsupported SASL mechanism");
                return Ok(());
            }
        };
        match credentials {
            Some((user, password)) => self.login(&user, &password, lock).await,
            None => self.error("-ERR [AUTH] Malformed SASL response"),
        }
        Ok(())
    }

    /// Sends a SASL challenge and reads the response; `None` if the client
    /// cancelled with "*" (RFC 5034 4).
    async fn sasl_response(&mut self, challenge: &str) -> io::Result<Option<String>> {
        self.reply(&format!("+ {challenge}"));
        self.out
            .flush(&mut self.stream, self.config.limits.command_timeout)
            .await?;
        let max = self.config.limits.max_line_length;
        match with_timeout(
            self.config.pop3.timeout,
            self.input.read_line(&mut self.stream, max),
        )
        .await?
        {
            Line::Complete(r) => {
                let line = String::from_utf8_lossy(self.input.get(r)).into_owned();
                if line == "*" {
                    self.error("-ERR Authentication cancelled");
                    return Ok(None);
                }
                Ok(Some(line))
            }
            Line::TooLong => {
                self.error("-ERR Line too long");
                Ok(None)
            }
            Line::Eof => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    async fn login(&mut self, user: &str, password: &str, lock: &mut Option<MaildropLock>) {
        if self.server.auth.blocked(self.peer.ip(), &self.config) {
            self.error("-ERR [AUTH] Too many failed logins from your address; try later");
            return;
        }
        let verified = match self
            .server
            .auth
            .verify(&self.server.store, user, password)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                log::error!("pop3 {}: checking {user}: {e}", self.peer);
                self.reply("-ERR [SYS/TEMP] Temporary failure; try again later");
                return;
            }
        };
        let Some(user) = verified else {
            log::info!("pop3 {}: failed login for {user}", self.peer);
            self.server.auth.note_failure(self.peer.ip());
            // Slow down guessing (RFC 3206 [AUTH] for the reply).
            async_io::Timer::after(self.config.auth.failure_delay).await;
            self.error("-ERR [AUTH] Invalid user name or password");
            return;
        };
        if let Some(wait) = self
            .server
            .pop3_login_too_soon(&user, self.config.pop3.login_delay)
        {
            self.reply(&format!(
                "-ERR [LOGIN-DELAY] Wait {} seconds between logins",
                wait.as_secs().max(1)
            ));
            return;
        }
        if !self.server.pop3_lock(&user) {
            // RFC 2449 8.1.2.
            self.reply("-ERR [IN-USE] Maildrop is locked by another POP3 session");
            return;
        }
        *lock = Some(MaildropLock {
            server: self.server.clone(),
            user: user.clone(),
        });
        match self.load_maildrop(&user) {
            Ok(drop) => {
                let total: u64 = drop.messages.iter().map(|m| m.1 as u64).sum();
                log::info!(
                    "pop3 {}: {user} logged in ({} messages)",
                    self.peer,
                    drop.messages.len()
                );
                self.reply(&format!(
                    "+OK Maildrop has {} messages ({total} octets)",
                    drop.messages.len()
                ));
                self.state = State::Transaction(drop);
            }
            Err(e) => {
                log::error!("pop3 {}: loading the maildrop of {user}: {e}", self.peer);
                *lock = None;
                self.reply("-ERR [SYS/TEMP] Cannot open the maildrop");
            }
        }
    }

    fn load_maildrop(&self, user: &str) -> Result<Maildrop, StoreError> {
        let mailbox = self
            .server
            .store
            .mailbox(user, "INBOX")?
            .ok_or_else(|| StoreError::NotFound(format!("INBOX of {user}")))?;
        let messages: Vec<(u32, u32)> = self
            .server
            .store
            .messages(mailbox.id)?
            .into_iter()
            .map(|(uid, m)| (uid, m.size.min(u32::MAX as u64) as u32))
            .collect();
        Ok(Maildrop {
            user: user.to_string(),
            mailbox: mailbox.id,
            uidvalidity: mailbox.uidvalidity,
            deleted: vec![false; messages.len()],
            messages,
        })
    }

    async fn transaction(&mut self, command: Command) -> io::Result<()> {
        let State::Transaction(drop) = &mut self.state else {
            return Ok(());
        };
        match command {
            Command::Stat => {
                let (n, size) = drop
                    .live()
                    .fold((0u64, 0u64), |(n, s), (_, m)| (n + 1, s + m.1 as u64));
                self.reply(&format!("+OK {n} {size}"));
            }
            Command::List(None) | Command::Uidl(None) => {
                let uidl = matches!(command, Command::Uidl(None));
                let mut lines = vec!["+OK".to_string()];
                for (i, (uid, size)) in drop.live() {
                    lines.push(if uidl {
                        format!("{} {}", i + 1, drop.uidl(*uid))
                    } else {
                        format!("{} {size}", i + 1)
                    });
                }
                lines.push(".".into());
                for l in lines {
                    self.reply(&l);
                }
            }
            Command::List(Some(n)) => match drop.get(n) {
                Ok((_, size)) => self.reply(&format!("+OK {n} {size}")),
                Err(e) => self.error(e),
            },
            Command::Uidl(Some(n)) => match drop.get(n) {
                Ok((uid, _)) => {
                    let line = format!("+OK {n} {}", drop.uidl(uid));
                    self.reply(&line);
                }
                Err(e) => self.error(e),
            },
            Command::Dele(n) => match drop.get(n) {
                Ok(_) => {
                    drop.deleted[n as usize - 1] = true;
                    self.reply(&format!("+OK Message {n} deleted"));
                }
                Err(e) => self.error(e),
            },
            Command::Rset => {
                drop.deleted.iter_mut().for_each(|d| *d = false);
                let n = drop.messages.len();
                self.reply(&format!("+OK Maildrop has {n} messages"));
            }
            Command::Noop => self.reply("+OK"),
            Command::Retr(n) => self.send_message(n, None).await?,
            Command::Top(n, lines) => self.send_message(n, Some(lines)).await?,
            _ => self.error("-ERR Not allowed in the TRANSACTION state"),
        }
        Ok(())
    }

    /// RETR (all) or TOP (the header, the blank line and `top` body lines),
    /// streamed chunk by chunk with byte stuffing.
    async fn send_message(&mut self, n: u32, top: Option<u32>) -> io::Result<()> {
        let State::Transaction(drop) = &self.state else {
            return Ok(());
        };
        let (uid, size) = match drop.get(n) {
            Ok(m) => m,
            Err(e) => {
                self.error(e);
                return Ok(());
            }
        };
        let blob = match self.blob_of(drop.mailbox, uid) {
            Ok(Some(b)) => b,
            Ok(None) => {
                self.error("-ERR Message was removed by another session");
                return Ok(());
            }
            Err(e) => {
                log::error!("pop3 {}: reading message {uid}: {e}", self.peer);
                self.reply("-ERR [SYS/TEMP] Cannot read the message");
                return Ok(());
            }
        };
        // For TOP: where the body starts, from the structure computed at
        // delivery.
        let body_start = match top {
            Some(_) => crate::message::MessageMeta::decode(&blob.1.meta)
                .map_or(blob.1.size, |m| m.root.body_start),
            None => blob.1.size,
        };
        self.reply(&format!("+OK {size} octets"));
        self.out
            .flush(&mut self.stream, self.config.limits.command_timeout)
            .await?;
        let mut stuffer = DotStuffer::default();
        let mut pos: u64 = 0;
        let mut body_lines = 0u32;
        let mut piece = Vec::with_capacity(crate::store::CHUNK_SIZE + 1024);
        for i in 0..blob.1.chunks {
            let chunk = match self.server.store.chunk(&blob.0, i) {
                Ok(Some(c)) => c,
                // Expunged meanwhile: end the response cleanly.
                Ok(None) | Err(_) => break,
            };
            let mut end = chunk.len();
            let mut stop = false;
            if let Some(limit) = top {
                let body_at = body_start.saturating_sub(pos);
                if body_at < chunk.len() as u64 {
                    // Past the header: send up to `limit` body lines.
                    let mut at = body_at as usize;
                    while body_lines < limit && at < chunk.len() {
                        match chunk[at..].iter().position(|&b| b == b'\n') {
                            Some(p) => {
                                at += p + 1;
                                body_lines += 1;
                            }
                            None => at = chunk.len(),
                        }
                    }
                    end = at;
                    stop = body_lines >= limit;
                }
            }
            piece.clear();
            stuffer.stuff(&chunk[..end], &mut piece);
            with_timeout(
                self.config.limits.command_timeout,
                self.stream.write_all(&piece),
            )
            .await?;
            pos += chunk.len() as u64;
            if stop {
                break;
            }
        }
        piece.clear();
        stuffer.finish(&mut piece);
        self.out.push(&piece);
        Ok(())
    }

    fn blob_of(&self, mailbox: u64, uid: u32) -> Result<Option<([u8; 32], BlobRow)>, StoreError> {
        let Some(row): Option<MessageRow> = self.server.store.message(mailbox, uid)? else {
            return Ok(None);
        };
        Ok(self.server.store.blob(&row.blob)?.map(|b| (row.blob, b)))
    }

    /// QUIT: in TRANSACTION state, enter UPDATE and remove the messages
    /// marked deleted (RFC 1939 6); IMAP sessions then see them expunged.
    async fn quit(&mut self) -> io::Result<()> {
        let State::Transaction(drop) = &self.state else {
            self.reply("+OK pimail POP3 server signing off");
            return Ok(());
        };
        let uids: Vec<u32> = drop
            .messages
            .iter()
            .zip(&drop.deleted)
            .filter(|(_, d)| **d)
            .map(|(m, _)| m.0)
            .collect();
        let left = drop.messages.len() - uids.len();
        if uids.is_empty() {
            self.reply(&format!("+OK pimail signing off ({left} messages left)"));
            return Ok(());
        }
        let mailbox = drop.mailbox;
        let user = drop.user.clone();
        let op = WriteOp::Admin(Box::new(move |txn| {
            let (removed, _) = crate::store::ops::expunge(txn, mailbox, &uids)?;
            Ok(removed.len().to_string())
        }));
        match self.server.writer.submit(op).await {
            Ok(_) => {
                self.server.notify_change();
                log::info!("pop3 {}: {user} quit, deleted messages removed", self.peer);
                self.reply(&format!("+OK pimail signing off ({left} messages left)"));
            }
            Err(e) => {
                log::error!("pop3 {}: removing messages of {user}: {e}", self.peer);
                // RFC 1939 6: the reply says the deletions failed.
                self.reply("-ERR [SYS/TEMP] Some deleted messages were not removed");
            }
        }
        Ok(())
    }
}

/// Waiting time left before `user` may log in again, if any.
pub(crate) fn too_soon(last: Option<Instant>, delay: Duration) -> Option<Duration> {
    let elapsed = last?.elapsed();
    (elapsed < delay).then(|| delay - elapsed)
}
