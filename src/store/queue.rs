//! The outbound queue: one row per (message, recipient), so each recipient
//! has its own state, with an index by next attempt time. Rows hold a
//! reference on the message's blob like a mailbox copy does.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::codec::{Malformed, RowReader, RowWriter};
use super::{BlobId, META, Store, StoreError};

pub(crate) const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// (next attempt, queue id) -> (), so due entries are a range scan.
pub(crate) const QUEUE_DUE: TableDefinition<(i64, u64), ()> = TableDefinition::new("queue_due");

#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub id: u64,
    pub blob: BlobId,
    /// Reverse path ("" for the null sender, e.g. our own bounces).
    pub from: String,
    pub rcpt: String,
    /// The recipient's domain, lower-cased: entries of one domain share a
    /// connection.
    pub domain: String,
    pub created: i64,
    pub next_try: i64,
    pub attempts: u32,
    pub last_error: String,
    /// The message needs 8BITMIME / SMTPUTF8 from the peer.
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub size: u64,
}

impl QueueEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = RowWriter::new();
        w.u8(1)
            .raw(&self.blob)
            .str(&self.from)
            .str(&self.rcpt)
            .str(&self.domain)
            .i64(self.created)
            .i64(self.next_try)
            .u32(self.attempts)
            .str(&self.last_error)
            .u8(self.eight_bit as u8 | (self.smtputf8 as u8) << 1)
            .u64(self.size);
        w.finish()
    }

    pub(crate) fn decode(id: u64, row: &[u8]) -> Result<QueueEntry, Malformed> {
        let mut r = RowReader::new(row);
        let _version = r.u8()?;
        let blob = r.raw::<32>()?;
        let from = r.str()?.to_string();
        let rcpt = r.str()?.to_string();
        let domain = r.str()?.to_string();
        let created = r.i64()?;
        let next_try = r.i64()?;
        let attempts = r.u32()?;
        let last_error = r.str()?.to_string();
        let bits = r.u8()?;
        let size = r.u64()?;
        Ok(QueueEntry {
            id,
            blob,
            from,
            rcpt,
            domain,
            created,
            next_try,
            attempts,
            last_error,
            eight_bit: bits & 1 != 0,
            smtputf8: bits & 2 != 0,
            size,
        })
    }
}

/// What a delivery asks to queue for one remote recipient.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub from: String,
    pub rcpt: String,
    pub eight_bit: bool,
    pub smtputf8: bool,
}

fn next_id(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let last = match meta.get("last_queue_id")? {
        Some(v) => u64::from_le_bytes(v.value().try_into().map_err(|_| Malformed)?),
        None => 0,
    };
    meta.insert("last_queue_id", (last + 1).to_le_bytes().as_slice())?;
    Ok(last + 1)
}

/// Adds queue rows for a blob (whose reference count the caller raises).
pub fn enqueue(
    txn: &WriteTransaction,
    blob: &BlobId,
    size: u64,
    now: i64,
    items: &[Outbound],
) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::with_capacity(items.len());
    for o in items {
        let id = next_id(txn)?;
        let domain = o
            .rcpt
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_lowercase())
            .unwrap_or_default();
        let e = QueueEntry {
            id,
            blob: *blob,
            from: o.from.clone(),
            rcpt: o.rcpt.clone(),
            domain,
            created: now,
            next_try: now,
            attempts: 0,
            last_error: String::new(),
            eight_bit: o.eight_bit,
            smtputf8: o.smtputf8,
            size,
        };
        txn.open_table(QUEUE)?.insert(id, e.encode().as_slice())?;
        txn.open_table(QUEUE_DUE)?.insert((now, id), ())?;
        ids.push(id);
    }
    Ok(ids)
}

