//! Mailbox operations IMAP needs beyond delivery: flag changes with
//! mod-sequences (RFC 7162), copy and move (RFC 4315, 6851), append,
//! mailbox create/delete/rename/subscribe, and quota usage (RFC 9208).
//! Like [`super::ops`], everything runs inside a caller's write transaction.

use redb::{ReadableTable, WriteTransaction};

use super::ops::{self, Delivery, DeliveryTarget};
use super::*;

/// Hierarchy separator of mailbox names.
pub const DELIMITER: char = '/';

/// A message's flags after a change.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagState {
    pub uid: u32,
    pub flags: u32,
    pub keywords: Vec<String>,
    pub modseq: u64,
    /// Whether this operation changed it.
    pub changed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    Replace,
    Add,
    Remove,
}

/// The result of [`store_flags`].
#[derive(Debug, Default)]
pub struct FlagUpdate {
    pub states: Vec<FlagState>,
    /// UIDs not changed because they were modified after UNCHANGEDSINCE.
    pub modified: Vec<u32>,
    /// HIGHESTMODSEQ before and after.
    pub modseq_before: u64,
    pub modseq_after: u64,
}

/// A message row's flags and mod-sequence without decoding the rest
/// (the row layout of [`MessageRow::encode`]: version, flags, modseq).
pub fn flags_and_modseq(row: &[u8]) -> Option<(u32, u64)> {
    let flags = u32::from_le_bytes(row.get(1..5)?.try_into().ok()?);
    let modseq = u64::from_le_bytes(row.get(5..13)?.try_into().ok()?);
    Some((flags, modseq))
}

fn load_mailbox(txn: &WriteTransaction, id: u64) -> Result<Mailbox, StoreError> {
    let boxes = txn.open_table(MAILBOXES)?;
    let row = boxes
        .get(id)?
        .ok_or_else(|| StoreError::NotFound("mailbox".into()))?;
    Ok(Mailbox::decode(id, row.value())?)
}

/// The user's mailbox called `name`, or NotFound.
fn load_named(txn: &WriteTransaction, user: &str, name: &str) -> Result<Mailbox, StoreError> {
    ops::mailbox_in(
        &txn.open_table(MAILBOX_NAMES)?,
        &txn.open_table(MAILBOXES)?,
        user,
        name,
    )?
    .ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")))
}

fn save_mailbox(txn: &WriteTransaction, m: &Mailbox) -> Result<(), StoreError> {
    txn.open_table(MAILBOXES)?
        .insert(m.id, m.encode().as_slice())?;
    Ok(())
}

