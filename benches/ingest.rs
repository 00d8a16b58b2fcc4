//! SMTP ingest benchmark client (std only, no crates).
//!
//! Driven by `benches/run.sh`, which runs the same load against pimail and a
//! private Postfix instance and reports the ratio. This is a benchmark, never
//! a test: invoked with no mode (as `cargo test --benches` or `cargo bench` do)
//! it only prints usage and succeeds, so it cannot send traffic by accident.
//!
//! Modes:
//! - `smtp`:  N sessions, each one TCP connection sending messages back to back
//!   (EHLO once, then MAIL/RCPT/DATA per message), every reply code checked.
//!   Optionally samples server memory and waits for Maildir delivery.
//! - `fsync`: the disk's rate of 4 KiB overwrite + fdatasync, the floor that a
//!   server which syncs every message cannot beat without group commit.
//! - `rss`:   samples memory of processes (VmRSS, or PSS over a process tree).
//!
//! Every line meant for scripts is `key=value` pairs on stdout; diagnostics go
//! to stderr.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
ingest: SMTP ingest benchmark client (run it through benches/run.sh or `make bench`)

  ingest smtp --addr HOST:PORT --rcpt ADDR [--size BYTES] [--sessions N] [--seconds S]
              [--ehlo NAME] [--from ADDR] [--timeout-secs T]
              [--sample-pid PID ...] [--metric rss|pss] [--interval-ms MS]
              [--maildir DIR] [--deliver-timeout-secs T]
      prints: msgs= secs= rate= failures= p50_ms= p99_ms= reconnects= [peak_kib= last_kib=]
              [delivered= delivered_secs= delivered_rate= delivered_complete=]
  ingest fsync --dir DIR [--seconds S]
      prints: fsyncs_per_sec= fsyncs= secs=
  ingest rss --pid PID [--pid PID ...] [--metric rss|pss] [--interval-ms MS] [--seconds S]
      prints: peak_kib= last_kib= samples=
      rss: sum of VmRSS of the given pids.
      pss: sum of Pss (smaps_rollup) of the given pids and all their descendants,
           the fair figure for multi-process servers such as Postfix.
