//! pimail: the whole mail server of a small ARM board, in one binary.

#![forbid(unsafe_code)]

/// `println!` for command output that ends quietly when the reader has
/// gone (`pimail --help | head`) instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::output_failed(e);
        }
    }};
}

/// `print!` counterpart of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            $crate::output_failed(e);
        }
    }};
}

mod firstboot;

use pimail::{admin, auth, config, dkim, server, spam, store};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;

use admin::Request;
use config::Config;
use store::{Store, StoreError};

/// pimail: SMTP, IMAP and POP3 mail server for small boards, in one binary.
#[derive(FromArgs)]
struct Cli {
    /// print the version and the machine it was built for, and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Init(InitArgs),
    Serve(ServeArgs),
    CheckConfig(CheckConfigArgs),
    User(UserArgs),
    Alias(AliasArgs),
    Message(MessageArgs),
    Scan(ScanArgs),
    Queue(QueueArgs),
    Spam(spam::cli::SpamArgs),
    Dkim(DkimArgs),
    DnsRecords(DnsRecordsArgs),
    Firstboot(FirstbootArgs),
}

/// apply the boot partition's settings file: store, admin, certificate, DNS records (run at boot by pimail-firstboot.service)
#[derive(FromArgs)]
#[argh(subcommand, name = "firstboot")]
struct FirstbootArgs {
    /// the settings file (default /boot/firmware/pimail.txt)
    #[argh(option, default = "PathBuf::from(\"/boot/firmware/pimail.txt\")")]
    settings: PathBuf,
    /// directory for the config, the store and the certificate (default /var/lib/pimail)
    #[argh(option, default = "PathBuf::from(\"/var/lib/pimail\")")]
    data_dir: PathBuf,
}

