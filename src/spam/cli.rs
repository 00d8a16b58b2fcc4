//! `pimail spam train|untrain|classify|stats`.
//!
//! Without `--db` they work on the configured store, which a running
//! server holds exclusively: stop it, or use `--db FILE` (a separate token
//! database, created when missing, for offline evaluation). With `--db`,
//! the `[spam]` settings come from `--config` when given, else defaults.

use std::io::Write;
use std::path::{Path, PathBuf};

use argh::FromArgs;
use redb::{ReadableTable, ReadableTableMetadata};

use super::Settings;
use super::classify;
use super::db::{self, Counts, SpamDb};
use super::learn::{self, Class, Deltas, Learned};
use super::source::for_each_message;
use super::tokenize::tokenize;
use crate::config::{self, Config};
use crate::store::StoreError;

/// the spam filter's token database: train, untrain, classify, stats
#[derive(FromArgs)]
#[argh(subcommand, name = "spam")]
pub struct SpamArgs {
    #[argh(subcommand)]
    pub command: SpamCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum SpamCommand {
    Train(TrainArgs),
    Untrain(UntrainArgs),
    Classify(ClassifyArgs),
    Stats(StatsArgs),
}

/// train messages as spam or ham (each PATH: a message file, a directory, a Maildir or an mbox)
#[derive(FromArgs)]
#[argh(subcommand, name = "train")]
pub struct TrainArgs {
    /// every PATH is spam
    #[argh(switch)]
    spam: bool,
    /// every PATH is ham
    #[argh(switch)]
    ham: bool,
    /// a separate token database file (created when missing) instead of the store
    #[argh(option)]
    db: Option<PathBuf>,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
    /// messages: files, directories, Maildirs or mboxes
    #[argh(positional)]
    paths: Vec<PathBuf>,
}

/// remove the training of messages, whatever class they were trained as
#[derive(FromArgs)]
#[argh(subcommand, name = "untrain")]
pub struct UntrainArgs {
    /// a separate token database file instead of the store
    #[argh(option)]
    db: Option<PathBuf>,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
    /// messages: files, directories, Maildirs or mboxes
    #[argh(positional)]
    paths: Vec<PathBuf>,
}

/// print `<path> <spam|ham|unsure> <score>` for every message
#[derive(FromArgs)]
#[argh(subcommand, name = "classify")]
pub struct ClassifyArgs {
    /// a separate token database file instead of the store
    #[argh(option)]
    db: Option<PathBuf>,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
    /// messages: files, directories, Maildirs or mboxes
    #[argh(positional)]
    paths: Vec<PathBuf>,
}

/// show what the token database holds
#[derive(FromArgs)]
#[argh(subcommand, name = "stats")]
pub struct StatsArgs {
    /// a separate token database file instead of the store
    #[argh(option)]
    db: Option<PathBuf>,
    /// config file (default: $PIMAIL_CONFIG, then /etc/pimail/pimail.toml)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// An error with its exit code: 2 for usage and config errors, 1 otherwise.
pub type Failure = (u8, String);

fn store_err(e: StoreError) -> Failure {
    (1, e.to_string())
}

/// Runs a `pimail spam` command, writing its report to `out`.
pub fn run(args: SpamArgs, out: &mut dyn Write) -> Result<(), Failure> {
    match args.command {
        SpamCommand::Train(a) => {
            let class = match (a.spam, a.ham) {
                (true, false) => Class::Spam,
                (false, true) => Class::Ham,
                _ => return Err((2, "spam train: give exactly one of --spam and --ham".into())),
            };
            need_paths("train", &a.paths)?;
            let (mut db, settings) = open(a.db.as_deref(), a.config.as_deref())?;
            learn_paths(&mut db, &settings, &a.paths, Some(class), out)
        }
        SpamCommand::Untrain(a) => {
            need_paths("untrain", &a.paths)?;
            let (mut db, settings) = open(a.db.as_deref(), a.config.as_deref())?;
            learn_paths(&mut db, &settings, &a.paths, None, out)
        }
        SpamCommand::Classify(a) => {
            need_paths("classify", &a.paths)?;
            let (db, settings) = open(a.db.as_deref(), a.config.as_deref())?;
            classify_paths(&db, &settings, &a.paths, out)
        }
        SpamCommand::Stats(a) => {
            let (db, _) = open(a.db.as_deref(), a.config.as_deref())?;
            stats(&db, out)
        }
    }
}

fn need_paths(cmd: &str, paths: &[PathBuf]) -> Result<(), Failure> {
    if paths.is_empty() {
        return Err((
            2,
            format!(
                "spam {cmd}: give at least one PATH (a message file, a directory, a Maildir or an mbox)"
            ),
        ));
    }
    Ok(())
}

fn open(db: Option<&Path>, config_flag: Option<&Path>) -> Result<(SpamDb, Settings), Failure> {
    let load = |p: &Path| Config::load(p).map_err(|e| (2, e.to_string()));
    if let Some(file) = db {
        let settings = match config_flag {
            Some(p) => load(p)?.spam,
            None => Settings::default(),
        };
        return Ok((SpamDb::open_file(file).map_err(store_err)?, settings));
    }
    let config = load(&config::config_path(config_flag))?;
    match SpamDb::open_store(&config.store.path, config.store_options()) {
        Ok(db) => Ok((db, config.spam)),
        Err(StoreError::InUse(p)) => Err((
            1,
            format!(
                "{}: the store is held by the running server; stop it first, or use --db FILE for a separate token database",
                p.display()
            ),
        )),
        Err(e) => Err(store_err(e)),
    }
}

/// Distinct tokens held in memory before counts are written out.
const FLUSH_TOKENS: usize = 500_000;

fn learn_paths(
    db: &mut SpamDb,
    settings: &Settings,
    paths: &[PathBuf],
    want: Option<Class>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let txn = db.begin_write().map_err(store_err)?;
    let mut deltas = Deltas::default();
    let mut tally = [0usize; 5];
    for path in paths {
        for_each_message(path, settings.max_bytes, &mut |m| {
            let outcome = learn::learn(&txn, &mut deltas, "", &m.id, want, false, || {
                Ok(tokenize(&m.bytes, settings.max_tokens))
            })
            .map_err(|e| e.to_string())?;
            tally[outcome as usize] += 1;
            if deltas.len() > FLUSH_TOKENS {
                deltas.apply(&txn).map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .map_err(|e| (1, e))?;
    }
    deltas.apply(&txn).map_err(store_err)?;
    txn.commit().map_err(|e| store_err(e.into()))?;
    db.compact().map_err(store_err)?;
    let n = |l: Learned| tally[l as usize];
    let report = match want {
        Some(class) => format!(
            "{}: {} trained, {} corrected from {}, {} already trained\n",
            class.as_str(),
            n(Learned::Trained),
            n(Learned::Corrected),
            match class {
                Class::Spam => "ham",
                Class::Ham => "spam",
            },
            n(Learned::Unchanged)
        ),
        None => format!(
            "untrained {}, {} were not trained\n",
            n(Learned::Untrained),
            n(Learned::NotTrained)
        ),
    };
    out.write_all(report.as_bytes())
        .map_err(|e| (1, e.to_string()))
}

fn classify_paths(
    db: &SpamDb,
    settings: &Settings,
    paths: &[PathBuf],
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let txn = db.begin_read().map_err(store_err)?;
    let (scope, messages) = classify::scope_for(&txn, None, settings).map_err(store_err)?;
    if !classify::trained_enough(messages, settings) {
        eprintln!(
            "pimail: warning: the token database holds {} spam and {} ham; delivery classifies only from {} of each (spam.min_trained)",
            messages.spam, messages.ham, settings.min_trained
        );
    }
    let mut out = std::io::BufWriter::new(out);
    for path in paths {
        for_each_message(path, settings.max_bytes, &mut |m| {
            let tokens = tokenize(&m.bytes, settings.max_tokens);
            let score = classify::classify(&txn, scope, messages, &tokens, settings)
                .map_err(|e| e.to_string())?;
            writeln!(
                out,
                "{} {} {:.6}",
                m.name,
                score.judgement.as_str(),
                score.score
            )
            .map_err(|e| e.to_string())
        })
        .map_err(|e| (1, e))?;
    }
    out.flush().map_err(|e| (1, e.to_string()))
}

fn stats(db: &SpamDb, out: &mut dyn Write) -> Result<(), Failure> {
    let txn = db.begin_read().map_err(store_err)?;
    let mut text = String::new();
    let global = db::message_counts(&txn, db::GLOBAL).map_err(store_err)?;
    text.push_str(&format!(
        "messages trained: {} spam, {} ham\n",
        global.spam, global.ham
    ));
    if let Some(t) = db::read_table(&txn, db::MESSAGES).map_err(store_err)? {
        for entry in t.iter().map_err(|e| store_err(e.into()))? {
            let (k, v) = entry.map_err(|e| store_err(e.into()))?;
            if !k.value().is_empty() {
                let c = Counts::unpack(v.value());
                text.push_str(&format!(
                    "  user {}: {} spam, {} ham\n",
                    k.value(),
                    c.spam,
                    c.ham
                ));
            }
        }
    }
    let len = |def| -> Result<u64, Failure> {
        Ok(match db::read_table(&txn, def).map_err(store_err)? {
            Some(t) => t.len().map_err(|e| store_err(e.into()))?,
            None => 0,
        })
    };
    text.push_str(&format!("tokens: {}\n", len(db::TOKENS)?));
    let trained = match db::read_table(&txn, db::TRAINED).map_err(store_err)? {
        Some(t) => t.len().map_err(|e| store_err(e.into()))?,
        None => 0,
    };
    text.push_str(&format!("messages with training state: {trained}\n"));
    let size = std::fs::metadata(db.path()).map(|m| m.len()).unwrap_or(0);
    text.push_str(&format!(
        "database: {} ({size} bytes)\n",
        db.path().display()
    ));
    out.write_all(text.as_bytes())
        .map_err(|e| (1, e.to_string()))
}
