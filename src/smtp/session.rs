//! One inbound SMTP session on the MX port (RFC 5321), with PIPELINING
//! (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531),
//! ENHANCEDSTATUSCODES (RFC 2034), STARTTLS (RFC 3207) and CHUNKING
//! (RFC 3030).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use super::command::{self, Address, Command, Recipient};
use super::data::{DotDecoder, LineEndingCheck};
use super::inspect::{Inbound, Verdict, inspect};
use super::spool::Spool;
use crate::config::Config;
use crate::server::Server;
use crate::server::conn::{Incoming, Input, Line, Output, Stream, with_timeout};
use crate::store::ops::{self, Delivery, DeliveryTarget, Resolution};
use crate::store::queue::Outbound;

/// Input buffer per session: the longest command line fits, and DATA
/// streams through it in pieces of this size.
const INPUT_CAPACITY: usize = 4096;

struct Transaction {
    /// The reverse path as it goes into Return-Path ("" for `<>`).
    from: String,
    params: command::MailParams,
    /// Accepted recipients: the address as given, and the local accounts
    /// it resolved to.
    rcpts: Vec<(String, Vec<String>)>,
    /// Accepted recipients in other domains (submission only), as given.
    remote: Vec<String>,
    /// BDAT content received so far, and whether a chunk failed.
    bdat: Option<(Spool, LineEndingCheck)>,
    bdat_failed: bool,
}

struct Session {
    server: Rc<Server>,
    config: Rc<Config>,
    peer: SocketAddr,
    stream: Stream,
    input: Input,
    out: Output,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    commands: usize,
    errors: usize,
    id: String,
    /// On the submission ports (587, 465): AUTH is offered and required,
    /// and authenticated users may send to any domain.
    submission: bool,
    /// The authenticated account.
    user: Option<String>,
}

/// How a command leaves the session.
enum Next {
    Continue,
    Close,
}

pub async fn run(server: Rc<Server>, stream: Stream, peer: SocketAddr, submission: bool) {
    let config = server.config();
    let mut s = Session {
        server,
        input: Input::new(INPUT_CAPACITY.max(config.limits.max_line_length)),
        config,
        peer,
        stream,
        out: Output::new(),
        helo: None,
        esmtp: false,
        tx: None,
        commands: 0,
        errors: 0,
        id: session_id(),
        submission,
        user: None,
    };
    log::debug!("smtp {} connect from {peer}", s.id);
    if let Err(e) = s.run().await {
        log::debug!("smtp {} {peer}: {e}", s.id);
    }
    let _ = s
        .out
        .flush(&mut s.stream, s.config.limits.command_timeout)
        .await;
    let _ = futures_lite::AsyncWriteExt::close(&mut s.stream).await;
}

fn session_id() -> String {
    use std::cell::Cell;
    thread_local!(static COUNTER: Cell<u32> = const { Cell::new(0) });
    let n = COUNTER.with(|c| {
        c.set(c.get().wrapping_add(1));
        c.get()
    });
    let micros = chrono::Utc::now().timestamp_micros() as u64;
    format!("{:x}{:04x}", micros & 0xffff_ffff_ffff, n & 0xffff)
}

impl Session {
    fn reply(&mut self, text: &str) {
        self.out.push(text.as_bytes());
        self.out.push(b"\r\n");
    }

    fn error(&mut self, text: &str) {
        self.errors += 1;
        self.reply(text);
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.out
            .flush(&mut self.stream, self.config.limits.command_timeout)
            .await
    }

