//! The TOML configuration: every key, its default, and errors that name the
//! file, the key and what was expected.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub smtp: Vec<SocketAddr>,
    pub submission: Vec<SocketAddr>,
    pub submissions: Vec<SocketAddr>,
    pub imap: Vec<SocketAddr>,
    pub imaps: Vec<SocketAddr>,
    pub pop3: Vec<SocketAddr>,
    pub pop3s: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_commands: usize,
    pub max_errors: usize,
    pub max_line_length: usize,
    pub spool_memory: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relay {
    /// (host, port) of the smarthost all outbound mail goes through.
    pub smarthost: Option<(String, u16)>,
    /// "starttls", "implicit" or "none".
    pub smarthost_tls: String,
    pub smarthost_credentials: Option<(String, String)>,
    pub require_tls: bool,
    pub require_tls_domains: Vec<String>,
    pub mx_port: u16,
    pub dns_servers: Vec<SocketAddr>,
    pub ca_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Seconds to wait after the 1st, 2nd... failed attempt; the last value
    /// repeats.
    pub retry_schedule: Vec<u64>,
    pub max_age: Duration,
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pop3 {
    pub timeout: Duration,
    pub login_delay: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    pub allow_plaintext_on_loopback: bool,
    pub failure_delay: Duration,
    pub max_failures_per_ip: u32,
    pub failure_window: Duration,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub hash_concurrency: usize,
}

/// IMAP session limits (the shared ones are in [`Limits`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Imap {
    /// Longest command line, CRLF included (literals not counted).
    pub max_line_length: usize,
    /// Bytes of one command other than APPEND, its literals included.
    pub max_command_size: usize,
    /// Commands in one session.
    pub max_commands: usize,
    /// An IDLE lasts at most this long (RFC 9051 5.4: at least 30 min).
    pub idle_timeout: Duration,
    /// Seconds an authenticated session may stay silent outside IDLE.
    pub autologout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub cache_size_mib: usize,
    pub batch_max_messages: usize,
    pub batch_max_bytes: u64,
    pub quick_repair: bool,
}

/// What to do with a message the scanner flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanAction {
    /// Refuse it at end-of-data with 554 5.7.1.
    Reject,
    /// Accept it into the Junk mailbox with an X-Pimail-Scan: header.
    Quarantine,
    /// Accept it as usual with an X-Pimail-Scan: header (limits only).
    Accept,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScanConfig {
    pub enabled: bool,
    /// Directory of ClamAV signature files (.ndb, .hdb, .hsb, .fp, .sfp,
    /// .ign2, .cvd, .cld).
    pub signatures: PathBuf,
    /// For infected messages: Reject or Quarantine.
    pub action: ScanAction,
    /// For messages past a scan limit (zip bombs...).
    pub limit_action: ScanAction,
    pub max_depth: usize,
    pub max_object_size: u64,
    pub max_total_size: u64,
    pub max_zip_entries: usize,
    pub concurrency: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (relative paths below are resolved against
    /// `data_dir`).
    pub file: PathBuf,
    pub hostname: String,
    pub domains: Vec<String>,
    pub data_dir: PathBuf,
    pub recipient_delimiter: Option<char>,
    pub listen: Listen,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub limits: Limits,
    pub auth: Auth,
    pub pop3: Pop3,
    pub relay: Relay,
    pub queue: Queue,
    pub imap: Imap,
    pub store: StoreConfig,
    pub scan: ScanConfig,
    pub spam: crate::spam::Settings,
    pub auth_results: crate::authres::Settings,
    pub log_level: String,
}

#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: key `{}`: {}",
                self.file.display(),
                self.key,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Values `pimail init` writes into the template.
pub struct InitValues<'a> {
    pub hostname: &'a str,
    pub domain: &'a str,
    pub data_dir: &'a Path,
    /// `Some(base)` for a dev instance on 127.0.0.1, base + standard port.
    pub dev_port_base: Option<u16>,
}

/// The standard ports, in the order of [`Listen`]'s fields.
pub const STANDARD_PORTS: [(&str, u16); 7] = [
    ("smtp", 25),
    ("submission", 587),
    ("submissions", 465),
    ("imap", 143),
    ("imaps", 993),
    ("pop3", 110),
    ("pop3s", 995),
];

