//! FETCH: resolving sequence sets, rendering items from the delivery-time
//! meta, streaming sections from the stored chunks.

use super::*;

impl Session {
    /// Messages of a sequence set as (sequence number, UID), ascending.
    pub(super) fn resolve(&mut self, uid: bool, set: &SequenceSet) -> Vec<(u32, u32)> {
        let mut targets = self.targets(uid, set);
        let mut out = Vec::new();
        loop {
            let batch = targets.next_batch(4096);
            if batch.is_empty() {
                return out;
            }
            out.extend(batch);
        }
    }

    /// [`Session::resolve`] a batch at a time.
    fn targets(&mut self, uid: bool, set: &SequenceSet) -> Targets {
        let Some(sel) = self.selected() else {
            return Targets::new(UidList::new(), Vec::new(), uid);
        };
        // RFC 9051 6.4.9: with UIDs, `*` is the highest UID, and a range
        // naming only UIDs above it still includes it.
        let max = if uid {
            sel.uids.last().unwrap_or(0)
        } else {
            sel.uids.len() as u32
        };
        Targets::new(sel.uids.clone(), merged_ranges(set, max), uid)
    }

    fn seq_in_range(&mut self, uid: bool, set: &SequenceSet) -> bool {
        if uid {
            return true;
        }
        let max = self.selected().map_or(0, |s| s.uids.len() as u32);
        set.highest_explicit() <= max
    }

