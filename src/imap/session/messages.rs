//! Commands that change messages: STORE, EXPUNGE, COPY/MOVE, APPEND.

use super::*;

impl Session {
    /// After this session's own write: if nothing else changed the mailbox
    /// meanwhile, the client already knows everything up to `after`.
    pub(super) fn own_change(&mut self, before: u64, after: u64) {
        if let Some(sel) = self.selected()
            && sel.modseq == before
        {
            sel.modseq = after;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn store(
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
        let (bits, keywords) = match crate::imap::parse_flags(flag_names) {
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
                crate::imap::render_flags(st.flags, &st.keywords, &mut l);
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
    pub(super) async fn expunge(
        &mut self,
        uid_set: Option<SequenceSet>,
        silent: bool,
    ) -> io::Result<()> {
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

    pub(super) async fn copy(
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

    pub(super) async fn append(
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
        let (bits, keywords) = match crate::imap::parse_flags(&head.opts.flags) {
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
        let (mut flags, mut date, mut n, mut sync) = ((bits, keywords), head.opts.date, n, sync);
        let mut utf8 = head.opts.utf8;
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
            // RFC 6855 4: `UTF8 (literal8)` closes its parenthesis.
            let line = match (utf8, line.strip_prefix(b")")) {
                (false, _) => line.as_slice(),
                (true, Some(rest)) => rest,
                (true, None) => {
                    self.bad(&tag, "Expected ) after the UTF8 message");
                    return Ok(());
                }
            };
            let next = match parse::append_next(line) {
                None => break,
                Some(Ok(next)) => next,
                Some(Err(e)) => {
                    self.bad(&tag, &e.0);
                    return match parse::trailing_literal(line) {
                        Some((n, sync)) => self.skip_literal(n, sync).await,
                        None => Ok(()),
                    };
                }
            };
            let Some((next_n, next_sync)) = parse::trailing_literal(line) else {
                self.bad(&tag, "Expected the next message as a literal");
                return Ok(());
            };
            (n, sync) = (next_n, next_sync);
            utf8 = next.utf8;
            flags = match crate::imap::parse_flags(&next.flags) {
                Ok(f) => f,
                Err(e) => {
                    refuse(self, &tag, "BAD", &e);
                    return self.skip_literal(n, sync).await;
                }
            };
            date = next.date;
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

/// Messages in one MULTIAPPEND: bounded like everything else.
const MAX_MULTIAPPEND: usize = 1000;
