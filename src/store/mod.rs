//! The redb store: accounts, aliases, mailboxes, messages and content blobs.
//!
//! Durability: a write is on disk when the `commit()` of the transaction that
//! holds it has returned (redb's default `Durability::Immediate`: the data
//! pages and then the header are written and `fdatasync`ed). Every write goes
//! through the single writer thread in [`writer`], which group-commits.
//!
//! Layout (schema version [`SCHEMA_VERSION`]):
//! - `meta`: `&str -> &[u8]`: magic, schema version, counters.
//! - `accounts`: address -> [`Account`] row.
//! - `aliases`: alias address (or `@domain` for a catch-all) -> comma-separated targets.
//! - `mailbox_names`: (user, name) -> mailbox id.
//! - `mailboxes`: id -> [`Mailbox`] row (its user and name included).
//! - `messages`: (mailbox id, uid) -> [`MessageRow`].
//! - `blobs`: content hash -> [`BlobRow`] (reference count, size, precomputed
//!   IMAP structure), shared by every local recipient of one message.
//! - `chunks`: (content hash, index) -> at most [`CHUNK_SIZE`] bytes.
//! - `expunged`: (mailbox id, modseq, uid) -> (), the expunge log.
//! - `changes`: (mailbox id, modseq, uid) -> (), each message by its
//!   current mod-sequence.
//! - `uid_runs`: (mailbox id, first uid) -> last uid, the UID set as runs;
//!   `unseen`: (mailbox id, uid) -> () without `\Seen` ([`index`]).
//! - `queue`, `queue_due`: outbound recipients and their next attempt
//!   ([`queue`]).

pub mod codec;
pub mod content;
pub mod index;
pub mod mailbox_ops;
pub mod ops;
pub mod queue;
pub mod writer;

use std::fmt;
use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};

use codec::{Malformed, RowReader, RowWriter};
use index::RowIndexes;

pub const SCHEMA_VERSION: u32 = 3;
const MAGIC: &[u8] = b"pimail-store";

/// redb stores a value larger than a page alone in a power-of-two run of
/// pages, counting about 44 bytes of leaf overhead; 64 KiB - 64 B keeps a full
/// chunk in 16 pages instead of 32 (../shared/STORE-NOTES.md).
pub const CHUNK_SIZE: usize = 65536 - 64;

pub type BlobId = [u8; 32];

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
pub(crate) const ALIASES: TableDefinition<&str, &str> = TableDefinition::new("aliases");
pub(crate) const MAILBOX_NAMES: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("mailbox_names");
pub(crate) const MAILBOXES: TableDefinition<u64, &[u8]> = TableDefinition::new("mailboxes");
pub(crate) const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
pub(crate) const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
pub(crate) const CHUNKS: TableDefinition<(&[u8; 32], u32), &[u8]> = TableDefinition::new("chunks");
/// (mailbox, modseq, uid) of every expunge, so a client can learn what
/// vanished since a mod-sequence (RFC 7162 QRESYNC).
pub(crate) const EXPUNGED: TableDefinition<(u64, u64, u32), ()> = TableDefinition::new("expunged");
/// (mailbox, modseq, uid) of every message row: what changed since a
/// mod-sequence is a range scan, not a scan of the mailbox (schema 2).
pub(crate) const CHANGES: TableDefinition<(u64, u64, u32), ()> = TableDefinition::new("changes");