/// Changes flags of the given UIDs: every message actually changed gets
/// one new mod-sequence (shared by this operation). With `unchanged_since`,
/// messages modified later are left alone and listed (RFC 7162 3.1.3).
pub fn store_flags(
    txn: &WriteTransaction,
    mailbox: u64,
    uids: &[u32],
    change: FlagChange,
    flag_bits: u32,
    keywords: &[String],
    unchanged_since: Option<u64>,
) -> Result<FlagUpdate, StoreError> {
    let mut mb = load_mailbox(txn, mailbox)?;
    let mut up = FlagUpdate {
        modseq_before: mb.highest_modseq,
        ..FlagUpdate::default()
    };
    let new_modseq = mb.highest_modseq + 1;
    let mut any = false;
    {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut index = RowIndexes::open(txn)?;
        for &uid in uids {
            let row = match messages.get((mailbox, uid))? {
                Some(r) => MessageRow::decode(r.value())?,
                None => continue,
            };
            let mut row = row;
            if unchanged_since.is_some_and(|u| row.modseq > u) {
                up.modified.push(uid);
                continue;
            }
            let old = row.clone();
            match change {
                FlagChange::Replace => {
                    row.flags = flag_bits | (row.flags & flags::RECENT);
                    row.keywords = keywords.to_vec();
                }
                FlagChange::Add => {
                    row.flags |= flag_bits;
                    for k in keywords {
                        if !row.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                            row.keywords.push(k.clone());
                        }
                    }
                }
                FlagChange::Remove => {
                    row.flags &= !flag_bits;
                    row.keywords
                        .retain(|x| !keywords.iter().any(|k| k.eq_ignore_ascii_case(x)));
                }
            }
            let changed = row.flags != old.flags || row.keywords != old.keywords;
            if changed {
                any = true;
                row.modseq = new_modseq;
                let was_seen = old.flags & flags::SEEN != 0;
                let seen = row.flags & flags::SEEN != 0;
                if was_seen && !seen {
                    mb.unseen += 1;
                } else if !was_seen && seen {
                    mb.unseen = mb.unseen.saturating_sub(1);
                }
                messages.insert((mailbox, uid), row.encode().as_slice())?;
                index.changed(mailbox, uid, &old, &row)?;
            } else if unchanged_since.is_some() {
                // RFC 7162 3.1.3: a no-op store still answers with the
                // current MODSEQ, which is what `row.modseq` holds.
            }
            up.states.push(FlagState {
                uid,
                flags: row.flags,
                keywords: row.keywords,
                modseq: row.modseq,
                changed,
            });
        }
    }
    if any {
        mb.highest_modseq = new_modseq;
        save_mailbox(txn, &mb)?;
    }
    up.modseq_after = mb.highest_modseq;
    Ok(up)
}

/// Bytes a user's mailboxes hold (the QUOTA STORAGE resource).
pub fn usage(
    names: &impl ReadableTable<(&'static str, &'static str), u64>,
    boxes: &impl ReadableTable<u64, &'static [u8]>,
    user: &str,
) -> Result<u64, StoreError> {
    let mut total = 0;
    for entry in names.range((user, "")..)? {
        let (k, id) = entry?;
        if k.value().0 != user {
            break;
        }
        if let Some(row) = boxes.get(id.value())? {
            total += Mailbox::decode(id.value(), row.value())?.size;
        }
    }
    Ok(total)
}

/// Fails with [`StoreError::Invalid`] starting "OVERQUOTA" if adding
/// `extra` bytes would exceed the user's quota.
fn check_quota(txn: &WriteTransaction, user: &str, extra: u64) -> Result<(), StoreError> {
    let limit = {
        let accounts = txn.open_table(ACCOUNTS)?;
        match accounts.get(user)? {
            Some(row) => Account::decode(user, row.value())?.quota_bytes,
            None => return Err(StoreError::NotFound(format!("user {user}"))),
        }
    };
    if limit == 0 {
        return Ok(());
    }
    let used = usage(
        &txn.open_table(MAILBOX_NAMES)?,
        &txn.open_table(MAILBOXES)?,
        user,
    )?;
    if used + extra > limit {
        return Err(StoreError::Invalid(format!(
            "OVERQUOTA: {used} of {limit} bytes used"
        )));
    }
    Ok(())
}

/// Trains the spam filter on messages copied or moved between mailboxes
/// when Junk is the source or the destination (train-on-error with
/// correction: see `spam::learn::on_transfer`).
pub fn learn_from_transfer(
    txn: &WriteTransaction,
    settings: &crate::spam::Settings,
    src: u64,
    uids: &[u32],
    dst: u64,
) -> Result<(), StoreError> {
    let from = load_mailbox(txn, src)?;
    let to = load_mailbox(txn, dst)?;
    if from.special_use != SpecialUse::Junk && to.special_use != SpecialUse::Junk {
        return Ok(());
    }
    let blobs: Vec<BlobId> = {
        let messages = txn.open_table(MESSAGES)?;
        let mut v = Vec::new();
        for &uid in uids {
            if let Some(row) = messages.get((src, uid))? {
                v.push(MessageRow::decode(row.value())?.blob);
            }
        }
        v
    };
    for blob in blobs {
        crate::spam::learn::on_transfer(
            txn,
            settings,
            &to.user,
            &blob,
            from.special_use,
            to.special_use,
        )?;
    }
    Ok(())
}