/// The commented config file `pimail init` writes: every key with its
/// default. `Config::parse` of this text with no edits must give defaults
/// (tested below).
pub fn template(v: &InitValues) -> String {
    let listen = |port: u16| match v.dev_port_base {
        Some(base) => format!("[\"127.0.0.1:{}\"]", base as u32 + port as u32),
        None => format!("[\"0.0.0.0:{port}\", \"[::]:{port}\"]"),
    };
    let mut listen_lines = String::new();
    for (name, port) in STANDARD_PORTS {
        listen_lines.push_str(&format!("{name} = {}\n", listen(port)));
    }
    let plaintext = v.dev_port_base.is_some();
    format!(
        r#"# pimail configuration. Every key is shown with its default; relative
# paths are resolved against data_dir.

# Name this server gives in its greeting, EHLO and Received: headers.
hostname = "{hostname}"
# Mail domains delivered locally. Mail for any other domain is relayed only
# for authenticated users (never an open relay).
domains = ["{domain}"]
# Where the store, the TLS certificate and the control socket live.
data_dir = "{data_dir}"
# user+tag@domain is delivered to user@domain. "" turns it off.
recipient_delimiter = "+"
# Log level: error, warn, info, debug or trace (RUST_LOG overrides it).
log_level = "info"

[listen]
# Addresses of each listener; an empty list turns a service off.
# smtp: MX (25); submission: STARTTLS (587); submissions: implicit TLS (465);
# imap (143) / imaps (993); pop3 (110) / pop3s (995).
{listen_lines}
[tls]
# PEM certificate chain and private key. `pimail init` makes a self-signed
# pair; replace them with real ones (SIGHUP reloads them).
cert = "tls/cert.pem"
key = "tls/key.pem"

[limits]
# Connections in all, and from one IP address.
max_connections = 200
max_connections_per_ip = 20
# Largest message accepted, in bytes (advertised as SIZE).
max_message_size = 26214400
# Recipients of one message.
max_recipients = 100
# Commands in one session, and protocol errors before it is closed.
max_commands = 10000
max_errors = 10
# Longest command line, in bytes including CRLF (RFC 5321 4.5.3.1.4: 512).
max_line_length = 512
# Bytes of one incoming message kept in memory; the rest goes to an
# unlinked temporary file in data_dir/spool until it is stored.
spool_memory = 131008
# Seconds a client may stay silent between commands (RFC 5321 4.5.3.2.7: 5 min),
# within DATA (4.5.3.2.5: 3 min), and during a TLS handshake.
command_timeout = 300
data_timeout = 180
tls_handshake_timeout = 30
# Seconds SIGTERM waits for transactions in flight before exiting.
shutdown_grace = 30

[auth]
# Allow AUTH/LOGIN without TLS for clients on 127.0.0.0/8 and ::1.
allow_plaintext_on_loopback = {plaintext}
# Milliseconds before answering a failed login, to slow password guessing.
failure_delay_ms = 2000
# After this many failed logins from one address, further attempts from it
# are refused until failure_window seconds pass without one.
max_failures_per_ip = 10
failure_window = 3600
# Argon2id cost of stored password hashes: memory in KiB and passes. The
# default (19 MiB, 2 passes: OWASP's minimum) suits a 512 MB board.
argon2_memory_kib = 19456
argon2_iterations = 2
# Password hashes computed at once (each holds argon2_memory_kib).
hash_concurrency = 1

[relay]
# Outbound mail goes straight to each domain's MX unless a smarthost is set:
# "host:port" (e.g. your ISP's or mail provider's submission server).
smarthost = ""
# How to talk to the smarthost: "starttls" (required, certificate checked),
# "implicit" (TLS from the start, port 465) or "none".
smarthost_tls = "starttls"
smarthost_user = ""
smarthost_password = ""
# MX delivery uses STARTTLS when offered; require it (with a checked
# certificate) everywhere, or for these domains only.
require_tls = false
require_tls_domains = []
# Port of MX hosts (25; only tests change it).
mx_port = 25
# DNS servers as "IP:port"; empty: those of /etc/resolv.conf.
dns_servers = []
# Certificate authorities for checked TLS.
ca_file = "/etc/ssl/certs/ca-certificates.crt"

[queue]
# Seconds between attempts after each failure; the last repeats.
retry_schedule = [300, 900, 1800, 3600, 7200, 14400]
# Seconds after which undeliverable mail bounces (5 days).
max_age = 432000
# Destination domains delivered to at once.
max_connections = 10

[pop3]
# Seconds of inactivity before a session is closed (RFC 1939 3: at least 600).
timeout = 600
# Seconds a user must wait between two POP3 logins (advertised as
# LOGIN-DELAY, RFC 2449 6.8); 0 for none.
login_delay = 0
[imap]
# Longest command line in bytes, CRLF included (literals not counted).
max_line_length = 8192
# Largest command other than APPEND, literals included (APPEND is bounded
# by limits.max_message_size).
max_command_size = 65536
# Commands in one session (clients stay connected for days).
max_commands = 1000000
# Seconds one IDLE may last (RFC 9051 5.4), and an authenticated session may
# stay silent otherwise (RFC 9051 5.4: at least 30 minutes).
idle_timeout = 1800
autologout = 1800

[store]
path = "pimail.redb"
# redb page cache in MiB. Reads that miss it are served by the kernel's
# page cache, so a small one costs little speed and keeps RSS low.
cache_size_mib = 2
# One group commit takes at most this many messages / bytes.
batch_max_messages = 64
batch_max_bytes = 2097152
# Save allocator state at every commit: a crash then needs no full-file
# repair at the next start, at the cost of a second flush per commit.
quick_repair = false

[scan]
# Scan every received message (decoded attachments, embedded messages, zip
# entries) with ClamAV-format signatures; EICAR is built in.
enabled = true
# Signature files: .ndb, .hdb, .hsb, .fp, .sfp, .ign2, .cvd, .cld. SIGHUP
# reloads them.
signatures = "signatures"
# Infected mail: "reject" (554 5.7.1 at end of data) or "quarantine" (stored
# in the recipient's Junk mailbox with an X-Pimail-Scan: header).
action = "reject"
# Mail that could not be scanned whole (a limit below, e.g. a zip bomb):
# "reject", "quarantine" or "accept".
limit_action = "reject"
# Nesting of embedded messages and archives (a .tar.gz is two levels);
# 17 is ClamAV's MaxRecursion.
max_depth = 17
# Largest decoded attachment or archive entry, in bytes (streamed, not held).
max_object_size = 33554432
# Decoded and decompressed bytes per message, all parts together.
max_total_size = 67108864
# Entries in one archive (zip, tar).
max_zip_entries = 1000
# Messages scanned at once, each on a thread of its own.
concurrency = 1
[spam]
# Classify inbound mail (Robinson/Fisher, as bogofilter): spam goes to Junk
# with an X-Spam-Status: header. Train with `pimail spam train`.
enabled = true
# Scores at or above spam_cutoff are spam; at or below ham_cutoff, ham;
# between, unsure (INBOX, marked Unsure).
spam_cutoff = 0.99
ham_cutoff = 0.45
# Robinson's prior for rare tokens and its strength; tokens closer to 0.5
# than min_dev are ignored (bogofilter's defaults).
robx = 0.52
robs = 0.0178
min_dev = 0.375
# Bytes of a message read to classify or train it, and distinct tokens
# taken from it.
max_bytes = 262144
max_tokens = 10000
# Messages of each class trained before verdicts are given.
min_trained = 10
# A token database per user as well (used once trained enough).
per_user = false
# Refuse at end-of-data (550 5.7.1) at or above refuse_score.
refuse = false
refuse_score = 0.9999
# Strongest tokens named in X-Spam-Status:.
header_tokens = 5
[auth_results]
# Check SPF, DKIM, DMARC and iprev on inbound mail (not on our users'
# submissions) and add an Authentication-Results: header.
enabled = true
# Every check of one message ends within this; one cut off is temperror.
time_budget_ms = 8000
# DKIM-Signature fields verified per message.
max_dkim_signatures = 5
# SPF DNS-querying terms and void lookups per check (RFC 7208 4.6.4).
spf_lookup_limit = 10
spf_void_lookup_limit = 2
# Check SPF for the HELO name too (always done for the null sender).
check_helo = true
# What a DMARC failure under p=reject and under p=quarantine does:
# "reject" (550 5.7.1 at end of data), "junk" (file into Junk), "deliver".
dmarc_reject = "reject"
dmarc_quarantine = "junk"
# Public suffix rules for organizational domains, in the format of
# https://publicsuffix.org/list/public_suffix_list.dat; empty: a built-in
# subset.
public_suffix_file = ""
"#,
        hostname = v.hostname,
        domain = v.domain,
        data_dir = v.data_dir.display(),
    )
}