/// Everything that can go wrong with the store, phrased for the operator.
#[derive(Debug)]
pub enum StoreError {
    /// The file is not a pimail store (another program's file, or not redb).
    Foreign(PathBuf, String),
    /// The file is a pimail store but cannot be read as one.
    Damaged(PathBuf, String),
    /// The store was written by a newer pimail.
    TooNew(PathBuf, u32),
    /// Another process (usually a running `pimail serve`) has the store open.
    InUse(PathBuf),
    NotFound(String),
    Exists(String),
    Invalid(String),
    /// An I/O or database failure while running.
    Db(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Foreign(p, why) => {
                write!(f, "{}: not a pimail store ({why})", p.display())
            }
            StoreError::Damaged(p, why) => write!(f, "{}: store is damaged: {why}", p.display()),
            StoreError::TooNew(p, v) => write!(
                f,
                "{}: store schema version {v} is newer than this pimail supports ({SCHEMA_VERSION}); upgrade pimail",
                p.display()
            ),
            StoreError::InUse(p) => write!(
                f,
                "{}: store is open in another process (is `pimail serve` running without its control socket?)",
                p.display()
            ),
            StoreError::NotFound(what) => write!(f, "{what} not found"),
            StoreError::Exists(what) => write!(f, "{what} already exists"),
            StoreError::Invalid(what) => write!(f, "{what}"),
            StoreError::Db(e) => write!(f, "store error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<Malformed> for StoreError {
    fn from(_: Malformed) -> Self {
        StoreError::Db("malformed row in store (damaged file?)".into())
    }
}

/// Special-use attribute of a mailbox (RFC 6154).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    None = 0,
    Sent = 1,
    Drafts = 2,
    Junk = 3,
    Trash = 4,
    Archive = 5,
    All = 6,
    Flagged = 7,
}

impl SpecialUse {
    fn from_u8(v: u8) -> SpecialUse {
        match v {
            1 => SpecialUse::Sent,
            2 => SpecialUse::Drafts,
            3 => SpecialUse::Junk,
            4 => SpecialUse::Trash,
            5 => SpecialUse::Archive,
            6 => SpecialUse::All,
            7 => SpecialUse::Flagged,
            _ => SpecialUse::None,
        }
    }
    /// The IMAP attribute, e.g. `\Junk`.
    pub fn attribute(self) -> Option<&'static str> {
        Some(match self {
            SpecialUse::None => return None,
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Archive => "\\Archive",
            SpecialUse::All => "\\All",
            SpecialUse::Flagged => "\\Flagged",
        })
    }
}

/// The mailboxes every account gets, with their special use.
pub const DEFAULT_MAILBOXES: &[(&str, SpecialUse)] = &[
    ("INBOX", SpecialUse::None),
    ("Sent", SpecialUse::Sent),
    ("Drafts", SpecialUse::Drafts),
    ("Junk", SpecialUse::Junk),
    ("Trash", SpecialUse::Trash),
    ("Archive", SpecialUse::Archive),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub address: String,
    /// PHC string of the password hash (`$argon2id$...`).
    pub password_hash: String,
    /// 0 means no quota.
    pub quota_bytes: u64,
    pub created: i64,
}

