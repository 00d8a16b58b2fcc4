//! Learning: what users do with their mail trains the token database.
//!
//! Every training is recorded per (user, message) in `spam_trained`, so a
//! message is counted at most once, in one class: training it again in the
//! same class changes nothing, training it in the other class first undoes
//! the earlier training (train-on-error with correction), and untraining
//! removes it.
//!
//! # What IMAP MOVE and COPY must call
//!
//! After the store transaction that moves or copies messages has written
//! them, and in the same write transaction (on the writer thread), call for
//! each message:
//!
//! ```ignore
//! spam::learn::on_transfer(txn, &config.spam, user, &row.blob, from.special_use, to.special_use)?;
//! ```
//!
//! It trains spam when the target is the Junk mailbox, ham when a message
//! leaves Junk for any mailbox but Trash (which undoes an earlier spam
//! training of that message), and nothing otherwise. The message is read
//! back from the store's blob tables (up to `spam.max_bytes`), so the
//! caller passes only its blob id.

use std::collections::HashMap;

use redb::{ReadableTable, WriteTransaction};

use super::Settings;
use super::db::{Counts, GLOBAL, MESSAGES, TOKENS, TRAINED, token_key};
use super::tokenize::tokenize;
use crate::store::{BLOBS, BlobId, BlobRow, CHUNKS, SpecialUse, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Spam,
    Ham,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Spam => "spam",
            Class::Ham => "ham",
        }
    }
}

/// What a learning call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Counted for the first time.
    Trained,
    /// It had been trained in the other class: that was undone first.
    Corrected,
    /// Already trained in that class: nothing changed.
    Unchanged,
    /// An earlier training was removed.
    Untrained,
    /// Untraining a message that was never trained: nothing changed.
    NotTrained,
}

// `spam_trained` values: the class, plus whether the user's own scope was
// counted too (so undoing touches exactly what training touched).
const STATE_SPAM: u8 = 1;
const STATE_HAM: u8 = 2;
const STATE_USER_SCOPE: u8 = 4;

fn state_class(state: u8) -> Option<Class> {
    match state & 3 {
        STATE_SPAM => Some(Class::Spam),
        STATE_HAM => Some(Class::Ham),
        _ => None,
    }
}

/// Count changes gathered in memory and written once per token, so batch
/// training does one read-modify-write per distinct token, not per
/// occurrence.
#[derive(Default)]
pub struct Deltas {
    tokens: HashMap<String, (i64, i64)>,
    messages: HashMap<String, (i64, i64)>,
}

impl Deltas {
    fn add(&mut self, scope: &str, tokens: &[String], class: Class, sign: i64) {
        let d = match class {
            Class::Spam => (sign, 0),
            Class::Ham => (0, sign),
        };
        let bump = |e: &mut (i64, i64)| {
            e.0 += d.0;
            e.1 += d.1;
        };
        bump(self.messages.entry(scope.to_string()).or_default());
        for t in tokens {
            bump(self.tokens.entry(token_key(scope, t)).or_default());
        }
    }

    /// Distinct tokens pending; callers flush past a bound to cap memory.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.messages.is_empty()
    }

    /// Writes the changes. Counts never go below zero (a database trained
    /// by an older tokenizer may lack what is being undone); a token whose
    /// counts reach zero is removed.
    pub fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        fn apply_one(
            table: &mut redb::Table<&str, u64>,
            key: &str,
            d: (i64, i64),
        ) -> Result<(), StoreError> {
            if d == (0, 0) {
                return Ok(());
            }
            let old = table
                .get(key)?
                .map(|v| Counts::unpack(v.value()))
                .unwrap_or_default();
            let add = |c: u32, d: i64| (i64::from(c) + d).clamp(0, i64::from(u32::MAX)) as u32;
            let new = Counts {
                spam: add(old.spam, d.0),
                ham: add(old.ham, d.1),
            };
            if new == Counts::default() {
                table.remove(key)?;
            } else {
                table.insert(key, new.pack())?;
            }
            Ok(())
        }
        let mut tokens = txn.open_table(TOKENS)?;
        let mut pending: Vec<(String, (i64, i64))> = self.tokens.drain().collect();
        // In key order: the B-tree is walked once, front to back.
        pending.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, d) in pending {
            apply_one(&mut tokens, &k, d)?;
        }
        let mut messages = txn.open_table(MESSAGES)?;
        for (k, d) in self.messages.drain() {
            apply_one(&mut messages, &k, d)?;
        }
        Ok(())
    }
}