    pub(super) async fn fetch(
        &mut self,
        uid: bool,
        set: &SequenceSet,
        mut items: Vec<FetchItem>,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> io::Result<()> {
        if !self.seq_in_range(uid, set) {
            // RFC 9051 6.4.5: an invalid sequence number is an error; we
            // answer the ones that exist.
        }
        if uid && !items.contains(&FetchItem::Uid) {
            items.insert(0, FetchItem::Uid);
        }
        if items.contains(&FetchItem::ModSeq) {
            self.condstore = true;
        }
        if (changed_since.is_some() || self.condstore) && !items.contains(&FetchItem::ModSeq) {
            if changed_since.is_some() {
                self.condstore = true;
            }
            if changed_since.is_some() {
                items.push(FetchItem::ModSeq);
            }
        }
        if vanished {
            if !self.qresync {
                return Ok(());
            }
            let since = changed_since.unwrap_or(0);
            let sel_id = self.selected().map(|s| s.id).unwrap_or(0);
            let txn = self.store_read()?;
            let mut gone = crate::store::index::expunged_since(&txn, sel_id, since).map_err(db)?;
            gone.retain(|&u| set.contains(u, u32::MAX));
            if !gone.is_empty() {
                self.line(&format!("* VANISHED (EARLIER) {}", sequence::render(gone)));
            }
        }
        let mut targets = self.targets(uid, set);
        let read_only = self.read_only();
        let sets_seen = !read_only
            && items.iter().any(|i| {
                matches!(
                    i,
                    FetchItem::Section { peek: false, .. }
                        | FetchItem::Binary { peek: false, .. }
                        | FetchItem::Rfc822
                        | FetchItem::Rfc822Text
                )
            });
        let Some(mailbox) = self.selected().map(|s| s.id) else {
            return Ok(());
        };
        if sets_seen {
            let mut all = targets.clone();
            let mut uids: Vec<u32> = Vec::new();
            loop {
                let batch = all.next_batch(4096);
                if batch.is_empty() {
                    break;
                }
                uids.extend(batch.iter().map(|&(_, u)| u));
            }
            let r = self
                .write(move |t| {
                    mailbox_ops::store_flags(
                        t,
                        mailbox,
                        &uids,
                        FlagChange::Add,
                        flags::SEEN,
                        &[],
                        None,
                    )
                })
                .await
                .map_err(db)?;
            if r.modseq_after != r.modseq_before {
                self.own_change(r.modseq_before, r.modseq_after);
                self.server.notify_change();
                if !items.contains(&FetchItem::Flags) {
                    items.push(FetchItem::Flags);
                }
            }
        }
        // What the items need of the delivery-time meta: nothing, the
        // top-level envelope alone (decoded without the part tree, the
        // common header-list fetch), or the whole part tree.
        let needs_tree = items.iter().any(|i| {
            matches!(
                i,
                FetchItem::Body
                    | FetchItem::BodyStructure
                    | FetchItem::Section { .. }
                    | FetchItem::Binary { .. }
                    | FetchItem::BinarySize(_)
                    | FetchItem::Rfc822
                    | FetchItem::Rfc822Header
                    | FetchItem::Rfc822Text
            )
        });
        let needs_envelope = !needs_tree && items.contains(&FetchItem::Envelope);
        // Rows are read in batches, one short read transaction per batch:
        // a transaction per message would cost more than the rendering,
        // and one for the whole range would pin old pages while a slow
        // client reads.
        const BATCH: usize = 256;
        // Items rendered from the row and meta alone are written while the
        // batch's transaction is open; sections are streamed afterwards.
        let inline = items.iter().all(is_inline);
        loop {
            let batch = targets.next_batch(BATCH);
            if batch.is_empty() {
                break;
            }
            future::yield_now().await;
            let mut rows = Vec::new();
            {
                let txn = self.store_read()?;
                let messages = txn.open_table(MESSAGES).map_err(|e| db(e.into()))?;
                let blobs = if needs_tree || needs_envelope {
                    Some(txn.open_table(BLOBS).map_err(|e| db(e.into()))?)
                } else {
                    None
                };
                let found = crate::store::message_rows(&messages, mailbox, &batch).map_err(db)?;
                for (seq, uid_, row) in found {
                    if changed_since.is_some_and(|c| row.modseq <= c) {
                        continue;
                    }
                    let (mut blob, mut envelope) = (None, None);
                    if let Some(t) = &blobs
                        && let Some(b) = t.get(&row.blob).map_err(|e| db(e.into()))?
                    {
                        if needs_tree {
                            blob = Some(BlobRow::decode(b.value()).map_err(|e| db(e.into()))?);
                        } else {
                            envelope = BlobRow::meta_of(b.value())
                                .ok()
                                .and_then(MessageMeta::decode_envelope)
                                .flatten();
                        }
                    }
                    if !inline {
                        rows.push((seq, uid_, row, blob.map(Box::new), envelope.map(Box::new)));
                        continue;
                    }
                    let meta = blob.as_ref().map(decode_meta);
                    let parts = Fetched {
                        uid: uid_,
                        row: &row,
                        blob: blob.as_ref(),
                        meta: meta.as_ref(),
                        envelope: envelope
                            .as_ref()
                            .or_else(|| meta.as_ref().and_then(|m| m.root.envelope.as_ref())),
                    };
                    write!(self.out, "* {seq} FETCH (")?;
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            self.out.push(b' ');
                        }
                        render_inline(&mut self.out, item, parts)?;
                    }
                    self.out.extend_from_slice(b")\r\n");
                }
            }
            self.maybe_flush().await?;
            for (seq, uid_, row, blob, envelope) in rows {
                let meta = blob.as_deref().map(decode_meta);
                let envelope = envelope
                    .as_deref()
                    .or_else(|| meta.as_ref().and_then(|m| m.root.envelope.as_ref()));
                write!(self.out, "* {seq} FETCH (")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b' ');
                    }
                    let parts = Fetched {
                        uid: uid_,
                        row: &row,
                        blob: blob.as_deref(),
                        meta: meta.as_ref(),
                        envelope,
                    };
                    self.fetch_item(item, parts).await?;
                }
                self.out.extend_from_slice(b")\r\n");
                self.maybe_flush().await?;
            }
        }
        Ok(())
    }

    async fn fetch_item(&mut self, item: &FetchItem, parts: Fetched<'_>) -> io::Result<()> {
        let Fetched {
            row, blob, meta, ..
        } = parts;
        if render_inline(&mut self.out, item, parts)? {
            return Ok(());
        }
        let out = &mut self.out;
        match item {
            FetchItem::Rfc822 | FetchItem::Rfc822Header | FetchItem::Rfc822Text => {
                let (label, section) = match item {
                    FetchItem::Rfc822 => ("RFC822", parse::Section::default()),
                    FetchItem::Rfc822Header => (
                        "RFC822.HEADER",
                        parse::Section {
                            part: vec![],
                            text: Some(parse::SectionText::Header),
                        },
                    ),
                    _ => (
                        "RFC822.TEXT",
                        parse::Section {
                            part: vec![],
                            text: Some(parse::SectionText::Text),
                        },
                    ),
                };
                out.extend_from_slice(label.as_bytes());
                out.push(b' ');
                self.emit_section(row, blob, meta, &section, None).await?;
            }
            FetchItem::Section {
                section, partial, ..
            } => {
                out.extend_from_slice(format!("BODY[{}]", body::section_name(section)).as_bytes());
                if let Some((origin, _)) = partial {
                    out.extend_from_slice(format!("<{origin}>").as_bytes());
                }
                out.push(b' ');
                self.emit_section(row, blob, meta, section, *partial)
                    .await?;
            }
            FetchItem::Binary { part, partial, .. } => {
                let name = part
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(".");
                out.extend_from_slice(format!("BINARY[{name}]").as_bytes());
                if let Some((origin, _)) = partial {
                    out.extend_from_slice(format!("<{origin}>").as_bytes());
                }
                out.push(b' ');
                self.emit_binary(row, blob, meta, part, *partial, false)
                    .await?;
            }
            FetchItem::BinarySize(part) => {
                let name = part
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(".");
                out.extend_from_slice(format!("BINARY.SIZE[{name}] ").as_bytes());
                self.emit_binary(row, blob, meta, part, None, true).await?;
            }
            // Rendered by render_inline above.
            _ => {}
        }
        Ok(())
    }

    /// Calls `f` with the stored bytes `start..end` of a message, chunk by
    /// chunk, in one read transaction; `f` returns false to stop.
    pub(super) fn pieces(
        &self,
        id: &BlobId,
        blob: &BlobRow,
        start: u64,
        end: u64,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<()> {
        let txn = self.store_read()?;
        let chunks = txn.open_table(CHUNKS).map_err(|e| db(e.into()))?;
        let mut pos = start;
        while pos < end {
            let (index, chunk_start) = blob.chunk_of(pos);
            let Some(chunk) = chunks.get((id, index)).map_err(|e| db(e.into()))? else {
                break;
            };
            let c = chunk.value();
            let off = (pos - chunk_start) as usize;
            if off >= c.len() {
                break;
            }
            let take = ((c.len() - off) as u64).min(end - pos) as usize;
            if !f(&c[off..off + take]) {
                break;
            }
            pos += take as u64;
        }
        Ok(())
    }

    pub(super) fn read_range(
        &self,
        id: &BlobId,
        blob: &BlobRow,
        start: u64,
        end: u64,
    ) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.pieces(id, blob, start, end, |p| {
            v.extend_from_slice(p);
            true
        })?;
        Ok(v)
    }

    /// Writes a literal of exactly the bytes `start..end`, streamed chunk
    /// by chunk and flushed as it goes; missing content is padded so the
    /// literal's length stays true.
    async fn emit_range(
        &mut self,
        id: &BlobId,
        blob: &BlobRow,
        start: u64,
        end: u64,
    ) -> io::Result<()> {
        self.out
            .extend_from_slice(format!("{{{}}}\r\n", end - start).as_bytes());
        let mut pos = start;
        while pos < end {
            let (index, chunk_start) = blob.chunk_of(pos);
            let piece_end = {
                let txn = self.store_read()?;
                let chunks = txn.open_table(CHUNKS).map_err(|e| db(e.into()))?;
                match chunks.get((id, index)).map_err(|e| db(e.into()))? {
                    Some(chunk) => {
                        let c = chunk.value();
                        let off = (pos - chunk_start) as usize;
                        if off >= c.len() {
                            None
                        } else {
                            let take = ((c.len() - off) as u64).min(end - pos) as usize;
                            self.out.extend_from_slice(&c[off..off + take]);
                            Some(pos + take as u64)
                        }
                    }
                    None => None,
                }
            };
            match piece_end {
                Some(p) => pos = p,
                None => {
                    log::error!("message content shorter than recorded; padding");
                    self.out.resize(self.out.len() + (end - pos) as usize, b' ');
                    pos = end;
                }
            }
            self.maybe_flush().await?;
        }
        Ok(())
    }

    async fn emit_section(
        &mut self,
        row: &MessageRow,
        blob: Option<&BlobRow>,
        meta: Option<&MessageMeta>,
        section: &parse::Section,
        partial: Option<(u64, u64)>,
    ) -> io::Result<()> {
        let Some(blob) = blob else {
            self.out.extend_from_slice(b"NIL");
            return Ok(());
        };
        let fallback = fallback_meta(blob.size);
        let meta = meta.unwrap_or(&fallback);
        let clip = |start: u64, end: u64| match partial {
            Some((origin, len)) => {
                let s = (start + origin).min(end);
                (s, (s + len).min(end))
            }
            None => (start, end),
        };
        match body::extent(meta, section) {
            Extent::Range(start, end) => {
                let end = end.min(blob.size);
                let start = start.min(end);
                let (s, e) = clip(start, end);
                self.emit_range(&row.blob, blob, s, e).await
            }
            Extent::Fields {
                start,
                end,
                names,
                not,
            } => {
                let end = end.min(start + MAX_HEADER_READ).min(blob.size);
                let header = self.read_range(&row.blob, blob, start.min(end), end)?;
                let fields = body::filter_fields(&header, &names, not);
                let (s, e) = clip(0, fields.len() as u64);
                self.out
                    .extend_from_slice(format!("{{{}}}\r\n", e - s).as_bytes());
                self.out.extend_from_slice(&fields[s as usize..e as usize]);
                Ok(())
            }
            Extent::Empty => {
                self.out.extend_from_slice(b"\"\"");
                Ok(())
            }
        }
    }

    /// BINARY[part] (decoded content, as a literal8) or BINARY.SIZE.
    async fn emit_binary(
        &mut self,
        row: &MessageRow,
        blob: Option<&BlobRow>,
        meta: Option<&MessageMeta>,
        part: &[u32],
        partial: Option<(u64, u64)>,
        size_only: bool,
    ) -> io::Result<()> {
        let (Some(blob), Some(meta)) = (blob, meta) else {
            self.out.extend_from_slice(b"NIL");
            return Ok(());
        };
        let target = if part.is_empty() {
            Some(&meta.root)
        } else {
            meta.root.section(part)
        };
        let Some(target) = target else {
            self.out.extend_from_slice(b"NIL");
            return Ok(());
        };
        let (start, end, encoding) = if part.is_empty() {
            (0, blob.size, "7BIT".to_string())
        } else {
            (
                target.body_start,
                target.end.min(blob.size),
                target.encoding.clone(),
            )
        };
        let Some(mut decoder) = Decoder::for_encoding(&encoding) else {
            // RFC 3516 4.3: the response code names the problem.
            self.out.extend_from_slice(b"NIL");
            return Ok(());
        };
        // Pass 1: the decoded size.
        let mut size = 0u64;
        let mut buf = Vec::new();
        self.pieces(&row.blob, blob, start, end, |p| {
            decoder.feed(p, &mut buf);
            size += buf.len() as u64;
            buf.clear();
            true
        })?;
        decoder.finish(&mut buf);
        size += buf.len() as u64;
        if size_only {
            self.out.extend_from_slice(size.to_string().as_bytes());
            return Ok(());
        }
        let (from, to) = match partial {
            Some((origin, len)) => (origin.min(size), (origin + len).min(size)),
            None => (0, size),
        };
        self.out
            .extend_from_slice(format!("~{{{}}}\r\n", to - from).as_bytes());
        // Pass 2: the bytes, a chunk at a time.
        let Some(mut decoder) = Decoder::for_encoding(&encoding) else {
            return Ok(());
        };
        let mut pos = start;
        let mut decoded_at = 0u64;
        let mut emitted = 0u64;
        while pos < end || decoded_at < to {
            buf.clear();
            let mut next = pos;
            if pos < end {
                let (index, chunk_start) = blob.chunk_of(pos);
                let chunk_end = self.piece_into(
                    &row.blob,
                    blob,
                    index,
                    chunk_start,
                    pos,
                    end,
                    &mut decoder,
                    &mut buf,
                )?;
                next = chunk_end.max(pos + 1).min(end);
                if chunk_end <= pos {
                    next = end;
                }
            }
            if next >= end {
                decoder.finish(&mut buf);
            }
            let lo = from.saturating_sub(decoded_at).min(buf.len() as u64) as usize;
            let hi = to.saturating_sub(decoded_at).min(buf.len() as u64) as usize;
            if lo < hi {
                self.out.extend_from_slice(&buf[lo..hi]);
                emitted += (hi - lo) as u64;
            }
            decoded_at += buf.len() as u64;
            pos = next;
            self.maybe_flush().await?;
            if pos >= end {
                break;
            }
        }
        if emitted < to - from {
            self.out
                .resize(self.out.len() + (to - from - emitted) as usize, 0);
        }
        Ok(())
    }

    /// Decodes the part of chunk `index` from `pos` up to `end` into `buf`;
    /// returns the message offset reached.
    #[allow(clippy::too_many_arguments)]
    fn piece_into(
        &self,
        id: &BlobId,
        _blob: &BlobRow,
        index: u32,
        chunk_start: u64,
        pos: u64,
        end: u64,
        decoder: &mut Decoder,
        buf: &mut Vec<u8>,
    ) -> io::Result<u64> {
        let txn = self.store_read()?;
        let chunks = txn.open_table(CHUNKS).map_err(|e| db(e.into()))?;
        let Some(chunk) = chunks.get((id, index)).map_err(|e| db(e.into()))? else {
            return Ok(end);
        };
        let c = chunk.value();
        let off = (pos - chunk_start) as usize;
        if off >= c.len() {
            return Ok(end);
        }
        let take = ((c.len() - off) as u64).min(end - pos) as usize;
        decoder.feed(&c[off..off + take], buf);
        Ok(pos + take as u64)
    }
}