/// Reads config keys, remembering which were used so unknown keys (typos)
/// are reported instead of silently ignored.
struct Reader<'a> {
    file: &'a Path,
}

impl Reader<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn table<'t>(
        &self,
        root: &'t Table,
        name: &str,
        known: &[&str],
    ) -> Result<Option<&'t Table>, ConfigError> {
        match root.get(name) {
            None => Ok(None),
            Some(Value::Table(t)) => {
                for k in t.keys() {
                    if !known.contains(&k.as_str()) {
                        return Err(self.err(
                            &format!("{name}.{k}"),
                            format!("unknown key (known: {})", known.join(", ")),
                        ));
                    }
                }
                Ok(Some(t))
            }
            Some(v) => Err(self.err(
                name,
                format!("expected a table [{name}], found {}", v.type_str()),
            )),
        }
    }

    fn string(
        &self,
        t: Option<&Table>,
        key: &str,
        path: &str,
        default: &str,
    ) -> Result<String, ConfigError> {
        match t.and_then(|t| t.get(key)) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.err(path, format!("expected a string, found {}", v.type_str()))),
        }
    }

    fn boolean(
        &self,
        t: Option<&Table>,
        key: &str,
        path: &str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match t.and_then(|t| t.get(key)) {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(self.err(
                path,
                format!("expected true or false, found {}", v.type_str()),
            )),
        }
    }

    fn int(
        &self,
        t: Option<&Table>,
        key: &str,
        path: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        match t.and_then(|t| t.get(key)) {
            None => Ok(default),
            Some(Value::Integer(i)) if *i >= min as i64 && (*i as u64) <= max => Ok(*i as u64),
            Some(Value::Integer(i)) => Err(self.err(
                path,
                format!("expected an integer from {min} to {max}, found {i}"),
            )),
            Some(v) => Err(self.err(path, format!("expected an integer, found {}", v.type_str()))),
        }
    }

    fn float(
        &self,
        t: Option<&Table>,
        key: &str,
        path: &str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, ConfigError> {
        let v = match t.and_then(|t| t.get(key)) {
            None => return Ok(default),
            Some(Value::Float(f)) => *f,
            Some(Value::Integer(i)) => *i as f64,
            Some(v) => {
                return Err(self.err(path, format!("expected a number, found {}", v.type_str())));
            }
        };
        if v >= min && v <= max {
            Ok(v)
        } else {
            Err(self.err(
                path,
                format!("expected a number from {min} to {max}, found {v}"),
            ))
        }
    }

    fn strings(
        &self,
        t: Option<&Table>,
        key: &str,
        path: &str,
        default: &[String],
    ) -> Result<Vec<String>, ConfigError> {
        match t.and_then(|t| t.get(key)) {
            None => Ok(default.to_vec()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(self.err(
                        path,
                        format!("expected a list of strings, found a {} in it", v.type_str()),
                    )),
                })
                .collect(),
            Some(v) => Err(self.err(
                path,
                format!("expected a list of strings, found {}", v.type_str()),
            )),
        }
    }

    fn addrs(
        &self,
        t: Option<&Table>,
        key: &str,
        default: u16,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let path = format!("listen.{key}");
        let defaults = vec![format!("0.0.0.0:{default}"), format!("[::]:{default}")];
        self.strings(t, key, &path, &defaults)?
            .iter()
            .map(|s| {
                s.parse().map_err(|_| {
                    self.err(&path, format!("expected \"IP:port\" (e.g. \"0.0.0.0:{default}\" or \"[::]:{default}\"), found {s:?}"))
                })
            })
            .collect()
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let r = Reader { file };
        let root: Table = text
            .parse()
            .map_err(|e: toml::de::Error| r.err("", e.to_string().trim_end().to_string()))?;
        const TOP: &[&str] = &[
            "pop3",
            "relay",
            "queue",
            "hostname",
            "domains",
            "data_dir",
            "recipient_delimiter",
            "log_level",
            "listen",
            "tls",
            "limits",
            "auth",
            "imap",
            "store",
            "scan",
            "spam",
            "auth_results",
        ];
        for k in root.keys() {
            if !TOP.contains(&k.as_str()) {
                return Err(r.err(k, format!("unknown key (known: {})", TOP.join(", "))));
            }
        }
        let top = Some(&root);
        let hostname = r.string(top, "hostname", "hostname", "")?;
        if hostname.is_empty()
            || !hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(r.err(
                "hostname",
                format!("expected a host name like \"mail.example.org\", found {hostname:?}"),
            ));
        }
        let domains: Vec<String> = r
            .strings(top, "domains", "domains", &[])?
            .iter()
            .map(|d| d.to_lowercase())
            .collect();
        if domains.is_empty() {
            return Err(r.err(
                "domains",
                "expected at least one mail domain, like [\"example.org\"]",
            ));
        }
        let data_dir = PathBuf::from(r.string(top, "data_dir", "data_dir", "/var/lib/pimail")?);
        let delimiter = r.string(top, "recipient_delimiter", "recipient_delimiter", "+")?;
        let recipient_delimiter = match delimiter.chars().count() {
            0 => None,
            1 => delimiter.chars().next(),
            _ => {
                return Err(r.err(
                    "recipient_delimiter",
                    format!("expected one character or \"\", found {delimiter:?}"),
                ));
            }
        };
        let log_level = r.string(top, "log_level", "log_level", "info")?;
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(r.err(
                "log_level",
                format!("expected error, warn, info, debug or trace, found {log_level:?}"),
            ));
        }

        let names: Vec<&str> = STANDARD_PORTS.iter().map(|(n, _)| *n).collect();
        let l = r.table(&root, "listen", &names)?;
        let port = |n: &str| {
            STANDARD_PORTS
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, p)| *p)
                .unwrap_or(0)
        };
        let listen = Listen {
            smtp: r.addrs(l, "smtp", port("smtp"))?,
            submission: r.addrs(l, "submission", port("submission"))?,
            submissions: r.addrs(l, "submissions", port("submissions"))?,
            imap: r.addrs(l, "imap", port("imap"))?,
            imaps: r.addrs(l, "imaps", port("imaps"))?,
            pop3: r.addrs(l, "pop3", port("pop3"))?,
            pop3s: r.addrs(l, "pop3s", port("pop3s"))?,
        };

        let t = r.table(&root, "tls", &["cert", "key"])?;
        let resolve = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { data_dir.join(p) }
        };
        let tls_cert = resolve(r.string(t, "cert", "tls.cert", "tls/cert.pem")?);
        let tls_key = resolve(r.string(t, "key", "tls.key", "tls/key.pem")?);

        let t = r.table(
            &root,
            "limits",
            &[
                "max_connections",
                "max_connections_per_ip",
                "max_message_size",
                "max_recipients",
                "max_commands",
                "max_errors",
                "max_line_length",
                "spool_memory",
                "command_timeout",
                "data_timeout",
                "tls_handshake_timeout",
                "shutdown_grace",
            ],
        )?;
        let secs = |key: &str, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(r.int(
                t,
                key,
                &format!("limits.{key}"),
                default,
                1,
                86400,
            )?))
        };
        let limits = Limits {
            max_connections: r.int(
                t,
                "max_connections",
                "limits.max_connections",
                200,
                1,
                100_000,
            )? as usize,
            max_connections_per_ip: r.int(
                t,
                "max_connections_per_ip",
                "limits.max_connections_per_ip",
                20,
                1,
                100_000,
            )? as usize,
            max_message_size: r.int(
                t,
                "max_message_size",
                "limits.max_message_size",
                25 << 20,
                1024,
                1 << 32,
            )?,
            max_recipients: r.int(
                t,
                "max_recipients",
                "limits.max_recipients",
                100,
                1,
                100_000,
            )? as usize,
            max_commands: r.int(
                t,
                "max_commands",
                "limits.max_commands",
                10_000,
                10,
                10_000_000,
            )? as usize,
            max_errors: r.int(t, "max_errors", "limits.max_errors", 10, 1, 10_000)? as usize,
            // RFC 5321 4.5.3.1.4 needs 512; 64 KiB bounds the line buffer.
            max_line_length: r.int(
                t,
                "max_line_length",
                "limits.max_line_length",
                512,
                512,
                65536,
            )? as usize,
            spool_memory: r.int(t, "spool_memory", "limits.spool_memory", 131008, 0, 1 << 30)?
                as usize,
            command_timeout: secs("command_timeout", 300)?,
            data_timeout: secs("data_timeout", 180)?,
            tls_handshake_timeout: secs("tls_handshake_timeout", 30)?,
            shutdown_grace: secs("shutdown_grace", 30)?,
        };

        let t = r.table(
            &root,
            "auth",
            &[
                "allow_plaintext_on_loopback",
                "failure_delay_ms",
                "max_failures_per_ip",
                "failure_window",
                "argon2_memory_kib",
                "argon2_iterations",
                "hash_concurrency",
            ],
        )?;
        let auth = Auth {
            allow_plaintext_on_loopback: r.boolean(
                t,
                "allow_plaintext_on_loopback",
                "auth.allow_plaintext_on_loopback",
                false,
            )?,
            max_failures_per_ip: r.int(
                t,
                "max_failures_per_ip",
                "auth.max_failures_per_ip",
                10,
                1,
                1_000_000,
            )? as u32,
            failure_window: Duration::from_secs(r.int(
                t,
                "failure_window",
                "auth.failure_window",
                3600,
                1,
                86400 * 30,
            )?),
            failure_delay: Duration::from_millis(r.int(
                t,
                "failure_delay_ms",
                "auth.failure_delay_ms",
                2000,
                0,
                60_000,
            )?),
            argon2_memory_kib: r.int(
                t,
                "argon2_memory_kib",
                "auth.argon2_memory_kib",
                19456,
                1024,
                1 << 22,
            )? as u32,
            argon2_iterations: r.int(t, "argon2_iterations", "auth.argon2_iterations", 2, 1, 100)?
                as u32,
            hash_concurrency: r.int(t, "hash_concurrency", "auth.hash_concurrency", 1, 1, 64)?
                as usize,
        };

        let t = r.table(
            &root,
            "relay",
            &[
                "smarthost",
                "smarthost_tls",
                "smarthost_user",
                "smarthost_password",
                "require_tls",
                "require_tls_domains",
                "mx_port",
                "dns_servers",
                "ca_file",
            ],
        )?;
        let smarthost_text = r.string(t, "smarthost", "relay.smarthost", "")?;
        let smarthost = if smarthost_text.is_empty() {
            None
        } else {
            let bad = || {
                r.err("relay.smarthost", format!("expected \"host:port\" like \"smtp.example.net:587\", found {smarthost_text:?}"))
            };
            let (host, port) = smarthost_text.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            if host.is_empty() {
                return Err(bad());
            }
            Some((
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
            ))
        };
        let smarthost_tls = r.string(t, "smarthost_tls", "relay.smarthost_tls", "starttls")?;
        if !["starttls", "implicit", "none"].contains(&smarthost_tls.as_str()) {
            return Err(r.err(
                "relay.smarthost_tls",
                format!("expected \"starttls\", \"implicit\" or \"none\", found {smarthost_tls:?}"),
            ));
        }
        let user = r.string(t, "smarthost_user", "relay.smarthost_user", "")?;
        let password = r.string(t, "smarthost_password", "relay.smarthost_password", "")?;
        let dns_servers = r
            .strings(t, "dns_servers", "relay.dns_servers", &[])?
            .iter()
            .map(|s| {
                s.parse().map_err(|_| {
                    r.err(
                        "relay.dns_servers",
                        format!("expected \"IP:port\" like \"127.0.0.1:53\", found {s:?}"),
                    )
                })
            })
            .collect::<Result<Vec<SocketAddr>, _>>()?;
        let relay = Relay {
            smarthost,
            smarthost_tls,
            smarthost_credentials: (!user.is_empty()).then_some((user, password)),
            require_tls: r.boolean(t, "require_tls", "relay.require_tls", false)?,
            require_tls_domains: r.strings(
                t,
                "require_tls_domains",
                "relay.require_tls_domains",
                &[],
            )?,
            mx_port: r.int(t, "mx_port", "relay.mx_port", 25, 1, 65535)? as u16,
            dns_servers,
            ca_file: PathBuf::from(r.string(
                t,
                "ca_file",
                "relay.ca_file",
                "/etc/ssl/certs/ca-certificates.crt",
            )?),
        };
        let t = r.table(
            &root,
            "queue",
            &["retry_schedule", "max_age", "max_connections"],
        )?;
        let retry_schedule = match t.and_then(|t| t.get("retry_schedule")) {
            None => vec![300, 900, 1800, 3600, 7200, 14400],
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| match v {
                    Value::Integer(i) if *i >= 1 => Ok(*i as u64),
                    _ => Err(r.err(
                        "queue.retry_schedule",
                        "expected a list of positive integers (seconds)",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(r.err(
                    "queue.retry_schedule",
                    "expected a non-empty list of positive integers (seconds)",
                ));
            }
        };
        let queue = Queue {
            retry_schedule,
            max_age: Duration::from_secs(r.int(
                t,
                "max_age",
                "queue.max_age",
                432_000,
                60,
                86400 * 60,
            )?),
            max_connections: r.int(t, "max_connections", "queue.max_connections", 10, 1, 1000)?
                as usize,
        };

        let t = r.table(&root, "pop3", &["timeout", "login_delay"])?;
        let pop3 = Pop3 {
            timeout: Duration::from_secs(r.int(t, "timeout", "pop3.timeout", 600, 10, 86400)?),
            login_delay: Duration::from_secs(r.int(
                t,
                "login_delay",
                "pop3.login_delay",
                0,
                0,
                86400,
            )?),
        };

        let t = r.table(
            &root,
            "imap",
            &[
                "max_line_length",
                "max_command_size",
                "max_commands",
                "idle_timeout",
                "autologout",
                // Before 0.2: now auth.failure_delay_ms for every protocol.
                "login_failure_delay_ms",
            ],
        )?;
        if t.is_some_and(|t| t.contains_key("login_failure_delay_ms")) {
            log::warn!(
                "imap.login_failure_delay_ms is no longer used: auth.failure_delay_ms applies to IMAP too"
            );
        }
        let imap = Imap {
            max_line_length: r.int(
                t,
                "max_line_length",
                "imap.max_line_length",
                8192,
                1024,
                1 << 20,
            )? as usize,
            max_command_size: r.int(
                t,
                "max_command_size",
                "imap.max_command_size",
                65536,
                1024,
                1 << 24,
            )? as usize,
            max_commands: r.int(
                t,
                "max_commands",
                "imap.max_commands",
                1_000_000,
                10,
                u32::MAX as u64,
            )? as usize,
            idle_timeout: Duration::from_secs(r.int(
                t,
                "idle_timeout",
                "imap.idle_timeout",
                1800,
                1,
                86400,
            )?),
            autologout: Duration::from_secs(r.int(
                t,
                "autologout",
                "imap.autologout",
                1800,
                1,
                86400,
            )?),
        };

        let t = r.table(
            &root,
            "store",
            &[
                "path",
                "cache_size_mib",
                "batch_max_messages",
                "batch_max_bytes",
                "quick_repair",
            ],
        )?;
        let store = StoreConfig {
            path: resolve(r.string(t, "path", "store.path", "pimail.redb")?),
            cache_size_mib: r.int(t, "cache_size_mib", "store.cache_size_mib", 2, 1, 1 << 20)?
                as usize,
            batch_max_messages: r.int(
                t,
                "batch_max_messages",
                "store.batch_max_messages",
                64,
                1,
                10_000,
            )? as usize,
            batch_max_bytes: r.int(
                t,
                "batch_max_bytes",
                "store.batch_max_bytes",
                2 << 20,
                1024,
                1 << 32,
            )?,
            quick_repair: r.boolean(t, "quick_repair", "store.quick_repair", false)?,
        };

        let t = r.table(
            &root,
            "scan",
            &[
                "enabled",
                "signatures",
                "action",
                "limit_action",
                "max_depth",
                "max_object_size",
                "max_total_size",
                "max_zip_entries",
                "concurrency",
            ],
        )?;
        let action = |key: &str, allowed: &[&str]| -> Result<ScanAction, ConfigError> {
            let path = format!("scan.{key}");
            let v = r.string(t, key, &path, "reject")?;
            if !allowed.contains(&v.as_str()) {
                return Err(r.err(
                    &path,
                    format!("expected one of {}, found {v:?}", allowed.join(", ")),
                ));
            }
            Ok(match v.as_str() {
                "quarantine" => ScanAction::Quarantine,
                "accept" => ScanAction::Accept,
                _ => ScanAction::Reject,
            })
        };
        let scan = ScanConfig {
            enabled: r.boolean(t, "enabled", "scan.enabled", true)?,
            signatures: resolve(r.string(t, "signatures", "scan.signatures", "signatures")?),
            action: action("action", &["reject", "quarantine"])?,
            limit_action: action("limit_action", &["reject", "quarantine", "accept"])?,
            max_depth: r.int(t, "max_depth", "scan.max_depth", 17, 1, 64)? as usize,
            max_object_size: r.int(
                t,
                "max_object_size",
                "scan.max_object_size",
                32 << 20,
                1024,
                1 << 32,
            )?,
            max_total_size: r.int(
                t,
                "max_total_size",
                "scan.max_total_size",
                64 << 20,
                1024,
                1 << 34,
            )?,
            max_zip_entries: r.int(
                t,
                "max_zip_entries",
                "scan.max_zip_entries",
                1000,
                1,
                1_000_000,
            )? as usize,
            concurrency: r.int(t, "concurrency", "scan.concurrency", 1, 1, 64)? as usize,
        };
        let spam = spam_settings(&r, &root)?;
        let auth_results = auth_results_settings(&r, &root)?;

        Ok(Config {
            file: file.to_path_buf(),
            hostname,
            domains,
            data_dir,
            recipient_delimiter,
            listen,
            tls_cert,
            tls_key,
            limits,
            auth,
            pop3,
            relay,
            queue,
            imap,
            store,
            scan,
            spam,
            auth_results,
            log_level,
        })
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }

    pub fn scan_limits(&self) -> crate::scan::Limits {
        crate::scan::Limits {
            max_depth: self.scan.max_depth,
            max_object_size: self.scan.max_object_size,
            max_total_size: self.scan.max_total_size,
            max_zip_entries: self.scan.max_zip_entries,
        }
    }

    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            cache_bytes: self.store.cache_size_mib << 20,
            quick_repair: self.store.quick_repair,
        }
    }
}