/// Copies messages to another mailbox with new UIDs, in UID order; the
/// content is shared (reference counts). Returns the destination's
/// UIDVALIDITY and the (source, destination) UID pairs.
pub fn copy(
    txn: &WriteTransaction,
    src: u64,
    uids: &[u32],
    dst: u64,
) -> Result<(u32, Vec<(u32, u32)>), StoreError> {
    let mut to = load_mailbox(txn, dst)?;
    let mut rows = Vec::new();
    {
        let messages = txn.open_table(MESSAGES)?;
        for &uid in uids {
            if let Some(row) = messages.get((src, uid))? {
                rows.push((uid, MessageRow::decode(row.value())?));
            }
        }
    }
    let extra: u64 = rows.iter().map(|(_, r)| r.size).sum();
    check_quota(txn, &to.user.clone(), extra)?;
    let mut pairs = Vec::with_capacity(rows.len());
    if rows.is_empty() {
        return Ok((to.uidvalidity, pairs));
    }
    to.highest_modseq += 1;
    {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut blobs = txn.open_table(BLOBS)?;
        let mut index = RowIndexes::open(txn)?;
        for (uid, mut row) in rows {
            let new_uid = to.uidnext;
            to.uidnext = to.uidnext.checked_add(1).ok_or_else(|| {
                StoreError::Invalid(format!("mailbox {} has run out of UIDs", to.name))
            })?;
            row.modseq = to.highest_modseq;
            to.exists += 1;
            if row.flags & flags::SEEN == 0 {
                to.unseen += 1;
            }
            to.size += row.size;
            let blob = match blobs.get(&row.blob)? {
                Some(b) => BlobRow::decode(b.value())?,
                None => return Err(StoreError::NotFound("message content".into())),
            };
            let mut blob = blob;
            blob.refcount += 1;
            blobs.insert(&row.blob, blob.encode().as_slice())?;
            messages.insert((dst, new_uid), row.encode().as_slice())?;
            index.added(dst, new_uid, &row)?;
            pairs.push((uid, new_uid));
        }
    }
    save_mailbox(txn, &to)?;
    Ok((to.uidvalidity, pairs))
}

/// Stores an appended message in an existing mailbox. Returns the
/// mailbox's UIDVALIDITY and the new UID.
pub fn append(
    txn: &WriteTransaction,
    user: &str,
    mailbox: &str,
    delivery: &Delivery,
    keywords: &[String],
) -> Result<(u32, u32), StoreError> {
    let mb = load_named(txn, user, mailbox)?;
    check_quota(txn, user, delivery.size)?;
    debug_assert!(delivery.targets.len() == 1);
    let delivered = ops::deliver(txn, delivery)?;
    let Some(d) = delivered.first() else {
        return Err(StoreError::Invalid("nothing delivered".into()));
    };
    if !keywords.is_empty() {
        let mut messages = txn.open_table(MESSAGES)?;
        let row = messages
            .get((d.mailbox, d.uid))?
            .map(|r| MessageRow::decode(r.value()));
        if let Some(row) = row {
            let mut row = row?;
            row.keywords = keywords.to_vec();
            messages.insert((d.mailbox, d.uid), row.encode().as_slice())?;
        }
    }
    Ok((mb.uidvalidity, d.uid))
}

/// One target for [`append`].
pub fn append_target(user: &str, mailbox: &str, flag_bits: u32) -> Vec<DeliveryTarget> {
    vec![DeliveryTarget {
        user: user.to_string(),
        mailbox: mailbox.to_string(),
        flags: flag_bits,
    }]
}

/// The names above `name` in the hierarchy: "a/b/c" gives "a", "a/b".
fn parents(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices(DELIMITER).map(move |(i, _)| &name[..i])
}

