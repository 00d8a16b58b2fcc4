//! The queue runner: takes due recipients from the store, delivers them
//! per destination domain (one connection per domain, at most
//! `queue.max_connections` domains at once), and records the outcome:
//! delivered rows are removed in the commit that follows the peer's 250,
//! temporary failures are retried on the schedule, permanent ones (and
//! those past `queue.max_age`) bounce to the sender.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use async_io::Timer;
use futures_lite::future;
use smol::LocalExecutor;

use super::client::{ClientSettings, Connection, Failure, Outcome, Tls};
use super::dsn::{self, FailedRecipient};
use crate::server::Server;
use crate::store::ops::{Delivery, DeliveryTarget, Resolution};
use crate::store::queue::{self, QueueEntry};
use crate::store::writer::WriteOp;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub async fn run(ex: Rc<LocalExecutor<'static>>, server: Rc<Server>) {
    let in_flight: Rc<RefCell<HashSet<String>>> = Rc::default();
    let roots = Arc::new(super::client::load_roots(&server.config().relay.ca_file));
    loop {
        if server.is_shutting_down() {
            return;
        }
        // Listen before looking, so a wake-up in between is not lost.
        let wake = server.queue_listener();
        let config = server.config();
        let t = now();
        match server.store.queue_due(t, 1000) {
            Ok(due) => {
                let mut by_domain: BTreeMap<String, Vec<QueueEntry>> = BTreeMap::new();
                for e in due {
                    by_domain.entry(e.domain.clone()).or_default().push(e);
                }
                for (domain, entries) in by_domain {
                    if in_flight.borrow().len() >= config.queue.max_connections {
                        break;
                    }
                    if !in_flight.borrow_mut().insert(domain.clone()) {
                        continue;
                    }
                    let (server, in_flight, roots) =
                        (server.clone(), in_flight.clone(), roots.clone());
                    ex.spawn(async move {
                        deliver_domain(&server, &domain, entries, roots).await;
                        in_flight.borrow_mut().remove(&domain);
                        server.wake_queue();
                    })
                    .detach();
                }
            }
            Err(e) => log::error!("queue: {e}"),
        }
        // Sleep until the next entry is due (entries due now but busy wait
        // for their domain's task to finish and wake us), at most a minute.
        let wait = match server.store.queue_next_due() {
            Ok(Some(next)) if next > t => (next - t) as u64,
            _ => 60,
        }
        .clamp(1, 60);
        future::or(wake, async {
            future::or(Timer::after(Duration::from_secs(wait)), async {
                server.shutting_down().await;
                Timer::after(Duration::ZERO).await
            })
            .await;
        })
        .await;
    }
}

/// Where mail for a domain goes: hosts in order, each with its addresses,
/// and how to talk to them.
async fn route(
    server: &Server,
    domain: &str,
    roots: Arc<rustls::RootCertStore>,
) -> Result<(ClientSettings, Vec<(String, Vec<SocketAddr>)>), Failure> {
    let config = server.config();
    let relay = &config.relay;
    if let Some((host, port)) = &relay.smarthost {
        let tls = match relay.smarthost_tls.as_str() {
            "implicit" => Tls::Implicit,
            "none" => Tls::Off,
            _ => Tls::Required,
        };
        let settings = ClientSettings {
            helo: config.hostname.clone(),
            tls,
            roots,
            credentials: relay.smarthost_credentials.clone(),
        };
        let addrs = resolve_host(server, host, *port).await?;
        return Ok((settings, vec![(host.clone(), addrs)]));
    }
    let require = relay.require_tls
        || relay
            .require_tls_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain));
    let settings = ClientSettings {
        helo: config.hostname.clone(),
        tls: if require {
            Tls::Required
        } else {
            Tls::Opportunistic
        },
        roots,
        credentials: None,
    };
    let hosts = super::mx::hosts(server, domain, relay.mx_port).await?;
    Ok((settings, hosts))
}

async fn resolve_host(server: &Server, host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let _ = server;
    super::mx::addresses(host, port).await
}

