//! Token counts in redb: in the server's store, or in a file of their own
//! (`pimail spam ... --db FILE`, for offline evaluation).
//!
//! Tables (created on first training; a missing table reads as empty):
//! - `spam_tokens`: key -> spam count << 32 | ham count. The key is the
//!   token for the global database, `USER \x01 TOKEN` for a user's own
//!   (tokens never hold control characters).
//! - `spam_messages`: scope ("" global, or the user) -> messages trained,
//!   packed the same way.
//! - `spam_trained`: (user, message id) -> how that message was trained
//!   (see [`super::learn`]), so no message is ever counted twice. The id is
//!   the store's blob id (content hash) for stored mail, the SHA-256 of the
//!   file for CLI training; CLI training uses user "".

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, TableDefinition, TableError,
    WriteTransaction,
};

use crate::store::{Store, StoreError, StoreOptions};

pub const TOKENS: TableDefinition<&str, u64> = TableDefinition::new("spam_tokens");
pub const MESSAGES: TableDefinition<&str, u64> = TableDefinition::new("spam_messages");
pub const TRAINED: TableDefinition<(&str, &[u8; 32]), u8> = TableDefinition::new("spam_trained");

/// Scope of the global database.
pub const GLOBAL: &str = "";

/// How often a token (or how many messages) was seen in spam and in ham.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub spam: u32,
    pub ham: u32,
}

impl Counts {
    pub fn pack(self) -> u64 {
        (u64::from(self.spam) << 32) | u64::from(self.ham)
    }
    pub fn unpack(v: u64) -> Counts {
        Counts {
            spam: (v >> 32) as u32,
            ham: v as u32,
        }
    }
}

pub fn token_key(scope: &str, token: &str) -> String {
    if scope.is_empty() {
        token.to_string()
    } else {
        format!("{scope}\u{1}{token}")
    }
}

/// Opens a table for reading; `None` when nothing was ever trained.
pub fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Messages trained in a scope.
pub fn message_counts(txn: &ReadTransaction, scope: &str) -> Result<Counts, StoreError> {
    Ok(match read_table(txn, MESSAGES)? {
        Some(t) => t.get(scope)?.map(|v| Counts::unpack(v.value())),
        None => None,
    }
    .unwrap_or_default())
}

/// Where the token database lives.
pub enum SpamDb {
    /// The server's store (its spam tables).
    Store(Store),
    /// A redb file holding only spam tables, created when missing.
    File(Database, PathBuf),
}

impl SpamDb {
    pub fn open_file(path: &Path) -> Result<SpamDb, StoreError> {
        let db = Database::builder()
            .set_cache_size(StoreOptions::default().cache_bytes)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(path.to_path_buf()),
                other => StoreError::Db(format!("{}: {other}", path.display())),
            })?;
        Ok(SpamDb::File(db, path.to_path_buf()))
    }

    pub fn open_store(path: &Path, options: StoreOptions) -> Result<SpamDb, StoreError> {
        Ok(SpamDb::Store(Store::open(path, options)?))
    }

    pub fn path(&self) -> &Path {
        match self {
            SpamDb::Store(s) => s.path(),
            SpamDb::File(_, p) => p,
        }
    }

    pub fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        match self {
            SpamDb::Store(s) => s.begin_read(),
            SpamDb::File(db, _) => Ok(db.begin_read()?),
        }
    }

    pub fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        match self {
            SpamDb::Store(s) => s.begin_write(),
            SpamDb::File(db, _) => Ok(db.begin_write()?),
        }
    }

    /// Gives free pages back to the file system (a separate file only: the
    /// store's own layout is not ours to rewrite).
    pub fn compact(&mut self) -> Result<(), StoreError> {
        if let SpamDb::File(db, p) = self {
            db.compact()
                .map_err(|e| StoreError::Db(format!("{}: compacting: {e}", p.display())))?;
        }
        Ok(())
    }
}