";

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        // `cargo bench` passes `--bench`, `cargo test --benches` passes nothing:
        // neither may start a benchmark that needs servers.
        None | Some("--bench") | Some("-h") | Some("--help") | Some("help") => {
            eprint!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("smtp") => smtp_mode(&args[1..]),
        Some("fsync") => fsync_mode(&args[1..]),
        Some("rss") => rss_mode(&args[1..]),
        Some(other) => Err(format!("unknown mode {other:?}\n\n{USAGE}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ingest: error: {message}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------
// Command-line options: `--key value` pairs, some keys repeatable.

struct Options {
    pairs: Vec<(String, String)>,
}

impl Options {
    fn parse(args: &[String], allowed: &[&str]) -> Result<Options> {
        let mut pairs = Vec::new();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let key = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --option, got {arg:?}"))?;
            if !allowed.contains(&key) {
                return Err(format!(
                    "unknown option --{key} (allowed: --{})",
                    allowed.join(" --")
                ));
            }
            let value = rest
                .next()
                .ok_or_else(|| format!("--{key} needs a value"))?;
            pairs.push((key.to_string(), value.clone()));
        }
        Ok(Options { pairs })
    }

    fn last(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn required(&self, key: &str) -> Result<&str> {
        self.last(key).ok_or_else(|| format!("--{key} is required"))
    }

    fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.last(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("--{key} {text:?}: expected a non-negative number")),
        }
    }

    fn pids(&self, key: &str) -> Result<Vec<u32>> {
        self.all(key)
            .into_iter()
            .map(|text| {
                text.parse()
                    .map_err(|_| format!("--{key} {text:?}: expected a process id"))
            })
            .collect()
    }

    fn metric(&self) -> Result<MemMetric> {
        match self.last("metric").unwrap_or("rss") {
            "rss" => Ok(MemMetric::Rss),
            "pss" => Ok(MemMetric::TreePss),
            other => Err(format!("--metric {other:?}: expected rss or pss")),
        }
    }
}

// ---------------------------------------------------------------------------
// smtp mode

struct SmtpConfig {
    addr: SocketAddr,
    rcpt: String,
    mail_from: String,
    ehlo: String,
    size: usize,
    sessions: usize,
    duration: Duration,
    /// Bound on every connect, read and write, so a stuck server ends the run
    /// with a reported failure instead of hanging it.
    io_timeout: Duration,
}

fn smtp_mode(args: &[String]) -> Result<()> {
    let options = Options::parse(
        args,
        &[
            "addr",
            "rcpt",
            "size",
            "sessions",
            "seconds",
            "ehlo",
            "from",
            "timeout-secs",
            "sample-pid",
            "metric",
            "interval-ms",
            "maildir",
            "deliver-timeout-secs",
        ],
    )?;
    let addr_text = options.required("addr")?;
    let addr = addr_text
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr_text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr_text:?} resolves to nothing"))?;
    if !addr.ip().is_loopback() {
        // The benchmark floods its target; it is only ever meant for this machine.
        return Err(format!("--addr {addr}: refusing a non-loopback address"));
    }
    let ehlo = options.last("ehlo").unwrap_or("bench.client").to_string();
    let config = SmtpConfig {
        addr,
        rcpt: options.required("rcpt")?.to_string(),
        mail_from: options
            .last("from")
            .map_or_else(|| format!("sender@{ehlo}"), str::to_string),
        ehlo,
        size: options.number("size", 4096usize)?,
        sessions: options.number("sessions", 10usize)?.max(1),
        duration: Duration::from_secs_f64(options.number("seconds", 10f64)?.max(0.1)),
        io_timeout: Duration::from_secs_f64(options.number("timeout-secs", 30f64)?.max(0.1)),
    };
    let sample_pids = options.pids("sample-pid")?;
    let metric = options.metric()?;
    let interval = Duration::from_millis(options.number("interval-ms", 100u64)?.max(1));
    let maildir = options.last("maildir").map(PathBuf::from);
    let deliver_timeout = Duration::from_secs_f64(options.number("deliver-timeout-secs", 60f64)?);

    // Count what is already in the Maildir so that only this run's messages count.
    let delivered_before = match &maildir {
        Some(dir) => Some(count_maildir_new(dir)?),
        None => None,
    };
    let sampler =
        (!sample_pids.is_empty()).then(|| MemSampler::start(sample_pids, metric, interval));

    let started = Instant::now();
    let run = run_sessions(Arc::new(config));
    let secs = started.elapsed().as_secs_f64();

    let mut line = format!(
        "msgs={} secs={:.3} rate={:.1} failures={} p50_ms={} p99_ms={} reconnects={}",
        run.messages,
        secs,
        run.messages as f64 / secs,
        run.failures,
        percentile_text(&run.latencies_ms, 50.0),
        percentile_text(&run.latencies_ms, 99.0),
        run.reconnects,
    );

    if let (Some(dir), Some(before)) = (&maildir, delivered_before) {
        // Postfix answers 250 once the message is queued; the fair comparison
        // with a server that answers after storing it is the time until the
        // last accepted message is in the mailbox.
        let delivery = wait_for_delivery(dir, before, run.messages, started, deliver_timeout);
        let _ = write!(
            line,
            " delivered={} delivered_secs={:.3} delivered_rate={:.1} delivered_complete={}",
            delivery.delivered,
            delivery.secs,
            delivery.delivered.min(run.messages) as f64 / delivery.secs,
            u8::from(delivery.complete),
        );
    }
    if let Some(sampler) = sampler {
        let stats = sampler.finish();
        let _ = write!(line, " {}", stats.summary());
    }
    report_failures(&run.failure_kinds);
    println!("{line}");
    Ok(())
}

/// What all sessions together achieved.
struct RunTotals {
    messages: u64,
    failures: u64,
    reconnects: u64,
    latencies_ms: Vec<f64>,
    failure_kinds: BTreeMap<String, u64>,
}

/// Failures shared by the session threads: counted by kind, the first few
/// printed as they happen so a broken server is visible while the run goes on.
#[derive(Default)]
struct FailureLog {
    kinds: Mutex<BTreeMap<String, u64>>,
    total: AtomicU64,
    /// Sessions the server ended between messages with a 421 (for example
    /// a commands-per-session limit): no message is lost, the client just
    /// reconnects, and the cost shows in the rate; counted apart from failures.
    reconnects: AtomicU64,
}

