//! Operations on the store, written against a transaction so that the CLI
//! (its own transaction) and the server's writer thread (a group-committed
//! one) run the same code.

use redb::{ReadOnlyTable, ReadableTable, Table, WriteTransaction};

use super::*;

pub(crate) fn mailbox_in(
    names: &impl ReadableTable<(&'static str, &'static str), u64>,
    boxes: &impl ReadableTable<u64, &'static [u8]>,
    user: &str,
    name: &str,
) -> Result<Option<Mailbox>, StoreError> {
    let Some(id) = names.get((user, name))? else {
        return Ok(None);
    };
    let id = id.value();
    Ok(match boxes.get(id)? {
        Some(row) => Some(Mailbox::decode(id, row.value())?),
        None => None,
    })
}

fn next_counter(txn: &WriteTransaction, key: &str, floor: u64) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let last = match meta.get(key)? {
        Some(v) => u64::from_le_bytes(v.value().try_into().map_err(|_| Malformed)?),
        None => 0,
    };
    let next = (last + 1).max(floor);
    meta.insert(key, next.to_le_bytes().as_slice())?;
    Ok(next)
}

/// Lower-cases the domain; local parts are matched case-insensitively too,
/// which is what users expect even though RFC 5321 2.4 lets a server
/// distinguish them.
pub fn normalize_address(address: &str) -> String {
    address.trim().to_lowercase()
}

pub fn validate_address(address: &str) -> Result<(), StoreError> {
    let invalid = || {
        StoreError::Invalid(format!(
            "`{address}` is not an address of the form user@domain"
        ))
    };
    let (local, domain) = address.rsplit_once('@').ok_or_else(invalid)?;
    if local.is_empty()
        || domain.is_empty()
        || !domain.contains('.') && domain != "localhost"
        || address.len() > 254
        || local.len() > 64
        || address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"%!".contains(c))
        || local.contains('@')
    {
        return Err(invalid());
    }
    Ok(())
}

pub fn add_account(
    txn: &WriteTransaction,
    address: &str,
    password_hash: &str,
    now: i64,
) -> Result<(), StoreError> {
    validate_address(address)?;
    {
        let mut accounts = txn.open_table(ACCOUNTS)?;
        if accounts.get(address)?.is_some() {
            return Err(StoreError::Exists(format!("user {address}")));
        }
        let account = Account {
            address: address.to_string(),
            password_hash: password_hash.to_string(),
            quota_bytes: 0,
            created: now,
        };
        accounts.insert(address, account.encode().as_slice())?;
    }
    for (name, special_use) in DEFAULT_MAILBOXES {
        create_mailbox(txn, address, name, *special_use, now)?;
    }
    Ok(())
}

pub fn set_password(
    txn: &WriteTransaction,
    address: &str,
    password_hash: &str,
) -> Result<(), StoreError> {
    let mut accounts = txn.open_table(ACCOUNTS)?;
    let mut account = match accounts.get(address)? {
        Some(row) => Account::decode(address, row.value())?,
        None => return Err(StoreError::NotFound(format!("user {address}"))),
    };
    account.password_hash = password_hash.to_string();
    accounts.insert(address, account.encode().as_slice())?;
    Ok(())
}

/// Deletes an account with all its mailboxes and messages; content blobs no
/// longer referenced by anyone are freed.
pub fn del_account(txn: &WriteTransaction, address: &str) -> Result<(), StoreError> {
    {
        let mut accounts = txn.open_table(ACCOUNTS)?;
        if accounts.remove(address)?.is_none() {
            return Err(StoreError::NotFound(format!("user {address}")));
        }
    }
    let ids: Vec<(String, u64)> = {
        let names = txn.open_table(MAILBOX_NAMES)?;
        let mut ids = Vec::new();
        for entry in names.range((address, "")..)? {
            let (k, id) = entry?;
            if k.value().0 != address {
                break;
            }
            ids.push((k.value().1.to_string(), id.value()));
        }
        ids
    };
    for (name, id) in ids {
        delete_mailbox_contents(txn, id)?;
        txn.open_table(MAILBOXES)?.remove(id)?;
        txn.open_table(MAILBOX_NAMES)?
            .remove((address, name.as_str()))?;
    }
    Ok(())
}

