//! The spam stage of inspection at delivery: classify, add
//! `X-Spam-Status:`, file spam into Junk, refuse above `refuse_score`.
//!
//! Tokenizing and the token lookups run on the blocking pool
//! (`smol::unblock`), never on the executor thread; the message is read
//! only up to `spam.max_bytes`. Any store error fails open: the message is
//! accepted unclassified and the error logged.

use std::sync::Arc;

use super::Settings;
use super::classify::{self, Judgement, Score};
use super::tokenize::tokenize;
use crate::smtp::inspect::{Inbound, Verdict};
use crate::smtp::spool::Body;
use crate::store::{Store, StoreError};

/// Where spam is filed (one of the mailboxes every account has).
pub const JUNK: &str = "Junk";

/// The spam stage; `Verdict::accept()` when the filter is off or not yet
/// trained. `added` are the header fields earlier stages add (e.g.
/// Authentication-Results:): classified in front of the message, as they
/// will be stored and later trained.
pub async fn stage(
    store: &Arc<Store>,
    settings: &Settings,
    inbound: &Inbound<'_>,
    added: &str,
    body: &Body,
) -> Verdict {
    // Mail for no local account (relayed) is not filed anywhere here.
    if !settings.enabled || inbound.users.is_empty() {
        return Verdict::accept();
    }
    let mut bytes = Vec::with_capacity((body.size as usize).min(settings.max_bytes));
    bytes.extend_from_slice(&added.as_bytes()[..added.len().min(settings.max_bytes / 2)]);
    // Stop reading at the budget: the error only ends the walk.
    let _ = body.content.for_each_chunk(|_, chunk| {
        let take = chunk.len().min(settings.max_bytes - bytes.len());
        bytes.extend_from_slice(&chunk[..take]);
        if bytes.len() >= settings.max_bytes {
            Err(StoreError::Invalid("byte budget reached".into()))
        } else {
            Ok(())
        }
    });
    // One verdict covers every recipient (the message is stored once);
    // a user's own database is used only when they are the sole one.
    let user = match inbound.users {
        [one] => Some(one.clone()),
        _ => None,
    };
    let store = store.clone();
    let s = settings.clone();
    let result = smol::unblock(move || score_bytes(&store, &s, user.as_deref(), &bytes)).await;
    match result {
        Ok(Some(score)) => verdict(settings, &score),
        Ok(None) => Verdict::accept(),
        Err(e) => {
            log::warn!("spam filter skipped: {e}");
            Verdict::accept()
        }
    }
}

/// Scores a message; `None` when the database is not trained enough.
pub fn score_bytes(
    store: &Store,
    settings: &Settings,
    user: Option<&str>,
    bytes: &[u8],
) -> Result<Option<Score>, StoreError> {
    let txn = store.begin_read()?;
    let (scope, messages) = classify::scope_for(&txn, user, settings)?;
    if !classify::trained_enough(messages, settings) {
        return Ok(None);
    }
    let bytes = &bytes[..bytes.len().min(settings.max_bytes)];
    let tokens = tokenize(bytes, settings.max_tokens);
    classify::classify(&txn, scope, messages, &tokens, settings).map(Some)
}

/// The verdict for a score: header, mailbox, or refusal.
pub fn verdict(settings: &Settings, score: &Score) -> Verdict {
    if settings.refuse && score.score >= settings.refuse_score {
        return Verdict::Reject(format!(
            "550 5.7.1 Message refused as spam (score {:.4})",
            score.score
        ));
    }
    Verdict::Accept {
        headers: status_header(settings, score),
        mailbox: (score.judgement == Judgement::Spam).then(|| JUNK.to_string()),
    }
}

/// `X-Spam-Status: Yes, score=0.9990 cutoff=0.99 tokens=...`, folded
/// below 78 columns, ASCII only (a token's other characters become '?').
pub fn status_header(settings: &Settings, score: &Score) -> String {
    let word = match score.judgement {
        Judgement::Spam => "Yes",
        Judgement::Unsure => "Unsure",
        Judgement::Ham => "No",
    };
    let mut out = format!(
        "X-Spam-Status: {word}, score={:.4} cutoff={} tests=pimail-bayes",
        score.score, settings.spam_cutoff
    );
    if !score.strongest.is_empty() {
        out.push_str("\r\n\ttokens=");
        let mut line_len = "\ttokens=".len();
        for (i, (token, f)) in score.strongest.iter().enumerate() {
            let clean: String = token
                .chars()
                .take(40)
                .map(|c| {
                    if c.is_ascii_graphic() && c != ',' && c != '"' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            let item = format!("{clean}:{f:.3}");
            if i > 0 {
                if line_len + item.len() + 2 > 76 {
                    out.push_str(",\r\n\t");
                    line_len = 1;
                } else {
                    out.push_str(", ");
                    line_len += 2;
                }
            }
            line_len += item.len();
            out.push_str(&item);
        }
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(s: f64, j: Judgement) -> Score {
        Score {
            score: s,
            judgement: j,
            strongest: (0..5)
                .map(|i| (format!("subj:viagra{i}-é,\"x"), 0.99))
                .collect(),
            used: 5,
        }
    }

    #[test]
    fn header_is_folded_ascii() {
        let h = status_header(&Settings::default(), &score(0.9999, Judgement::Spam));
        assert!(h.starts_with("X-Spam-Status: Yes, score=0.9999"), "{h}");
        assert!(h.ends_with("\r\n"));
        for line in h.split("\r\n") {
            assert!(line.len() <= 78, "{line:?}");
            assert!(line.is_ascii());
        }
        assert!(h.contains("subj:viagra0-???x:0.990"), "{h}");
    }

    #[test]
    fn verdicts() {
        let mut s = Settings::default();
        let v = verdict(&s, &score(0.999, Judgement::Spam));
        assert!(matches!(v, Verdict::Accept { mailbox: Some(ref m), .. } if m == JUNK));
        let v = verdict(&s, &score(0.6, Judgement::Unsure));
        assert!(
            matches!(v, Verdict::Accept { mailbox: None, ref headers } if headers.contains("Unsure"))
        );
        s.refuse = true;
        let v = verdict(&s, &score(0.99995, Judgement::Spam));
        assert!(matches!(v, Verdict::Reject(ref r) if r.starts_with("550 5.7.1")));
        // At the limit: refused at exactly refuse_score, not below.
        let v = verdict(&s, &score(s.refuse_score, Judgement::Spam));
        assert!(matches!(v, Verdict::Reject(_)));
        let v = verdict(&s, &score(s.refuse_score - 1e-9, Judgement::Spam));
        assert!(matches!(v, Verdict::Accept { .. }));
    }
}
