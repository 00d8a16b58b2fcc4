//! Administrative operations on the store (accounts, aliases, inspecting
//! messages), run either directly on the store file or, while `pimail
//! serve` holds it, by the server through its control socket.
//!
//! The control protocol is one request line of tab-separated fields, then
//! the server's answer: a line `OK` or `ERR <exit code>`, then output bytes
//! until the server closes the connection.

use std::io::Write;

use crate::store::ops;
use crate::store::writer::WriteOp;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    UserAdd {
        address: String,
        hash: String,
    },
    UserDel {
        address: String,
    },
    UserPasswd {
        address: String,
        hash: String,
    },
    UserList,
    AliasAdd {
        alias: String,
        targets: Vec<String>,
    },
    AliasDel {
        alias: String,
    },
    AliasList,
    MessageList {
        address: String,
        mailbox: String,
    },
    MessageShow {
        address: String,
        mailbox: String,
        uid: u32,
    },
    QueueList,
    QueueShow {
        id: u64,
    },
    /// Due now: one entry, or all of them.
    QueueRetry {
        id: Option<u64>,
    },
    QueueDrop {
        id: u64,
    },
}

impl Request {
    pub fn encode(&self) -> String {
        let fields: Vec<String> = match self {
            Request::UserAdd { address, hash } => {
                vec!["user-add".into(), address.clone(), hash.clone()]
            }
            Request::UserDel { address } => vec!["user-del".into(), address.clone()],
            Request::UserPasswd { address, hash } => {
                vec!["user-passwd".into(), address.clone(), hash.clone()]
            }
            Request::UserList => vec!["user-list".into()],
            Request::AliasAdd { alias, targets } => {
                let mut v = vec!["alias-add".into(), alias.clone()];
                v.extend(targets.iter().cloned());
                v
            }
            Request::AliasDel { alias } => vec!["alias-del".into(), alias.clone()],
            Request::AliasList => vec!["alias-list".into()],
            Request::MessageList { address, mailbox } => {
                vec!["message-list".into(), address.clone(), mailbox.clone()]
            }
            Request::MessageShow {
                address,
                mailbox,
                uid,
            } => {
                vec![
                    "message-show".into(),
                    address.clone(),
                    mailbox.clone(),
                    uid.to_string(),
                ]
            }
            Request::QueueList => vec!["queue-list".into()],
            Request::QueueShow { id } => vec!["queue-show".into(), id.to_string()],
            Request::QueueRetry { id } => vec![
                "queue-retry".into(),
                id.map(|i| i.to_string()).unwrap_or_default(),
            ],
            Request::QueueDrop { id } => vec!["queue-drop".into(), id.to_string()],
        };
        let mut line = fields
            .iter()
            .map(|f| f.replace(['\t', '\n', '\r'], " "))
            .collect::<Vec<_>>()
            .join("\t");
        line.push('\n');
        line
    }

    pub fn decode(line: &str) -> Option<Request> {
        let f: Vec<String> = line
            .trim_end_matches(['\r', '\n'])
            .split('\t')
            .map(str::to_string)
            .collect();
        let arg = |i: usize| f.get(i).cloned();
        Some(match f.first()?.as_str() {
            "user-add" => Request::UserAdd {
                address: arg(1)?,
                hash: arg(2)?,
            },
            "user-del" => Request::UserDel { address: arg(1)? },
            "user-passwd" => Request::UserPasswd {
                address: arg(1)?,
                hash: arg(2)?,
            },
            "user-list" => Request::UserList,
            "alias-add" => Request::AliasAdd {
                alias: arg(1)?,
                targets: f.get(2..)?.to_vec(),
            },
            "alias-del" => Request::AliasDel { alias: arg(1)? },
            "alias-list" => Request::AliasList,
            "message-list" => Request::MessageList {
                address: arg(1)?,
                mailbox: arg(2)?,
            },
            "message-show" => Request::MessageShow {
                address: arg(1)?,
                mailbox: arg(2)?,
                uid: arg(3)?.parse().ok()?,
            },
            "queue-list" => Request::QueueList,
            "queue-show" => Request::QueueShow {
                id: arg(1)?.parse().ok()?,
            },
            "queue-retry" => Request::QueueRetry {
                id: match arg(1)?.as_str() {
                    "" => None,
                    n => Some(n.parse().ok()?),
                },
            },
            "queue-drop" => Request::QueueDrop {
                id: arg(1)?.parse().ok()?,
            },
            _ => return None,
        })
    }

