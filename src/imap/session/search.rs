//! SEARCH: keys evaluated on rows first, content loaded only when a key
//! needs it, bodies streamed and decoded.

use super::fetch::fallback_meta;
use super::*;
use crate::imap::sort::{self, SortKey};

impl Session {
    pub(super) async fn search(
        &mut self,
        tag: &str,
        uid: bool,
        ret: Option<Vec<SearchReturn>>,
        criteria: Vec<SearchKey>,
    ) -> io::Result<()> {
        let key = SearchKey::And(criteria);
        let uses_modseq = mentions_modseq(&key);
        if uses_modseq {
            self.condstore = true;
        }
        let Some((hits, highest_modseq)) = self.search_hits(&key).await? else {
            return Ok(());
        };
        let numbers: Vec<u32> = hits.iter().map(|&(s, u)| if uid { u } else { s }).collect();
        let mut ret = match ret {
            Some(r) if r.is_empty() => Some(vec![SearchReturn::All]),
            Some(r) => Some(r),
            None if self.rev2 => Some(vec![SearchReturn::All]),
            None => None,
        };
        if let Some(r) = &mut ret
            && r.contains(&SearchReturn::Save)
        {
            self.save_result(r, &hits);
            r.retain(|x| *x != SearchReturn::Save);
            if r.is_empty() {
                // RFC 5182 2.1: SAVE alone returns no ESEARCH response.
                return self.done(tag, "SEARCH completed, result saved", uid).await;
            }
        }
        match ret {
            None => {
                let mut l = String::from("* SEARCH");
                for n in &numbers {
                    l.push(' ');
                    l.push_str(&n.to_string());
                }
                if uses_modseq && !numbers.is_empty() {
                    l.push_str(&format!(" (MODSEQ {highest_modseq})"));
                }
                self.line(&l);
            }
            Some(r) => {
                let mut l = format!("* ESEARCH (TAG \"{tag}\")");
                if uid {
                    l.push_str(" UID");
                }
                if !numbers.is_empty() {
                    let sorted_min = numbers.iter().min().copied().unwrap_or(0);
                    let sorted_max = numbers.iter().max().copied().unwrap_or(0);
                    if r.contains(&SearchReturn::Min) {
                        l.push_str(&format!(" MIN {sorted_min}"));
                    }
                    if r.contains(&SearchReturn::Max) {
                        l.push_str(&format!(" MAX {sorted_max}"));
                    }
                }
                if r.contains(&SearchReturn::Count) {
                    l.push_str(&format!(" COUNT {}", numbers.len()));
                }
                if r.contains(&SearchReturn::All) && !numbers.is_empty() {
                    let mut sorted = numbers.clone();
                    sorted.sort_unstable();
                    l.push_str(&format!(" ALL {}", sequence::render(sorted)));
                }
                if uses_modseq && !numbers.is_empty() {
                    l.push_str(&format!(" MODSEQ {highest_modseq}"));
                }
                self.line(&l);
            }
        }
        self.done(tag, "SEARCH completed", uid).await
    }

    /// (sequence number, UID) of the selected mailbox's messages matching
    /// `key`, ascending, and the highest mod-sequence among them; `None`
    /// without a selected mailbox.
    async fn search_hits(&mut self, key: &SearchKey) -> io::Result<Option<(Vec<(u32, u32)>, u64)>> {
        let Some(sel) = self.selected() else {
            return Ok(None);
        };
        let id = sel.id;
        let uids = sel.uids.clone();
        let max_uid = uids.last().unwrap_or(0);
        let mut hits: Vec<(u32, u32)> = Vec::new();
        let mut highest_modseq = 0u64;
        // Rows in batches, one read transaction each (see FETCH).
        let mut numbered = uids.iter().enumerate().map(|(i, u)| (i as u32 + 1, u));
        loop {
            let batch: Vec<(u32, u32)> = numbered.by_ref().take(256).collect();
            if batch.is_empty() {
                break;
            }
            future::yield_now().await;
            let rows = {
                let txn = self.store_read()?;
                let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
                crate::store::message_rows(&messages, id, &batch).map_err(db)?
            };
            for (seq, u, row) in &rows {
                let mut m = Candidate {
                    seq: *seq,
                    uid: *u,
                    max_seq: uids.len() as u32,
                    max_uid,
                    row,
                    blob: None,
                    meta: None,
                };
                if self.matches(key, &mut m)? {
                    hits.push((m.seq, *u));
                    highest_modseq = highest_modseq.max(row.modseq);
                }
            }
        }
        Ok(Some((hits, highest_modseq)))
    }

