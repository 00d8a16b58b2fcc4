//! The store's single writer thread, with group commit.
//!
//! Sessions on the executor send [`WriteJob`]s and await the reply; the
//! writer takes everything queued when the previous commit returns (up to a
//! message and byte budget), applies it in one transaction, commits once (one
//! fsync) and then answers every job. No timer and no deliberate wait: under
//! light load a batch is one message, under load batches grow by themselves
//! (../shared/STORE-NOTES.md). The executor never blocks on fsync; it only
//! awaits the reply channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::WriteTransaction;

use super::ops::{self, Delivered, Delivery};
use super::{Store, StoreError};

pub type AdminFn = Box<dyn FnOnce(&WriteTransaction) -> Result<String, StoreError> + Send>;

pub enum WriteOp {
    Deliver(Delivery),
    /// Any other change (accounts, aliases, mailbox operations from the
    /// control socket); runs in a transaction of its own.
    Admin(AdminFn),
}

pub enum WriteOutcome {
    Delivered(Vec<Delivered>),
    Admin(String),
}

pub struct WriteJob {
    op: WriteOp,
    reply: async_channel::Sender<Result<WriteOutcome, StoreError>>,
}

/// Limits of one group commit.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_messages: usize,
    pub max_bytes: u64,
}

/// Counters for logs and benchmarks.
#[derive(Default, Debug)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub messages: AtomicU64,
}

/// The executor's handle on the writer thread. Cloning is cheap.
#[derive(Clone)]
pub struct Writer {
    jobs: async_channel::Sender<WriteJob>,
    pub stats: Arc<WriterStats>,
}

impl Writer {
    /// Starts the writer thread. It ends when every `Writer` handle is
    /// dropped and the queued jobs are done; join the handle to wait for it.
    pub fn start(store: Arc<Store>, limits: BatchLimits) -> (Writer, std::thread::JoinHandle<()>) {
        // Bounded so that a burst of sessions applies back-pressure instead
        // of queueing unbounded message bodies.
        let (tx, rx) = async_channel::bounded::<WriteJob>(limits.max_messages * 2);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&store, &rx, limits, &thread_stats))
            .expect("spawning the store writer thread");
        (Writer { jobs: tx, stats }, handle)
    }

    /// Stops taking jobs; the writer thread finishes those queued and exits.
    pub fn close(&self) {
        self.jobs.close();
    }

    /// Submits a job and waits for its commit.
    pub async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        self.jobs
            .send(WriteJob { op, reply })
            .await
            .map_err(|_| StoreError::Db("store writer has stopped".into()))?;
        answer
            .recv()
            .await
            .map_err(|_| StoreError::Db("store writer stopped before answering".into()))?
    }

    pub async fn deliver(&self, d: Delivery) -> Result<Vec<Delivered>, StoreError> {
        match self.submit(WriteOp::Deliver(d)).await? {
            WriteOutcome::Delivered(v) => Ok(v),
            WriteOutcome::Admin(_) => Err(StoreError::Db("unexpected writer outcome".into())),
        }
    }
}

fn job_bytes(job: &WriteJob) -> u64 {
    match &job.op {
        WriteOp::Deliver(d) => d.size,
        WriteOp::Admin(_) => 0,
    }
}

fn run(
    store: &Store,
    jobs: &async_channel::Receiver<WriteJob>,
    limits: BatchLimits,
    stats: &WriterStats,
) {
    let mut pending: Option<WriteJob> = None;
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match jobs.recv_blocking() {
                Ok(j) => j,
                Err(_) => return, // every sender dropped: shut down
            },
        };
        if matches!(first.op, WriteOp::Admin(_)) {
            run_admin(store, first, stats);
            continue;
        }
        let mut bytes = job_bytes(&first);
        let mut batch = vec![first];
        while batch.len() < limits.max_messages && bytes < limits.max_bytes {
            match jobs.try_recv() {
                Ok(j) if matches!(j.op, WriteOp::Admin(_)) => {
                    pending = Some(j);
                    break;
                }
                Ok(j) => {
                    bytes += job_bytes(&j);
                    batch.push(j);
                }
                Err(_) => break,
            }
        }
        commit_deliveries(store, batch, stats);
    }
}

fn run_admin(store: &Store, job: WriteJob, stats: &WriterStats) {
    let WriteOp::Admin(f) = job.op else { return };
    let result = store.write(f).map(WriteOutcome::Admin);
    stats.commits.fetch_add(1, Ordering::Relaxed);
    let _ = job.reply.try_send(result);
}

fn commit_deliveries(store: &Store, batch: Vec<WriteJob>, stats: &WriterStats) {
    let txn = match store.begin_write() {
        Ok(t) => t,
        Err(e) => {
            for job in batch {
                let _ = job.reply.try_send(Err(StoreError::Db(e.to_string())));
            }
            return;
        }
    };
    // Each delivery is checked before it writes anything (see
    // ops::deliver), so one failing job does not spoil the batch.
    let mut results = Vec::with_capacity(batch.len());
    for job in &batch {
        let r = match &job.op {
            WriteOp::Deliver(d) => ops::deliver(&txn, d),
            WriteOp::Admin(_) => Err(StoreError::Db("admin job in a delivery batch".into())),
        };
        results.push(r);
    }
    let n = results.iter().filter(|r| r.is_ok()).count() as u64;
    match txn.commit() {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.messages.fetch_add(n, Ordering::Relaxed);
            log::debug!("group commit: {} jobs, {n} stored", batch.len());
            for (job, r) in batch.into_iter().zip(results) {
                let _ = job.reply.try_send(r.map(WriteOutcome::Delivered));
            }
        }
        Err(e) => {
            log::error!("store commit failed: {e}");
            for job in batch {
                let _ = job.reply.try_send(Err(StoreError::Db(e.to_string())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ops::DeliveryTarget;
    use super::super::tests::temp_store;
    use super::*;

    #[test]
    fn concurrent_deliveries_are_group_committed() {
        let (store, dir) = temp_store("writer");
        store
            .write(|t| ops::add_account(t, "a@example.org", "h", 1))
            .unwrap();
        let store = Arc::new(store);
        let (writer, handle) = Writer::start(
            store.clone(),
            BatchLimits {
                max_messages: 64,
                max_bytes: 4 << 20,
            },
        );
        let ex = smol::LocalExecutor::new();
        let n = 200u32;
        let results = async_io::block_on(ex.run(async {
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let w = writer.clone();
                    ex.spawn(async move {
                        let body = format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes();
                        use sha2::Digest;
                        w.deliver(Delivery {
                            queue: Vec::new(),
                            blob: sha2::Sha256::digest(&body).into(),
                            size: body.len() as u64,
                            content: crate::store::content::Content::from_chunks(vec![body]),
                            meta: vec![],
                            internal_date: 0,
                            targets: vec![DeliveryTarget {
                                user: "a@example.org".into(),
                                mailbox: "INBOX".into(),
                                flags: 0,
                            }],
                        })
                        .await
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await);
            }
            out
        }));
        let mut uids: Vec<u32> = results.into_iter().map(|r| r.unwrap()[0].uid).collect();
        uids.sort();
        assert_eq!(uids, (1..=n).collect::<Vec<_>>());
        let commits = writer.stats.commits.load(Ordering::Relaxed);
        assert!(
            commits < n as u64 / 2,
            "expected batching, got {commits} commits for {n} messages"
        );
        drop(writer);
        handle.join().unwrap();
        let inbox = store.mailbox("a@example.org", "INBOX").unwrap().unwrap();
        assert_eq!(inbox.exists, n);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