fn spam_settings(r: &Reader, root: &Table) -> Result<crate::spam::Settings, ConfigError> {
    let t = r.table(
        root,
        "spam",
        &[
            "enabled",
            "spam_cutoff",
            "ham_cutoff",
            "robx",
            "robs",
            "min_dev",
            "max_bytes",
            "max_tokens",
            "min_trained",
            "per_user",
            "refuse",
            "refuse_score",
            "header_tokens",
        ],
    )?;
    let d = crate::spam::Settings::default();
    let f = |key: &str, default: f64, min: f64, max: f64| {
        r.float(t, key, &format!("spam.{key}"), default, min, max)
    };
    let i = |key: &str, default: u64, min: u64, max: u64| {
        r.int(t, key, &format!("spam.{key}"), default, min, max)
    };
    let spam_cutoff = f("spam_cutoff", d.spam_cutoff, 0.0, 1.0)?;
    let ham_cutoff = f("ham_cutoff", d.ham_cutoff, 0.0, 1.0)?;
    if ham_cutoff > spam_cutoff {
        return Err(r.err(
            "spam.ham_cutoff",
            format!("expected at most spam.spam_cutoff ({spam_cutoff}), found {ham_cutoff}"),
        ));
    }
    Ok(crate::spam::Settings {
        enabled: r.boolean(t, "enabled", "spam.enabled", d.enabled)?,
        spam_cutoff,
        ham_cutoff,
        robx: f("robx", d.robx, 0.0, 1.0)?,
        robs: f("robs", d.robs, 0.0001, 1.0)?,
        min_dev: f("min_dev", d.min_dev, 0.0, 0.5)?,
        max_bytes: i("max_bytes", d.max_bytes as u64, 1024, 64 << 20)? as usize,
        max_tokens: i("max_tokens", d.max_tokens as u64, 10, 1_000_000)? as usize,
        min_trained: i("min_trained", u64::from(d.min_trained), 0, 1_000_000)? as u32,
        per_user: r.boolean(t, "per_user", "spam.per_user", d.per_user)?,
        refuse: r.boolean(t, "refuse", "spam.refuse", d.refuse)?,
        refuse_score: f("refuse_score", d.refuse_score, 0.5, 1.0)?,
        header_tokens: i("header_tokens", d.header_tokens as u64, 0, 20)? as usize,
    })
}