const LIVE_FAILURES_SHOWN: u64 = 5;

impl FailureLog {
    fn record(&self, session: usize, failure: &Failure) {
        let description = failure.to_string();
        let seen = self.total.fetch_add(1, Ordering::Relaxed);
        if seen < LIVE_FAILURES_SHOWN {
            eprintln!("ingest: session {session}: {description}");
        }
        self.count_kind(description);
    }

    fn record_reconnect(&self, reason: &Failure) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        self.count_kind(format!("reconnect, not a failure: {reason}"));
    }

    fn count_kind(&self, description: String) {
        if let Ok(mut kinds) = self.kinds.lock() {
            *kinds.entry(description).or_insert(0) += 1;
        }
    }
}

fn run_sessions(config: Arc<SmtpConfig>) -> RunTotals {
    let failures = Arc::new(FailureLog::default());
    let lines = Arc::new(BodyLines::generate());
    let deadline = Instant::now() + config.duration;
    let handles: Vec<_> = (0..config.sessions)
        .map(|session| {
            let config = Arc::clone(&config);
            let failures = Arc::clone(&failures);
            let lines = Arc::clone(&lines);
            thread::spawn(move || session_loop(session, &config, &lines, deadline, &failures))
        })
        .collect();

    let mut totals = RunTotals {
        messages: 0,
        failures: 0,
        reconnects: 0,
        latencies_ms: Vec::new(),
        failure_kinds: BTreeMap::new(),
    };
    for handle in handles {
        match handle.join() {
            Ok(latencies) => {
                totals.messages += latencies.len() as u64;
                totals.latencies_ms.extend(latencies);
            }
            Err(_) => eprintln!("ingest: a session thread panicked (bug in the benchmark)"),
        }
    }
    totals.failures = failures.total.load(Ordering::Relaxed);
    totals.reconnects = failures.reconnects.load(Ordering::Relaxed);
    if let Ok(kinds) = failures.kinds.lock() {
        totals.failure_kinds = kinds.clone();
    }
    totals.latencies_ms.sort_by(f64::total_cmp);
    totals
}

fn report_failures(kinds: &BTreeMap<String, u64>) {
    if kinds.is_empty() {
        return;
    }
    let mut by_count: Vec<_> = kinds.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    eprintln!("ingest: failures (and server-initiated reconnects) by kind:");
    for (description, count) in by_count.iter().take(20) {
        eprintln!("  {count:>8} x {description}");
    }
    if by_count.len() > 20 {
        eprintln!("  ... and {} more kinds", by_count.len() - 20);
    }
}

/// One session thread: keeps one connection open and sends messages back to
/// back until the deadline; returns the latency (final "." to 250) of each
/// accepted message.
fn session_loop(
    session: usize,
    config: &SmtpConfig,
    lines: &BodyLines,
    deadline: Instant,
    failures: &FailureLog,
) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut connection: Option<SmtpConnection> = None;
    let mut counter: u64 = 0;
    while Instant::now() < deadline {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match SmtpConnection::open(config) {
                Ok(conn) => connection.insert(conn),
                Err(failure) => {
                    failures.record(session, &failure);
                    // Back off so a refusing server yields a few failures, not a spin.
                    let pause = Duration::from_millis(100)
                        .min(deadline.saturating_duration_since(Instant::now()));
                    thread::sleep(pause);
                    continue;
                }
            },
        };
        counter += 1;
        let message = compose_message(config, lines, session, counter);
        match conn.send_message(config, &message) {
            Ok(latency) => latencies.push(latency.as_secs_f64() * 1000.0),
            Err(failure)
                if conn.messages_accepted > 0 && failure.ends_session_between_messages() =>
            {
                failures.record_reconnect(&failure);
                connection = None;
            }
            Err(failure) => {
                failures.record(session, &failure);
                if failure.keeps_connection() {
                    // Put the session back in a known state for the next message.
                    if let Err(rset_failure) = conn.command("RSET", "RSET", &[250]) {
                        failures.record(session, &rset_failure);
                        connection = None;
                    }
                } else {
                    connection = None;
                }
            }
        }
    }
    if let Some(mut conn) = connection {
        conn.quit();
    }
    latencies
}