    /// SORT and UID SORT (RFC 5256): the messages a search finds, ordered
    /// by the criteria, ties by sequence number.
    pub(super) async fn sort(
        &mut self,
        tag: &str,
        uid: bool,
        order: Vec<(SortKey, bool)>,
        criteria: Vec<SearchKey>,
    ) -> io::Result<()> {
        let key = SearchKey::And(criteria);
        let Some((hits, _)) = self.search_hits(&key).await? else {
            return Ok(());
        };
        let Some(id) = self.selected().map(|s| s.id) else {
            return Ok(());
        };
        let needs_envelope = order
            .iter()
            .any(|(k, _)| !matches!(k, SortKey::Arrival | SortKey::Size));
        let mut keyed: Vec<(Vec<sort::SortValue>, u32, u32)> = Vec::with_capacity(hits.len());
        for batch in hits.chunks(256) {
            future::yield_now().await;
            let txn = self.store_read()?;
            let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
            let blobs = txn.open_table(BLOBS).map_err(|e| db(e.into()))?;
            for (seq, u, row) in crate::store::message_rows(&messages, id, batch).map_err(db)? {
                let mut envelope = None;
                if needs_envelope && let Some(b) = blobs.get(&row.blob).map_err(|e| db(e.into()))? {
                    envelope = BlobRow::meta_of(b.value())
                        .ok()
                        .and_then(MessageMeta::decode_envelope)
                        .flatten();
                }
                let values = order
                    .iter()
                    .map(|&(k, _)| sort::value(k, envelope.as_ref(), row.internal_date, row.size))
                    .collect();
                keyed.push((values, seq, u));
            }
        }
        keyed.sort_by(|a, b| {
            for (i, &(_, reverse)) in order.iter().enumerate() {
                let o = a.0[i].cmp(&b.0[i]);
                let o = if reverse { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            a.1.cmp(&b.1)
        });
        let mut l = String::from("* SORT");
        for (_, seq, u) in &keyed {
            l.push(' ');
            l.push_str(&(if uid { *u } else { *seq }).to_string());
        }
        self.line(&l);
        self.done(tag, "SORT completed", uid).await
    }

    /// Keeps a SEARCH result for `$`: the messages found, or with MIN
    /// and/or MAX but neither ALL nor COUNT, just those (RFC 5182 2.4).
    fn save_result(&mut self, ret: &[SearchReturn], hits: &[(u32, u32)]) {
        use SearchReturn::*;
        let only_min_max = !ret.iter().any(|x| matches!(x, All | Count))
            && ret.iter().any(|x| matches!(x, Min | Max));
        let mut saved = UidList::new();
        let mut uids: Vec<u32> = hits.iter().map(|&(_, u)| u).collect();
        if only_min_max {
            let (first, last) = (uids.first().copied(), uids.last().copied());
            uids.clear();
            uids.extend(first.filter(|_| ret.contains(&Min)));
            uids.extend(last.filter(|_| ret.contains(&Max)));
        }
        uids.sort_unstable();
        uids.dedup();
        for u in uids {
            saved.push(u);
        }
        if let Some(sel) = self.selected() {
            sel.saved = saved;
        }
    }

    fn load_meta(&self, m: &mut Candidate) -> io::Result<()> {
        if m.blob.is_some() {
            return Ok(());
        }
        let txn = self.store_read()?;
        let blobs = txn.open_table(BLOBS).map_err(|e| db(e.into()))?;
        if let Some(b) = blobs.get(&m.row.blob).map_err(|e| db(e.into()))? {
            let b = BlobRow::decode(b.value()).map_err(|e| db(e.into()))?;
            m.meta = Some(MessageMeta::decode(&b.meta).unwrap_or_else(|| fallback_meta(b.size)));
            m.blob = Some(b);
        }
        Ok(())
    }

    fn matches(&self, key: &SearchKey, m: &mut Candidate) -> io::Result<bool> {
        Ok(match key {
            SearchKey::All => true,
            SearchKey::None => false,
            SearchKey::Flag(bit, set) => (m.row.flags & bit != 0) == *set,
            SearchKey::Keyword(k, set) => {
                m.row.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) == *set
            }
            SearchKey::Larger(n) => m.row.size > *n,
            SearchKey::Smaller(n) => m.row.size < *n,
            SearchKey::Seq(s) => s.contains(m.seq, m.max_seq),
            SearchKey::Uid(s) => s.contains(m.uid, m.max_uid),
            SearchKey::ModSeq(n) => m.row.modseq >= *n,
            SearchKey::Date(cmp, day) => {
                date_matches(*cmp, m.row.internal_date.div_euclid(86400), *day)
            }
            SearchKey::SentDate(cmp, day) => {
                self.load_meta(m)?;
                let sent = m
                    .meta
                    .as_ref()
                    .and_then(|x| x.root.envelope.as_ref())
                    .and_then(|e| e.date.as_ref())
                    .and_then(|d| sent_day(d));
                sent.is_some_and(|d| date_matches(*cmp, d, *day))
            }
            SearchKey::Not(k) => !self.matches(k, m)?,
            SearchKey::Or(a, b) => self.matches(a, m)? || self.matches(b, m)?,
            SearchKey::And(keys) => {
                for k in keys {
                    if !self.matches(k, m)? {
                        return Ok(false);
                    }
                }
                true
            }
            SearchKey::Header(field, needle) => {
                self.load_meta(m)?;
                let (Some(blob), Some(meta)) = (&m.blob, &m.meta) else {
                    return Ok(false);
                };
                let end = meta.root.body_start.min(MAX_HEADER_READ).min(blob.size);
                let header = self.read_range(&m.row.blob, blob, 0, end)?;
                body::header_contains(&header, field, needle)
                    || (needle.is_empty() && body::header_contains(&header, field, b""))
            }
            SearchKey::Body(needle) | SearchKey::Text(needle) => {
                self.load_meta(m)?;
                let (Some(blob), Some(meta)) = (&m.blob, &m.meta) else {
                    return Ok(false);
                };
                let mut s = StreamSearch::new(needle);
                if matches!(key, SearchKey::Text(_)) {
                    let end = meta.root.body_start.min(blob.size);
                    self.pieces(&m.row.blob, blob, 0, end, |p| {
                        s.feed(p);
                        !s.found
                    })?;
                }
                if !s.found {
                    self.search_leaves(&meta.root, &m.row.blob, blob, &mut s)?;
                }
                s.found
            }
        })
    }

    /// Feeds the decoded body of every leaf part to `s`.
    fn search_leaves(
        &self,
        part: &Part,
        id: &BlobId,
        blob: &BlobRow,
        s: &mut StreamSearch,
    ) -> io::Result<()> {
        if s.found {
            return Ok(());
        }
        if !part.children.is_empty() {
            for c in &part.children {
                self.search_leaves(c, id, blob, s)?;
            }
            return Ok(());
        }
        let mut decoder = Decoder::for_encoding(&part.encoding).unwrap_or(Decoder::Identity);
        let mut buf = Vec::new();
        self.pieces(id, blob, part.body_start, part.end.min(blob.size), |p| {
            decoder.feed(p, &mut buf);
            s.feed(&buf);
            buf.clear();
            !s.found
        })?;
        decoder.finish(&mut buf);
        s.feed(&buf);
        Ok(())
    }
}

/// A message under SEARCH, its content loaded only if a key needs it.
struct Candidate<'a> {
    seq: u32,
    uid: u32,
    max_seq: u32,
    max_uid: u32,
    row: &'a MessageRow,
    blob: Option<BlobRow>,
    meta: Option<MessageMeta>,
}

fn mentions_modseq(k: &SearchKey) -> bool {
    match k {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(k) => mentions_modseq(k),
        SearchKey::Or(a, b) => mentions_modseq(a) || mentions_modseq(b),
        SearchKey::And(v) => v.iter().any(mentions_modseq),
        _ => false,
    }
}

fn date_matches(cmp: DateCmp, day: i64, wanted: i64) -> bool {
    match cmp {
        DateCmp::Before => day < wanted,
        DateCmp::On => day == wanted,
        DateCmp::Since => day >= wanted,
    }
}

/// The day of a Date: header, in its own time zone (RFC 9051 6.4.4:
/// "disregarding time and timezone").
fn sent_day(raw: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(raw).ok()?;
    let t = chrono::DateTime::parse_from_rfc2822(s.trim()).ok()?;
    let d = t.date_naive();
    Some(
        d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?)
            .num_days(),
    )
}
