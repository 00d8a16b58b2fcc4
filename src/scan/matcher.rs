//! Body-signature matching: one Aho-Corasick pass finds every signature's
//! literal anchor, so the cost grows with the bytes scanned rather than with
//! signatures times bytes; each anchor hit is then verified against the whole
//! signature (wildcards, gaps, alternatives, offset) from where it must start.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

use super::compiled::{Compiled, Program, Sig, Tok};
use super::signature::{BodySignature, MAX_EOF_OFFSET, MAX_PART_SPAN, Offset, Target, part_spans};

/// Verification steps allowed per anchor hit, and per window over all hits:
/// bound the backtracking of signatures with gaps on adversarial input
/// (say a megabyte of one repeated byte). Past the window budget each hit
/// still gets `MIN_BUDGET` steps, enough for signatures without gaps.
const VERIFY_BUDGET: u32 = 100_000;
const WINDOW_BUDGET: u32 = 4_000_000;
const MIN_BUDGET: u32 = 32;

/// What kind of object a window belongs to, which selects the signatures
/// whose target applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A whole message (top level or message/rfc822).
    Mail,
    /// Normalised text of a text/* part.
    Text,
    /// Anything else (decoded attachment, archive entry, plain file).
    Other,
}

pub struct BodyMatcher {
    signatures: Compiled,
    /// Anchor number n -> the signatures sharing it:
    /// `anchor_sigs[anchor_first[n]..anchor_first[n + 1]]`, in load order.
    anchor_first: Vec<u32>,
    anchor_sigs: Vec<u32>,
    search: Option<AhoCorasick>,
    /// How far stream windows must overlap: the longest part span.
    overlap: usize,
    /// How many bytes before the end `EOF-n` signatures need.
    tail: usize,
}

/// Body signatures added one at a time as they are parsed, so that only
/// the compact form is ever held for all of them.
pub struct BodyMatcherBuilder {
    signatures: Compiled,
    /// Every signature's anchor, back to back (freed once built).
    anchors: Vec<u8>,
    anchor_ends: Vec<u32>,
    overlap: usize,
    tail: usize,
}

impl Default for BodyMatcherBuilder {
    fn default() -> Self {
        BodyMatcherBuilder {
            signatures: Compiled::default(),
            anchors: Vec::new(),
            anchor_ends: Vec::new(),
            overlap: 1,
            tail: 0,
        }
    }
}

impl BodyMatcherBuilder {
    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    pub fn add(&mut self, s: &BodySignature) -> Result<(), String> {
        self.signatures.push(s)?;
        self.anchors.extend_from_slice(&s.anchor);
        self.anchor_ends.push(
            u32::try_from(self.anchors.len()).map_err(|_| "anchors exceed 4 GiB".to_string())?,
        );
        let span = part_spans(&s.tokens).max().unwrap_or(0);
        self.overlap = self.overlap.max(span.min(MAX_PART_SPAN) as usize);
        if let Offset::End(n, _) = s.offset {
            self.tail = self.tail.max(n.min(MAX_EOF_OFFSET) as usize);
        }
        Ok(())
    }

