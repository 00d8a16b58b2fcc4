//! Robinson's token probabilities combined with Fisher's chi-square
//! method, as bogofilter and SpamBayes do.
//!
//! For a token seen `s` times in `S` spam and `h` times in `H` ham:
//! `p = (s/S) / (s/S + h/H)`, shrunk towards the prior `robx` with strength
//! `robs`: `f = (robs*robx + n*p) / (robs + n)` with `n = s + h` (Gary
//! Robinson, "A Statistical Approach to the Spam Problem", 2003). Tokens
//! with `|f - 0.5| < min_dev` are ignored. The rest are combined as
//! `S = 1 - Q(-2 Σ ln(1-f), 2k)`, `H = 1 - Q(-2 Σ ln f, 2k)` with `Q` the
//! chi-square survival function, and the score is `(1 + S - H) / 2`: near 1
//! when the evidence is spammy and not hammy, near 0 the other way round,
//! near 0.5 when both or neither (the "unsure" band).

use redb::ReadTransaction;

use super::Settings;
use super::db::{self, Counts, GLOBAL};
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    Spam,
    Unsure,
    Ham,
}

impl Judgement {
    pub fn as_str(self) -> &'static str {
        match self {
            Judgement::Spam => "spam",
            Judgement::Unsure => "unsure",
            Judgement::Ham => "ham",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub score: f64,
    pub judgement: Judgement,
    /// The tokens that weighed most, with their probability, strongest first.
    pub strongest: Vec<(String, f64)>,
    /// Tokens that took part in the combination.
    pub used: usize,
}

/// Robinson's f(w) of one token.
pub fn token_probability(token: Counts, messages: Counts, settings: &Settings) -> f64 {
    let n = f64::from(token.spam) + f64::from(token.ham);
    let bad = f64::from(token.spam) / f64::from(messages.spam.max(1));
    let good = f64::from(token.ham) / f64::from(messages.ham.max(1));
    let p = if bad + good > 0.0 {
        bad / (bad + good)
    } else {
        settings.robx
    };
    (settings.robs * settings.robx + n * p) / (settings.robs + n)
}

/// Chi-square survival function Q(x2, v) for even `v`, by its series;
/// exact enough and never NaN for finite input.
pub fn chi2q(x2: f64, v: usize) -> f64 {
    let m = x2 / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..v / 2 {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

/// Combines token probabilities into a score.
pub fn combine(
    probabilities: impl IntoIterator<Item = (String, f64)>,
    settings: &Settings,
) -> Score {
    let mut used: Vec<(String, f64)> = probabilities
        .into_iter()
        .filter(|(_, f)| (f - 0.5).abs() >= settings.min_dev)
        .collect();
    let k = used.len();
    let score = if k == 0 {
        0.5
    } else {
        // Clamp so ln never sees 0 (a token seen only in one class with a
        // tiny robs); bogofilter bounds the same way.
        let (mut ln_spam, mut ln_ham) = (0.0f64, 0.0f64);
        for (_, f) in &used {
            let f = f.clamp(1e-12, 1.0 - 1e-12);
            ln_spam += (1.0 - f).ln();
            ln_ham += f.ln();
        }
        let s = 1.0 - chi2q(-2.0 * ln_spam, 2 * k);
        let h = 1.0 - chi2q(-2.0 * ln_ham, 2 * k);
        ((1.0 + s - h) / 2.0).clamp(0.0, 1.0)
    };
    let judgement = if score >= settings.spam_cutoff {
        Judgement::Spam
    } else if score <= settings.ham_cutoff {
        Judgement::Ham
    } else {
        Judgement::Unsure
    };
    used.sort_by(|a, b| {
        (b.1 - 0.5)
            .abs()
            .total_cmp(&(a.1 - 0.5).abs())
            .then_with(|| a.0.cmp(&b.0))
    });
    used.truncate(settings.header_tokens);
    Score {
        score,
        judgement,
        strongest: used,
        used: k,
    }
}

/// The scope whose counts classify mail for `user`: the user's own when
/// per-user databases are on and it is trained enough, else the global one.
pub fn scope_for<'a>(
    txn: &ReadTransaction,
    user: Option<&'a str>,
    settings: &Settings,
) -> Result<(&'a str, Counts), StoreError> {
    if let Some(user) = user.filter(|_| settings.per_user) {
        let own = db::message_counts(txn, user)?;
        if own.spam >= settings.min_trained && own.ham >= settings.min_trained {
            return Ok((user, own));
        }
    }
    Ok((GLOBAL, db::message_counts(txn, GLOBAL)?))
}

/// Whether a scope has enough training to give verdicts.
pub fn trained_enough(messages: Counts, settings: &Settings) -> bool {
    messages.spam >= settings.min_trained.max(1) && messages.ham >= settings.min_trained.max(1)
}

/// Scores sorted, deduplicated tokens against one scope.
pub fn classify(
    txn: &ReadTransaction,
    scope: &str,
    messages: Counts,
    tokens: &[String],
    settings: &Settings,
) -> Result<Score, StoreError> {
    let Some(table) = db::read_table(txn, db::TOKENS)? else {
        return Ok(combine([], settings));
    };
    let mut probabilities = Vec::with_capacity(tokens.len());
    for t in tokens {
        let key = db::token_key(scope, t);
        if let Some(v) = table.get(key.as_str())? {
            let counts = Counts::unpack(v.value());
            probabilities.push((t.clone(), token_probability(counts, messages, settings)));
        }
    }
    Ok(combine(probabilities, settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2q_matches_known_values() {
        // Q(x2, 2) = exp(-x2/2).
        assert!((chi2q(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
        // Q(0, v) = 1; Q(huge, v) = 0.
        assert_eq!(chi2q(0.0, 10), 1.0);
        assert!(chi2q(1e6, 10) < 1e-100);
        // Q(10, 10): 0.4404932850652 (tables).
        assert!((chi2q(10.0, 10) - 0.440_493_285).abs() < 1e-6);
    }

    #[test]
    fn robinson_probability() {
        let s = Settings::default();
        let msgs = Counts { spam: 10, ham: 10 };
        // Never seen: the prior.
        assert!((token_probability(Counts::default(), msgs, &s) - s.robx).abs() < 1e-12);
        // Only in spam, often: close to 1.
        let f = token_probability(Counts { spam: 10, ham: 0 }, msgs, &s);
        assert!(f > 0.99 && f < 1.0, "{f}");
        // Equal rates: 0.5-ish.
        let f = token_probability(Counts { spam: 5, ham: 5 }, msgs, &s);
        assert!((f - 0.5).abs() < 0.01, "{f}");
        // Rates, not counts: 1 of 1 spam vs 10 of 100 ham is spammy.
        let f = token_probability(
            Counts { spam: 1, ham: 10 },
            Counts { spam: 1, ham: 100 },
            &s,
        );
        assert!(f > 0.85, "{f}");
    }

    #[test]
    fn combining_gives_the_three_verdicts() {
        let s = Settings::default();
        let spammy = (0..20).map(|i| (format!("s{i}"), 0.99));
        assert_eq!(combine(spammy, &s).judgement, Judgement::Spam);
        let hammy = (0..20).map(|i| (format!("h{i}"), 0.01));
        assert_eq!(combine(hammy, &s).judgement, Judgement::Ham);
        let both = (0..10)
            .map(|i| (format!("s{i}"), 0.99))
            .chain((0..10).map(|i| (format!("h{i}"), 0.01)));
        let mixed = combine(both, &s);
        assert_eq!(mixed.judgement, Judgement::Unsure, "{mixed:?}");
        assert!((mixed.score - 0.5).abs() < 0.01);
        // Weak tokens are ignored: no evidence at all.
        let weak = combine((0..20).map(|i| (format!("w{i}"), 0.6)), &s);
        assert_eq!((weak.score, weak.used), (0.5, 0));
        // Extreme probabilities do not make NaN.
        let extreme = combine([("a".to_string(), 1.0), ("b".to_string(), 0.0)], &s);
        assert!(extreme.score.is_finite());
    }

    #[test]
    fn strongest_tokens_come_first() {
        let s = Settings::default();
        let sc = combine(
            [
                ("mild".to_string(), 0.9),
                ("strong".to_string(), 0.999),
                ("hammy".to_string(), 0.05),
            ],
            &s,
        );
        let names: Vec<&str> = sc.strongest.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["strong", "hammy", "mild"]);
    }
}
