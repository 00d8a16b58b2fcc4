//! Sequence sets (RFC 9051 section 9, `sequence-set`): ranges of message
//! numbers or UIDs where `*` is the largest one in use.

/// At most this many ranges in one set: bounds memory for any input line.
const MAX_RANGES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSet {
    /// Inclusive ranges; 0 stands for `*`.
    ranges: Vec<(u32, u32)>,
    /// `$`: the result saved by the last `SEARCH RETURN (SAVE)` (RFC 5182),
    /// which the session replaces with its messages before use.
    saved: bool,
}

impl SequenceSet {
    pub fn parse(s: &[u8]) -> Option<SequenceSet> {
        if s.is_empty() {
            return None;
        }
        if s == b"$" {
            return Some(SequenceSet {
                ranges: Vec::new(),
                saved: true,
            });
        }
        let mut ranges = Vec::new();
        for item in s.split(|&c| c == b',') {
            if ranges.len() >= MAX_RANGES {
                return None;
            }
            let mut ends = item.splitn(2, |&c| c == b':');
            let a = number(ends.next()?)?;
            let b = match ends.next() {
                Some(e) => number(e)?,
                None => a,
            };
            ranges.push((a, b));
        }
        Some(SequenceSet {
            ranges,
            saved: false,
        })
    }

    /// The set of the given ascending numbers (empty: matches nothing).
    pub fn of(numbers: impl IntoIterator<Item = u32>) -> SequenceSet {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for n in numbers {
            match ranges.last_mut() {
                Some(r) if r.1.checked_add(1) == Some(n) => r.1 = n,
                _ => ranges.push((n, n)),
            }
        }
        SequenceSet {
            ranges,
            saved: false,
        }
    }

    /// Whether this is `$`, the saved search result.
    pub fn is_saved(&self) -> bool {
        self.saved
    }

    /// Whether `n` is in the set, `*` standing for `max`.
    pub fn contains(&self, n: u32, max: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| {
            let a = if a == 0 { max } else { a };
            let b = if b == 0 { max } else { b };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            (lo..=hi).contains(&n)
        })
    }

    /// The ranges, `*` resolved, each low to high.
    pub fn resolved(&self, max: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.ranges.iter().map(move |&(a, b)| {
            let a = if a == 0 { max } else { a };
            let b = if b == 0 { max } else { b };
            if a <= b { (a, b) } else { (b, a) }
        })
    }

    /// The highest number named explicitly (0 if only `*`).
    pub fn highest_explicit(&self) -> u32 {
        self.ranges
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .max()
            .unwrap_or(0)
    }
}

fn number(s: &[u8]) -> Option<u32> {
    if s == b"*" {
        return Some(0);
    }
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) || s[0] == b'0' {
        return None;
    }
    let n: u64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    u32::try_from(n).ok()
}

/// Renders ascending numbers compactly: `1:3,7,9:10`.
pub fn render(numbers: impl IntoIterator<Item = u32>) -> String {
    let mut out = String::new();
    let mut run: Option<(u32, u32)> = None;
    let emit = |out: &mut String, (a, b): (u32, u32)| {
        if !out.is_empty() {
            out.push(',');
        }
        if a == b {
            out.push_str(&a.to_string());
        } else {
            out.push_str(&format!("{a}:{b}"));
        }
    };
    for n in numbers {
        run = match run {
            Some((a, b)) if b.checked_add(1) == Some(n) => Some((a, n)),
            Some(r) => {
                emit(&mut out, r);
                Some((n, n))
            }
            None => Some((n, n)),
        };
    }
    if let Some(r) = run {
        emit(&mut out, r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let s = SequenceSet::parse(b"1:3,7,9:*").unwrap();
        assert!(s.contains(2, 20) && s.contains(7, 20) && s.contains(20, 20));
        assert!(!s.contains(5, 20) && !s.contains(8, 20));
        let rev = SequenceSet::parse(b"*:5").unwrap();
        assert!(rev.contains(6, 10) && !rev.contains(4, 10));
        for bad in [
            &b""[..],
            b"0",
            b"1:",
            b",",
            b"a",
            b"1,,2",
            b"01",
            b"4294967296",
        ] {
            assert_eq!(SequenceSet::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn renders_runs() {
        assert_eq!(render([1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(render([]), "");
        assert_eq!(render([u32::MAX]), "4294967295");
    }
}
