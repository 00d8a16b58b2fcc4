//! SELECT/EXAMINE, QRESYNC reports, the untagged updates of a selected
//! mailbox (`sync`), and IDLE.

use super::*;

impl Session {
    pub(super) async fn select(
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
            saved: UidList::new(),
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
        let mut vanished = crate::store::index::expunged_since(&txn, id, modseq).map_err(db)?;
        vanished.retain(|&uid| known.is_none_or(|k| k.contains(uid, uidnext.saturating_sub(1))));
        if !vanished.is_empty() {
            let label = if earlier_label { " (EARLIER)" } else { "" };
            self.line(&format!("* VANISHED{label} {}", sequence::render(vanished)));
        }
        // The rows changed since `modseq` (the `changes` index), not a
        // read of every message.
        let changed = crate::store::index::changed_since(&txn, id, modseq).map_err(db)?;
        let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
        let Some(sel) = self.selected() else {
            return Ok(());
        };
        let mut lines = Vec::new();
        for uid in changed {
            let Ok(i) = sel.uids.binary_search(&uid) else {
                continue;
            };
            if let Some(row) = messages.get((id, uid)).map_err(|e| db(e.into()))? {
                let row = MessageRow::decode(row.value()).map_err(|e| db(e.into()))?;
                let mut l = format!("* {} FETCH (UID {uid} FLAGS ", i + 1).into_bytes();
                crate::imap::render_flags(row.flags, &row.keywords, &mut l);
                l.extend_from_slice(format!(" MODSEQ ({}))\r\n", row.modseq).as_bytes());
                lines.push(l);
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
    pub(super) async fn sync(&mut self, expunges_allowed: bool) -> io::Result<()> {
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
        let mut gone = crate::store::index::expunged_since(&txn, sel.id, sel.modseq).map_err(db)?;
        gone.retain(|uid| sel.uids.binary_search(uid).is_ok());
        if !gone.is_empty() {
            if expunges_allowed {
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
            let mut changed =
                crate::store::index::changed_since(&txn, sel.id, sel.modseq).map_err(db)?;
            changed.retain(|&uid| uid < sel.uidnext);
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
                crate::imap::render_flags(row.flags, &row.keywords, &mut out);
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

    pub(super) async fn idle(&mut self, tag: &str) -> io::Result<Next> {
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
}