    pub fn build(self) -> Result<BodyMatcher, String> {
        let BodyMatcherBuilder {
            mut signatures,
            anchors,
            anchor_ends,
            overlap,
            tail,
        } = self;
        signatures.shrink_to_fit();
        let n = anchor_ends.len();
        let anchor = |i: usize| -> &[u8] {
            let start = if i == 0 {
                0
            } else {
                anchor_ends[i - 1] as usize
            };
            &anchors[start..anchor_ends[i] as usize]
        };
        // Signatures sharing an anchor share its pattern; patterns are
        // numbered in the order their first signature was loaded.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|&a, &b| anchor(a as usize).cmp(anchor(b as usize)));
        let mut groups: Vec<(u32, u32)> = Vec::new(); // (first signature, start in order)
        for (k, &i) in order.iter().enumerate() {
            let new = k == 0 || anchor(order[k - 1] as usize) != anchor(i as usize);
            if new {
                groups.push((i, k as u32));
            }
        }
        let group_ends: Vec<u32> = groups
            .iter()
            .skip(1)
            .map(|g| g.1)
            .chain([n as u32])
            .collect();
        let mut by_first: Vec<u32> = (0..groups.len() as u32).collect();
        by_first.sort_by_key(|&g| groups[g as usize].0);
        let mut anchor_first = Vec::with_capacity(groups.len() + 1);
        let mut anchor_sigs = Vec::with_capacity(n);
        for &g in &by_first {
            anchor_first.push(anchor_sigs.len() as u32);
            let (_, start) = groups[g as usize];
            anchor_sigs.extend_from_slice(&order[start as usize..group_ends[g as usize] as usize]);
        }
        anchor_first.push(anchor_sigs.len() as u32);
        let search = if n == 0 {
            None
        } else {
            let patterns = by_first
                .iter()
                .map(|&g| anchor(groups[g as usize].0 as usize));
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    // Dense tables for shallow states cost 1 KiB each: with
                    // thousands of anchors that is most of the memory.
                    .dense_depth(0)
                    .build(patterns)
                    .map_err(|e| format!("building the signature automaton: {e}"))?,
            )
        };
        Ok(BodyMatcher {
            signatures,
            anchor_first,
            anchor_sigs,
            search,
            overlap,
            tail,
        })
    }
}

/// Signatures with unbounded gaps (`*`, `{n-}`) are matched a part at a
/// time across the windows of a stream: for each, the next part to find
/// and where it may start at the earliest. Chaining the earliest ends is
/// exact: any match of the whole signature has each part ending no earlier.
#[derive(Default)]
pub struct Chains {
    next: std::collections::HashMap<u32, (u16, u64)>,
}

/// One window of a stream: `data` holds the object's bytes from `base` on.
pub struct Window<'d> {
    pub data: &'d [u8],
    pub base: u64,
    /// The object's length once known (the last window): `EOF-n`
    /// signatures are matched then.
    pub total: Option<u64>,
    /// Bytes at the end of `data` that the next window holds again (0 in
    /// the last): parts starting there are left to it.
    pub carried: usize,
    pub kind: ObjectKind,
}

impl BodyMatcher {
    pub fn new(signatures: Vec<BodySignature>) -> Result<BodyMatcher, String> {
        let mut b = BodyMatcherBuilder::default();
        for s in &signatures {
            b.add(s)?;
        }
        b.build()
    }

    /// Bytes a stream must keep from one window to the next: enough for
    /// the longest signature part and for the farthest `EOF-n`.
    pub fn keep(&self) -> usize {
        self.overlap.max(self.tail)
    }

    /// The overlap of windows alone (parts, not `EOF-n`).
    pub fn overlap(&self) -> usize {
        self.overlap
    }

    /// Looks for signatures in a whole object, or in its tail from `base`
    /// on. Returns the first signature found.
    #[cfg(test)]
    pub fn find(
        &self,
        data: &[u8],
        base: u64,
        total: u64,
        kind: ObjectKind,
        skip: &dyn Fn(&str) -> bool,
    ) -> Option<&str> {
        let w = Window {
            data,
            base,
            total: Some(total),
            carried: 0,
            kind,
        };
        self.scan(&w, &mut Chains::default(), skip)
    }