/// Items rendered from the message row and delivery-time meta alone.
fn is_inline(item: &FetchItem) -> bool {
    matches!(
        item,
        FetchItem::Uid
            | FetchItem::Flags
            | FetchItem::InternalDate
            | FetchItem::Rfc822Size
            | FetchItem::ModSeq
            | FetchItem::Envelope
            | FetchItem::Body
            | FetchItem::BodyStructure
    )
}

/// Renders an [`is_inline`] item; false for the others (sections).
fn render_inline(out: &mut Vec<u8>, item: &FetchItem, parts: Fetched<'_>) -> io::Result<bool> {
    let Fetched {
        uid,
        row,
        meta,
        envelope,
        ..
    } = parts;
    match item {
        FetchItem::Uid => write!(out, "UID {uid}")?,
        FetchItem::Flags => {
            out.extend_from_slice(b"FLAGS ");
            crate::imap::render_flags(row.flags, &row.keywords, out);
        }
        FetchItem::InternalDate => {
            out.extend_from_slice(b"INTERNALDATE \"");
            crate::imap::write_date_time(row.internal_date, out);
            out.push(b'"');
        }
        FetchItem::Rfc822Size => write!(out, "RFC822.SIZE {}", row.size)?,
        FetchItem::ModSeq => write!(out, "MODSEQ ({})", row.modseq)?,
        FetchItem::Envelope => {
            out.extend_from_slice(b"ENVELOPE ");
            match envelope {
                Some(env) => crate::message::render_envelope(env, out),
                None => crate::message::render_envelope(&Default::default(), out),
            }
        }
        FetchItem::Body | FetchItem::BodyStructure => {
            let ext = matches!(item, FetchItem::BodyStructure);
            out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
            let fallback = fallback_meta(row.size);
            let m = meta.unwrap_or(&fallback);
            crate::message::render_bodystructure(&m.root, ext, out);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn decode_meta(blob: &BlobRow) -> MessageMeta {
    MessageMeta::decode(&blob.meta).unwrap_or_else(|| fallback_meta(blob.size))
}

/// A sequence set resolved against a snapshot of the selected mailbox's
/// UIDs (runs: a few bytes), yielding (sequence number, UID) ascending and
/// without repeats, a batch at a time: FETCH 1:* on a large mailbox never
/// lists every message at once.
/// The set's ranges with `*` as `max`, sorted, overlaps and neighbours merged.
fn merged_ranges(set: &SequenceSet, max: u32) -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = set.resolved(max).collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

#[derive(Clone)]
struct Targets {
    uids: UidList,
    /// Sorted, disjoint ranges of UIDs or of sequence numbers.
    ranges: Vec<(u32, u32)>,
    uid: bool,
    range: usize,
    /// Index into `uids` of the next candidate in the current range.
    pos: Option<usize>,
}

impl Targets {
    fn new(uids: UidList, ranges: Vec<(u32, u32)>, uid: bool) -> Targets {
        Targets {
            uids,
            ranges,
            uid,
            range: 0,
            pos: None,
        }
    }

    fn next_batch(&mut self, n: usize) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        while out.len() < n && self.range < self.ranges.len() {
            let (lo, hi) = self.ranges[self.range];
            let i = *self.pos.get_or_insert_with(|| {
                if self.uid {
                    self.uids.count_below(lo)
                } else {
                    lo.max(1) as usize - 1
                }
            });
            let within = |u: u32| if self.uid { u <= hi } else { i < hi as usize };
            match self.uids.get(i) {
                Some(u) if within(u) => {
                    out.push((i as u32 + 1, u));
                    self.pos = Some(i + 1);
                }
                _ => {
                    self.range += 1;
                    self.pos = None;
                }
            }
        }
        out
    }
}

/// What one FETCH response is rendered from.
#[derive(Clone, Copy)]
struct Fetched<'a> {
    uid: u32,
    row: &'a MessageRow,
    blob: Option<&'a BlobRow>,
    meta: Option<&'a MessageMeta>,
    envelope: Option<&'a crate::message::Envelope>,
}

/// Structure for a message whose stored metadata cannot be read: one
/// opaque text part.
pub(super) fn fallback_meta(size: u64) -> MessageMeta {
    let mut root = Part::new(0);
    root.end = size;
    MessageMeta { size, root }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every UID or number of `set`, the slow way: what the batches must
    /// add up to.
    fn naive(uids: &[u32], set: &SequenceSet, uid: bool) -> Vec<(u32, u32)> {
        let max = if uid {
            uids.last().copied().unwrap_or(0)
        } else {
            uids.len() as u32
        };
        uids.iter()
            .enumerate()
            .map(|(i, &u)| (i as u32 + 1, u))
            .filter(|&(seq, u)| set.contains(if uid { u } else { seq }, max))
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn batches_match_the_set(
            uids in proptest::collection::btree_set(1u32..300, 0..120),
            ranges in proptest::collection::vec((0u32..320, 0u32..320), 1..6),
            uid in proptest::bool::ANY,
            batch in 1usize..50,
        ) {
            let uids: Vec<u32> = uids.into_iter().collect();
            let text: Vec<String> = ranges
                .iter()
                .map(|&(a, b)| {
                    let f = |n: u32| if n == 0 { "*".to_string() } else { n.to_string() };
                    format!("{}:{}", f(a), f(b))
                })
                .collect();
            let set = SequenceSet::parse(text.join(",").as_bytes()).unwrap();
            let mut list = UidList::new();
            for &u in &uids {
                list.push(u);
            }
            let max = if uid { list.last().unwrap_or(0) } else { list.len() as u32 };
            let mut t = Targets::new(list, merged_ranges(&set, max), uid);
            let mut got = Vec::new();
            loop {
                let b = t.next_batch(batch);
                proptest::prop_assert!(b.len() <= batch);
                if b.is_empty() {
                    break;
                }
                got.extend(b);
            }
            proptest::prop_assert_eq!(got, naive(&uids, &set, uid));
        }
    }
}