fn delete_mailbox_contents(txn: &WriteTransaction, mailbox: u64) -> Result<(), StoreError> {
    RowIndexes::open(txn)?.drop_mailbox(mailbox)?;
    let mut messages = txn.open_table(MESSAGES)?;
    let mut blobs_to_release = Vec::new();
    {
        let removed = messages.extract_from_if((mailbox, 0)..=(mailbox, u32::MAX), |_, _| true)?;
        for entry in removed {
            let (_, v) = entry?;
            blobs_to_release.push(MessageRow::decode(v.value())?.blob);
        }
    }
    drop(messages);
    for blob in blobs_to_release {
        release_blob(txn, &blob)?;
    }
    Ok(())
}

/// Drops one reference to a blob, deleting it with its chunks at zero.
pub fn release_blob(txn: &WriteTransaction, id: &BlobId) -> Result<(), StoreError> {
    let mut blobs = txn.open_table(BLOBS)?;
    let Some(row) = blobs.get(id)?.map(|r| BlobRow::decode(r.value())) else {
        return Ok(());
    };
    let mut row = row?;
    row.refcount = row.refcount.saturating_sub(1);
    if row.refcount > 0 {
        blobs.insert(id, row.encode().as_slice())?;
        return Ok(());
    }
    blobs.remove(id)?;
    let mut chunks = txn.open_table(CHUNKS)?;
    for i in 0..row.chunks {
        chunks.remove((id, i))?;
    }
    Ok(())
}

pub fn create_mailbox(
    txn: &WriteTransaction,
    user: &str,
    name: &str,
    special_use: SpecialUse,
    now: i64,
) -> Result<Mailbox, StoreError> {
    let mut names = txn.open_table(MAILBOX_NAMES)?;
    if names.get((user, name))?.is_some() {
        return Err(StoreError::Exists(format!("mailbox {name}")));
    }
    let id = next_counter(txn, "last_mailbox_id", 1)?;
    // RFC 9051 2.3.1.1: UIDVALIDITY must change whenever a name is reused
    // with other UIDs; a strictly increasing value seeded by the clock is
    // unique across deletes and recreation, even within one second.
    let uidvalidity = next_counter(
        txn,
        "last_uidvalidity",
        now.clamp(1, u32::MAX as i64) as u64,
    )?;
    let uidvalidity = (uidvalidity & 0xffff_ffff).max(1) as u32;
    let mailbox = Mailbox {
        id,
        user: user.to_string(),
        name: name.to_string(),
        uidvalidity,
        uidnext: 1,
        highest_modseq: 1,
        special_use,
        subscribed: true,
        exists: 0,
        unseen: 0,
        size: 0,
    };
    names.insert((user, name), id)?;
    txn.open_table(MAILBOXES)?
        .insert(id, mailbox.encode().as_slice())?;
    Ok(mailbox)
}

/// Aliases map an address (or `@domain`, a catch-all) to local accounts.
pub fn add_alias(
    txn: &WriteTransaction,
    alias: &str,
    targets: &[String],
) -> Result<(), StoreError> {
    if let Some(domain) = alias.strip_prefix('@') {
        validate_address(&format!("catchall@{domain}"))?;
    } else {
        validate_address(alias)?;
    }
    if targets.is_empty() {
        return Err(StoreError::Invalid(
            "an alias needs at least one target".into(),
        ));
    }
    let accounts = txn.open_table(ACCOUNTS)?;
    for t in targets {
        if accounts.get(t.as_str())?.is_none() {
            return Err(StoreError::NotFound(format!(
                "user {t} (alias targets must be local accounts)"
            )));
        }
    }
    if accounts.get(alias)?.is_some() {
        return Err(StoreError::Exists(format!(
            "user {alias} (an account, not an alias)"
        )));
    }
    let mut aliases = txn.open_table(ALIASES)?;
    aliases.insert(alias, targets.join(",").as_str())?;
    Ok(())
}

pub fn del_alias(txn: &WriteTransaction, alias: &str) -> Result<(), StoreError> {
    let mut aliases = txn.open_table(ALIASES)?;
    if aliases.remove(alias)?.is_none() {
        return Err(StoreError::NotFound(format!("alias {alias}")));
    }
    Ok(())
}

/// Where mail for an address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Delivered to these local accounts.
    Local(Vec<String>),
    /// The domain is ours but nobody has this address.
    Unknown,
}

