//! Mailbox commands: CREATE, DELETE, RENAME, SUBSCRIBE, LIST, STATUS.

use super::*;

impl Session {
    pub(super) async fn create(
        &mut self,
        tag: &str,
        raw: &[u8],
        special: Option<String>,
    ) -> io::Result<()> {
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

    pub(super) async fn delete(&mut self, tag: &str, raw: &[u8]) -> io::Result<()> {
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

    pub(super) async fn rename(&mut self, tag: &str, from: &[u8], to: &[u8]) -> io::Result<()> {
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

    pub(super) async fn subscribe(&mut self, tag: &str, raw: &[u8], on: bool) -> io::Result<()> {
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

    pub(super) async fn list(&mut self, tag: &str, l: List, lsub: bool) -> io::Result<()> {
        let decode = |s: &Session, raw: &[u8]| -> Option<String> {
            if raw.is_empty() {
                return Some(String::new());
            }
            if s.utf8_names() {
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

    pub(super) async fn status(
        &mut self,
        tag: &str,
        raw: &[u8],
        items: &[StatusItem],
    ) -> io::Result<()> {
        let Some(mb) = self.mailbox_or_no(tag, raw)? else {
            return Ok(());
        };
        if items.contains(&StatusItem::HighestModSeq) {
            self.condstore = true;
        }
        self.status_line(&mb, items)?;
        self.done(tag, "STATUS completed", true).await
    }
}

pub(super) fn canonical_inbox(name: &str) -> String {
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