fn auth_results_settings(
    r: &Reader,
    root: &Table,
) -> Result<crate::authres::Settings, ConfigError> {
    use crate::authres::{Action, Settings};
    let t = r.table(
        root,
        "auth_results",
        &[
            "enabled",
            "time_budget_ms",
            "max_dkim_signatures",
            "spf_lookup_limit",
            "spf_void_lookup_limit",
            "check_helo",
            "dmarc_reject",
            "dmarc_quarantine",
            "public_suffix_file",
        ],
    )?;
    let d = Settings::default();
    let i = |key: &str, default: u64, min: u64, max: u64| {
        r.int(t, key, &format!("auth_results.{key}"), default, min, max)
    };
    let action = |key: &str, default: &str| {
        let path = format!("auth_results.{key}");
        let s = r.string(t, key, &path, default)?;
        Action::parse(&s).ok_or_else(|| {
            r.err(
                &path,
                format!("expected \"reject\", \"junk\" or \"deliver\", found {s:?}"),
            )
        })
    };
    let psl_path = r.string(
        t,
        "public_suffix_file",
        "auth_results.public_suffix_file",
        "",
    )?;
    let public_suffixes = if psl_path.is_empty() {
        d.public_suffixes.clone()
    } else {
        let text = std::fs::read_to_string(&psl_path).map_err(|e| {
            r.err(
                "auth_results.public_suffix_file",
                format!("cannot read {psl_path}: {e}"),
            )
        })?;
        std::sync::Arc::new(crate::authres::psl::PublicSuffixes::parse(&text))
    };
    Ok(Settings {
        enabled: r.boolean(t, "enabled", "auth_results.enabled", d.enabled)?,
        time_budget: std::time::Duration::from_millis(i(
            "time_budget_ms",
            d.time_budget.as_millis() as u64,
            100,
            120_000,
        )?),
        max_signatures: i("max_dkim_signatures", d.max_signatures as u64, 0, 50)? as usize,
        spf_limits: crate::authres::spf::Limits {
            lookups: i("spf_lookup_limit", u64::from(d.spf_limits.lookups), 1, 100)? as u32,
            void_lookups: i(
                "spf_void_lookup_limit",
                u64::from(d.spf_limits.void_lookups),
                0,
                100,
            )? as u32,
        },
        check_helo: r.boolean(t, "check_helo", "auth_results.check_helo", d.check_helo)?,
        on_reject: action("dmarc_reject", "reject")?,
        on_quarantine: action("dmarc_quarantine", "junk")?,
        public_suffixes,
    })
}