/// Resolves a recipient of one of our domains: the account itself, an alias,
/// the account or alias without a `+tag` (plus-addressing), then the
/// domain's catch-all.
pub fn resolve_recipient(
    accounts: &ReadOnlyTable<&'static str, &'static [u8]>,
    aliases: &ReadOnlyTable<&'static str, &'static str>,
    address: &str,
    delimiter: Option<char>,
) -> Result<Resolution, StoreError> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Ok(Resolution::Unknown);
    };
    let mut candidates = vec![address.to_string()];
    if let Some(d) = delimiter
        && let Some((base, _tag)) = local.split_once(d)
        && !base.is_empty()
    {
        candidates.push(format!("{base}@{domain}"));
    }
    for c in &candidates {
        if accounts.get(c.as_str())?.is_some() {
            return Ok(Resolution::Local(vec![c.clone()]));
        }
        if let Some(targets) = aliases.get(c.as_str())? {
            return Ok(Resolution::Local(split_targets(targets.value())));
        }
    }
    if let Some(targets) = aliases.get(format!("@{domain}").as_str())? {
        return Ok(Resolution::Local(split_targets(targets.value())));
    }
    Ok(Resolution::Unknown)
}

fn split_targets(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// One copy of a message for one mailbox.
#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub user: String,
    pub mailbox: String,
    pub flags: u32,
}

/// A message to store: its content (as chunks) once, and one copy per target.
pub struct Delivery {
    /// Remote recipients to queue in the same transaction.
    pub queue: Vec<super::queue::Outbound>,
    pub blob: BlobId,
    pub content: super::content::Content,
    pub size: u64,
    pub meta: Vec<u8>,
    pub internal_date: i64,
    pub targets: Vec<DeliveryTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub mailbox: u64,
    pub uid: u32,
    pub modseq: u64,
}

/// Stores a message. A target whose mailbox does not exist (a user deleted
/// their Junk, say) gets it in INBOX instead; a target whose account is gone
/// is an error for the whole delivery, checked before anything is written.
pub fn deliver(txn: &WriteTransaction, delivery: &Delivery) -> Result<Vec<Delivered>, StoreError> {
    let mut resolved = Vec::with_capacity(delivery.targets.len());
    {
        let names = txn.open_table(MAILBOX_NAMES)?;
        for t in &delivery.targets {
            let id = match names.get((t.user.as_str(), t.mailbox.as_str()))? {
                Some(id) => id.value(),
                None => match names.get((t.user.as_str(), "INBOX"))? {
                    Some(id) => id.value(),
                    None => return Err(StoreError::NotFound(format!("user {}", t.user))),
                },
            };
            resolved.push((id, t.flags));
        }
    }
    store_blob(
        txn,
        delivery,
        (resolved.len() + delivery.queue.len()) as u32,
    )?;
    if !delivery.queue.is_empty() {
        super::queue::enqueue(
            txn,
            &delivery.blob,
            delivery.size,
            delivery.internal_date,
            &delivery.queue,
        )?;
    }
    let mut out = Vec::with_capacity(resolved.len());
    let mut boxes = txn.open_table(MAILBOXES)?;
    let mut messages = txn.open_table(MESSAGES)?;
    let mut index = RowIndexes::open(txn)?;
    for (id, flags) in resolved {
        let mut mailbox = match boxes.get(id)? {
            Some(row) => Mailbox::decode(id, row.value())?,
            None => {
                return Err(StoreError::Damaged(
                    PathBuf::new(),
                    format!("mailbox {id} has a name but no row"),
                ));
            }
        };
        let uid = mailbox.uidnext;
        mailbox.uidnext = mailbox.uidnext.checked_add(1).ok_or_else(|| {
            StoreError::Invalid(format!("mailbox {} has run out of UIDs", mailbox.name))
        })?;
        mailbox.highest_modseq += 1;
        mailbox.exists += 1;
        if flags & flags::SEEN == 0 {
            mailbox.unseen += 1;
        }
        mailbox.size += delivery.size;
        let row = MessageRow {
            flags,
            keywords: Vec::new(),
            modseq: mailbox.highest_modseq,
            internal_date: delivery.internal_date,
            size: delivery.size,
            blob: delivery.blob,
        };
        messages.insert((id, uid), row.encode().as_slice())?;
        index.added(id, uid, &row)?;
        boxes.insert(id, mailbox.encode().as_slice())?;
        out.push(Delivered {
            mailbox: id,
            uid,
            modseq: mailbox.highest_modseq,
        });
    }
    Ok(out)
}