impl Account {
    fn encode(&self) -> Vec<u8> {
        let mut w = RowWriter::new();
        w.u8(1)
            .str(&self.password_hash)
            .u64(self.quota_bytes)
            .i64(self.created);
        w.finish()
    }
    fn decode(address: &str, row: &[u8]) -> Result<Account, Malformed> {
        let mut r = RowReader::new(row);
        let _version = r.u8()?;
        Ok(Account {
            address: address.to_string(),
            password_hash: r.str()?.to_string(),
            quota_bytes: r.u64()?,
            created: r.i64()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mailbox {
    pub id: u64,
    pub user: String,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    pub special_use: SpecialUse,
    pub subscribed: bool,
    /// Messages in the mailbox, unseen among them, and their total size:
    /// kept current by every write so STATUS never scans.
    pub exists: u32,
    pub unseen: u32,
    pub size: u64,
}

impl Mailbox {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = RowWriter::new();
        w.u8(1)
            .str(&self.user)
            .str(&self.name)
            .u32(self.uidvalidity)
            .u32(self.uidnext)
            .u64(self.highest_modseq)
            .u8(self.special_use as u8)
            .u8(self.subscribed as u8)
            .u32(self.exists)
            .u32(self.unseen)
            .u64(self.size);
        w.finish()
    }
    pub(crate) fn decode(id: u64, row: &[u8]) -> Result<Mailbox, Malformed> {
        let mut r = RowReader::new(row);
        let _version = r.u8()?;
        Ok(Mailbox {
            id,
            user: r.str()?.to_string(),
            name: r.str()?.to_string(),
            uidvalidity: r.u32()?,
            uidnext: r.u32()?,
            highest_modseq: r.u64()?,
            special_use: SpecialUse::from_u8(r.u8()?),
            subscribed: r.u8()? != 0,
            exists: r.u32()?,
            unseen: r.u32()?,
            size: r.u64()?,
        })
    }
}

/// System flags as bits; keywords are kept by name.
pub mod flags {
    pub const SEEN: u32 = 1;
    pub const ANSWERED: u32 = 2;
    pub const FLAGGED: u32 = 4;
    pub const DELETED: u32 = 8;
    pub const DRAFT: u32 = 16;
    pub const RECENT: u32 = 32;
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub flags: u32,
    pub keywords: Vec<String>,
    pub modseq: u64,
    /// Seconds since the Unix epoch, UTC.
    pub internal_date: i64,
    pub size: u64,
    pub blob: BlobId,
}

impl MessageRow {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = RowWriter::new();
        w.u8(1)
            .u32(self.flags)
            .u64(self.modseq)
            .i64(self.internal_date)
            .u64(self.size)
            .raw(&self.blob)
            .u32(self.keywords.len() as u32);
        for k in &self.keywords {
            w.str(k);
        }
        w.finish()
    }
    pub(crate) fn decode(row: &[u8]) -> Result<MessageRow, Malformed> {
        let mut r = RowReader::new(row);
        let _version = r.u8()?;
        let flags = r.u32()?;
        let modseq = r.u64()?;
        let internal_date = r.i64()?;
        let size = r.u64()?;
        let blob = r.raw::<32>()?;
        let n = r.u32()? as usize;
        let mut keywords = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            keywords.push(r.str()?.to_string());
        }
        Ok(MessageRow {
            flags,
            keywords,
            modseq,
            internal_date,
            size,
            blob,
        })
    }
}

/// One stored message content, shared by all messages that reference it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobRow {
    pub refcount: u32,
    pub size: u64,
    pub chunks: u32,
    /// Length of chunk 0 when it holds the header fields added at delivery
    /// (0: none); every later chunk but the last is [`CHUNK_SIZE`] long, so
    /// a byte offset maps to its chunk without reading any.
    pub prefix_len: u32,
    /// Encoded [`crate::message::MessageMeta`]: part offsets, envelope and
    /// body structure computed once at delivery.
    pub meta: Vec<u8>,
}

impl BlobRow {
    /// The chunk holding byte `offset` of the content, and the offset of
    /// that chunk's first byte.
    pub fn chunk_of(&self, offset: u64) -> (u32, u64) {
        let prefix = self.prefix_len as u64;
        if offset < prefix {
            return (0, 0);
        }
        let n = (offset - prefix) / CHUNK_SIZE as u64;
        (
            (prefix > 0) as u32 + n as u32,
            prefix + n * CHUNK_SIZE as u64,
        )
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = RowWriter::new();
        w.u8(1)
            .u32(self.refcount)
            .u64(self.size)
            .u32(self.chunks)
            .u32(self.prefix_len)
            .bytes(&self.meta);
        w.finish()
    }
    pub(crate) fn decode(row: &[u8]) -> Result<BlobRow, Malformed> {
        let mut r = RowReader::new(row);
        let _version = r.u8()?;
        Ok(BlobRow {
            refcount: r.u32()?,
            size: r.u64()?,
            chunks: r.u32()?,
            prefix_len: r.u32()?,
            meta: r.bytes()?.to_vec(),
        })
    }

    /// The encoded meta of a row, borrowed: what `decode(row)?.meta` holds,
    /// without copying it.
    pub(crate) fn meta_of(row: &[u8]) -> Result<&[u8], Malformed> {
        let mut r = RowReader::new(row);
        let _version = r.u8()?;
        r.u32()?;
        r.u64()?;
        r.u32()?;
        r.u32()?;
        r.bytes()
    }
}