/// Trains (`want` Some) or untrains (`want` None) one message identified by
/// `id` for `user` ("" for training that belongs to no user, e.g. the CLI),
/// recording its state at once and its token counts in `deltas` (apply
/// them before committing). `tokens` is called only if counts change.
pub fn learn(
    txn: &WriteTransaction,
    deltas: &mut Deltas,
    user: &str,
    id: &[u8; 32],
    want: Option<Class>,
    per_user: bool,
    tokens: impl FnOnce() -> Result<Vec<String>, StoreError>,
) -> Result<Learned, StoreError> {
    let mut trained = txn.open_table(TRAINED)?;
    let state = trained.get((user, id))?.map(|v| v.value());
    let had = state.and_then(state_class);
    if had == want {
        return Ok(if want.is_some() {
            Learned::Unchanged
        } else {
            Learned::NotTrained
        });
    }
    let tokens = tokens()?;
    if let (Some(state), Some(old)) = (state, had) {
        deltas.add(GLOBAL, &tokens, old, -1);
        if state & STATE_USER_SCOPE != 0 {
            deltas.add(user, &tokens, old, -1);
        }
    }
    let outcome = match want {
        Some(class) => {
            let user_scope = per_user && !user.is_empty();
            deltas.add(GLOBAL, &tokens, class, 1);
            let mut state = match class {
                Class::Spam => STATE_SPAM,
                Class::Ham => STATE_HAM,
            };
            if user_scope {
                deltas.add(user, &tokens, class, 1);
                state |= STATE_USER_SCOPE;
            }
            trained.insert((user, id), state)?;
            if had.is_some() {
                Learned::Corrected
            } else {
                Learned::Trained
            }
        }
        None => {
            trained.remove((user, id))?;
            Learned::Untrained
        }
    };
    Ok(outcome)
}

/// Reads up to `max_bytes` of a stored message inside a write transaction.
pub fn read_blob(
    txn: &WriteTransaction,
    blob: &BlobId,
    max_bytes: usize,
) -> Result<Vec<u8>, StoreError> {
    let blobs = txn.open_table(BLOBS)?;
    let row = blobs
        .get(blob)?
        .ok_or_else(|| StoreError::NotFound("message content".into()))?;
    let row = BlobRow::decode(row.value())?;
    let chunks = txn.open_table(CHUNKS)?;
    let mut out = Vec::new();
    for i in 0..row.chunks {
        if out.len() >= max_bytes {
            break;
        }
        let Some(chunk) = chunks.get((blob, i))? else {
            break;
        };
        let c = chunk.value();
        out.extend_from_slice(&c[..c.len().min(max_bytes - out.len())]);
    }
    Ok(out)
}

/// Trains a stored message (by its blob id) for `user` as `class`.
pub fn train_message(
    txn: &WriteTransaction,
    settings: &Settings,
    user: &str,
    blob: &BlobId,
    class: Class,
) -> Result<Learned, StoreError> {
    change(txn, settings, user, blob, Some(class))
}

/// Removes whatever training a stored message had for `user`.
pub fn untrain_message(
    txn: &WriteTransaction,
    settings: &Settings,
    user: &str,
    blob: &BlobId,
) -> Result<Learned, StoreError> {
    change(txn, settings, user, blob, None)
}

fn change(
    txn: &WriteTransaction,
    settings: &Settings,
    user: &str,
    blob: &BlobId,
    want: Option<Class>,
) -> Result<Learned, StoreError> {
    let mut deltas = Deltas::default();
    let outcome = learn(
        txn,
        &mut deltas,
        user,
        blob,
        want,
        settings.per_user,
        || {
            Ok(tokenize(
                &read_blob(txn, blob, settings.max_bytes)?,
                settings.max_tokens,
            ))
        },
    )?;
    deltas.apply(txn)?;
    Ok(outcome)
}