    /// Looks for signatures in one window of a stream, carrying partial
    /// matches of multi-part signatures in `chains`. `skip` says whether a
    /// signature name is allow-listed. Returns the first signature found.
    pub fn scan(
        &self,
        w: &Window,
        chains: &mut Chains,
        skip: &dyn Fn(&str) -> bool,
    ) -> Option<&str> {
        let search = self.search.as_ref()?;
        let mut window_budget = WINDOW_BUDGET;
        let mut next = NextByte::new();
        let mut run = |program: Program, at: usize, least: bool, next: &mut NextByte| {
            let given = VERIFY_BUDGET.min(window_budget).max(MIN_BUDGET);
            let mut budget = given;
            let end = match_end(program, w.data, at, &mut budget, next, least);
            window_budget = window_budget.saturating_sub(given - budget);
            end
        };
        for hit in search.find_overlapping_iter(w.data) {
            let n = hit.pattern().as_usize();
            let (from, to) = (self.anchor_first[n], self.anchor_first[n + 1]);
            for &i in &self.anchor_sigs[from as usize..to as usize] {
                let sig = self.signatures.get(i as usize);
                if !applies(&sig, w) {
                    continue;
                }
                let Some(start) = hit.start().checked_sub(sig.anchor_at) else {
                    continue;
                };
                if !offset_ok(sig.offset, w.base + start as u64, w.total) {
                    continue;
                }
                let mut parts = sig.program.parts();
                let Some((gap, first)) = parts.next() else {
                    continue;
                };
                if parts.next().is_none() {
                    // One part: a match is the signature found.
                    if run(first, start, false, &mut next).is_some() && !skip(sig.name) {
                        return Some(sig.name);
                    }
                    continue;
                }
                // Only a match ending earlier than the one chained so far
                // (if the chain has not gone further) can help.
                let chained = chains.next.get(&i).copied();
                if chained.is_some_and(|(k, _)| k > 1) {
                    continue;
                }
                if let Some(end) = run(first, start, true, &mut next) {
                    let from = w.base + end as u64 + gap;
                    if chained.is_none_or(|(_, f)| from < f) {
                        chains.next.insert(i, (1, from));
                    }
                }
            }
        }
        // Then the later parts of chained signatures, in this window.
        let owned = w.data.len() - w.carried.min(w.data.len());
        let mut done: Vec<u32> = Vec::new();
        for (&i, state) in chains.next.iter_mut() {
            let sig = self.signatures.get(i as usize);
            if !applies(&sig, w) {
                continue;
            }
            while let Some((gap, part)) = sig.program.parts().nth(state.0 as usize) {
                let from = state.1.saturating_sub(w.base) as usize;
                let Some(end) = find_part(
                    part,
                    w.data,
                    from,
                    owned,
                    &mut |at, next| run(part, at, true, next),
                    &mut next,
                ) else {
                    break;
                };
                state.0 += 1;
                state.1 = w.base + end as u64 + gap;
            }
            if sig.program.parts().nth(state.0 as usize).is_none() {
                done.push(i);
            }
        }
        done.sort_unstable();
        for i in done {
            chains.next.remove(&i);
            let sig = self.signatures.get(i as usize);
            if !skip(sig.name) {
                return Some(sig.name);
            }
        }
        None
    }
}

fn applies(sig: &Sig, w: &Window) -> bool {
    let kind = match sig.target {
        Target::Any => w.kind != ObjectKind::Text,
        Target::Mail => w.kind == ObjectKind::Mail,
        Target::Text => w.kind == ObjectKind::Text,
    };
    kind && (w.total.is_some() || !matches!(sig.offset, Offset::End(..)))
}

/// The earliest end of a match of a part (tried by `try_at`) starting at or
/// after `from` and before `owned`. Matches starting past the first one
/// found are tried while they could still end before it.
fn find_part(
    part: Program,
    data: &[u8],
    from: usize,
    owned: usize,
    try_at: &mut dyn FnMut(usize, &mut NextByte) -> Option<usize>,
    next: &mut NextByte,
) -> Option<usize> {
    let first_byte = part.first_exact_byte();
    let mut best: Option<usize> = None;
    let mut p = from;
    while p < best.unwrap_or(owned).min(owned) {
        if let Some(fb) = first_byte {
            match next.find(data, fb, p) {
                Some(k) if k < owned && best.is_none_or(|b| k < b) => p = k,
                _ => break,
            }
        }
        if let Some(end) = try_at(p, next) {
            best = Some(best.map_or(end, |b| b.min(end)));
        }
        p += 1;
    }
    best
}

fn offset_ok(offset: Offset, at: u64, total: Option<u64>) -> bool {
    match offset {
        Offset::Any => true,
        Offset::Start(n, shift) => at >= n && at - n <= shift,
        Offset::End(n, shift) => match total.and_then(|t| t.checked_sub(n)) {
            Some(from) => at >= from && at - from <= shift,
            None => false,
        },
    }
}