/// The rows of `wanted` (UIDs ascending, each with a caller's tag such as
/// its sequence number) in `mailbox`, skipping UIDs that are gone. Dense
/// UIDs are read with one range scan, sparse ones with point lookups: a
/// lookup per message costs a B-tree descent, a scan a step to the next
/// entry.
pub fn message_rows<T: Copy>(
    table: &redb::ReadOnlyTable<(u64, u32), &'static [u8]>,
    mailbox: u64,
    wanted: &[(T, u32)],
) -> Result<Vec<(T, u32, MessageRow)>, StoreError> {
    let mut out = Vec::with_capacity(wanted.len());
    let (Some(&(_, first)), Some(&(_, last))) = (wanted.first(), wanted.last()) else {
        return Ok(out);
    };
    let span = u64::from(last.saturating_sub(first)) + 1;
    if span > 4 * wanted.len() as u64 {
        for &(tag, uid) in wanted {
            if let Some(row) = table.get((mailbox, uid))? {
                out.push((tag, uid, MessageRow::decode(row.value())?));
            }
        }
        return Ok(out);
    }
    let mut next = wanted.iter().peekable();
    for entry in table.range((mailbox, first)..=(mailbox, last))? {
        let (k, v) = entry?;
        let uid = k.value().1;
        while next.next_if(|&&(_, w)| w < uid).is_some() {}
        if let Some(&(tag, _)) = next.next_if(|&&(_, w)| w == uid) {
            out.push((tag, uid, MessageRow::decode(v.value())?));
        }
        if next.peek().is_none() {
            break;
        }
    }
    Ok(out)
}

/// Opening options taken from the config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub cache_bytes: usize,
    pub quick_repair: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 2 << 20,
            quick_repair: false,
        }
    }
}

pub struct Store {
    db: Database,
    path: PathBuf,
    options: StoreOptions,
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    use redb::DatabaseError as E;
    match e {
        E::DatabaseAlreadyOpen | E::LockProtocolMismatch => StoreError::InUse(path.to_path_buf()),
        E::Storage(redb::StorageError::Corrupted(why)) => {
            StoreError::Damaged(path.to_path_buf(), why)
        }
        E::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Foreign(path.to_path_buf(), io.to_string())
        }
        E::Storage(redb::StorageError::Io(io)) => {
            StoreError::Db(format!("{}: {io}", path.display()))
        }
        E::UpgradeRequired(v) => StoreError::Foreign(
            path.to_path_buf(),
            format!("redb file format {v} needs an upgrade"),
        ),
        other => StoreError::Foreign(path.to_path_buf(), other.to_string()),
    }
}

