//! Inspection of a received message before it is stored: the place where
//! attachment scanning, spam filtering and sender authentication decide
//! whether to refuse it, which headers to add and where to file it.
//!
//! Runs after the whole message has arrived (the body is spooled, its MIME
//! structure known) and before the store commit, so a refusal happens at
//! end-of-data instead of a bounce later (no backscatter).

use std::net::IpAddr;

use super::spool::Body;
use crate::server::Server;

/// What is known of the message's transaction.
pub struct Inbound<'a> {
    pub peer: IpAddr,
    pub helo: &'a str,
    /// The reverse path ("" for the null sender).
    pub from: &'a str,
    /// Local accounts it is for.
    pub users: &'a [String],
    pub tls: bool,
    /// The submitting account, on the submission ports.
    pub authenticated: Option<&'a str>,
}

/// The decision on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it, with these header fields (each ending in CRLF) in front,
    /// into `mailbox` instead of INBOX when set (e.g. "Junk").
    Accept {
        headers: String,
        mailbox: Option<String>,
    },
    /// Refuse it with this SMTP reply (code, enhanced code and text).
    Reject(String),
}

impl Verdict {
    pub fn accept() -> Verdict {
        Verdict::Accept {
            headers: String::new(),
            mailbox: None,
        }
    }
}

/// Runs every inspection stage in order; the first refusal wins, and the
/// headers of the stages that accept are added in order.
pub async fn inspect(server: &Server, inbound: &Inbound<'_>, body: &Body) -> Verdict {
    // Attachment scanner (src/scan) first: a refusal or a quarantine ends
    // inspection; otherwise its headers (if any) go first.
    let scanned = crate::scan::delivery::stage(server, inbound, body).await;
    let (mut headers, mut mailbox) = match scanned {
        Verdict::Reject(_)
        | Verdict::Accept {
            mailbox: Some(_), ..
        } => return scanned,
        Verdict::Accept { headers, mailbox } => (headers, mailbox),
    };
    // Sender authentication (src/authres) before the spam filter, whose
    // tokens include its results: the filter reads the headers added so far
    // in front of the message, as they will be stored.
    let auth = server.config().auth_results.clone();
    if inbound.authenticated.is_none() && auth.enabled {
        let (header, action) = crate::authres::stage(server, inbound, body).await;
        match action {
            crate::authres::Action::Reject => {
                return Verdict::Reject(
                    "550 5.7.1 Message refused: the From domain's DMARC policy (p=reject) \
                     failed"
                        .into(),
                );
            }
            crate::authres::Action::Junk => {
                mailbox = mailbox.or(Some(crate::spam::delivery::JUNK.to_string()));
            }
            crate::authres::Action::Deliver => {}
        }
        headers.push_str(&header);
    }
    let spam_settings = server.config().spam.clone();
    // Mail our own users submit is not classified (it is theirs, and it
    // mostly leaves); only inbound mail is.
    let spam = match inbound.authenticated {
        Some(_) => Verdict::accept(),
        None => {
            crate::spam::delivery::stage(&server.store, &spam_settings, inbound, &headers, body)
                .await
        }
    };
    match spam {
        Verdict::Reject(reply) => return Verdict::Reject(reply),
        Verdict::Accept {
            headers: h,
            mailbox: m,
        } => {
            headers.push_str(&h);
            mailbox = mailbox.or(m);
        }
    }
    Verdict::Accept { headers, mailbox }
}