/// Adds `references` to the blob, writing its chunks only if it is new.
fn store_blob(txn: &WriteTransaction, d: &Delivery, references: u32) -> Result<(), StoreError> {
    let mut blobs: Table<&[u8; 32], &[u8]> = txn.open_table(BLOBS)?;
    let existing = blobs.get(&d.blob)?.map(|r| BlobRow::decode(r.value()));
    let row = match existing {
        Some(row) => {
            let mut row = row?;
            row.refcount += references;
            row
        }
        None => {
            let mut chunks = txn.open_table(CHUNKS)?;
            d.content.for_each_chunk(|i, c| {
                chunks.insert((&d.blob, i), c)?;
                Ok(())
            })?;
            BlobRow {
                refcount: references,
                size: d.size,
                chunks: d.content.chunk_count(),
                prefix_len: d.content.prefix.as_ref().map_or(0, |p| p.len() as u32),
                meta: d.meta.clone(),
            }
        }
    };
    blobs.insert(&d.blob, row.encode().as_slice())?;
    Ok(())
}

/// Removes messages from a mailbox: one new mod-sequence for the whole
/// expunge, logged per UID, counters updated, content released when no
/// mailbox references it any more. UIDs that are not there are skipped.
/// Returns the UIDs removed and the new HIGHESTMODSEQ.
pub fn expunge(
    txn: &WriteTransaction,
    mailbox: u64,
    uids: &[u32],
) -> Result<(Vec<u32>, u64), StoreError> {
    let mut boxes = txn.open_table(MAILBOXES)?;
    let mut mb = match boxes.get(mailbox)? {
        Some(row) => Mailbox::decode(mailbox, row.value())?,
        None => return Err(StoreError::NotFound(format!("mailbox {mailbox}"))),
    };
    let mut removed = Vec::new();
    let mut blobs = Vec::new();
    {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut index = RowIndexes::open(txn)?;
        for &uid in uids {
            let Some(row) = messages.remove((mailbox, uid))? else {
                continue;
            };
            let row = MessageRow::decode(row.value())?;
            index.removed(mailbox, uid, &row)?;
            mb.exists = mb.exists.saturating_sub(1);
            if row.flags & flags::SEEN == 0 {
                mb.unseen = mb.unseen.saturating_sub(1);
            }
            mb.size = mb.size.saturating_sub(row.size);
            removed.push(uid);
            blobs.push(row.blob);
        }
    }
    if removed.is_empty() {
        return Ok((removed, mb.highest_modseq));
    }
    mb.highest_modseq += 1;
    {
        let mut log = txn.open_table(EXPUNGED)?;
        for &uid in &removed {
            log.insert((mailbox, mb.highest_modseq, uid), ())?;
        }
    }
    boxes.insert(mailbox, mb.encode().as_slice())?;
    drop(boxes);
    for b in blobs {
        release_blob(txn, &b)?;
    }
    Ok((removed, mb.highest_modseq))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::tests::temp_store;
    use super::*;

    pub(crate) fn delivery(content: &[u8], targets: &[(&str, &str)]) -> Delivery {
        use sha2::Digest;
        Delivery {
            queue: Vec::new(),
            blob: sha2::Sha256::digest(content).into(),
            content: super::super::content::Content::from_chunks(
                content.chunks(CHUNK_SIZE).map(<[u8]>::to_vec).collect(),
            ),
            size: content.len() as u64,
            meta: vec![],
            internal_date: 1_700_000_000,
            targets: targets
                .iter()
                .map(|(u, m)| DeliveryTarget {
                    user: u.to_string(),
                    mailbox: m.to_string(),
                    flags: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn accounts_aliases_and_resolution() {
        let (store, dir) = temp_store("resolve");
        store
            .write(|t| {
                add_account(t, "alice@example.org", "h", 1)?;
                add_account(t, "bob@example.org", "h", 1)?;
                add_alias(t, "postmaster@example.org", &["alice@example.org".into()])?;
                add_alias(
                    t,
                    "team@example.org",
                    &["alice@example.org".into(), "bob@example.org".into()],
                )
            })
            .unwrap();
        assert!(matches!(
            store.write(|t| add_account(t, "alice@example.org", "h", 1)),
            Err(StoreError::Exists(_))
        ));
        assert!(
            store
                .write(|t| add_alias(t, "x@example.org", &["nobody@example.org".into()]))
                .is_err()
        );
        let txn = store.begin_read().unwrap();
        let acc = txn.open_table(ACCOUNTS).unwrap();
        let al = txn.open_table(ALIASES).unwrap();
        let r = |a: &str| resolve_recipient(&acc, &al, a, Some('+')).unwrap();
        assert_eq!(
            r("alice@example.org"),
            Resolution::Local(vec!["alice@example.org".into()])
        );
        assert_eq!(
            r("alice+lists@example.org"),
            Resolution::Local(vec!["alice@example.org".into()])
        );
        assert_eq!(
            r("team+x@example.org").clone(),
            Resolution::Local(vec!["alice@example.org".into(), "bob@example.org".into()])
        );
        assert_eq!(r("carol@example.org"), Resolution::Unknown);
        assert_eq!(r("+x@example.org"), Resolution::Unknown);
        drop((acc, al, txn));
        store
            .write(|t| add_alias(t, "@example.org", &["bob@example.org".into()]))
            .unwrap();
        let txn = store.begin_read().unwrap();
        let acc = txn.open_table(ACCOUNTS).unwrap();
        let al = txn.open_table(ALIASES).unwrap();
        assert_eq!(
            resolve_recipient(&acc, &al, "carol@example.org", Some('+')).unwrap(),
            Resolution::Local(vec!["bob@example.org".into()])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn delivery_shares_one_blob_and_counts() {
        let (store, dir) = temp_store("deliver");
        store
            .write(|t| {
                add_account(t, "a@example.org", "h", 1)?;
                add_account(t, "b@example.org", "h", 1)
            })
            .unwrap();
        let content = vec![b'x'; CHUNK_SIZE * 2 + 10];
        let d = delivery(
            &content,
            &[("a@example.org", "INBOX"), ("b@example.org", "NoSuchBox")],
        );
        let out = store.write(|t| deliver(t, &d)).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.uid == 1));
        let blob = store.blob(&d.blob).unwrap().unwrap();
        assert_eq!(
            (blob.refcount, blob.chunks, blob.size),
            (2, 3, content.len() as u64)
        );
        let inbox = store.mailbox("b@example.org", "INBOX").unwrap().unwrap();
        assert_eq!((inbox.exists, inbox.unseen, inbox.uidnext), (1, 1, 2));
        let mut read = Vec::new();
        store
            .read_blob(&d.blob, |c| {
                read.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
        assert_eq!(read, content);
        // A second delivery to a gone account fails whole and writes nothing.
        let d2 = delivery(
            b"other",
            &[("a@example.org", "INBOX"), ("gone@example.org", "INBOX")],
        );
        assert!(store.write(|t| deliver(t, &d2)).is_err());
        assert!(store.blob(&d2.blob).unwrap().is_none());
        // Expunge: counters, modseq, log; a missing UID is skipped.
        let inbox_a = store.mailbox("a@example.org", "INBOX").unwrap().unwrap();
        let (removed, modseq) = store.write(|t| expunge(t, inbox_a.id, &[1, 99])).unwrap();
        assert_eq!(removed, vec![1]);
        assert_eq!(modseq, inbox_a.highest_modseq + 1);
        let after = store.mailbox("a@example.org", "INBOX").unwrap().unwrap();
        assert_eq!((after.exists, after.unseen, after.size), (0, 0, 0));
        assert_eq!(store.blob(&d.blob).unwrap().unwrap().refcount, 1);
        {
            let txn = store.begin_read().unwrap();
            let log = txn.open_table(EXPUNGED).unwrap();
            assert!(log.get((inbox_a.id, modseq, 1)).unwrap().is_some());
        }
        // Deleting one account keeps the shared blob; deleting both frees it.
        store.write(|t| del_account(t, "a@example.org")).unwrap();
        store.write(|t| del_account(t, "b@example.org")).unwrap();
        assert!(store.blob(&d.blob).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn uidvalidity_is_unique_across_recreation() {
        let (store, dir) = temp_store("uidvalidity");
        store
            .write(|t| add_account(t, "a@example.org", "h", 1000))
            .unwrap();
        let mut seen: Vec<u32> = store
            .mailboxes("a@example.org")
            .unwrap()
            .iter()
            .map(|m| m.uidvalidity)
            .collect();
        store.write(|t| del_account(t, "a@example.org")).unwrap();
        store
            .write(|t| add_account(t, "a@example.org", "h", 1000))
            .unwrap();
        seen.extend(
            store
                .mailboxes("a@example.org")
                .unwrap()
                .iter()
                .map(|m| m.uidvalidity),
        );
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn address_validation() {
        for ok in ["a@example.org", "first.last@sub.example.org", "x@localhost"] {
            assert!(validate_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "@example.org",
            "a@",
            "a b@example.org",
            "a%b@example.org",
            "a@b@example.org",
            "a!b@example.org",
        ] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
    }
}