    async fn run(&mut self) -> io::Result<()> {
        if self.server.is_shutting_down() {
            self.reply("421 4.3.2 Service shutting down");
            return Ok(());
        }
        let greeting = format!("220 {} ESMTP pimail", self.config.hostname);
        self.reply(&greeting);
        loop {
            // Shutdown waits for a transaction in progress, not for an idle
            // session, even one with commands queued.
            if self.tx.is_none() && self.server.is_shutting_down() {
                self.reply("421 4.3.2 Service shutting down");
                return Ok(());
            }
            // Replies wait while the client has more commands pipelined.
            if self.input.buffered().is_empty() {
                self.flush().await?;
            }
            let max = self.config.limits.max_line_length;
            let timeout = self.config.limits.command_timeout;
            let server = self.server.clone();
            let line = self
                .input
                .next_command(&mut self.stream, max, timeout, &server)
                .await?;
            let line = match line {
                Incoming::Shutdown => {
                    self.reply("421 4.3.2 Service shutting down");
                    return Ok(());
                }
                Incoming::Timeout => {
                    // RFC 5321 4.5.3.2.7: the server may close an idle session.
                    self.reply("421 4.4.2 Timeout waiting for a command; closing");
                    return Ok(());
                }
                Incoming::Eof => return Ok(()),
                Incoming::TooLong => {
                    // RFC 5321 4.5.3.1.4 and 4.2.2.
                    self.error("500 5.5.2 Line too long");
                    if self.too_many_errors() {
                        return Ok(());
                    }
                    continue;
                }
                Incoming::Line(range) => range,
            };
            self.commands += 1;
            if self.commands > self.config.limits.max_commands {
                self.reply("421 4.7.0 Too many commands in one session; closing");
                return Ok(());
            }
            let parsed = command::parse(self.input.get(line));
            let next = match parsed {
                Ok(cmd) => self.handle(cmd).await?,
                Err(reject) => {
                    self.error(&reject.to_string());
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
            self.reply("421 4.7.0 Too many errors; closing");
            return true;
        }
        false
    }

    async fn handle(&mut self, cmd: Command) -> io::Result<Next> {
        match cmd {
            Command::Ehlo(domain) => self.ehlo(domain, true),
            Command::Helo(domain) => self.ehlo(domain, false),
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(rcpt) => self.rcpt(rcpt)?,
            Command::Data => return self.data().await,
            Command::Bdat { size, last } => return self.bdat(size, last).await,
            Command::Rset => {
                self.tx = None;
                self.reply("250 2.0.0 Ok");
            }
            Command::Noop => self.reply("250 2.0.0 Ok"),
            Command::Quit => {
                self.reply("221 2.0.0 Bye");
                return Ok(Next::Close);
            }
            // RFC 5321 3.5.3: 252 when we will not verify by policy.
            Command::Vrfy => self.reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"),
            Command::Expn => self.reply("502 5.5.1 EXPN is not available"),
            Command::Help => self.reply("214 2.0.0 See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS"),
            Command::StartTls => return self.starttls().await,
            Command::Auth(args) => return self.auth(&args).await,
        }
        Ok(Next::Continue)
    }

    fn ehlo(&mut self, domain: String, esmtp: bool) {
        // RFC 5321 4.1.4: EHLO in a session resets any transaction.
        self.tx = None;
        self.helo = Some(sanitize(&domain));
        self.esmtp = esmtp;
        let host = &self.config.hostname;
        if !esmtp {
            let r = format!("250 {host}");
            self.reply(&r);
            return;
        }
        let mut lines = vec![
            format!("{host} Hello {}", self.helo.as_deref().unwrap_or("")),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.config.limits.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
        ];
        if !self.stream.is_tls() && self.server.tls().is_some() {
            lines.push("STARTTLS".to_string());
        }
        // RFC 4954 4 and RFC 8314: AUTH only where a password is safe.
        if self.submission
            && self.user.is_none()
            && crate::auth::plaintext_allowed(&self.config, &self.peer, self.stream.is_tls())
        {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.push("HELP".to_string());
        let last = lines.len() - 1;
        for (i, l) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.out.push(format!("250{sep}{l}\r\n").as_bytes());
        }
    }

    fn mail(&mut self, from: Option<Address>, params: command::MailParams) {
        if self.helo.is_none() {
            return self.error("503 5.5.1 Send EHLO or HELO first");
        }
        if self.tx.is_some() {
            return self.error("503 5.5.1 Nested MAIL command");
        }
        if self.submission {
            let Some(user) = self.user.clone() else {
                return self.error("530 5.7.0 Authentication required");
            };
            // The envelope sender must be the user's own address or alias.
            let owned = match &from {
                None => false,
                Some(a) => self.owns(&user, &a.normalized()),
            };
            if !owned {
                return self.error("553 5.7.1 Sender address does not belong to you");
            }
        }
        if let Some(a) = &from
            && !a.is_ascii()
            && !params.smtputf8
        {
            return self.error("553 5.6.7 Non-ASCII address requires SMTPUTF8");
        }
        if params
            .size
            .is_some_and(|s| s > self.config.limits.max_message_size)
        {
            // RFC 1870 6.1.
            return self.error("552 5.3.4 Message size exceeds fixed maximum message size");
        }
        let from = from.map(|a| a.to_string()).unwrap_or_default();
        self.tx = Some(Transaction {
            from,
            params,
            rcpts: Vec::new(),
            remote: Vec::new(),
            bdat: None,
            bdat_failed: false,
        });
        self.reply("250 2.1.0 Ok");
    }

    fn rcpt(&mut self, rcpt: Recipient) -> io::Result<()> {
        let Some(tx) = &self.tx else {
            self.error("503 5.5.1 Need MAIL before RCPT");
            return Ok(());
        };
        if tx.rcpts.len() >= self.config.limits.max_recipients {
            // RFC 5321 4.5.3.1.10.
            self.error("452 4.5.3 Too many recipients");
            return Ok(());
        }
        let smtputf8 = tx.params.smtputf8;
        if self.submission
            && let Recipient::Address(a) = &rcpt
            && !self.config.is_local_domain(a.domain.trim_end_matches('.'))
        {
            if a.source_route {
                self.error("550 5.7.1 Source routes are not accepted");
                return Ok(());
            }
            if !a.is_ascii() && !smtputf8 {
                self.error("553 5.6.7 Non-ASCII address requires SMTPUTF8");
                return Ok(());
            }
            if let Some(tx) = &mut self.tx {
                tx.remote.push(a.to_string());
            }
            self.reply("250 2.1.5 Ok, will relay");
            return Ok(());
        }
        let address = match rcpt {
            Recipient::Postmaster => format!("postmaster@{}", self.config.domains[0]),
            Recipient::Address(a) => {
                if a.source_route {
                    self.error("550 5.7.1 Source routes are not accepted");
                    return Ok(());
                }
                if !a.is_ascii() && !smtputf8 {
                    self.error("553 5.6.7 Non-ASCII address requires SMTPUTF8");
                    return Ok(());
                }
                let domain = a.domain.trim_end_matches('.');
                if !self.config.is_local_domain(domain) {
                    // Never an open relay: other domains need authentication,
                    // which the MX port does not offer.
                    self.error("554 5.7.1 Relay access denied");
                    return Ok(());
                }
                // %-hacks, bang paths and quoted "@" inside one of our
                // local parts are relay attempts, not mailboxes.
                if a.local.contains(['@', '%', '!']) {
                    self.error("550 5.7.1 Relay access denied (routing characters in local part)");
                    return Ok(());
                }
                a.normalized()
            }
        };
        let resolution = match self.resolve(&address) {
            Ok(r) => r,
            Err(e) => {
                log::error!("smtp {} resolving {address}: {e}", self.id);
                self.reply("451 4.3.0 Temporary lookup failure");
                return Ok(());
            }
        };
        match resolution {
            Resolution::Local(users) => {
                if let Some(tx) = &mut self.tx {
                    tx.rcpts.push((address, users));
                }
                self.reply("250 2.1.5 Ok");
            }
            Resolution::Unknown => self.error("550 5.1.1 No such user here"),
        }
        Ok(())
    }

    fn resolve(&self, address: &str) -> Result<Resolution, crate::store::StoreError> {
        let txn = self.server.store.begin_read()?;
        let accounts = txn.open_table(crate::store::ACCOUNTS)?;
        let aliases = txn.open_table(crate::store::ALIASES)?;
        ops::resolve_recipient(
            &accounts,
            &aliases,
            address,
            self.config.recipient_delimiter,
        )
    }

    /// Checks that a transaction is ready for content; replies if not.
    fn ready_for_content(&mut self) -> bool {
        match &self.tx {
            None => {
                self.error("503 5.5.1 Need MAIL command");
                false
            }
            Some(tx) if tx.rcpts.is_empty() && tx.remote.is_empty() => {
                self.error("554 5.5.1 No valid recipients");
                false
            }
            Some(_) => true,
        }
    }

    fn new_spool(&self) -> Spool {
        Spool::new(
            self.config.limits.max_message_size,
            self.config.limits.spool_memory,
            Some(self.config.spool_dir()),
        )
    }

    /// Return-Path (RFC 5321 4.4: added at final delivery) and Received.
    fn trace_headers(&self, tx: &Transaction) -> String {
        // RFC 3848 / RFC 6531 3.7.3 protocol names; "A" for authenticated.
        let base = match (tx.params.smtputf8, self.esmtp, self.stream.is_tls()) {
            (true, _, false) => "UTF8SMTP",
            (true, _, true) => "UTF8SMTPS",
            (false, true, true) => "ESMTPS",
            (false, true, false) => "ESMTP",
            (false, false, true) => "SMTPS",
            (false, false, false) => "SMTP",
        };
        let proto = if self.user.is_some() {
            format!("{base}A")
        } else {
            base.to_string()
        };
        let ip = match self.peer.ip() {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let for_clause = match (tx.rcpts.as_slice(), tx.remote.as_slice()) {
            ([(one, _)], []) | ([], [one]) => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000");
        // Return-Path is for final delivery (RFC 5321 4.4); mail our users
        // submit mostly leaves, so it carries none.
        let return_path = if self.user.is_some() {
            String::new()
        } else {
            format!("Return-Path: <{}>\r\n", tx.from)
        };
        format!(
            "{return_path}Received: from {} ([{ip}])\r\n\tby {} (pimail) with {proto} id {}{for_clause};\r\n\t{date}\r\n",
            self.helo.as_deref().unwrap_or("unknown"),
            self.config.hostname,
            self.id,
        )
    }

    async fn data(&mut self) -> io::Result<Next> {
        if self.tx.as_ref().is_some_and(|t| t.bdat.is_some()) {
            self.error("503 5.5.1 DATA after BDAT in one transaction");
            return Ok(Next::Continue);
        }
        if !self.ready_for_content() {
            return Ok(Next::Continue);
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        self.flush().await?;
        let mut spool = self.new_spool();
        let mut decoder = DotDecoder::new();
        let mut piece = Vec::with_capacity(INPUT_CAPACITY);
        let timeout = self.config.limits.data_timeout;
        loop {
            if self.input.buffered().is_empty()
                && with_timeout(timeout, self.input.fill(&mut self.stream)).await? == 0
            {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            piece.clear();
            let used = decoder.decode(self.input.buffered(), &mut piece);
            self.input.consume(used);
            spool.push(&piece);
            if decoder.is_done() {
                break;
            }
        }
        self.finish_message(spool, decoder.bare_line_ending).await
    }

    async fn bdat(&mut self, size: u64, last: bool) -> io::Result<Next> {
        // Decided before reading, answered after: RFC 3030 2 has the chunk
        // read even when it is refused, so the session stays in step.
        let refusal = match &self.tx {
            None => Some("503 5.5.1 Need MAIL command"),
            Some(t) if t.rcpts.is_empty() && t.remote.is_empty() => {
                Some("554 5.5.1 No valid recipients")
            }
            Some(t) if t.bdat_failed => Some("503 5.5.1 An earlier BDAT failed; send RSET"),
            Some(_) => None,
        };
        if refusal.is_none() && self.tx.as_ref().is_some_and(|t| t.bdat.is_none()) {
            let spool = self.new_spool();
            if let Some(tx) = &mut self.tx {
                tx.bdat = Some((spool, LineEndingCheck::default()));
            }
        }
        let timeout = self.config.limits.data_timeout;
        let mut remaining = size;
        while remaining > 0 {
            if self.input.buffered().is_empty()
                && with_timeout(timeout, self.input.fill(&mut self.stream)).await? == 0
            {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = (self.input.buffered().len() as u64).min(remaining) as usize;
            if refusal.is_none()
                && let Some((spool, check)) = self.tx.as_mut().and_then(|t| t.bdat.as_mut())
            {
                let bytes = &self.input.buffered()[..n];
                check.feed(bytes);
                spool.push(bytes);
            }
            self.input.consume(n);
            remaining -= n as u64;
        }
        if let Some(r) = refusal {
            if let Some(tx) = &mut self.tx {
                tx.bdat_failed = true;
            }
            self.error(r);
            return Ok(Next::Continue);
        }
        if !last {
            let overflow = self
                .tx
                .as_ref()
                .and_then(|t| t.bdat.as_ref())
                .is_some_and(|(s, _)| s.overflow);
            if overflow {
                if let Some(tx) = &mut self.tx {
                    tx.bdat_failed = true;
                    tx.bdat = None;
                }
                self.error("552 5.3.4 Message too big");
            } else {
                self.reply(&format!("250 2.0.0 {size} octets received"));
            }
            return Ok(Next::Continue);
        }
        let Some((spool, mut check)) = self.tx.as_mut().and_then(|t| t.bdat.take()) else {
            return Ok(Next::Continue);
        };
        check.finish();
        self.finish_message(spool, check.bare_line_ending).await
    }

    /// Commits a received message and replies: 250 only after the store's
    /// commit (with fsync) has returned.
    async fn finish_message(&mut self, spool: Spool, bare_line_ending: bool) -> io::Result<Next> {
        let Some(tx) = self.tx.take() else {
            return Ok(Next::Continue);
        };
        if spool.overflow {
            self.error("552 5.3.4 Message too big");
            return Ok(Next::Continue);
        }
        if bare_line_ending {
            self.error(
                "550 5.6.0 Bare CR or LF in message; lines must end with CRLF (RFC 5321 2.3.8)",
            );
            return Ok(Next::Continue);
        }
        // Lenient, like most MTAs: 8-bit content under BODY=7BIT is stored
        // as received (RFC 6152 leaves this to the server).
        let body = match spool.finish() {
            Ok(b) => b,
            Err(e) => {
                log::error!("smtp {} spooling failed: {e}", self.id);
                self.reply("451 4.3.0 Temporary failure storing the message; try again later");
                return Ok(Next::Continue);
            }
        };
        let mut users: Vec<String> = Vec::new();
        for (_, resolved) in &tx.rcpts {
            for u in resolved {
                if !users.contains(u) {
                    users.push(u.clone());
                }
            }
        }
        if let Some(user) = self.user.clone() {
            // RFC 6409 8.1 lets a submission server check the message: the
            // From: addresses must be the user's too, so nobody sends as
            // someone else.
            let from_header: Vec<String> = body
                .meta
                .root
                .envelope
                .as_ref()
                .map(|e| {
                    e.from
                        .iter()
                        .filter_map(|a| {
                            Some(format!(
                                "{}@{}",
                                String::from_utf8_lossy(a.mailbox.as_ref()?),
                                String::from_utf8_lossy(a.host.as_ref()?)
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if from_header.is_empty()
                || !from_header
                    .iter()
                    .all(|a| self.owns(&user, &a.to_lowercase()))
            {
                self.error("553 5.7.1 From: header address does not belong to you");
                return Ok(Next::Continue);
            }
        }
        let inbound = Inbound {
            peer: self.peer.ip(),
            helo: self.helo.as_deref().unwrap_or(""),
            from: &tx.from,
            users: &users,
            tls: self.stream.is_tls(),
            authenticated: self.user.as_deref(),
        };
        let (added, mailbox) = match inspect(&self.server, &inbound, &body).await {
            Verdict::Accept { headers, mailbox } => {
                (headers, mailbox.unwrap_or_else(|| "INBOX".to_string()))
            }
            Verdict::Reject(reply) => {
                log::info!("smtp {} from=<{}> refused: {reply}", self.id, tx.from);
                self.error(&reply);
                return Ok(Next::Continue);
            }
        };
        let mut prefix = String::new();
        let mut body = body;
        if self.user.is_none() {
            let renamed = crate::authres::forged::rename(
                &mut body.content,
                body.meta.root.body_start,
                &self.config.hostname,
            );
            if renamed > 0 {
                log::info!(
                    "smtp {}: renamed {renamed} Authentication-Results field(s) claiming to be ours",
                    self.id
                );
            }
        }
        if self.user.is_some() {
            let from_domain = body
                .meta
                .root
                .envelope
                .as_ref()
                .and_then(|e| e.from.first())
                .and_then(|a| a.host.as_ref())
                .map(|h| String::from_utf8_lossy(h).to_lowercase());
            let envelope_domain = tx
                .from
                .rsplit_once('@')
                .map_or(String::new(), |(_, d)| d.to_lowercase());
            let signers = self.server.dkim.borrow().clone();
            if let Some(signer) =
                crate::outbound::sign::choose(&signers, from_domain.as_deref(), &envelope_domain)
            {
                // Hashing the body is CPU work: off the executor.
                let (b, signature) = smol::unblock(move || {
                    let s = crate::outbound::sign::sign(&body, &signer);
                    (body, s)
                })
                .await;
                body = b;
                match signature {
                    Ok(field) => prefix.push_str(&field),
                    Err(e) => log::warn!("smtp {}: not DKIM-signed: {e}", self.id),
                }
            }
        }
        prefix.push_str(&self.trace_headers(&tx));
        prefix.push_str(&added);
        let spooled = body.store(prefix.into_bytes());
        let targets: Vec<DeliveryTarget> = users
            .into_iter()
            .map(|user| DeliveryTarget {
                user,
                mailbox: mailbox.clone(),
                flags: 0,
            })
            .collect();
        let size = spooled.size;
        let queue: Vec<Outbound> = tx
            .remote
            .iter()
            .map(|rcpt| Outbound {
                from: tx.from.clone(),
                rcpt: rcpt.clone(),
                eight_bit: tx.params.body == command::Body::EightBitMime,
                smtputf8: tx.params.smtputf8,
            })
            .collect();
        let queued = queue.len();
        let delivery = Delivery {
            queue,
            blob: spooled.blob,
            content: spooled.content,
            size,
            meta: spooled.meta,
            internal_date: chrono::Utc::now().timestamp(),
            targets,
        };
        let result = self.server.deliver(delivery).await;
        if queued > 0 && result.is_ok() {
            self.server.wake_queue();
        }
        match result {
            Ok(delivered) => {
                log::info!(
                    "smtp {} from=<{}> size={size} rcpts={} stored={} queued={queued}",
                    self.id,
                    tx.from,
                    tx.rcpts.len() + tx.remote.len(),
                    delivered.len()
                );
                let r = format!("250 2.0.0 Ok: stored as {}", self.id);
                self.reply(&r);
                self.id = session_id();
            }
            Err(e) => {
                log::error!("smtp {} store failed: {e}", self.id);
                self.reply("451 4.3.0 Temporary failure storing the message; try again later");
            }
        }
        Ok(Next::Continue)
    }

    /// Does `address` belong to `user`: the account itself, its
    /// plus-addresses, or an alias (or catch-all) that delivers to it?
    fn owns(&self, user: &str, address: &str) -> bool {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        if !self.config.is_local_domain(domain) {
            return false;
        }
        matches!(self.resolve(address), Ok(Resolution::Local(users)) if users.iter().any(|u| u == user))
    }

    /// AUTH PLAIN / LOGIN (RFC 4954) on the submission ports.
    async fn auth(&mut self, args: &str) -> io::Result<Next> {
        if !self.submission {
            self.error("502 5.5.1 AUTH is offered on the submission ports only");
            return Ok(Next::Continue);
        }
        if self.user.is_some() {
            self.error("503 5.5.1 Already authenticated");
            return Ok(Next::Continue);
        }
        if self.tx.is_some() {
            self.error("503 5.5.1 AUTH not allowed during a mail transaction");
            return Ok(Next::Continue);
        }
        if !crate::auth::plaintext_allowed(&self.config, &self.peer, self.stream.is_tls()) {
            self.error("538 5.7.11 Encryption required for requested authentication mechanism");
            return Ok(Next::Continue);
        }
        if self.server.auth.blocked(self.peer.ip(), &self.config) {
            self.reply("421 4.7.0 Too many failed logins from your address; try later");
            return Ok(Next::Close);
        }
        let mut words = args.split(' ').filter(|w| !w.is_empty());
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next().map(str::to_string);
        let credentials = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => Some(r),
                    None => self.auth_response("").await?,
                };
                match response.as_deref() {
                    None => return Ok(Next::Continue),
                    // RFC 4954 4: "=" is an empty initial response.
                    Some("=") => None,
                    Some(r) => crate::auth::sasl::decode_plain(r).map(|c| (c.authcid, c.password)),
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(r) => Some(r),
                    None => {
                        self.auth_response(&crate::auth::sasl::encode("Username:"))
                            .await?
                    }
                };
                let Some(user) = user else {
                    return Ok(Next::Continue);
                };
                let Some(password) = self
                    .auth_response(&crate::auth::sasl::encode("Password:"))
                    .await?
                else {
                    return Ok(Next::Continue);
                };
                crate::auth::sasl::decode_line(&user).zip(crate::auth::sasl::decode_line(&password))
            }
            _ => {
                self.error("504 5.5.4 Unrecognized authentication type");
                return Ok(Next::Continue);
            }
        };
        let Some((name, password)) = credentials else {
            self.error("501 5.5.2 Cannot decode the response");
            return Ok(Next::Continue);
        };
        match self
            .server
            .auth
            .verify(&self.server.store, &name, &password)
            .await
        {
            Ok(Some(user)) => {
                log::info!("smtp {} {}: authenticated as {user}", self.id, self.peer);
                self.user = Some(user);
                self.reply("235 2.7.0 Authentication successful");
            }
            Ok(None) => {
                log::info!("smtp {} {}: failed AUTH for {name}", self.id, self.peer);
                self.server.auth.note_failure(self.peer.ip());
                // Slow down guessing.
                async_io::Timer::after(self.config.auth.failure_delay).await;
                self.error("535 5.7.8 Authentication credentials invalid");
            }
            Err(e) => {
                log::error!("smtp {}: checking {name}: {e}", self.id);
                self.reply("454 4.7.0 Temporary authentication failure");
            }
        }
        Ok(Next::Continue)
    }

    /// Sends a 334 challenge and reads the client's line; `None` when the
    /// client cancelled with "*" (answered with 501 here).
    async fn auth_response(&mut self, challenge: &str) -> io::Result<Option<String>> {
        self.reply(&format!("334 {challenge}"));
        self.flush().await?;
        let max = self.config.limits.max_line_length;
        let line = with_timeout(
            self.config.limits.command_timeout,
            self.input.read_line(&mut self.stream, max),
        )
        .await?;
        match line {
            Line::Complete(r) => {
                let text = String::from_utf8_lossy(self.input.get(r)).into_owned();
                if text == "*" {
                    self.error("501 5.0.0 Authentication cancelled");
                    return Ok(None);
                }
                Ok(Some(text))
            }
            Line::TooLong => {
                self.error("500 5.5.6 Authentication exchange line is too long");
                Ok(None)
            }
            Line::Eof => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    async fn starttls(&mut self) -> io::Result<Next> {
        if self.stream.is_tls() {
            self.error("503 5.5.1 TLS already active");
            return Ok(Next::Continue);
        }
        let Some(acceptor) = self.server.tls() else {
            self.error("502 5.5.1 TLS not available");
            return Ok(Next::Continue);
        };
        self.reply("220 2.0.0 Ready to start TLS");
        self.flush().await?;
        // RFC 3207 4.2: discard anything pipelined after STARTTLS and
        // forget the EHLO; the client starts over.
        self.input.clear();
        self.helo = None;
        self.tx = None;
        self.user = None;
        self.stream
            .start_tls(&acceptor, self.config.limits.tls_handshake_timeout)
            .await?;
        Ok(Next::Continue)
    }
}

/// A HELO/EHLO argument as it may appear in a Received: header.
fn sanitize(s: &str) -> String {
    s.chars()
        .take(255)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
