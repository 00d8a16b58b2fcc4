//! The scanner as an SMTP inspection stage: what the server holds (the
//! loaded signatures, reloaded on SIGHUP) and the verdict on one message.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use smol::lock::Semaphore;

use super::{Database, Finding, MessageSource, Walker};
use crate::config::{Config, ScanAction};
use crate::server::Server;
use crate::smtp::inspect::{Inbound, Verdict};
use crate::smtp::spool::Body;

/// Where quarantined mail goes: every account has a Junk mailbox from its
/// creation, so no mailbox has to be made at delivery, and mail clients
/// already treat its content with suspicion (remote content off, warnings).
pub const QUARANTINE_MAILBOX: &str = "Junk";

/// The server's scanner state. The database is swapped whole: scans in
/// progress keep the one they started with.
pub struct ScanState {
    db: RefCell<Arc<Database>>,
    /// Filled by a reload thread, taken by the next scan.
    incoming: Arc<Mutex<Option<Arc<Database>>>>,
    /// Scans running at once (`scan.concurrency`), each on a blocking thread.
    gate: Semaphore,
}

/// Loads the configured signatures; on failure logs why and keeps EICAR.
fn load(config: &Config) -> Result<Arc<Database>, String> {
    let started = Instant::now();
    let dir = &config.scan.signatures;
    let db = Database::load(dir, &config.spool_dir())?;
    let r = &db.report;
    log::info!(
        "scan: loaded {} body and {} hash signatures from {} ({} files, {} unsupported, {} lines skipped) in {} ms",
        r.body_signatures,
        r.hash_signatures,
        dir.display(),
        r.files,
        r.unsupported,
        r.errors.len(),
        started.elapsed().as_millis()
    );
    Ok(Arc::new(db))
}

impl ScanState {
    /// Loads at startup (before the server accepts mail).
    pub fn start(config: &Config) -> Result<ScanState, String> {
        let db = if config.scan.enabled {
            std::fs::create_dir_all(config.spool_dir())
                .map_err(|e| format!("{}: {e}", config.spool_dir().display()))?;
            load(config)?
        } else {
            Arc::new(Database::builtin()?)
        };
        Ok(ScanState {
            db: RefCell::new(db),
            incoming: Arc::new(Mutex::new(None)),
            gate: Semaphore::new(config.scan.concurrency),
        })
    }

    /// SIGHUP: loads the signatures again on a thread of its own, so the
    /// executor and its connections carry on; the next scan after it is done
    /// uses the new set. A failed load keeps the old one.
    pub fn reload(&self, config: &Config) {
        if !config.scan.enabled {
            return;
        }
        let config = config.clone();
        let incoming = self.incoming.clone();
        let spawned = std::thread::Builder::new()
            .name("scan-reload".into())
            .spawn(move || match load(&config) {
                Ok(db) => {
                    if let Ok(mut slot) = incoming.lock() {
                        *slot = Some(db);
                    }
                }
                Err(e) => log::error!("scan: reload failed, keeping the loaded signatures: {e}"),
            });
        if let Err(e) = spawned {
            log::error!("scan: cannot start the reload thread: {e}");
        }
    }

    fn current(&self) -> Arc<Database> {
        let newer = self.incoming.lock().ok().and_then(|mut s| s.take());
        if let Some(db) = newer {
            *self.db.borrow_mut() = db;
        }
        self.db.borrow().clone()
    }
}

/// The scanning stage of [`crate::smtp::inspect::inspect`]: a refusal,
/// a quarantine (accepted into [`QUARANTINE_MAILBOX`] with a header saying
/// why), or plain acceptance.
pub async fn stage(server: &Server, inbound: &Inbound<'_>, body: &Body) -> Verdict {
    let config = server.config();
    if !config.scan.enabled {
        return Verdict::accept();
    }
    let state = &server.scan;
    let db = state.current();
    let _running = state.gate.acquire().await;
    let src = match MessageSource::snapshot(&body.content, body.size) {
        Ok(s) => s,
        Err(e) => {
            log::error!("scan: cannot read the spooled message: {e}");
            return Verdict::Reject(TEMPFAIL.into());
        }
    };
    let meta = body.meta.clone();
    let limits = config.scan_limits();
    let started = Instant::now();
    let result = smol::unblock(move || Walker::new(&db, limits).message(&src, &meta)).await;
    let ms = started.elapsed().as_millis();
    let (name, action, what) = match result {
        Ok(Finding::Clean) => {
            log::debug!(
                "scan: from=<{}> clean ({} bytes, {ms} ms)",
                inbound.from,
                body.size
            );
            return Verdict::accept();
        }
        Ok(Finding::Infected(n)) => (n, config.scan.action, "infected"),
        Ok(Finding::Limit(n)) => (n, config.scan.limit_action, "not fully scanned"),
        Err(e) => {
            log::error!("scan: from=<{}> failed: {e}", inbound.from);
            return Verdict::Reject(TEMPFAIL.into());
        }
    };
    let name = sanitize(&name);
    log::warn!(
        "scan: from=<{}> peer={} {what}: {name}; {} ({ms} ms)",
        inbound.from,
        inbound.peer,
        match action {
            ScanAction::Reject => "refused",
            ScanAction::Quarantine => "quarantined",
            ScanAction::Accept => "accepted",
        }
    );
    match action {
        ScanAction::Reject if what == "infected" => {
            Verdict::Reject(format!("554 5.7.1 Message refused: virus found: {name}"))
        }
        ScanAction::Reject => Verdict::Reject(format!(
            "554 5.7.1 Message refused: it could not be scanned whole ({name})"
        )),
        ScanAction::Quarantine => Verdict::Accept {
            headers: format!("X-Pimail-Scan: {what}; {name}; quarantined\r\n"),
            mailbox: Some(QUARANTINE_MAILBOX.into()),
        },
        ScanAction::Accept => Verdict::Accept {
            headers: format!("X-Pimail-Scan: {what}; {name}\r\n"),
            mailbox: None,
        },
    }
}

const TEMPFAIL: &str = "451 4.3.0 Temporary failure scanning the message; try again later";

/// A signature name as it may appear in a reply or a header: printable
/// ASCII, at most 100 characters.
fn sanitize(name: &str) -> String {
    name.chars()
        .take(100)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