/// Why one step of a session did not succeed.
enum Failure {
    /// The connection is unusable (refused, reset, timed out, closed).
    Io { stage: &'static str, error: String },
    /// The server answered with an unexpected code.
    Reply {
        stage: &'static str,
        code: u16,
        text: String,
    },
    /// The server sent something that is not an SMTP reply.
    Protocol { stage: &'static str, detail: String },
}

impl Failure {
    /// A plain rejection leaves the session usable; anything else, and 421
    /// ("closing transmission channel", RFC 5321 3.8), means reconnect.
    fn keeps_connection(&self) -> bool {
        matches!(self, Failure::Reply { code, .. } if *code != 421)
    }

    /// A 421 in answer to MAIL FROM: the server closes the session at a
    /// transaction boundary, before any of the message was sent.
    fn ends_session_between_messages(&self) -> bool {
        matches!(
            self,
            Failure::Reply {
                stage: "MAIL FROM",
                code: 421,
                ..
            }
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io { stage, error } => write!(f, "{stage}: {error}"),
            Failure::Reply { stage, code, text } => write!(f, "{stage}: {code} {text}"),
            Failure::Protocol { stage, detail } => write!(f, "{stage}: protocol error: {detail}"),
        }
    }
}

/// Longest reply line and reply we accept; RFC 5321 4.5.3.1.5 allows 512
/// octets a line, the slack tolerates chatty servers, the cap a broken one.
const MAX_REPLY_LINE: u64 = 4096;
const MAX_REPLY_LINES: usize = 200;

struct SmtpConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Messages answered 250 on this connection.
    messages_accepted: u64,
}

impl SmtpConnection {
    /// Connect, read the greeting and say EHLO (once per connection).
    fn open(config: &SmtpConfig) -> std::result::Result<SmtpConnection, Failure> {
        let io = |stage| {
            move |error: io::Error| Failure::Io {
                stage,
                error: describe_io(&error),
            }
        };
        let stream =
            TcpStream::connect_timeout(&config.addr, config.io_timeout).map_err(io("connect"))?;
        // Without NODELAY the lone final "." waits for the ACK of the body
        // (Nagle + delayed ACK) and the latency figures measure that instead.
        stream.set_nodelay(true).map_err(io("connect"))?;
        stream
            .set_read_timeout(Some(config.io_timeout))
            .map_err(io("connect"))?;
        stream
            .set_write_timeout(Some(config.io_timeout))
            .map_err(io("connect"))?;
        let writer = stream.try_clone().map_err(io("connect"))?;
        let mut conn = SmtpConnection {
            reader: BufReader::with_capacity(8192, stream),
            writer,
            messages_accepted: 0,
        };
        conn.expect_reply("greeting", &[220])?;
        conn.command(&format!("EHLO {}", config.ehlo), "EHLO", &[250])?;
        Ok(conn)
    }

    /// One mail transaction; returns the time from sending the final "." to
    /// reading its 250.
    fn send_message(
        &mut self,
        config: &SmtpConfig,
        message: &[u8],
    ) -> std::result::Result<Duration, Failure> {
        self.command(
            &format!("MAIL FROM:<{}>", config.mail_from),
            "MAIL FROM",
            &[250],
        )?;
        // 251 "will forward" is a success too (RFC 5321 3.4).
        self.command(
            &format!("RCPT TO:<{}>", config.rcpt),
            "RCPT TO",
            &[250, 251],
        )?;
        self.command("DATA", "DATA", &[354])?;
        self.writer.write_all(message).map_err(|e| Failure::Io {
            stage: "message body",
            error: describe_io(&e),
        })?;
        let sent_dot = Instant::now();
        self.writer.write_all(b".\r\n").map_err(|e| Failure::Io {
            stage: "final dot",
            error: describe_io(&e),
        })?;
        self.expect_reply("final dot", &[250])?;
        let latency = sent_dot.elapsed();
        self.messages_accepted += 1;
        Ok(latency)
    }