/// Where each byte value next occurs in a window, remembered from the last
/// search: hits come in increasing order, so searching after a gap costs
/// about one pass over the window in all, not one per hit.
struct NextByte {
    /// For byte b: the last search started at `from[b]` and found it at
    /// `at[b]` (usize::MAX: not before the end).
    from: [usize; 256],
    at: [usize; 256],
}

impl NextByte {
    fn new() -> NextByte {
        NextByte {
            from: [usize::MAX; 256],
            at: [usize::MAX; 256],
        }
    }

    fn find(&mut self, data: &[u8], b: u8, p: usize) -> Option<usize> {
        let i = b as usize;
        if p < self.from[i] || p > self.at[i] {
            self.from[i] = p;
            self.at[i] = data
                .get(p..)
                .and_then(|s| s.iter().position(|&c| c == b))
                .map_or(usize::MAX, |k| p + k);
        }
        (self.at[i] != usize::MAX).then_some(self.at[i])
    }
}

/// Where a match of `tokens` (one part: its gaps are bounded) starting at
/// `at` ends: the first end found, or with `least` the earliest of all
/// (for chaining the next part). Alternatives and gaps backtrack, within
/// `budget` steps.
fn match_end(
    program: Program,
    data: &[u8],
    at: usize,
    budget: &mut u32,
    next: &mut NextByte,
    least: bool,
) -> Option<usize> {
    if *budget == 0 {
        return None;
    }
    *budget -= 1;
    let Some((first, rest)) = program.split_first() else {
        return Some(at);
    };
    let mut best: Option<usize> = None;
    let mut keep = |end: Option<usize>| -> bool {
        if let Some(e) = end {
            best = Some(best.map_or(e, |b| b.min(e)));
        }
        best.is_some() && !least
    };
    match first {
        Tok::Exact(bytes) => {
            if data.get(at..at + bytes.len())? != bytes {
                return None;
            }
            return match_end(rest, data, at + bytes.len(), budget, next, least);
        }
        Tok::Masked { values, masks } => {
            let slice = data.get(at..at + values.len())?;
            let same = slice
                .iter()
                .zip(values.iter().zip(masks))
                .all(|(&d, (&v, &m))| d & m == v & m);
            if !same {
                return None;
            }
            return match_end(rest, data, at + values.len(), budget, next, least);
        }
        Tok::Alt(alts) => {
            for alt in alts {
                if data.get(at..at + alt.len()) == Some(alt)
                    && keep(match_end(rest, data, at + alt.len(), budget, next, least))
                {
                    break;
                }
            }
        }
        Tok::Gap { min, max } => {
            let lo = at.saturating_add(min as usize);
            let hi = match max {
                Some(m) => at.saturating_add(m as usize).min(data.len()),
                None => data.len(),
            };
            // The next token is bytes (gaps never end a signature); jump to
            // where its first exact byte occurs instead of trying each place.
            let first_byte = rest.first_exact_byte();
            let mut p = lo;
            while p <= hi {
                if let Some(fb) = first_byte {
                    match next.find(data, fb, p) {
                        Some(k) if k <= hi => p = k,
                        _ => break,
                    }
                }
                if keep(match_end(rest, data, p, budget, next, least)) || *budget == 0 {
                    break;
                }
                p += 1;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::super::signature::parse_ndb;
    use super::*;

    fn found(sig: &str, data: &[u8]) -> bool {
        let m = BodyMatcher::new(vec![parse_ndb(sig).unwrap().unwrap()]).unwrap();
        m.find(data, 0, data.len() as u64, ObjectKind::Other, &|_| false)
            .is_some()
    }

    #[test]
    fn each_form_matches_and_does_not() {
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("4142434445", b"xxABCDExx", b"xxABCDFxx"),
            ("4142??4445", b"AB!DE", b"AB!DF"),
            ("41424?4445", b"ABCDE", b"ABSDE"),
            ("4142?34445", b"ABCDE", b"ABCCE"),
            ("4142(43|5859)4445", b"ABXYDE", b"ABXDE"),
            ("4142*4445", b"AB.........DE", b"ABD.E"),
            ("4142{2}4445", b"AB..DE", b"AB...DE"),
            ("4142{-2}4445", b"AB..DE", b"AB...DE"),
            ("4142{-2}4445", b"ABDE", b"AB...DE"),
            ("4142{2-}4445", b"AB....DE", b"AB.DE"),
            ("4142{1-2}4445", b"AB.DE", b"ABDE"),
            ("4142{1-2}4445", b"AB..DE", b"AB...DE"),
            ("4142[1-2]4445", b"AB..DE", b"AB...DE"),
            // Backtracking: the first D is not followed by E.
            ("4142*4445", b"ABxDxDE", b"ABxDxDxE"),
        ];
        for (sig, yes, no) in cases {
            let line = format!("T:0:*:{sig}");
            assert!(found(&line, yes), "{sig} should match {yes:?}");
            assert!(!found(&line, no), "{sig} should not match {no:?}");
        }
    }

    #[test]
    fn offsets() {
        assert!(found("T:0:2:41424344", b"..ABCD"));
        assert!(!found("T:0:2:41424344", b"...ABCD"));
        assert!(found("T:0:2,1:41424344", b"...ABCD"));
        assert!(!found("T:0:2,1:41424344", b"....ABCD"));
        assert!(found("T:0:EOF-6:41424344", b"xxABCD.."));
        assert!(!found("T:0:EOF-6:41424344", b"xABCD..."));
        assert!(found("T:0:EOF-6,1:41424344", b"xxxABCD."));
        assert!(!found("T:0:EOF-10:41424344", b"ABCD"));
    }

    #[test]
    fn window_base_counts_for_offsets() {
        let m = BodyMatcher::new(vec![parse_ndb("T:0:100:41424344").unwrap().unwrap()]).unwrap();
        assert!(
            m.find(b"ABCD", 100, 200, ObjectKind::Other, &|_| false)
                .is_some()
        );
        assert!(
            m.find(b"ABCD", 99, 200, ObjectKind::Other, &|_| false)
                .is_none()
        );
    }

    #[test]
    fn targets_select_objects() {
        let m = BodyMatcher::new(vec![
            parse_ndb("Mail:4:*:41424344").unwrap().unwrap(),
            parse_ndb("Text:7:*:61626364").unwrap().unwrap(),
        ])
        .unwrap();
        let f = |d: &[u8], k| {
            m.find(d, 0, d.len() as u64, k, &|_| false)
                .map(str::to_string)
        };
        assert_eq!(f(b"ABCD", ObjectKind::Mail).as_deref(), Some("Mail"));
        assert_eq!(f(b"ABCD", ObjectKind::Other), None);
        assert_eq!(f(b"abcd", ObjectKind::Text).as_deref(), Some("Text"));
        assert_eq!(f(b"abcd", ObjectKind::Other), None);
    }

    #[test]
    fn allow_list_skips_a_name_and_later_signatures_still_match() {
        let m = BodyMatcher::new(vec![
            parse_ndb("Bad.One:0:*:41424344").unwrap().unwrap(),
            parse_ndb("Bad.Two:0:*:41424344").unwrap().unwrap(),
        ])
        .unwrap();
        let r = m.find(b"ABCD", 0, 4, ObjectKind::Other, &|n| n == "Bad.One");
        assert_eq!(r, Some("Bad.Two"));
    }

    #[test]
    fn pathological_gaps_stay_bounded() {
        let m = BodyMatcher::new(vec![
            parse_ndb("T:0:*:4141*41*41*41*41*41*41*41*42")
                .unwrap()
                .unwrap(),
        ])
        .unwrap();
        let data = vec![b'A'; 200_000];
        let t = std::time::Instant::now();
        assert!(
            m.find(&data, 0, data.len() as u64, ObjectKind::Other, &|_| false)
                .is_none()
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }
}