/// Creates a mailbox and any missing parents (RFC 9051 6.3.4).
pub fn create(
    txn: &WriteTransaction,
    user: &str,
    name: &str,
    special_use: SpecialUse,
    now: i64,
) -> Result<Mailbox, StoreError> {
    for parent in parents(name) {
        if !parent.is_empty()
            && txn
                .open_table(MAILBOX_NAMES)?
                .get((user, parent))?
                .is_none()
        {
            ops::create_mailbox(txn, user, parent, SpecialUse::None, now)?;
        }
    }
    ops::create_mailbox(txn, user, name, special_use, now)
}

/// Deletes a mailbox with its messages. INBOX cannot be deleted; children
/// stay (RFC 9051 6.3.5).
pub fn delete(txn: &WriteTransaction, user: &str, name: &str) -> Result<(), StoreError> {
    if name == "INBOX" {
        return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
    }
    let id = txn
        .open_table(MAILBOX_NAMES)?
        .remove((user, name))?
        .map(|v| v.value())
        .ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")))?;
    txn.open_table(MAILBOXES)?.remove(id)?;
    let mut blobs = Vec::new();
    {
        let mut messages = txn.open_table(MESSAGES)?;
        for entry in messages.extract_from_if((id, 0)..=(id, u32::MAX), |_, _| true)? {
            let (_, v) = entry?;
            blobs.push(MessageRow::decode(v.value())?.blob);
        }
        let mut log = txn.open_table(EXPUNGED)?;
        for entry in log.extract_from_if((id, 0, 0)..=(id, u64::MAX, u32::MAX), |_, _| true)? {
            entry?;
        }
        RowIndexes::open(txn)?.drop_mailbox(id)?;
    }
    for b in blobs {
        ops::release_blob(txn, &b)?;
    }
    Ok(())
}

/// Renames a mailbox and its children. Renaming INBOX moves its messages
/// to a new mailbox and leaves INBOX empty (RFC 9051 6.3.6).
pub fn rename(
    txn: &WriteTransaction,
    user: &str,
    from: &str,
    to: &str,
    now: i64,
) -> Result<(), StoreError> {
    if txn.open_table(MAILBOX_NAMES)?.get((user, to))?.is_some() {
        return Err(StoreError::Exists(format!("mailbox {to}")));
    }
    let src = load_named(txn, user, from)?;
    if from == "INBOX" {
        let dst = create(txn, user, to, SpecialUse::None, now)?;
        let uids: Vec<u32> = {
            let messages = txn.open_table(MESSAGES)?;
            let mut v = Vec::new();
            for e in messages.range((src.id, 0)..=(src.id, u32::MAX))? {
                v.push(e?.0.value().1);
            }
            v
        };
        copy(txn, src.id, &uids, dst.id)?;
        ops::expunge(txn, src.id, &uids)?;
        return Ok(());
    }
    // The mailbox and every child "from/...".
    let mut moves = Vec::new();
    {
        let names = txn.open_table(MAILBOX_NAMES)?;
        for entry in names.range((user, from)..)? {
            let (k, id) = entry?;
            let (u, n) = k.value();
            if u != user {
                break;
            }
            if n == from {
                moves.push((n.to_string(), to.to_string(), id.value()));
            } else if let Some(rest) = n.strip_prefix(from)
                && rest.starts_with(DELIMITER)
            {
                moves.push((n.to_string(), format!("{to}{rest}"), id.value()));
            } else if !n.starts_with(from) {
                break;
            }
        }
    }
    for parent in parents(to) {
        if !parent.is_empty()
            && txn
                .open_table(MAILBOX_NAMES)?
                .get((user, parent))?
                .is_none()
        {
            ops::create_mailbox(txn, user, parent, SpecialUse::None, now)?;
        }
    }
    for (old, new, id) in moves {
        let mut names = txn.open_table(MAILBOX_NAMES)?;
        names.remove((user, old.as_str()))?;
        names.insert((user, new.as_str()), id)?;
        drop(names);
        let mut mb = load_mailbox(txn, id)?;
        mb.name = new;
        save_mailbox(txn, &mb)?;
    }
    Ok(())
}