    fn command(
        &mut self,
        line: &str,
        stage: &'static str,
        expected: &[u16],
    ) -> std::result::Result<(), Failure> {
        let mut wire = String::with_capacity(line.len() + 2);
        wire.push_str(line);
        wire.push_str("\r\n");
        self.writer
            .write_all(wire.as_bytes())
            .map_err(|e| Failure::Io {
                stage,
                error: describe_io(&e),
            })?;
        self.expect_reply(stage, expected)
    }

    /// Read one (possibly multi-line, RFC 5321 4.2.1) reply and check its code.
    fn expect_reply(
        &mut self,
        stage: &'static str,
        expected: &[u16],
    ) -> std::result::Result<(), Failure> {
        let mut line = Vec::with_capacity(128);
        let mut first_text: Option<String> = None;
        for _ in 0..MAX_REPLY_LINES {
            line.clear();
            let read = (&mut self.reader)
                .take(MAX_REPLY_LINE)
                .read_until(b'\n', &mut line)
                .map_err(|e| Failure::Io {
                    stage,
                    error: describe_io(&e),
                })?;
            if read == 0 {
                return Err(Failure::Io {
                    stage,
                    error: "server closed the connection".into(),
                });
            }
            if line.last() != Some(&b'\n') {
                return Err(Failure::Protocol {
                    stage,
                    detail: format!("reply line longer than {MAX_REPLY_LINE} bytes"),
                });
            }
            let code = parse_reply_code(&line).ok_or_else(|| Failure::Protocol {
                stage,
                detail: format!("not an SMTP reply line: {:?}", printable(&line)),
            })?;
            // Only the first line is kept, and only for reporting a failure:
            // the rest of a multi-line reply (EHLO keywords) says nothing new.
            if first_text.is_none() {
                first_text = Some(printable(line.get(4..).unwrap_or_default()));
            }
            let continues = line.get(3) == Some(&b'-');
            if !continues {
                if expected.contains(&code) {
                    return Ok(());
                }
                let mut text = first_text.unwrap_or_default();
                text.truncate(160);
                return Err(Failure::Reply { stage, code, text });
            }
        }
        Err(Failure::Protocol {
            stage,
            detail: format!("reply longer than {MAX_REPLY_LINES} lines"),
        })
    }

    /// Best effort: the run is over, a failure here changes no figure.
    fn quit(&mut self) {
        let _ = self.writer.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = self.command("QUIT", "QUIT", &[221]);
    }
}

/// An I/O error as the report should show it: a socket timeout surfaces as
/// EAGAIN ("Resource temporarily unavailable"), which hides what happened.
fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "timed out (nothing within --timeout-secs)".to_string()
        }
        _ => error.to_string(),
    }
}

/// The 3-digit code of a reply line ("250 ok", "250-ext", or bare "250").
fn parse_reply_code(line: &[u8]) -> Option<u16> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match line.get(3) {
        None | Some(b' ') | Some(b'-') | Some(b'\r') | Some(b'\n') => {}
        Some(_) => return None,
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    (200..600).contains(&code).then_some(code)
}

/// A reply line made safe to print: CRLF trimmed, control bytes escaped.
fn printable(line: &[u8]) -> String {
    let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    trimmed.escape_ascii().to_string()
}

// ---------------------------------------------------------------------------
// Messages

/// A pool of distinct body lines, already dot-stuffed for the wire. Each
/// message draws its own sequence from it, so no two messages share a body
/// (a content-addressed store must not get away with storing one blob) while
/// composing one stays a few memcpys, cheap next to the server's work.
struct BodyLines {
    lines: Vec<BodyLine>,
}

struct BodyLine {
    /// Bytes as sent: dot-stuffed (RFC 5321 4.5.2), CRLF-terminated.
    wire: Vec<u8>,
    /// Bytes of the line in the message itself (before dot-stuffing).
    message_len: usize,
}