/// inspect and manage the outbound queue
#[derive(FromArgs)]
#[argh(subcommand, name = "queue")]
struct QueueArgs {
    #[argh(subcommand)]
    command: QueueCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum QueueCommand {
    List(QueueList),
    Show(QueueShow),
    Retry(QueueRetry),
    Drop(QueueDrop),
}

/// list queued recipients: id, size, sender, recipient, attempts, next attempt, last error
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct QueueList {
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// show one queued recipient and its message
#[derive(FromArgs)]
#[argh(subcommand, name = "show")]
struct QueueShow {
    /// the queue id (from `queue list`)
    #[argh(positional)]
    id: u64,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// make one queued recipient (or all) due now
#[derive(FromArgs)]
#[argh(subcommand, name = "retry")]
struct QueueRetry {
    /// the queue id; all entries when omitted
    #[argh(positional)]
    id: Option<u64>,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// remove a queued recipient without delivering or bouncing it
#[derive(FromArgs)]
#[argh(subcommand, name = "drop")]
struct QueueDrop {
    /// the queue id
    #[argh(positional)]
    id: u64,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// create a data directory: config file, store and a self-signed certificate
#[derive(FromArgs)]
#[argh(subcommand, name = "init")]
struct InitArgs {
    /// directory for the config, the store and the certificate
    #[argh(option)]
    data_dir: PathBuf,
    /// the mail domain (e.g. example.org)
    #[argh(option)]
    domain: String,
    /// this server's host name (default: mail.DOMAIN)
    #[argh(option)]
    hostname: Option<String>,
    /// development instance: listen on 127.0.0.1 only, on port-base + the standard ports
    #[argh(switch)]
    dev: bool,
    /// with --dev, added to the standard ports (default 10000: SMTP on 10025)
    #[argh(option, default = "10000")]
    port_base: u16,
}

/// run the server
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct ServeArgs {
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// check the config file and report the first problem
#[derive(FromArgs)]
#[argh(subcommand, name = "check-config")]
struct CheckConfigArgs {
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// manage accounts
#[derive(FromArgs)]
#[argh(subcommand, name = "user")]
struct UserArgs {
    #[argh(subcommand)]
    command: UserCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum UserCommand {
    Add(UserAdd),
    Del(UserDel),
    List(UserList),
    Passwd(UserPasswd),
}

/// add an account (with INBOX, Sent, Drafts, Junk, Trash and Archive)
#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
struct UserAdd {
    /// the account's address, e.g. alice@example.org
    #[argh(positional)]
    address: String,
    /// read the password from the first line of standard input instead of prompting
    #[argh(switch)]
    password_stdin: bool,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// delete an account and all its mail
#[derive(FromArgs)]
#[argh(subcommand, name = "del")]
struct UserDel {
    /// the account's address
    #[argh(positional)]
    address: String,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// list accounts
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct UserList {
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// change an account's password
#[derive(FromArgs)]
#[argh(subcommand, name = "passwd")]
struct UserPasswd {
    /// the account's address
    #[argh(positional)]
    address: String,
    /// read the password from the first line of standard input instead of prompting
    #[argh(switch)]
    password_stdin: bool,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// manage aliases (ALIAS may be @domain: a catch-all)
#[derive(FromArgs)]
#[argh(subcommand, name = "alias")]
struct AliasArgs {
    #[argh(subcommand)]
    command: AliasCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum AliasCommand {
    Add(AliasAdd),
    Del(AliasDel),
    List(AliasList),
}

/// deliver mail for ALIAS to one or more local accounts
#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
struct AliasAdd {
    /// the alias address, or @domain for a catch-all
    #[argh(positional)]
    alias: String,
    /// local accounts that receive the mail
    #[argh(positional)]
    targets: Vec<String>,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// delete an alias
#[derive(FromArgs)]
#[argh(subcommand, name = "del")]
struct AliasDel {
    /// the alias address
    #[argh(positional)]
    alias: String,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// list aliases
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct AliasList {
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// inspect stored messages
#[derive(FromArgs)]
#[argh(subcommand, name = "message")]
struct MessageArgs {
    #[argh(subcommand)]
    command: MessageCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum MessageCommand {
    List(MessageList),
    Show(MessageShow),
}

/// list a mailbox's messages: UID, internal date, size, flags
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct MessageList {
    /// the account's address
    #[argh(positional)]
    address: String,
    /// mailbox name (default INBOX)
    #[argh(option, default = "String::from(\"INBOX\")")]
    mailbox: String,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// print a stored message byte for byte
#[derive(FromArgs)]
#[argh(subcommand, name = "show")]
struct MessageShow {
    /// the account's address
    #[argh(positional)]
    address: String,
    /// the message's UID (from `message list`)
    #[argh(positional)]
    uid: u32,
    /// mailbox name (default INBOX)
    #[argh(option, default = "String::from(\"INBOX\")")]
    mailbox: String,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// manage DKIM signing keys
#[derive(FromArgs)]
#[argh(subcommand, name = "dkim")]
struct DkimArgs {
    #[argh(subcommand)]
    command: DkimCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum DkimCommand {
    Keygen(DkimKeygen),
}

/// generate a DKIM key under DATA_DIR/dkim and print the DNS TXT record to publish
#[derive(FromArgs)]
#[argh(subcommand, name = "keygen")]
struct DkimKeygen {
    /// the signing domain, one of the configured `domains`
    #[argh(option)]
    domain: String,
    /// the selector (default: pmYYYY for rsa, pmYYYYe for ed25519)
    #[argh(option)]
    selector: Option<String>,
    /// rsa (2048 bits, understood everywhere) or ed25519 (RFC 8463); default rsa
    #[argh(option, default = "String::from(\"rsa\")")]
    algorithm: String,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// print the DNS records each configured domain needs: MX, SPF, DKIM, DMARC, and the PTR to ask for
#[derive(FromArgs)]
#[argh(subcommand, name = "dns-records")]
struct DnsRecordsArgs {
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// scan files and messages for viruses, like clamscan: prints "PATH: OK" or
/// "PATH: NAME FOUND"; exits 0 if all clean, 1 if anything was found, 2 on
/// errors
#[derive(FromArgs)]
#[argh(subcommand, name = "scan")]
struct ScanArgs {
    /// directory of ClamAV signature files (default: scan.signatures of the
    /// config file)
    #[argh(option)]
    signatures: Option<PathBuf>,
    /// config file, for scan.signatures and the scan limits (default:
    /// $PIMAIL_CONFIG, then /etc/pimail/pimail.toml; not read with
    /// --signatures)
    #[argh(option)]
    config: Option<PathBuf>,
    /// files and directories to scan (directories are walked; *.eml and
    /// files that start like a message are scanned as messages)
    #[argh(positional)]
    paths: Vec<PathBuf>,
}

/// A failure with the exit code it maps to: 2 for usage and config errors,
/// 1 for everything else.
struct Failure(u8, String);

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure(2, e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure(1, e.to_string())
    }
}

/// Standard output is gone (a closed pipe) or unwritable: stop, as a
/// command whose output nobody reads has nothing left to do.
fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("pimail: writing output: {e}");
    std::process::exit(1);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let name = Path::new(args.first().map(String::as_str).unwrap_or("pimail"))
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("pimail")
        .to_string();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let cli = match Cli::from_args(&[&name], &rest) {
        Ok(cli) => cli,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    outln!("{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("{}", early.output);
                    ExitCode::from(2)
                }
            };
        }
    };
    let command = match (cli.version, cli.command) {
        (true, _) => {
            outln!("{}", version_line());
            return ExitCode::SUCCESS;
        }
        (false, Some(command)) => command,
        (false, None) => {
            eprintln!("pimail: expected a command; see `{name} help`");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("pimail: {msg}");
            ExitCode::from(code)
        }
    }
}

/// `pimail --version`: which build this is, and for which machine (so that
/// a cross-built binary says what it was built for).
fn version_line() -> String {
    format!(
        "pimail {} ({}-{}-{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        if cfg!(target_env = "musl") {
            "musl"
        } else {
            "gnu"
        },
    )
}

fn load(flag: Option<&Path>) -> Result<Config, Failure> {
    let path = config::config_path(flag);
    Ok(Config::load(&path)?)
}

fn scan(a: ScanArgs) -> Result<(), Failure> {
    if a.paths.is_empty() {
        return Err(Failure(2, "scan: expected at least one PATH".into()));
    }
    let (signatures, limits) = match a.signatures {
        Some(dir) => (dir, pimail::scan::Limits::default()),
        None => {
            let config = load(a.config.as_deref())?;
            (config.scan.signatures.clone(), config.scan_limits())
        }
    };
    let stdout = std::io::stdout();
    let summary = pimail::scan::cli::run(
        &signatures,
        &std::env::temp_dir(),
        &a.paths,
        limits,
        &mut stdout.lock(),
        &mut std::io::stderr(),
    );
    match summary.exit_code() {
        0 => Ok(()),
        // The lines already say what was found or failed.
        code => {
            let _ = std::io::stdout().flush();
            std::process::exit(code as i32)
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Scan(a) => scan(a),
        Command::Init(a) => init(a),
        Command::Firstboot(a) => {
            init_logging("info");
            firstboot::run(&firstboot::Options {
                settings: a.settings,
                data_dir: a.data_dir,
            })
        }
        Command::Serve(a) => {
            let config = load(a.config.as_deref())?;
            init_logging(&config.log_level);
            server::serve(config).map_err(|e| Failure(1, e.to_string()))
        }
        Command::CheckConfig(a) => {
            let config = load(a.config.as_deref())?;
            for (what, path) in [("tls.cert", &config.tls_cert), ("tls.key", &config.tls_key)] {
                if !path.exists() {
                    return Err(Failure(
                        2,
                        format!(
                            "{}: key `{what}`: file {} does not exist",
                            config.file.display(),
                            path.display()
                        ),
                    ));
                }
            }
            server::tls::server_config(&config.tls_cert, &config.tls_key).map_err(|e| {
                Failure(
                    2,
                    format!("{}: key `tls.cert`/`tls.key`: {e}", config.file.display()),
                )
            })?;
            outln!("{}: ok", config.file.display());
            Ok(())
        }
        Command::User(u) => match u.command {
            UserCommand::Add(a) => {
                let config = load(a.config.as_deref())?;
                let address = store::ops::normalize_address(&a.address);
                store::ops::validate_address(&address)?;
                check_local(&config, &address)?;
                let hash = hash_password(&config, a.password_stdin)?;
                admin_request(&config, Request::UserAdd { address, hash })
            }
            UserCommand::Del(a) => {
                let config = load(a.config.as_deref())?;
                admin_request(
                    &config,
                    Request::UserDel {
                        address: store::ops::normalize_address(&a.address),
                    },
                )
            }
            UserCommand::List(a) => admin_request(&load(a.config.as_deref())?, Request::UserList),
            UserCommand::Passwd(a) => {
                let config = load(a.config.as_deref())?;
                let address = store::ops::normalize_address(&a.address);
                let hash = hash_password(&config, a.password_stdin)?;
                admin_request(&config, Request::UserPasswd { address, hash })
            }
        },
        Command::Alias(a) => match a.command {
            AliasCommand::Add(a) => {
                let config = load(a.config.as_deref())?;
                let alias = store::ops::normalize_address(&a.alias);
                check_local(&config, &alias)?;
                let targets = a
                    .targets
                    .iter()
                    .map(|t| store::ops::normalize_address(t))
                    .collect();
                admin_request(&config, Request::AliasAdd { alias, targets })
            }
            AliasCommand::Del(a) => {
                let config = load(a.config.as_deref())?;
                admin_request(
                    &config,
                    Request::AliasDel {
                        alias: store::ops::normalize_address(&a.alias),
                    },
                )
            }
            AliasCommand::List(a) => admin_request(&load(a.config.as_deref())?, Request::AliasList),
        },
        Command::Queue(q) => match q.command {
            QueueCommand::List(a) => admin_request(&load(a.config.as_deref())?, Request::QueueList),
            QueueCommand::Show(a) => {
                admin_request(&load(a.config.as_deref())?, Request::QueueShow { id: a.id })
            }
            QueueCommand::Retry(a) => admin_request(
                &load(a.config.as_deref())?,
                Request::QueueRetry { id: a.id },
            ),
            QueueCommand::Drop(a) => {
                admin_request(&load(a.config.as_deref())?, Request::QueueDrop { id: a.id })
            }
        },
        Command::Spam(a) => {
            let stdout = std::io::stdout();
            spam::cli::run(a, &mut stdout.lock()).map_err(|(code, msg)| Failure(code, msg))
        }
        Command::Dkim(d) => match d.command {
            DkimCommand::Keygen(a) => dkim_keygen(a),
        },
        Command::DnsRecords(a) => dns_records(&load(a.config.as_deref())?),
        Command::Message(m) => match m.command {
            MessageCommand::List(a) => {
                let config = load(a.config.as_deref())?;
                let address = store::ops::normalize_address(&a.address);
                admin_request(
                    &config,
                    Request::MessageList {
                        address,
                        mailbox: a.mailbox,
                    },
                )
            }
            MessageCommand::Show(a) => {
                let config = load(a.config.as_deref())?;
                let address = store::ops::normalize_address(&a.address);
                admin_request(
                    &config,
                    Request::MessageShow {
                        address,
                        mailbox: a.mailbox,
                        uid: a.uid,
                    },
                )
            }
        },
    }
}

fn dkim_keygen(a: DkimKeygen) -> Result<(), Failure> {
    let config = load(a.config.as_deref())?;
    let algorithm: dkim::Algorithm = a
        .algorithm
        .parse()
        .map_err(|e| Failure(2, format!("--algorithm: {e}")))?;
    let domain = a.domain.trim().trim_end_matches('.').to_lowercase();
    check_local(&config, &format!("@{domain}"))?;
    let selector = a.selector.unwrap_or_else(|| {
        let year = chrono::Utc::now().format("%Y");
        match algorithm {
            dkim::Algorithm::Rsa => format!("pm{year}"),
            dkim::Algorithm::Ed25519 => format!("pm{year}e"),
        }
    });
    let dir = config.data_dir.join("dkim");
    let (path, record) = dkim::keys::keygen(&domain, &selector, algorithm, &dir)
        .map_err(|e| Failure(1, e.to_string()))?;
    outln!("; key stored in {}", path.display());
    outln!("; publish this record, then mail from {domain} is signed with it:");
    outln!("{record}");
    Ok(())
}

/// Everything a domain's DNS needs for mail to arrive and to be trusted.
fn dns_records(config: &Config) -> Result<(), Failure> {
    for domain in &config.domains {
        let text =
            dkim::records::zone_text(domain, &config.hostname, &config.data_dir.join("dkim"))
                .map_err(|e| Failure(1, e.to_string()))?;
        outln!("{text}");
    }
    Ok(())
}

/// Accounts and aliases must be in one of our domains.
fn check_local(config: &Config, address: &str) -> Result<(), Failure> {
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or(address.trim_start_matches('@'));
    if !config.is_local_domain(domain) {
        return Err(Failure(
            2,
            format!(
                "{address}: domain {domain} is not in `domains` of {} ({})",
                config.file.display(),
                config.domains.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Runs a request on the store file, or through the running server's
/// control socket when the server holds the store.
fn admin_request(config: &Config, req: Request) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match Store::open(&config.store.path, config.store_options()) {
        Ok(store) => admin::run_direct(&store, &req, &mut out)?,
        Err(StoreError::InUse(_)) => server::control::request(config, &req, &mut out)
            .map_err(|(code, msg)| Failure(code.clamp(1, 255) as u8, msg))?,
        Err(e) => return Err(e.into()),
    }
    out.flush().map_err(|e| Failure(1, e.to_string()))
}

fn read_password(from_stdin: bool) -> Result<String, Failure> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Failure(1, format!("reading the password: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = prompt_hidden("Password: ")?;
        let second = prompt_hidden("Again: ")?;
        if first != second {
            return Err(Failure(1, "the passwords differ".into()));
        }
        first
    };
    if password.is_empty() {
        return Err(Failure(2, "the password is empty".into()));
    }
    Ok(password)
}

/// Prompts on the terminal with echo off.
fn prompt_hidden(prompt: &str) -> Result<String, Failure> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::BufRead;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            Failure(
                2,
                "no terminal to prompt for a password on; use --password-stdin".into(),
            )
        })?;
    let saved = tcgetattr(&tty).map_err(|e| Failure(1, format!("terminal: {e}")))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(|e| Failure(1, format!("terminal: {e}")))?;
    let mut w = &tty;
    let _ = write!(w, "{prompt}");
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let _ = writeln!(w);
    read.map_err(|e| Failure(1, format!("terminal: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn hash_password(config: &Config, from_stdin: bool) -> Result<String, Failure> {
    let password = read_password(from_stdin)?;
    auth::password::hash(
        &password,
        auth::password::HashCost {
            memory_kib: config.auth.argon2_memory_kib,
            iterations: config.auth.argon2_iterations,
        },
    )
    .map_err(|e| Failure(1, e))
}

fn init(a: InitArgs) -> Result<(), Failure> {
    let domain = a.domain.trim().to_lowercase();
    if store::ops::validate_address(&format!("postmaster@{domain}")).is_err() {
        return Err(Failure(
            2,
            format!(
                "--domain: expected a domain like example.org, found {:?}",
                a.domain
            ),
        ));
    }
    let hostname = a.hostname.unwrap_or_else(|| format!("mail.{domain}"));
    if a.dev && a.port_base > 65535 - 995 {
        return Err(Failure(
            2,
            format!(
                "--port-base: expected at most {}, found {}",
                65535 - 995,
                a.port_base
            ),
        ));
    }
    let config = create_instance(
        &a.data_dir,
        &domain,
        &hostname,
        a.dev.then_some(a.port_base),
        &|text| text,
    )?;
    if a.dev {
        outln!(
            "dev instance: SMTP on 127.0.0.1:{}",
            a.port_base as u32 + 25
        );
    }
    outln!(
        "next: pimail user add postmaster@{domain} --config {}",
        config.file.display()
    );
    Ok(())
}

/// Creates a data directory: config file (the template, passed through
/// `edit`), store and self-signed certificate. Shared by `init` and
/// `firstboot`; refuses to overwrite an existing config.
fn create_instance(
    data_dir: &Path,
    domain: &str,
    hostname: &str,
    dev_port_base: Option<u16>,
    edit: &dyn Fn(String) -> String,
) -> Result<Config, Failure> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Failure(1, format!("{}: {e}", data_dir.display())))?;
    let data_dir = data_dir
        .canonicalize()
        .map_err(|e| Failure(1, format!("{}: {e}", data_dir.display())))?;
    let config_file = data_dir.join("pimail.toml");
    if config_file.exists() {
        return Err(Failure(
            1,
            format!("{} exists; not overwriting it", config_file.display()),
        ));
    }
    let text = edit(config::template(&config::InitValues {
        hostname,
        domain,
        data_dir: &data_dir,
        dev_port_base,
    }));
    let config = Config::parse(&config_file, &text)?;
    let store = Store::create(&config.store.path, config.store_options())?;
    drop(store);
    if !config.tls_cert.exists() {
        server::tls::generate_self_signed(hostname, &config.tls_cert, &config.tls_key)
            .map_err(|e| Failure(1, e))?;
    }
    std::fs::write(&config_file, text)
        .map_err(|e| Failure(1, format!("{}: {e}", config_file.display())))?;
    outln!("wrote {}", config_file.display());
    outln!("created store {}", config.store.path.display());
    outln!(
        "certificate {} (self-signed for {hostname})",
        config.tls_cert.display()
    );
    Ok(config)
}

/// Logs to stderr. Under journald (JOURNAL_STREAM set) lines carry a
/// syslog priority prefix and no timestamp of our own.
fn init_logging(level: &str) {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|buf, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{priority}>{}", record.args())
        });
    }
    builder.init();
}
