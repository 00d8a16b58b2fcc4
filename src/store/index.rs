//! Secondary indexes over the message rows, kept in the same write
//! transaction as the rows so they can never disagree after a crash:
//!
//! - `changes` (mailbox, modseq, uid): what changed since a mod-sequence.
//! - `uid_runs` (mailbox, first uid) -> last uid: the mailbox's UID set as
//!   runs of consecutive UIDs. SELECT reads one entry for a mailbox without
//!   gaps instead of every message row (schema 3).
//! - `unseen` (mailbox, uid): messages without `\Seen`, so IMAP4rev1's
//!   `[UNSEEN n]` is the first entry, not a scan (schema 3).
//!
//! Every write of a message row goes through [`RowIndexes`].

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{CHANGES, MessageRow, StoreError, flags};

pub(crate) const UID_RUNS: TableDefinition<(u64, u32), u32> = TableDefinition::new("uid_runs");
pub(crate) const UNSEEN: TableDefinition<(u64, u32), ()> = TableDefinition::new("unseen");

/// The three index tables, open for one write transaction.
pub(crate) struct RowIndexes<'t> {
    changes: Table<'t, (u64, u64, u32), ()>,
    runs: Table<'t, (u64, u32), u32>,
    unseen: Table<'t, (u64, u32), ()>,
}