const WORDS: &[&str] = &[
    "the",
    "mail",
    "server",
    "board",
    "queue",
    "message",
    "delivery",
    "store",
    "commit",
    "benchmark",
    "postfix",
    "pimail",
    "latency",
    "through",
    "every",
    "small",
    "quiet",
    "river",
    "north",
    "window",
    "garden",
    "paper",
    "signal",
    "number",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "for",
    "on",
    "with",
    "as",
    "at",
    "by",
    "from",
    "over",
    "under",
    "after",
    "before",
    "between",
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "ARM",
    "Pi",
    "SD-card",
    "fsync",
    "(note)",
    "[ref]",
    "e-mail",
    "100%",
    "#42",
    "x=y;",
    "a,b,c",
    "well-known",
    "so-called",
    "it's",
    "\"quoted\"",
];

/// Body lines are ~76 characters, the traditional width (RFC 5322 2.1.1
/// recommends at most 78).
const LINE_WIDTH: usize = 76;
const POOL_LINES: usize = 4096;

impl BodyLines {
    fn generate() -> BodyLines {
        let mut rng = Lcg(0x5eed_1234_abcd_ef01);
        let mut lines = Vec::with_capacity(POOL_LINES);
        for index in 0..POOL_LINES {
            let mut text = String::with_capacity(LINE_WIDTH);
            // Some lines start with "." (and one is a lone "."), so that a
            // server that mishandles dot-stuffing truncates or rejects messages.
            if index == POOL_LINES / 2 {
                text.push('.');
            } else {
                if index % 41 == 7 {
                    text.push_str(if index % 2 == 0 { ". " } else { ".." });
                }
                let width = LINE_WIDTH - (rng.next() % 16) as usize;
                loop {
                    let word = WORDS[(rng.next() % WORDS.len() as u64) as usize];
                    if text.len() + word.len() + 1 > width {
                        break;
                    }
                    if !text.is_empty() && !text.ends_with(' ') {
                        text.push(' ');
                    }
                    text.push_str(word);
                }
            }
            let message_len = text.len() + 2;
            let mut wire = Vec::with_capacity(message_len + 1);
            if text.starts_with('.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(text.as_bytes());
            wire.extend_from_slice(b"\r\n");
            lines.push(BodyLine { wire, message_len });
        }
        BodyLines { lines }
    }
}

/// Small deterministic generator; quality is irrelevant, speed and
/// reproducibility are not.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Build one message as it goes on the wire after DATA (dot-stuffed, without
/// the final "."): RFC 5322 headers, then body lines until `config.size`.
fn compose_message(
    config: &SmtpConfig,
    lines: &BodyLines,
    session: usize,
    counter: u64,
) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut message = Vec::with_capacity(config.size + 512);
    let mut header = String::with_capacity(512);
    let _ = write!(
        header,
        "From: Ingest Bench <{from}>\r\n\
         To: <{rcpt}>\r\n\
         Subject: ingest benchmark message {session}-{counter}\r\n\
         Message-ID: <{nanos}.{pid}.{session}.{counter}@{ehlo}>\r\n\
         Date: {date}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         Message {counter} of session {session}.\r\n",
        from = config.mail_from,
        rcpt = config.rcpt,
        nanos = now.as_nanos(),
        pid = std::process::id(),
        ehlo = config.ehlo,
        date = rfc5322_date(now.as_secs()),
    );
    message.extend_from_slice(header.as_bytes());
    let mut size = message.len();
    let mut rng = Lcg((session as u64) << 40 ^ counter ^ 0x9e37_79b9_7f4a_7c15);
    // At least one body line, then as many as fit in the requested size.
    loop {
        let line = &lines.lines[(rng.next() % lines.lines.len() as u64) as usize];
        if size + line.message_len > config.size && size > header.len() {
            break;
        }
        message.extend_from_slice(&line.wire);
        size += line.message_len;
    }
    // Pad the last few bytes so the size is exact (a letter run, then CRLF).
    let remaining = config.size.saturating_sub(size);
    if remaining >= 3 {
        message.extend(std::iter::repeat_n(b'x', remaining - 2));
        message.extend_from_slice(b"\r\n");
    }
    message
}

/// RFC 5322 3.3 date-time in UTC, e.g. "Thu, 27 Nov 2026 11:26:16 +0000".
fn rfc5322_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), after Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Nearest-rank percentile of sorted samples, "NA" when there are none.
fn percentile_text(sorted: &[f64], percent: f64) -> String {
    if sorted.is_empty() {
        return "NA".to_string();
    }
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    format!("{:.2}", sorted[rank.clamp(1, sorted.len()) - 1])
}