pub fn subscribe(
    txn: &WriteTransaction,
    user: &str,
    name: &str,
    subscribed: bool,
) -> Result<(), StoreError> {
    let mut mb = load_named(txn, user, name)?;
    mb.subscribed = subscribed;
    save_mailbox(txn, &mb)
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_store;
    use super::*;

    fn put(store: &Store, user: &str, mailbox: &str, content: &[u8]) -> u32 {
        use sha2::Digest;
        let d = Delivery {
            queue: Vec::new(),
            blob: sha2::Sha256::digest(content).into(),
            content: super::super::content::Content::from_chunks(vec![content.to_vec()]),
            size: content.len() as u64,
            meta: vec![],
            internal_date: 1_700_000_000,
            targets: append_target(user, mailbox, 0),
        };
        store
            .write(|t| append(t, user, mailbox, &d, &["$Work".into()]))
            .unwrap()
            .1
    }

    #[test]
    fn flags_copy_rename_delete() {
        let (store, dir) = temp_store("mailbox-ops");
        let u = "a@example.org";
        store.write(|t| ops::add_account(t, u, "h", 1)).unwrap();
        let uid = put(&store, u, "INBOX", b"Subject: x\r\n\r\nhello\r\n");
        let inbox = store.mailbox(u, "INBOX").unwrap().unwrap();
        assert_eq!(
            store.message(inbox.id, uid).unwrap().unwrap().keywords,
            ["$Work"]
        );

        let up = store
            .write(|t| {
                store_flags(
                    t,
                    inbox.id,
                    &[uid, 99],
                    FlagChange::Add,
                    flags::SEEN,
                    &[],
                    None,
                )
            })
            .unwrap();
        assert_eq!(up.states.len(), 1);
        assert!(up.states[0].changed);
        assert_eq!(up.modseq_after, up.modseq_before + 1);
        assert_eq!(store.mailbox(u, "INBOX").unwrap().unwrap().unseen, 0);
        // UNCHANGEDSINCE below the message's modseq refuses it.
        let up2 = store
            .write(|t| {
                store_flags(
                    t,
                    inbox.id,
                    &[uid],
                    FlagChange::Add,
                    flags::FLAGGED,
                    &[],
                    Some(1),
                )
            })
            .unwrap();
        assert_eq!(up2.modified, vec![uid]);

        store
            .write(|t| create(t, u, "a/b/c", SpecialUse::None, 5))
            .unwrap();
        assert!(store.mailbox(u, "a/b").unwrap().is_some());
        let c = store.mailbox(u, "a/b/c").unwrap().unwrap();
        let (_, pairs) = store.write(|t| copy(t, inbox.id, &[uid], c.id)).unwrap();
        assert_eq!(pairs, vec![(uid, 1)]);
        store.write(|t| rename(t, u, "a", "x/y", 6)).unwrap();
        assert!(store.mailbox(u, "a/b/c").unwrap().is_none());
        assert_eq!(store.mailbox(u, "x/y/b/c").unwrap().unwrap().exists, 1);
        // INBOX rename moves the messages and leaves INBOX empty.
        store.write(|t| rename(t, u, "INBOX", "Old", 7)).unwrap();
        assert_eq!(store.mailbox(u, "INBOX").unwrap().unwrap().exists, 0);
        assert_eq!(store.mailbox(u, "Old").unwrap().unwrap().exists, 1);
        store.write(|t| delete(t, u, "x/y/b/c")).unwrap();
        store.write(|t| delete(t, u, "Old")).unwrap();
        let txn = store.begin_read().unwrap();
        assert_eq!(
            redb::ReadableTableMetadata::len(&txn.open_table(BLOBS).unwrap()).unwrap(),
            0
        );
        drop(txn);
        assert!(store.write(|t| delete(t, u, "INBOX")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