impl Store {
    /// Creates a new, empty store. Fails if the file exists.
    pub fn create(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        if path.exists() {
            return Err(StoreError::Exists(format!("store {}", path.display())));
        }
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
            options,
        };
        let txn = store.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("magic", MAGIC)?;
            meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
            // Create every table up front so readers never see a missing one.
            txn.open_table(ACCOUNTS)?;
            txn.open_table(ALIASES)?;
            txn.open_table(MAILBOX_NAMES)?;
            txn.open_table(MAILBOXES)?;
            txn.open_table(MESSAGES)?;
            txn.open_table(BLOBS)?;
            txn.open_table(CHUNKS)?;
            txn.open_table(EXPUNGED)?;
            txn.open_table(CHANGES)?;
            txn.open_table(index::UID_RUNS)?;
            txn.open_table(index::UNSEEN)?;
            txn.open_table(queue::QUEUE)?;
            txn.open_table(queue::QUEUE_DUE)?;
        }
        txn.commit()?;
        Ok(store)
    }

    /// Opens an existing store, checking that it is one of ours and migrating
    /// an older schema.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound(format!(
                "store {} (run `pimail init` first)",
                path.display()
            )));
        }
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .open(path)
            .map_err(|e| open_error(path, e))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
            options,
        };
        let version = store.schema_version()?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew(store.path.clone(), version));
        }
        if version < SCHEMA_VERSION {
            store.migrate(version)?;
        }
        Ok(store)
    }

    fn schema_version(&self) -> Result<u32, StoreError> {
        let foreign = |why: &str| StoreError::Foreign(self.path.clone(), why.to_string());
        let txn = self.db.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => {
                return Err(foreign("a redb file without pimail's tables"));
            }
            Err(e) => return Err(StoreError::Damaged(self.path.clone(), e.to_string())),
        };
        match meta.get("magic")? {
            Some(m) if m.value() == MAGIC => {}
            _ => return Err(foreign("no pimail magic")),
        }
        let v = meta
            .get("schema_version")?
            .ok_or_else(|| StoreError::Damaged(self.path.clone(), "no schema version".into()))?;
        let bytes: [u8; 4] = v.value().try_into().map_err(|_| {
            StoreError::Damaged(self.path.clone(), "schema version is malformed".into())
        })?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// Each step moves the schema from version N to N+1 in one transaction,
    /// so an interrupted migration leaves a consistent older version.
    fn migrate(&self, from: u32) -> Result<(), StoreError> {
        let mut version = from;
        while version < SCHEMA_VERSION {
            let txn = self.begin_write()?;
            match version {
                1 => migrate_1_to_2(&txn)?,
                2 => index::rebuild(&txn)?,
                _ => {}
            }
            {
                let mut meta = txn.open_table(META)?;
                meta.insert("schema_version", (version + 1).to_le_bytes().as_slice())?;
            }
            txn.commit()?;
            version += 1;
            log::info!("store migrated to schema version {version}");
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    pub fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(self.options.quick_repair);
        Ok(txn)
    }

    /// Runs `f` in its own write transaction and commits it.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }

    pub fn account(&self, address: &str) -> Result<Option<Account>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(ACCOUNTS)?;
        Ok(match t.get(address)? {
            Some(row) => Some(Account::decode(address, row.value())?),
            None => None,
        })
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(Account::decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn aliases(&self) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(ALIASES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    pub fn alias(&self, address: &str) -> Result<Option<String>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(ALIASES)?;
        Ok(t.get(address)?.map(|v| v.value().to_string()))
    }

    pub fn mailbox(&self, user: &str, name: &str) -> Result<Option<Mailbox>, StoreError> {
        let txn = self.begin_read()?;
        ops::mailbox_in(
            &txn.open_table(MAILBOX_NAMES)?,
            &txn.open_table(MAILBOXES)?,
            user,
            name,
        )
    }

    pub fn mailboxes(&self, user: &str) -> Result<Vec<Mailbox>, StoreError> {
        let txn = self.begin_read()?;
        let names = txn.open_table(MAILBOX_NAMES)?;
        let boxes = txn.open_table(MAILBOXES)?;
        let mut out = Vec::new();
        for entry in names.range((user, "")..)? {
            let (k, id) = entry?;
            if k.value().0 != user {
                break;
            }
            if let Some(row) = boxes.get(id.value())? {
                out.push(Mailbox::decode(id.value(), row.value())?);
            }
        }
        Ok(out)
    }

    /// The messages of a mailbox in UID order.
    pub fn messages(&self, mailbox: u64) -> Result<Vec<(u32, MessageRow)>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(MESSAGES)?;
        let mut out = Vec::new();
        for entry in t.range((mailbox, 0)..=(mailbox, u32::MAX))? {
            let (k, v) = entry?;
            out.push((k.value().1, MessageRow::decode(v.value())?));
        }
        Ok(out)
    }

    pub fn message(&self, mailbox: u64, uid: u32) -> Result<Option<MessageRow>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(MESSAGES)?;
        Ok(match t.get((mailbox, uid))? {
            Some(v) => Some(MessageRow::decode(v.value())?),
            None => None,
        })
    }

    pub fn blob(&self, id: &BlobId) -> Result<Option<BlobRow>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(BLOBS)?;
        Ok(match t.get(id)? {
            Some(v) => Some(BlobRow::decode(v.value())?),
            None => None,
        })
    }

    /// One chunk of a blob, in its own short read transaction, so a slow
    /// client never holds a snapshot open (which would keep the writer from
    /// reusing pages).
    pub fn chunk(&self, id: &BlobId, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        Ok(chunks.get((id, index))?.map(|c| c.value().to_vec()))
    }

    /// Streams a blob's content, one chunk at a time, to `sink`; the message
    /// is never held whole in memory.
    pub fn read_blob(
        &self,
        id: &BlobId,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        let row = blobs
            .get(id)?
            .ok_or_else(|| StoreError::NotFound("message content".into()))?;
        let blob = BlobRow::decode(row.value())?;
        let chunks = txn.open_table(CHUNKS)?;
        for i in 0..blob.chunks {
            let chunk = chunks.get((id, i))?.ok_or_else(|| {
                StoreError::Damaged(self.path.clone(), format!("chunk {i} missing"))
            })?;
            sink(chunk.value()).map_err(|e| StoreError::Db(e.to_string()))?;
        }
        Ok(())
    }
}