// ---------------------------------------------------------------------------
// Maildir delivery (Postfix)

struct Delivery {
    delivered: u64,
    secs: f64,
    complete: bool,
}

fn count_maildir_new(maildir: &Path) -> Result<u64> {
    let new = maildir.join("new");
    let entries = fs::read_dir(&new).map_err(|e| format!("{}: {e}", new.display()))?;
    Ok(entries.filter(|entry| entry.is_ok()).count() as u64)
}

/// Poll `maildir/new` until `expected` more messages are there than before
/// the run, or the timeout passes.
fn wait_for_delivery(
    maildir: &Path,
    before: u64,
    expected: u64,
    started: Instant,
    timeout: Duration,
) -> Delivery {
    let give_up = Instant::now() + timeout;
    loop {
        let delivered = match count_maildir_new(maildir) {
            Ok(count) => count.saturating_sub(before),
            Err(error) => {
                eprintln!("ingest: counting delivered messages: {error}");
                0
            }
        };
        let now = Instant::now();
        if delivered >= expected || now >= give_up {
            let complete = delivered >= expected;
            if !complete {
                eprintln!(
                    "ingest: only {delivered} of {expected} messages reached {} within {:?}",
                    maildir.display(),
                    timeout
                );
            }
            return Delivery {
                delivered,
                secs: now.duration_since(started).as_secs_f64(),
                complete,
            };
        }
        // Polling often keeps the end time precise; one readdir of a few
        // thousand entries costs far less than 10 ms.
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// fsync mode

fn fsync_mode(args: &[String]) -> Result<()> {
    let options = Options::parse(args, &["dir", "seconds"])?;
    let dir = PathBuf::from(options.required("dir")?);
    let duration = Duration::from_secs_f64(options.number("seconds", 3f64)?.max(0.1));
    let path = dir.join(format!(".ingest-fsync-probe-{}", std::process::id()));
    let outcome = measure_fsync(&path, duration);
    // Remove the probe whatever happened; a leftover file is only 4 KiB, so
    // report rather than fail.
    if let Err(error) = fs::remove_file(&path)
        && error.kind() != io::ErrorKind::NotFound
    {
        eprintln!("ingest: removing {}: {error}", path.display());
    }
    let (count, secs) = outcome?;
    println!(
        "fsyncs_per_sec={:.1} fsyncs={count} secs={secs:.3}",
        count as f64 / secs
    );
    Ok(())
}

/// Overwrite the same 4 KiB block and fdatasync it, as a store commit does
/// at minimum; the first write (which allocates the block) is not timed.
fn measure_fsync(path: &Path, duration: Duration) -> Result<(u64, f64)> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let block = [b'f'; 4096];
    let sync = |file: &File| -> Result<()> {
        file.write_all_at(&block, 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    sync(&file)?;
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        sync(&file)?;
        count += 1;
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

// ---------------------------------------------------------------------------
// Memory sampling (rss mode, and --sample-pid in smtp mode)

#[derive(Clone, Copy)]
enum MemMetric {
    /// Sum of VmRSS of the given processes: right for a single-process server.
    Rss,
    /// Sum of Pss of the given processes and all their descendants: shared
    /// pages are split between the processes that map them, so many
    /// processes of one program are not counted many times over.
    TreePss,
}

fn rss_mode(args: &[String]) -> Result<()> {
    let options = Options::parse(args, &["pid", "metric", "interval-ms", "seconds"])?;
    let pids = options.pids("pid")?;
    if pids.is_empty() {
        return Err("--pid is required".into());
    }
    let metric = options.metric()?;
    let interval = Duration::from_millis(options.number("interval-ms", 100u64)?.max(1));
    let duration = Duration::from_secs_f64(options.number("seconds", 0f64)?);
    let mut stats = MemStats::default();
    let started = Instant::now();
    // Bounded: one sample, then one per interval until the duration is over.
    loop {
        stats.add(sample_memory_kib(&pids, metric));
        if started.elapsed() + interval > duration {
            break;
        }
        thread::sleep(interval);
    }
    if stats.samples == stats.missing {
        return Err(format!("none of the processes {pids:?} could be read"));
    }
    println!("{}", stats.summary());
    Ok(())
}

#[derive(Default)]
struct MemStats {
    peak_kib: u64,
    last_kib: u64,
    samples: u64,
    /// Samples in which none of the processes existed (the server died?).
    missing: u64,
}

impl MemStats {
    fn add(&mut self, sample: Option<u64>) {
        self.samples += 1;
        match sample {
            Some(kib) => {
                self.peak_kib = self.peak_kib.max(kib);
                self.last_kib = kib;
            }
            None => self.missing += 1,
        }
    }

    fn summary(&self) -> String {
        let mut text = format!(
            "peak_kib={} last_kib={} samples={}",
            self.peak_kib, self.last_kib, self.samples
        );
        if self.missing > 0 {
            let _ = write!(text, " samples_missing={}", self.missing);
        }
        text
    }
}

/// Samples memory on its own thread while the benchmark runs.
struct MemSampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<MemStats>,
}

impl MemSampler {
    fn start(pids: Vec<u32>, metric: MemMetric, interval: Duration) -> MemSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut stats = MemStats::default();
            loop {
                stats.add(sample_memory_kib(&pids, metric));
                if stop_flag.load(Ordering::Relaxed) {
                    break stats;
                }
                thread::sleep(interval);
            }
        });
        MemSampler { stop, handle }
    }

    fn finish(self) -> MemStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// Memory of `pids` in KiB, or None when none of them could be read.
fn sample_memory_kib(pids: &[u32], metric: MemMetric) -> Option<u64> {
    let (pids, field, file): (Vec<u32>, &str, &str) = match metric {
        MemMetric::Rss => (pids.to_vec(), "VmRSS:", "status"),
        MemMetric::TreePss => (with_descendants(pids), "Pss:", "smaps_rollup"),
    };
    let mut total = None;
    for pid in pids {
        // A process may exit between listing and reading; it then simply
        // has no memory any more.
        if let Some(kib) = read_kib_field(pid, file, field) {
            *total.get_or_insert(0) += kib;
        }
    }
    total
}

/// Value of a "Name:   1234 kB" line in /proc/PID/FILE. For smaps_rollup,
/// falls back to summing /proc/PID/smaps on kernels without the rollup.
fn read_kib_field(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = match fs::read_to_string(format!("/proc/{pid}/{file}")) {
        Ok(text) => text,
        Err(_) if file == "smaps_rollup" => {
            fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?
        }
        Err(_) => return None,
    };
    let mut found = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field) {
            let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
            *found.get_or_insert(0) += kib;
        }
    }
    found
}