/// The config file to use: `--config`, then `$PIMAIL_CONFIG`, then
/// /etc/pimail/pimail.toml.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("PIMAIL_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/etc/pimail/pimail.toml"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dev: Option<u16>) -> String {
        template(&InitValues {
            hostname: "mail.example.org",
            domain: "example.org",
            data_dir: Path::new("/var/lib/pimail"),
            dev_port_base: dev,
        })
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/pimail/pimail.toml"), text)
    }

    #[test]
    fn template_parses_to_the_defaults() {
        let c = parse(&sample(None)).unwrap();
        let minimal =
            parse("hostname = \"mail.example.org\"\ndomains = [\"example.org\"]\n").unwrap();
        assert_eq!(c, minimal, "template and built-in defaults disagree");
        assert_eq!(
            c.listen.smtp,
            vec!["0.0.0.0:25".parse().unwrap(), "[::]:25".parse().unwrap()]
        );
        assert_eq!(c.tls_cert, PathBuf::from("/var/lib/pimail/tls/cert.pem"));
        assert_eq!(c.limits.max_line_length, 512);
        assert!(!c.auth.allow_plaintext_on_loopback);
    }

    #[test]
    fn dev_template_binds_loopback_ports() {
        let c = parse(&sample(Some(10000))).unwrap();
        assert_eq!(c.listen.smtp, vec!["127.0.0.1:10025".parse().unwrap()]);
        assert_eq!(c.listen.imaps, vec!["127.0.0.1:10993".parse().unwrap()]);
        assert_eq!(c.listen.pop3s, vec!["127.0.0.1:10995".parse().unwrap()]);
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let base = "hostname = \"m.example.org\"\ndomains = [\"example.org\"]\n";
        let cases = [
            (
                "[limits]\nmax_connections = \"many\"\n",
                "limits.max_connections",
                "expected an integer",
            ),
            (
                "[limits]\nmax_line_length = 100\n",
                "limits.max_line_length",
                "from 512",
            ),
            (
                "[listen]\nsmtp = [\"localhost\"]\n",
                "listen.smtp",
                "IP:port",
            ),
            (
                "[limits]\nmax_conections = 5\n",
                "limits.max_conections",
                "unknown key",
            ),
            (
                "[auth]\nallow_plaintext_on_loopback = 1\n",
                "auth.allow_plaintext_on_loopback",
                "true or false",
            ),
            (
                "[scan]\naction = \"accept\"\n",
                "scan.action",
                "expected one of reject, quarantine",
            ),
            ("[scan]\nmax_depth = 0\n", "scan.max_depth", "from 1 to 64"),
            (
                "[spam]\nspam_cutoff = 1.5\n",
                "spam.spam_cutoff",
                "from 0 to 1",
            ),
            (
                "[spam]\nham_cutoff = 0.995\n",
                "spam.ham_cutoff",
                "at most spam.spam_cutoff",
            ),
            ("[spam]\nrobx = \"x\"\n", "spam.robx", "expected a number"),
            ("[spam]\nmax_bytes = 10\n", "spam.max_bytes", "from 1024"),
            (
                "recipient_delimiter = \"++\"\n",
                "recipient_delimiter",
                "one character",
            ),
        ];
        for (extra, key, expected) in cases {
            let err = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.starts_with("/etc/pimail/pimail.toml: key `"), "{err}");
            assert!(err.contains(key), "{err} lacks {key}");
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
        let err = parse("domains = [\"example.org\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hostname"), "{err}");
        let err = parse("hostname = \n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/pimail/pimail.toml: "), "{err}");
    }
}