/// Schema 2 adds the `changes` index, built from the message rows.
fn migrate_1_to_2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let rows: Vec<(u64, u32, u64)> = {
        let messages = txn.open_table(MESSAGES)?;
        let mut v = Vec::new();
        for e in messages.iter()? {
            let (k, row) = e?;
            let (mailbox, uid) = k.value();
            v.push((mailbox, uid, MessageRow::decode(row.value())?.modseq));
        }
        v
    };
    let mut changes = txn.open_table(CHANGES)?;
    for (mailbox, uid, modseq) in rows {
        changes.insert((mailbox, modseq, uid), ())?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn temp_store(name: &str) -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "pimail-test-{}-{}-{}",
            name,
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        (Store::create(&path, StoreOptions::default()).unwrap(), dir)
    }

    #[test]
    fn create_then_open() {
        let (store, dir) = temp_store("open");
        let path = store.path().to_path_buf();
        drop(store);
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn foreign_file_is_a_clear_error() {
        let (_store, dir) = temp_store("foreign");
        let junk = dir.join("junk.redb");
        std::fs::write(
            &junk,
            b"this is not a database at all, just some text\n".repeat(200),
        )
        .unwrap();
        let err = Store::open(&junk, StoreOptions::default()).err().unwrap();
        assert!(
            matches!(err, StoreError::Foreign(..) | StoreError::Damaged(..)),
            "{err}"
        );
        assert!(err.to_string().contains("junk.redb"), "{err}");

        // A valid redb file that some other program made.
        let other = dir.join("other.redb");
        let db = Database::create(&other).unwrap();
        let t = db.begin_write().unwrap();
        t.open_table(TableDefinition::<u64, u64>::new("x")).unwrap();
        t.commit().unwrap();
        drop(db);
        let err = Store::open(&other, StoreOptions::default()).err().unwrap();
        assert!(matches!(err, StoreError::Foreign(..)), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let (store, dir) = temp_store("newer");
        store
            .write(|txn| {
                let mut meta = txn.open_table(META)?;
                meta.insert("schema_version", 99u32.to_le_bytes().as_slice())?;
                Ok(())
            })
            .unwrap();
        let path = store.path().to_path_buf();
        drop(store);
        let err = Store::open(&path, StoreOptions::default()).err().unwrap();
        assert!(matches!(err, StoreError::TooNew(_, 99)), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn schema_1_is_migrated_with_its_indexes() {
        let (store, dir) = temp_store("migrate");
        store
            .write(|t| ops::add_account(t, "a@example.org", "h", 1))
            .unwrap();
        let inbox = store.mailbox("a@example.org", "INBOX").unwrap().unwrap();
        let row = MessageRow {
            flags: 0,
            keywords: vec![],
            modseq: 7,
            internal_date: 0,
            size: 1,
            blob: [0; 32],
        };
        // What a version 1 store looked like: rows, no index.
        store
            .write(|t| {
                t.open_table(MESSAGES)?
                    .insert((inbox.id, 3), row.encode().as_slice())?;
                for name in ["changes", "uid_runs", "unseen"] {
                    t.delete_table(TableDefinition::<(), ()>::new(name))
                        .map_err(|e| StoreError::Db(e.to_string()))?;
                }
                t.open_table(META)?
                    .insert("schema_version", 1u32.to_le_bytes().as_slice())?;
                Ok(())
            })
            .unwrap();
        let path = store.path().to_path_buf();
        drop(store);
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let txn = store.begin_read().unwrap();
        assert_eq!(index::changed_since(&txn, inbox.id, 6).unwrap(), vec![3]);
        assert!(index::changed_since(&txn, inbox.id, 7).unwrap().is_empty());
        // Schema 3's indexes were built from the rows.
        assert_eq!(index::uid_runs(&txn, inbox.id).unwrap(), vec![(3, 3)]);
        assert_eq!(index::first_unseen(&txn, inbox.id).unwrap(), Some(3));
        drop(txn);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn message_rows_dense_and_sparse() {
        let (store, dir) = temp_store("rows");
        let row = |modseq| MessageRow {
            flags: 0,
            keywords: vec![],
            modseq,
            internal_date: 0,
            size: 1,
            blob: [0; 32],
        };
        store
            .write(|t| {
                let mut m = t.open_table(MESSAGES)?;
                for uid in (1..=100).filter(|u| u % 10 != 0) {
                    m.insert((7, uid), row(uid as u64).encode().as_slice())?;
                }
                // A neighbouring mailbox the scans must not run into.
                m.insert((8, 1), row(999).encode().as_slice())?;
                Ok(())
            })
            .unwrap();
        let txn = store.begin_read().unwrap();
        let t = txn.open_table(MESSAGES).unwrap();
        let got = |wanted: &[(u32, u32)]| -> Vec<(u32, u32, u64)> {
            message_rows(&t, 7, wanted)
                .unwrap()
                .into_iter()
                .map(|(tag, uid, r)| (tag, uid, r.modseq))
                .collect()
        };
        // Dense: a range scan, skipping UID 10 (gone) and UIDs not asked for.
        let dense: Vec<(u32, u32)> = [5, 6, 8, 10, 11].iter().map(|&u| (u + 100, u)).collect();
        assert_eq!(
            got(&dense),
            vec![(105, 5, 5), (106, 6, 6), (108, 8, 8), (111, 11, 11)]
        );
        // Sparse: point lookups.
        let sparse = [(1, 1), (2, 50), (3, 99), (4, 100), (5, 150)];
        assert_eq!(got(&sparse), vec![(1, 1, 1), (3, 99, 99)]);
        assert!(got(&[]).is_empty());
        drop((t, txn));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rows_round_trip() {
        let m = Mailbox {
            id: 3,
            user: "a@b".into(),
            name: "Junk".into(),
            uidvalidity: 9,
            uidnext: 10,
            highest_modseq: 11,
            special_use: SpecialUse::Junk,
            subscribed: true,
            exists: 2,
            unseen: 1,
            size: 100,
        };
        assert_eq!(Mailbox::decode(3, &m.encode()).unwrap(), m);
        let row = MessageRow {
            flags: flags::SEEN | flags::FLAGGED,
            keywords: vec!["$Junk".into()],
            modseq: 5,
            internal_date: 1_700_000_000,
            size: 42,
            blob: [7; 32],
        };
        assert_eq!(MessageRow::decode(&row.encode()).unwrap(), row);
        assert!(MessageRow::decode(&row.encode()[..20]).is_err());
    }
}