/// The given pids plus every process descended from them, found through the
/// ppid field of /proc/*/stat (Postfix's master forks smtpd, cleanup, ...).
fn with_descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = read_ppid(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut found: Vec<u32> = roots.to_vec();
    let mut next = 0;
    // Bounded by the number of processes: each pid is visited once.
    while next < found.len() {
        if let Some(kids) = children.remove(&found[next]) {
            found.extend(kids);
        }
        next += 1;
    }
    found.sort_unstable();
    found.dedup();
    found
}

fn read_ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain ") ", so
    // the fields start after the last ')': state, then ppid.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    // Not run by `make test` (benches are not built there); kept for
    // `rustc --test benches/ingest.rs` when changing the helpers.
    // `cargo clippy --all-targets` builds it without the test harness.
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn reply_codes() {
        assert_eq!(parse_reply_code(b"250 ok\r\n"), Some(250));
        assert_eq!(parse_reply_code(b"250-PIPELINING\r\n"), Some(250));
        assert_eq!(parse_reply_code(b"354\r\n"), Some(354));
        assert_eq!(parse_reply_code(b"25 ok\r\n"), None);
        assert_eq!(parse_reply_code(b"2500 ok\r\n"), None);
        assert_eq!(parse_reply_code(b"hello\r\n"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_778_776),
            "Fri, 27 Nov 2026 11:26:16 +0000"
        );
    }
}
