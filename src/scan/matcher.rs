//! Body-signature matching: one Aho-Corasick pass finds every signature's
//! literal anchor, so the cost grows with the bytes scanned rather than with
//! signatures times bytes; each anchor hit is then verified against the whole
//! signature (wildcards, gaps, alternatives, offset) from where it must start.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

use super::signature::{BodySignature, Offset, Target, Token};

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
    signatures: Vec<BodySignature>,
    /// Anchor number -> signatures sharing that anchor.
    by_anchor: Vec<Vec<u32>>,
    search: Option<AhoCorasick>,
}

impl BodyMatcher {
    pub fn new(signatures: Vec<BodySignature>) -> Result<BodyMatcher, String> {
        let mut anchors: Vec<Vec<u8>> = Vec::new();
        let mut index: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        let mut by_anchor: Vec<Vec<u32>> = Vec::new();
        for (i, s) in signatures.iter().enumerate() {
            let n = *index.entry(s.anchor.clone()).or_insert_with(|| {
                anchors.push(s.anchor.clone());
                by_anchor.push(Vec::new());
                anchors.len() - 1
            });
            by_anchor[n].push(i as u32);
        }
        let search = if anchors.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    // Dense tables for shallow states cost 1 KiB each: with
                    // thousands of anchors that is most of the memory.
                    .dense_depth(0)
                    .build(&anchors)
                    .map_err(|e| format!("building the signature automaton: {e}"))?,
            )
        };
        Ok(BodyMatcher {
            signatures,
            by_anchor,
            search,
        })
    }

    /// Looks for signatures in `window`, which holds the object's bytes from
    /// `base` on; the object is `total` bytes long. Signatures must lie
    /// wholly inside the window. `skip` says whether a signature name is
    /// allow-listed. Returns the first signature found.
    pub fn find(
        &self,
        window: &[u8],
        base: u64,
        total: u64,
        kind: ObjectKind,
        skip: &dyn Fn(&str) -> bool,
    ) -> Option<&str> {
        let search = self.search.as_ref()?;
        let mut window_budget = WINDOW_BUDGET;
        let mut next = NextByte::new();
        for hit in search.find_overlapping_iter(window) {
            for &i in &self.by_anchor[hit.pattern().as_usize()] {
                let sig = &self.signatures[i as usize];
                let applies = match sig.target {
                    Target::Any => kind != ObjectKind::Text,
                    Target::Mail => kind == ObjectKind::Mail,
                    Target::Text => kind == ObjectKind::Text,
                };
                if !applies {
                    continue;
                }
                let Some(start) = hit.start().checked_sub(sig.anchor_at) else {
                    continue;
                };
                if !offset_ok(sig.offset, base + start as u64, total) {
                    continue;
                }
                let given = VERIFY_BUDGET.min(window_budget).max(MIN_BUDGET);
                let mut budget = given;
                let found = matches(&sig.tokens, window, start, &mut budget, &mut next);
                window_budget = window_budget.saturating_sub(given - budget);
                if found && !skip(&sig.name) {
                    return Some(&sig.name);
                }
            }
        }
        None
    }
}

fn offset_ok(offset: Offset, at: u64, total: u64) -> bool {
    match offset {
        Offset::Any => true,
        Offset::Start(n, shift) => at >= n && at - n <= shift,
        Offset::End(n, shift) => match total.checked_sub(n) {
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

/// Whether `tokens` match `data` starting at `at`. Fixed runs are compared
/// in a loop; alternatives and gaps backtrack, within `budget` steps.
fn matches(
    tokens: &[Token],
    data: &[u8],
    at: usize,
    budget: &mut u32,
    next: &mut NextByte,
) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    let Some((first, rest)) = tokens.split_first() else {
        return true;
    };
    match first {
        Token::Fixed(bytes) => {
            let Some(slice) = data.get(at..at + bytes.len()) else {
                return false;
            };
            slice.iter().zip(bytes).all(|(&d, &(v, m))| d & m == v & m)
                && matches(rest, data, at + bytes.len(), budget, next)
        }
        Token::Alt(alts) => alts.iter().any(|alt| {
            data.get(at..at + alt.len()) == Some(alt.as_slice())
                && matches(rest, data, at + alt.len(), budget, next)
        }),
        Token::Gap { min, max } => {
            let lo = at.saturating_add(*min as usize);
            let hi = match max {
                Some(m) => at.saturating_add(*m as usize).min(data.len()),
                None => data.len(),
            };
            // The next token is bytes (gaps never end a signature); jump to
            // where its first exact byte occurs instead of trying each place.
            let first_byte = match rest.first() {
                Some(Token::Fixed(b)) if b[0].1 == 0xff => Some(b[0].0),
                _ => None,
            };
            let mut p = lo;
            while p <= hi {
                if let Some(fb) = first_byte {
                    match next.find(data, fb, p) {
                        Some(k) if k <= hi => p = k,
                        _ => return false,
                    }
                }
                if matches(rest, data, p, budget, next) {
                    return true;
                }
                if *budget == 0 {
                    return false;
                }
                p += 1;
            }
            false
        }
    }
}

/// Text normalisation for target-type-7 signatures: ASCII lowercased and
/// every run of whitespace as one space (an approximation of ClamAV's).
pub fn normalize_text(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut space = false;
    for &b in data {
        if b.is_ascii_whitespace() {
            if !space {
                out.push(b' ');
            }
            space = true;
        } else {
            out.push(b.to_ascii_lowercase());
            space = false;
        }
    }
    out
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
        assert_eq!(normalize_text(b"A  B\r\n\tC"), b"a b c");
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
