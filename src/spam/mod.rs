//! The Bayesian spam filter: every inbound message is classified before it
//! is stored (Robinson's token probabilities, Fisher's chi-square
//! combining, as bogofilter does), and the token database learns from the
//! CLI and from what users do with their mail.
//!
//! - [`tokenize`]: message -> tokens (decoded MIME, headers, HTML).
//! - [`classify`]: the arithmetic and the lookups.
//! - [`db`]: token counts in redb (the store, or a file of their own).
//! - [`learn`]: training with per-message state (never counted twice);
//!   [`learn::on_transfer`] is what IMAP MOVE/COPY must call.
//! - [`delivery`]: the inspection stage (X-Spam-Status:, Junk, refusal).
//! - [`source`] and [`cli`]: `pimail spam train|untrain|classify|stats`.

pub mod classify;
pub mod cli;
pub mod db;
pub mod delivery;
pub mod learn;
pub mod source;
pub mod tokenize;

/// The `[spam]` section of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Classify inbound mail at all.
    pub enabled: bool,
    /// Scores at or above are spam (filed into Junk).
    pub spam_cutoff: f64,
    /// Scores at or below are ham; between the two, unsure (INBOX).
    pub ham_cutoff: f64,
    /// Robinson's prior for unknown tokens, and its strength.
    pub robx: f64,
    pub robs: f64,
    /// Tokens whose probability is closer to 0.5 than this are ignored.
    pub min_dev: f64,
    /// Bytes of a message read for classification and training.
    pub max_bytes: usize,
    /// Distinct tokens taken from one message.
    pub max_tokens: usize,
    /// Messages of each class the database needs before it gives verdicts
    /// (an untrained filter adds no header and files nothing).
    pub min_trained: u32,
    /// Keep a database per user too, used once it is trained enough.
    pub per_user: bool,
    /// Refuse at end-of-data (550 5.7.1) at or above `refuse_score`.
    pub refuse: bool,
    pub refuse_score: f64,
    /// Strongest tokens listed in X-Spam-Status:.
    pub header_tokens: usize,
}

impl Default for Settings {
    fn default() -> Self {
        // bogofilter 1.2's defaults for the arithmetic.
        Settings {
            enabled: true,
            spam_cutoff: 0.99,
            ham_cutoff: 0.45,
            robx: 0.52,
            robs: 0.0178,
            min_dev: 0.375,
            max_bytes: 262_144,
            max_tokens: 10_000,
            min_trained: 10,
            per_user: false,
            refuse: false,
            refuse_score: 0.9999,
            header_tokens: 5,
        }
    }
}