/// Removes an entry (delivered, bounced or dropped) and its blob reference.
pub fn remove(txn: &WriteTransaction, id: u64) -> Result<Option<QueueEntry>, StoreError> {
    let Some(row) = txn
        .open_table(QUEUE)?
        .remove(id)?
        .map(|r| QueueEntry::decode(id, r.value()))
    else {
        return Ok(None);
    };
    let e = row?;
    txn.open_table(QUEUE_DUE)?.remove((e.next_try, id))?;
    super::ops::release_blob(txn, &e.blob)?;
    Ok(Some(e))
}

/// Records a failed attempt and when to try next.
pub fn reschedule(
    txn: &WriteTransaction,
    id: u64,
    next_try: i64,
    error: &str,
    count_attempt: bool,
) -> Result<(), StoreError> {
    let mut q = txn.open_table(QUEUE)?;
    let Some(mut e) = q
        .get(id)?
        .map(|r| QueueEntry::decode(id, r.value()))
        .transpose()?
    else {
        return Ok(());
    };
    let mut due = txn.open_table(QUEUE_DUE)?;
    due.remove((e.next_try, id))?;
    e.next_try = next_try;
    if count_attempt {
        e.attempts += 1;
    }
    e.last_error = error.chars().take(500).collect();
    due.insert((next_try, id), ())?;
    q.insert(id, e.encode().as_slice())?;
    Ok(())
}

impl Store {
    /// Entries due at or before `now`, oldest first, at most `limit`.
    pub fn queue_due(&self, now: i64, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        let txn = self.begin_read()?;
        let due = txn.open_table(QUEUE_DUE)?;
        let q = txn.open_table(QUEUE)?;
        let mut out = Vec::new();
        for entry in due.range(..=(now, u64::MAX))? {
            let (k, _) = entry?;
            let id = k.value().1;
            if let Some(row) = q.get(id)? {
                out.push(QueueEntry::decode(id, row.value())?);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// When the next entry is due, if any.
    pub fn queue_next_due(&self) -> Result<Option<i64>, StoreError> {
        let txn = self.begin_read()?;
        let due = txn.open_table(QUEUE_DUE)?;
        Ok(due.first()?.map(|(k, _)| k.value().0))
    }

    pub fn queue_entries(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let txn = self.begin_read()?;
        let q = txn.open_table(QUEUE)?;
        let mut out = Vec::new();
        for entry in q.iter()? {
            let (k, v) = entry?;
            out.push(QueueEntry::decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn queue_entry(&self, id: u64) -> Result<Option<QueueEntry>, StoreError> {
        let txn = self.begin_read()?;
        let q = txn.open_table(QUEUE)?;
        Ok(q.get(id)?
            .map(|r| QueueEntry::decode(id, r.value()))
            .transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_store;
    use super::*;

    #[test]
    fn enqueue_reschedule_remove() {
        let (store, dir) = temp_store("queue");
        let out = |rcpt: &str| Outbound {
            from: "a@example.org".into(),
            rcpt: rcpt.into(),
            eight_bit: false,
            smtputf8: false,
        };
        let blob = [1u8; 32];
        let ids = store
            .write(|t| {
                enqueue(
                    t,
                    &blob,
                    10,
                    100,
                    &[out("x@Remote.example"), out("y@other.example")],
                )
            })
            .unwrap();
        assert_eq!(ids.len(), 2);
        let due = store.queue_due(100, 10).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].domain, "remote.example");
        assert!(store.queue_due(99, 10).unwrap().is_empty());
        store
            .write(|t| reschedule(t, ids[0], 500, "451 try later", true))
            .unwrap();
        assert_eq!(store.queue_due(100, 10).unwrap().len(), 1);
        assert_eq!(store.queue_next_due().unwrap(), Some(100));
        let e = store.queue_entry(ids[0]).unwrap().unwrap();
        assert_eq!(
            (e.attempts, e.next_try, e.last_error.as_str()),
            (1, 500, "451 try later")
        );
        store.write(|t| remove(t, ids[1])).unwrap();
        assert_eq!(store.queue_next_due().unwrap(), Some(500));
        assert_eq!(store.queue_entries().unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