    /// The store change this request makes, if it is a write.
    pub fn write_op(&self) -> Option<WriteOp> {
        let now = chrono::Utc::now().timestamp();
        let op: crate::store::writer::AdminFn = match self.clone() {
            Request::UserAdd { address, hash } => Box::new(move |t| {
                ops::add_account(t, &address, &hash, now)?;
                Ok(format!("added user {address}\n"))
            }),
            Request::UserDel { address } => Box::new(move |t| {
                ops::del_account(t, &address)?;
                Ok(format!("deleted user {address} and all its mail\n"))
            }),
            Request::UserPasswd { address, hash } => Box::new(move |t| {
                ops::set_password(t, &address, &hash)?;
                Ok(format!("changed the password of {address}\n"))
            }),
            Request::AliasAdd { alias, targets } => Box::new(move |t| {
                ops::add_alias(t, &alias, &targets)?;
                Ok(format!("added alias {alias} -> {}\n", targets.join(", ")))
            }),
            Request::AliasDel { alias } => Box::new(move |t| {
                ops::del_alias(t, &alias)?;
                Ok(format!("deleted alias {alias}\n"))
            }),
            Request::QueueDrop { id } => {
                Box::new(move |t| match crate::store::queue::remove(t, id)? {
                    Some(e) => Ok(format!(
                        "dropped {id} (<{}> -> <{}>), without a bounce\n",
                        e.from, e.rcpt
                    )),
                    None => Err(StoreError::NotFound(format!("queue entry {id}"))),
                })
            }
            Request::QueueRetry { id } => Box::new(move |t| {
                let ids: Vec<u64> = {
                    use redb::ReadableTable;
                    let q = t.open_table(crate::store::queue::QUEUE)?;
                    let mut ids = Vec::new();
                    for entry in q.iter()? {
                        let (k, _) = entry?;
                        if id.is_none_or(|i| i == k.value()) {
                            ids.push(k.value());
                        }
                    }
                    ids
                };
                if let Some(i) = id
                    && ids.is_empty()
                {
                    return Err(StoreError::NotFound(format!("queue entry {i}")));
                }
                for i in &ids {
                    crate::store::queue::reschedule(t, *i, now, "retry requested", false)?;
                }
                Ok(format!("{} entries due now\n", ids.len()))
            }),
            _ => return None,
        };
        Some(WriteOp::Admin(op))
    }

    /// Runs a read-only request against the store.
    pub fn read(&self, store: &Store, out: &mut dyn Write) -> Result<(), StoreError> {
        let io = |e: std::io::Error| StoreError::Db(e.to_string());
        match self {
            Request::UserList => {
                for a in store.accounts()? {
                    writeln!(out, "{}", a.address).map_err(io)?;
                }
            }
            Request::AliasList => {
                for (alias, targets) in store.aliases()? {
                    writeln!(out, "{alias} -> {}", targets.replace(',', ", ")).map_err(io)?;
                }
            }
            Request::MessageList { address, mailbox } => {
                let mb = find_mailbox(store, address, mailbox)?;
                for (uid, m) in store.messages(mb.id)? {
                    let date = chrono::DateTime::from_timestamp(m.internal_date, 0)
                        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default();
                    writeln!(out, "{uid}\t{date}\t{}\t{}", m.size, flag_names(m.flags))
                        .map_err(io)?;
                }
            }
            Request::MessageShow {
                address,
                mailbox,
                uid,
            } => {
                let mb = find_mailbox(store, address, mailbox)?;
                let m = store.message(mb.id, *uid)?.ok_or_else(|| {
                    StoreError::NotFound(format!("message UID {uid} in {address} {mailbox}"))
                })?;
                store.read_blob(&m.blob, |chunk| out.write_all(chunk))?;
            }
            Request::QueueList => {
                for e in store.queue_entries()? {
                    let next = chrono::DateTime::from_timestamp(e.next_try, 0)
                        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{}\t{}\t<{}>\t<{}>\t{}\t{}\t{}",
                        e.id, e.size, e.from, e.rcpt, e.attempts, next, e.last_error
                    )
                    .map_err(io)?;
                }
            }
            Request::QueueShow { id } => {
                let e = store
                    .queue_entry(*id)?
                    .ok_or_else(|| StoreError::NotFound(format!("queue entry {id}")))?;
                let date = |t: i64| {
                    chrono::DateTime::from_timestamp(t, 0)
                        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_default()
                };
                writeln!(out, "id: {}\nfrom: <{}>\nto: <{}>\nsize: {}\nqueued: {}\nattempts: {}\nnext attempt: {}\nlast error: {}\n", e.id, e.from, e.rcpt, e.size, date(e.created), e.attempts, date(e.next_try), e.last_error).map_err(io)?;
                store.read_blob(&e.blob, |chunk| out.write_all(chunk))?;
            }
            _ => return Err(StoreError::Invalid("not a read request".into())),
        }
        Ok(())
    }
}

fn find_mailbox(
    store: &Store,
    address: &str,
    mailbox: &str,
) -> Result<crate::store::Mailbox, StoreError> {
    if store.account(address)?.is_none() {
        return Err(StoreError::NotFound(format!("user {address}")));
    }
    store
        .mailbox(address, mailbox)?
        .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox} of {address}")))
}

fn flag_names(flags: u32) -> String {
    use crate::store::flags::*;
    let names: Vec<&str> = [
        (SEEN, "\\Seen"),
        (ANSWERED, "\\Answered"),
        (FLAGGED, "\\Flagged"),
        (DELETED, "\\Deleted"),
        (DRAFT, "\\Draft"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(" ")
    }
}

/// Runs a request directly on the store file (no server running).
pub fn run_direct(store: &Store, req: &Request, out: &mut dyn Write) -> Result<(), StoreError> {
    match req.write_op() {
        Some(WriteOp::Admin(f)) => {
            let msg = store.write(f)?;
            out.write_all(msg.as_bytes())
                .map_err(|e| StoreError::Db(e.to_string()))
        }
        _ => req.read(store, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::UserAdd {
                address: "a@b.example".into(),
                hash: "$argon2id$v=19$m=1,t=1,p=1$x$y".into(),
            },
            Request::AliasAdd {
                alias: "@b.example".into(),
                targets: vec!["a@b.example".into(), "c@b.example".into()],
            },
            Request::MessageShow {
                address: "a@b.example".into(),
                mailbox: "Junk".into(),
                uid: 42,
            },
            Request::UserList,
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()), Some(r));
        }
        assert_eq!(Request::decode("rm-rf\t/\n"), None);
        assert_eq!(
            Request::decode("message-show\ta\tINBOX\tnotanumber\n"),
            None
        );
    }
}