/// The training an IMAP MOVE or COPY of a message implies (see the module
/// documentation): into Junk is spam; out of Junk, except into Trash, is
/// ham; anything else teaches nothing and returns `None`.
pub fn on_transfer(
    txn: &WriteTransaction,
    settings: &Settings,
    user: &str,
    blob: &BlobId,
    from: SpecialUse,
    to: SpecialUse,
) -> Result<Option<Learned>, StoreError> {
    let class = match (from, to) {
        (SpecialUse::Junk, SpecialUse::Junk) => return Ok(None),
        (_, SpecialUse::Junk) => Class::Spam,
        (SpecialUse::Junk, SpecialUse::Trash) => return Ok(None),
        (SpecialUse::Junk, _) => Class::Ham,
        _ => return Ok(None),
    };
    if !settings.enabled {
        return Ok(None);
    }
    train_message(txn, settings, user, blob, class).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spam::db::{self, GLOBAL};
    use crate::store::ops::{self, Delivery, DeliveryTarget};
    use crate::store::tests::temp_store;
    use crate::store::{Store, content::Content};
    use redb::ReadableTableMetadata;

    const USER: &str = "a@example.org";

    fn deliver(store: &Store, body: &str) -> BlobId {
        use sha2::Digest;
        let bytes = body.as_bytes().to_vec();
        let blob: BlobId = sha2::Sha256::digest(&bytes).into();
        store
            .write(|t| {
                ops::deliver(
                    t,
                    &Delivery {
                        queue: Vec::new(),
                        blob,
                        size: bytes.len() as u64,
                        content: Content::from_chunks(vec![bytes.clone()]),
                        meta: vec![],
                        internal_date: 0,
                        targets: vec![DeliveryTarget {
                            user: USER.into(),
                            mailbox: "INBOX".into(),
                            flags: 0,
                        }],
                    },
                )
            })
            .unwrap();
        blob
    }

    fn counts(store: &Store, scope: &str, token: &str) -> (Counts, Counts) {
        let txn = store.begin_read().unwrap();
        let msgs = db::message_counts(&txn, scope).unwrap();
        let tok = db::read_table(&txn, TOKENS)
            .unwrap()
            .and_then(|t| t.get(token_key(scope, token).as_str()).unwrap())
            .map(|v| Counts::unpack(v.value()))
            .unwrap_or_default();
        (msgs, tok)
    }

    #[test]
    fn moves_train_once_and_moving_out_of_junk_corrects() {
        let (store, dir) = temp_store("spam-learn");
        store.write(|t| ops::add_account(t, USER, "h", 1)).unwrap();
        let blob = deliver(&store, "Subject: cheap pills\r\n\r\nviagra offer\r\n");
        let s = Settings::default();
        let xfer = |from, to| {
            store
                .write(|t| on_transfer(t, &s, USER, &blob, from, to))
                .unwrap()
        };
        use SpecialUse::{Archive, Junk, None as Plain, Trash};
        // INBOX -> Junk: spam.
        assert_eq!(xfer(Plain, Junk), Some(Learned::Trained));
        let one_spam = Counts { spam: 1, ham: 0 };
        assert_eq!(counts(&store, GLOBAL, "viagra"), (one_spam, one_spam));
        // Copied into Junk again: never counted twice.
        assert_eq!(xfer(Archive, Junk), Some(Learned::Unchanged));
        assert_eq!(counts(&store, GLOBAL, "subj:cheap"), (one_spam, one_spam));
        // Junk -> Trash teaches nothing; moves between other mailboxes neither.
        assert_eq!(xfer(Junk, Trash), None);
        assert_eq!(xfer(Plain, Archive), None);
        // Junk -> INBOX: the spam training is undone, ham counted instead.
        assert_eq!(xfer(Junk, Plain), Some(Learned::Corrected));
        let one_ham = Counts { spam: 0, ham: 1 };
        assert_eq!(counts(&store, GLOBAL, "viagra"), (one_ham, one_ham));
        // Untraining removes it completely, tokens included.
        let out = store
            .write(|t| untrain_message(t, &s, USER, &blob))
            .unwrap();
        assert_eq!(out, Learned::Untrained);
        assert_eq!(
            counts(&store, GLOBAL, "viagra"),
            (Counts::default(), Counts::default())
        );
        let txn = store.begin_read().unwrap();
        assert_eq!(
            db::read_table(&txn, TOKENS)
                .unwrap()
                .unwrap()
                .len()
                .unwrap(),
            0
        );
        drop(txn);
        let out = store
            .write(|t| untrain_message(t, &s, USER, &blob))
            .unwrap();
        assert_eq!(out, Learned::NotTrained);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn per_user_scope_is_counted_and_undone() {
        let (store, dir) = temp_store("spam-peruser");
        store.write(|t| ops::add_account(t, USER, "h", 1)).unwrap();
        let blob = deliver(&store, "Subject: hello\r\n\r\nlunch tomorrow\r\n");
        let s = Settings {
            per_user: true,
            ..Settings::default()
        };
        store
            .write(|t| train_message(t, &s, USER, &blob, Class::Ham))
            .unwrap();
        let one_ham = Counts { spam: 0, ham: 1 };
        assert_eq!(counts(&store, USER, "lunch"), (one_ham, one_ham));
        assert_eq!(counts(&store, GLOBAL, "lunch"), (one_ham, one_ham));
        // Switching per_user off later still undoes the user's counts.
        let off = Settings::default();
        store
            .write(|t| train_message(t, &off, USER, &blob, Class::Spam))
            .unwrap();
        assert_eq!(
            counts(&store, USER, "lunch"),
            (Counts::default(), Counts::default())
        );
        let one_spam = Counts { spam: 1, ham: 0 };
        assert_eq!(counts(&store, GLOBAL, "lunch"), (one_spam, one_spam));
        // A missing blob is an error, not a silent no-op.
        let err = store.write(|t| train_message(t, &s, USER, &[9; 32], Class::Spam));
        assert!(matches!(err, Err(StoreError::NotFound(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