/// Tries each host and address in order (RFC 5321 5.1) until one answers.
async fn connect(
    hosts: &[(String, Vec<SocketAddr>)],
    settings: &ClientSettings,
) -> Result<Connection, Failure> {
    let mut last = Failure {
        permanent: false,
        text: "no address to connect to".into(),
    };
    for (name, addrs) in hosts {
        for addr in addrs {
            match Connection::open(*addr, name, settings).await {
                Ok(c) => return Ok(c),
                // A 5xx greeting or EHLO refusal is that host's answer; try
                // the next one anyway, as a temporary condition of the
                // domain (RFC 5321 5.1: continue with the next MX).
                Err(f) => {
                    log::info!("queue: {name} [{addr}]: {}", f.text);
                    last = Failure {
                        permanent: false,
                        ..f
                    };
                }
            }
        }
    }
    Err(last)
}

async fn deliver_domain(
    server: &Rc<Server>,
    domain: &str,
    entries: Vec<QueueEntry>,
    roots: Arc<rustls::RootCertStore>,
) {
    // One SMTP transaction per message (same content and sender).
    let mut groups: Vec<Vec<QueueEntry>> = Vec::new();
    for e in entries {
        match groups
            .iter_mut()
            .find(|g| g[0].blob == e.blob && g[0].from == e.from)
        {
            Some(g) => g.push(e),
            None => groups.push(vec![e]),
        }
    }
    let mut results: Vec<(QueueEntry, Outcome, Option<String>)> = Vec::new();
    match route(server, domain, roots).await {
        Err(f) => {
            for e in groups.into_iter().flatten() {
                results.push((e, Outcome::Failed(f.clone()), None));
            }
        }
        Ok((settings, hosts)) => {
            let mut conn: Option<Connection> = None;
            for group in groups {
                if conn.is_none() {
                    match connect(&hosts, &settings).await {
                        Ok(c) => conn = Some(c),
                        Err(f) => {
                            for e in group {
                                results.push((e, Outcome::Failed(f.clone()), None));
                            }
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let rcpts: Vec<String> = group.iter().map(|e| e.rcpt.clone()).collect();
                let first = &group[0];
                let outcomes = c.send(&server.store, first, &rcpts).await;
                let peer = c.peer.clone();
                let broken = outcomes
                    .iter()
                    .any(|o| matches!(o, Outcome::Failed(f) if !f.permanent));
                let delivered: Vec<_> = group
                    .into_iter()
                    .zip(outcomes)
                    .map(|(e, o)| (e, o, Some(peer.clone())))
                    .collect();
                // Recorded before the next message goes out: a crash can then
                // resend at most the message in flight, never a batch the
                // peer already accepted.
                record(server, delivered).await;
                if (broken || !c.rset().await)
                    && let Some(c) = conn.take()
                {
                    c.quit().await;
                }
            }
            if let Some(c) = conn {
                c.quit().await;
            }
        }
    }
    if !results.is_empty() {
        record(server, results).await;
    }
}

/// Applies the outcomes in one store commit: removes delivered rows,
/// reschedules temporary failures, bounces permanent ones.
async fn record(server: &Rc<Server>, results: Vec<(QueueEntry, Outcome, Option<String>)>) {
    let config = server.config();
    let t = now();
    let schedule = config.queue.retry_schedule.clone();
    let mut delivered = Vec::new();
    let mut retry = Vec::new();
    let mut bounced: Vec<(QueueEntry, String, Option<String>)> = Vec::new();
    for (e, outcome, mta) in results {
        match outcome {
            Outcome::Delivered(reply) => {
                log::info!(
                    "queue {}: <{}> -> <{}> delivered: {reply}",
                    e.id,
                    e.from,
                    e.rcpt
                );
                delivered.push(e.id);
            }
            Outcome::Failed(f)
                if f.permanent || t - e.created >= config.queue.max_age.as_secs() as i64 =>
            {
                log::info!(
                    "queue {}: <{}> -> <{}> failed: {}",
                    e.id,
                    e.from,
                    e.rcpt,
                    f.text
                );
                bounced.push((e, f.text, mta));
            }
            Outcome::Failed(f) => {
                let delay = schedule
                    .get(e.attempts as usize)
                    .or(schedule.last())
                    .copied()
                    .unwrap_or(300);
                log::info!(
                    "queue {}: <{}> -> <{}> deferred {delay}s: {}",
                    e.id,
                    e.from,
                    e.rcpt,
                    f.text
                );
                retry.push((e.id, t + delay as i64, f.text));
            }
        }
    }
    let bounces = build_bounces(server, &bounced);
    let bounced_ids: Vec<u64> = bounced.iter().map(|(e, _, _)| e.id).collect();
    let has_bounces = !bounces.is_empty();
    let op = WriteOp::Admin(Box::new(move |txn| {
        for id in delivered.iter().chain(&bounced_ids) {
            queue::remove(txn, *id)?;
        }
        for (id, next, text) in &retry {
            queue::reschedule(txn, *id, *next, text, true)?;
        }
        for d in &bounces {
            crate::store::ops::deliver(txn, d)?;
        }
        Ok(String::new())
    }));
    match server.writer.submit(op).await {
        Ok(_) if has_bounces => server.notify_change(),
        Ok(_) => {}
        Err(e) => log::error!("queue: recording delivery results: {e}"),
    }
}

/// One bounce per message and sender, delivered straight to the sender's
/// INBOX when the sender is one of our accounts. Never to the null sender
/// (RFC 3464 / RFC 5321 6.1: no bounce loops).
fn build_bounces(
    server: &Server,
    bounced: &[(QueueEntry, String, Option<String>)],
) -> Vec<Delivery> {
    let config = server.config();
    let mut out = Vec::new();
    let mut done: Vec<(crate::store::BlobId, String)> = Vec::new();
    for (e, _, _) in bounced {
        if e.from.is_empty() || done.iter().any(|(b, f)| *b == e.blob && *f == e.from) {
            continue;
        }
        done.push((e.blob, e.from.clone()));
        let sender = crate::store::ops::normalize_address(&e.from);
        let users = match local_users(server, &sender) {
            Some(u) => u,
            None => {
                log::warn!(
                    "queue {}: not bouncing to non-local sender <{}>",
                    e.id,
                    e.from
                );
                continue;
            }
        };
        let failed: Vec<FailedRecipient> = bounced
            .iter()
            .filter(|(x, _, _)| x.blob == e.blob && x.from == e.from)
            .map(|(x, text, mta)| FailedRecipient {
                rcpt: &x.rcpt,
                status: dsn::status_of(text, true),
                diagnostic: text,
                remote_mta: mta.as_deref(),
            })
            .collect();
        let header = original_header(server, &e.blob);
        let id = format!("{}{:x}", e.id, now());
        let bytes = dsn::bounce(
            &config.hostname,
            &e.from,
            &failed,
            &header,
            e.created,
            now(),
            &id,
        );
        let mut spool = crate::smtp::spool::Spool::new(u64::MAX, usize::MAX, None);
        spool.push(&bytes);
        let Ok(body) = spool.finish() else { continue };
        let stored = body.store(b"Return-Path: <>\r\n".to_vec());
        out.push(Delivery {
            queue: Vec::new(),
            blob: stored.blob,
            size: stored.size,
            content: stored.content,
            meta: stored.meta,
            internal_date: now(),
            targets: users
                .into_iter()
                .map(|user| DeliveryTarget {
                    user,
                    mailbox: "INBOX".into(),
                    flags: 0,
                })
                .collect(),
        });
    }
    out
}

fn local_users(server: &Server, address: &str) -> Option<Vec<String>> {
    let config = server.config();
    let domain = address.rsplit_once('@')?.1;
    if !config.is_local_domain(domain) {
        return None;
    }
    let txn = server.store.begin_read().ok()?;
    let accounts = txn.open_table(crate::store::ACCOUNTS).ok()?;
    let aliases = txn.open_table(crate::store::ALIASES).ok()?;
    match crate::store::ops::resolve_recipient(
        &accounts,
        &aliases,
        address,
        config.recipient_delimiter,
    )
    .ok()?
    {
        Resolution::Local(users) => Some(users),
        Resolution::Unknown => None,
    }
}

/// The original message's header section (at most 64 KiB) for the report.
fn original_header(server: &Server, blob: &crate::store::BlobId) -> Vec<u8> {
    const MAX: usize = 64 * 1024;
    let Ok(Some(row)) = server.store.blob(blob) else {
        return Vec::new();
    };
    let end = crate::message::MessageMeta::decode(&row.meta).map_or(row.size, |m| m.root.body_start)
        as usize;
    let end = end.min(MAX);
    let mut out = Vec::with_capacity(end);
    for i in 0..row.chunks {
        if out.len() >= end {
            break;
        }
        match server.store.chunk(blob, i) {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(end - out.len())]),
            _ => break,
        }
    }
    // Without the blank line that ends it.
    while out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}