impl<'t> RowIndexes<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<RowIndexes<'t>, StoreError> {
        Ok(RowIndexes {
            changes: txn.open_table(CHANGES)?,
            runs: txn.open_table(UID_RUNS)?,
            unseen: txn.open_table(UNSEEN)?,
        })
    }

    /// A new row. UIDs are assigned in increasing order, so `uid` is above
    /// every UID of the mailbox: it extends the last run or starts one.
    pub fn added(&mut self, mailbox: u64, uid: u32, row: &MessageRow) -> Result<(), StoreError> {
        self.changes.insert((mailbox, row.modseq, uid), ())?;
        if !seen(row) {
            self.unseen.insert((mailbox, uid), ())?;
        }
        let last = self
            .runs
            .range((mailbox, 0)..=(mailbox, u32::MAX))?
            .next_back()
            .transpose()?
            .map(|(k, v)| (k.value().1, v.value()));
        match last {
            Some((first, end)) if end.checked_add(1) == Some(uid) => {
                self.runs.insert((mailbox, first), uid)?;
            }
            Some((_, end)) if end >= uid => {
                return Err(StoreError::Invalid(format!(
                    "UID {uid} is not above the mailbox's highest UID {end}"
                )));
            }
            _ => {
                self.runs.insert((mailbox, uid), uid)?;
            }
        }
        Ok(())
    }

    /// A row rewritten (flags, keywords, mod-sequence).
    pub fn changed(
        &mut self,
        mailbox: u64,
        uid: u32,
        old: &MessageRow,
        new: &MessageRow,
    ) -> Result<(), StoreError> {
        if old.modseq != new.modseq {
            self.changes.remove((mailbox, old.modseq, uid))?;
            self.changes.insert((mailbox, new.modseq, uid), ())?;
        }
        match (seen(old), seen(new)) {
            (true, false) => {
                self.unseen.insert((mailbox, uid), ())?;
            }
            (false, true) => {
                self.unseen.remove((mailbox, uid))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A row removed (expunge): its run is shortened or split in two.
    pub fn removed(&mut self, mailbox: u64, uid: u32, row: &MessageRow) -> Result<(), StoreError> {
        self.changes.remove((mailbox, row.modseq, uid))?;
        if !seen(row) {
            self.unseen.remove((mailbox, uid))?;
        }
        let run = self
            .runs
            .range((mailbox, 0)..=(mailbox, uid))?
            .next_back()
            .transpose()?
            .map(|(k, v)| (k.value().1, v.value()));
        let Some((first, last)) = run.filter(|&(_, last)| last >= uid) else {
            return Ok(());
        };
        self.runs.remove((mailbox, first))?;
        if first < uid {
            self.runs.insert((mailbox, first), uid - 1)?;
        }
        if uid < last {
            self.runs.insert((mailbox, uid + 1), last)?;
        }
        Ok(())
    }

    /// Every index entry of a mailbox that is being deleted.
    pub fn drop_mailbox(&mut self, mailbox: u64) -> Result<(), StoreError> {
        for e in self
            .changes
            .extract_from_if((mailbox, 0, 0)..=(mailbox, u64::MAX, u32::MAX), |_, _| true)?
        {
            e?;
        }
        for e in self
            .runs
            .extract_from_if((mailbox, 0)..=(mailbox, u32::MAX), |_, _| true)?
        {
            e?;
        }
        for e in self
            .unseen
            .extract_from_if((mailbox, 0)..=(mailbox, u32::MAX), |_, _| true)?
        {
            e?;
        }
        Ok(())
    }
}

fn seen(row: &MessageRow) -> bool {
    row.flags & flags::SEEN != 0
}

/// The UIDs of `mailbox` as (first, last) runs, in order.
pub fn uid_runs(txn: &ReadTransaction, mailbox: u64) -> Result<Vec<(u32, u32)>, StoreError> {
    let t = txn.open_table(UID_RUNS)?;
    let mut out = Vec::new();
    for e in t.range((mailbox, 0)..=(mailbox, u32::MAX))? {
        let (k, v) = e?;
        out.push((k.value().1, v.value()));
    }
    Ok(out)
}

/// The lowest UID of `mailbox` without `\Seen`.
pub fn first_unseen(txn: &ReadTransaction, mailbox: u64) -> Result<Option<u32>, StoreError> {
    let t = txn.open_table(UNSEEN)?;
    let first = t.range((mailbox, 0)..=(mailbox, u32::MAX))?.next();
    Ok(first.transpose()?.map(|(k, _)| k.value().1))
}

/// UIDs of `mailbox` whose row changed after mod-sequence `since` (the
/// `changes` index: a range read, not a scan of the mailbox), ascending.
pub fn changed_since(
    txn: &ReadTransaction,
    mailbox: u64,
    since: u64,
) -> Result<Vec<u32>, StoreError> {
    let t = txn.open_table(CHANGES)?;
    let mut out = Vec::new();
    for e in t.range((mailbox, since.saturating_add(1), 0)..=(mailbox, u64::MAX, u32::MAX))? {
        out.push(e?.0.value().2);
    }
    out.sort_unstable();
    Ok(out)
}

/// UIDs expunged from `mailbox` after mod-sequence `since` (the expunge
/// log), ascending, each once.
pub fn expunged_since(
    txn: &ReadTransaction,
    mailbox: u64,
    since: u64,
) -> Result<Vec<u32>, StoreError> {
    let t = txn.open_table(super::EXPUNGED)?;
    let mut out = Vec::new();
    for e in t.range((mailbox, since.saturating_add(1), 0)..=(mailbox, u64::MAX, u32::MAX))? {
        out.push(e?.0.value().2);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Builds the schema 3 indexes from the message rows (migration).
pub(crate) fn rebuild(txn: &WriteTransaction) -> Result<(), StoreError> {
    let rows: Vec<(u64, u32, bool)> = {
        let messages = txn.open_table(super::MESSAGES)?;
        let mut v = Vec::new();
        for e in messages.iter()? {
            let (k, row) = e?;
            let (mailbox, uid) = k.value();
            v.push((mailbox, uid, seen(&MessageRow::decode(row.value())?)));
        }
        v
    };
    let mut runs = txn.open_table(UID_RUNS)?;
    let mut unseen = txn.open_table(UNSEEN)?;
    let mut current: Option<(u64, u32, u32)> = None;
    for (mailbox, uid, is_seen) in rows {
        if !is_seen {
            unseen.insert((mailbox, uid), ())?;
        }
        current = match current {
            Some((m, first, last)) if m == mailbox && last.checked_add(1) == Some(uid) => {
                Some((m, first, uid))
            }
            Some((m, first, last)) => {
                runs.insert((m, first), last)?;
                Some((mailbox, uid, uid))
            }
            None => Some((mailbox, uid, uid)),
        };
    }
    if let Some((m, first, last)) = current {
        runs.insert((m, first), last)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mailbox_ops::{self, FlagChange};
    use crate::store::ops::{self, tests::delivery};
    use crate::store::tests::temp_store;
    use crate::store::{MESSAGES, SpecialUse, Store};

    const USER: &str = "a@example.org";

    /// The indexes computed from the rows, the slow way.
    fn from_rows(store: &Store, mailbox: u64) -> (Vec<(u32, u32)>, Option<u32>) {
        let txn = store.begin_read().unwrap();
        let t = txn.open_table(MESSAGES).unwrap();
        let mut runs: Vec<(u32, u32)> = Vec::new();
        let mut unseen = None;
        for e in t.range((mailbox, 0)..=(mailbox, u32::MAX)).unwrap() {
            let (k, v) = e.unwrap();
            let uid = k.value().1;
            if unseen.is_none() && !seen(&MessageRow::decode(v.value()).unwrap()) {
                unseen = Some(uid);
            }
            match runs.last_mut() {
                Some(r) if r.1 + 1 == uid => r.1 = uid,
                _ => runs.push((uid, uid)),
            }
        }
        (runs, unseen)
    }

    fn indexed(store: &Store, mailbox: u64) -> (Vec<(u32, u32)>, Option<u32>) {
        let txn = store.begin_read().unwrap();
        (
            uid_runs(&txn, mailbox).unwrap(),
            first_unseen(&txn, mailbox).unwrap(),
        )
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deliver(u8),
        Expunge(Vec<u8>),
        Seen(u8, bool),
        CopyToOther(u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (1u8..5).prop_map(Op::Deliver),
            proptest::collection::vec(any::<u8>(), 1..4).prop_map(Op::Expunge),
            (any::<u8>(), any::<bool>()).prop_map(|(i, s)| Op::Seen(i, s)),
            any::<u8>().prop_map(Op::CopyToOther),
        ]
    }

    fn live_uids(store: &Store, mailbox: u64) -> Vec<u32> {
        let (runs, _) = from_rows(store, mailbox);
        runs.iter().flat_map(|&(a, b)| a..=b).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(24))]
        /// Whatever the mix of deliveries, expunges, flag changes and
        /// copies, the indexes say what a scan of the rows says.
        #[test]
        fn indexes_match_the_rows(ops in proptest::collection::vec(op(), 1..40)) {
            let (store, dir) = temp_store("index");
            store.write(|t| ops::add_account(t, USER, "h", 1)).unwrap();
            let other = store
                .write(|t| ops::create_mailbox(t, USER, "Other", SpecialUse::None, 1))
                .unwrap()
                .id;
            let inbox = store.mailbox(USER, "INBOX").unwrap().unwrap().id;
            let mut n = 0u32;
            for op in ops {
                let uids = live_uids(&store, inbox);
                let pick = |i: u8| (!uids.is_empty()).then(|| uids[i as usize % uids.len()]);
                store.write(|t| {
                    match &op {
                        Op::Deliver(k) => {
                            for _ in 0..*k {
                                n += 1;
                                ops::deliver(t, &delivery(format!("m{n}").as_bytes(), &[(USER, "INBOX")]))?;
                            }
                        }
                        Op::Expunge(is) => {
                            let v: Vec<u32> = is.iter().filter_map(|&i| pick(i)).collect();
                            ops::expunge(t, inbox, &v)?;
                        }
                        Op::Seen(i, on) => {
                            if let Some(uid) = pick(*i) {
                                let change = if *on { FlagChange::Add } else { FlagChange::Remove };
                                mailbox_ops::store_flags(t, inbox, &[uid], change, flags::SEEN, &[], None)?;
                            }
                        }
                        Op::CopyToOther(i) => {
                            if let Some(uid) = pick(*i) {
                                mailbox_ops::copy(t, inbox, &[uid], other)?;
                            }
                        }
                    }
                    Ok(())
                }).unwrap();
                proptest::prop_assert_eq!(indexed(&store, inbox), from_rows(&store, inbox));
                proptest::prop_assert_eq!(indexed(&store, other), from_rows(&store, other));
            }
            store.write(|t| mailbox_ops::delete(t, USER, "Other")).unwrap();
            let txn = store.begin_read().unwrap();
            proptest::prop_assert!(uid_runs(&txn, other).unwrap().is_empty());
            proptest::prop_assert_eq!(first_unseen(&txn, other).unwrap(), None);
            drop(txn);
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}
