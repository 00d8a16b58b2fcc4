//! Parsing of ClamAV signature lines: the subset pimail understands.
//!
//! - `.ndb` body signatures `Name:Target:Offset:Hex[:MinFL[:MaxFL]]`
//!   (ClamAV's signatures.pdf, "Extended signature format").
//! - `.hdb`/`.hsb` (and the `.fp`/`.sfp` allow-lists) whole-file hashes
//!   `Hash:Size:Name[:MinFL]`, MD5, SHA-1 or SHA-256 by the hash's length;
//!   Size may be `*` (any size).
//! - `.ign2`: one signature name per line, never reported.
//!
//! Every parser returns `Err(reason)` for a line it cannot use; the loader
//! reports it with the file name and line number and skips it.

/// What a signature applies to (ClamAV target types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// 0: any object (raw message, decoded parts, archive entries).
    Any,
    /// 4: a mail message (the raw message and embedded message/rfc822 parts).
    Mail,
    /// 7: text, normalised (ASCII lowercased, whitespace runs as one space).
    Text,
}

/// Where a body signature may start in the scanned object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// `*`: anywhere.
    Any,
    /// `n` or `n,shift`: from byte n to n + shift.
    Start(u64, u64),
    /// `EOF-n` or `EOF-n,shift`: from n bytes before the end, to n - shift.
    End(u64, u64),
}

/// One element of a compiled hex signature. Runs of fixed bytes are kept
/// together so matching loops instead of recursing per byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Bytes that must match under a mask (0xff exact, 0xf0/0x0f nibble,
    /// 0x00 for `??`).
    Fixed(Vec<(u8, u8)>),
    /// `(aa|bbcc)`: one of these byte strings.
    Alt(Vec<Vec<u8>>),
    /// `*`, `{n}`, `{-n}`, `{n-}`, `{n-m}`, `[n-m]`: between `min` and
    /// `max` bytes (None: unbounded).
    Gap { min: u64, max: Option<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodySignature {
    pub name: String,
    pub target: Target,
    pub offset: Offset,
    pub tokens: Vec<Token>,
    /// The literal bytes the multi-pattern search looks for...
    pub anchor: Vec<u8>,
    /// ...and how far after the signature's start they are.
    pub anchor_at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashKind {
    Md5 = 1,
    Sha1 = 2,
    Sha256 = 3,
}

impl HashKind {
    pub fn digest_len(self) -> usize {
        match self {
            HashKind::Md5 => 16,
            HashKind::Sha1 => 20,
            HashKind::Sha256 => 32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSignature {
    pub kind: HashKind,
    pub hash: Vec<u8>,
    /// None for `*` (any size).
    pub size: Option<u64>,
    pub name: String,
}

/// Longest hex signature accepted, in characters: bounds the work of one
/// verification.
const MAX_HEX: usize = 64 * 1024;
/// Shortest literal run usable as the search anchor (ClamAV also requires
/// two static bytes).
const MIN_ANCHOR: usize = 2;
/// Longest anchor. The automaton's size grows with the anchors' total
/// length: at 10,000 signatures, 12-byte anchors took 1.2 MB (2.8 MB more
/// while it was built), 4-byte ones 0.45 MB (1 MB). Four exact bytes are
/// still selective (a random window hits one of 10,000 anchors once in
/// 400,000 bytes; ClamAV's own automaton is only 2 to 3 bytes deep), and
/// every byte of the signature is checked when a hit is verified.
const MAX_ANCHOR: usize = 4;
/// Longest span of a signature part between unbounded gaps: the overlap of
/// stream windows (and so their memory) follows the longest loaded.
pub const MAX_PART_SPAN: u64 = 64 * 1024;
/// Largest n in an `EOF-n` offset: the end of every stream is kept this far
/// back (only as far as the loaded signatures need).
pub const MAX_EOF_OFFSET: u64 = 1 << 20;

/// The EICAR test file (eicar.org), detected without any signature file.
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// The name ClamAV's own test signature uses.
pub const EICAR_NAME: &str = "Eicar-Test-Signature";

/// Whether a body-signature target type is supported; `Ok(None)` for valid
/// types this scanner does not implement (PE, OLE2, HTML, graphics, ELF...),
/// which are skipped without a per-line error.
fn target(s: &str) -> Result<Option<Target>, String> {
    match s.parse::<u32>() {
        Ok(0) => Ok(Some(Target::Any)),
        Ok(4) => Ok(Some(Target::Mail)),
        Ok(7) => Ok(Some(Target::Text)),
        Ok(n) if n <= 14 => Ok(None),
        _ => Err(format!("target type {s:?}: expected 0 to 14")),
    }
}

fn number(s: &str, what: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?}: expected a decimal number"))
}

fn offset(s: &str) -> Result<Offset, String> {
    if s == "*" {
        return Ok(Offset::Any);
    }
    let (base, shift) = match s.split_once(',') {
        Some((b, sh)) => (b, number(sh, "offset shift")?),
        None => (s, 0),
    };
    if let Some(n) = base.strip_prefix("EOF-") {
        let n = number(n, "offset")?;
        if n > MAX_EOF_OFFSET {
            return Err(format!(
                "offset {s:?}: EOF-n is limited to {MAX_EOF_OFFSET}"
            ));
        }
        return Ok(Offset::End(n, shift));
    }
    if base.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(Offset::Start(number(base, "offset")?, shift));
    }
    Err(format!(
        "offset {s:?}: only *, n, n,m and EOF-n are supported"
    ))
}

fn nibble(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Parses the hex part of a body signature into tokens.
pub fn parse_hex(hex: &str) -> Result<Vec<Token>, String> {
    if hex.len() > MAX_HEX {
        return Err(format!("signature longer than {MAX_HEX} characters"));
    }
    let b = hex.as_bytes();
    let mut tokens: Vec<Token> = Vec::new();
    let mut fixed: Vec<(u8, u8)> = Vec::new();
    let flush = |fixed: &mut Vec<(u8, u8)>, tokens: &mut Vec<Token>| {
        if !fixed.is_empty() {
            tokens.push(Token::Fixed(std::mem::take(fixed)));
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' => {
                flush(&mut fixed, &mut tokens);
                tokens.push(Token::Gap { min: 0, max: None });
                i += 1;
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                let end = b[i..]
                    .iter()
                    .position(|&c| c == close)
                    .ok_or_else(|| format!("unclosed {} at {i}", open as char))?;
                let inner = &hex[i + 1..i + end];
                let (min, max) = match inner.split_once('-') {
                    None => {
                        let n = number(inner, "gap")?;
                        (n, Some(n))
                    }
                    Some(("", m)) => (0, Some(number(m, "gap")?)),
                    Some((n, "")) => (number(n, "gap")?, None),
                    Some((n, m)) => (number(n, "gap")?, Some(number(m, "gap")?)),
                };
                if max.is_some_and(|m| m < min) {
                    return Err(format!("gap {{{inner}}}: the maximum is below the minimum"));
                }
                if open == b'[' && max.is_none() {
                    return Err(format!("gap [{inner}]: needs a maximum"));
                }
                flush(&mut fixed, &mut tokens);
                tokens.push(Token::Gap { min, max });
                i += end + 1;
            }
            b'(' => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b')')
                    .ok_or_else(|| format!("unclosed ( at {i}"))?;
                let inner = &hex[i + 1..i + end];
                let mut alts = Vec::new();
                for alt in inner.split('|') {
                    let bytes = decode_plain_hex(alt)
                        .ok_or_else(|| format!("alternative {alt:?}: expected plain hex bytes"))?;
                    alts.push(bytes);
                }
                if alts.len() < 2 || alts.iter().any(Vec::is_empty) {
                    return Err(format!("alternative ({inner}): expected (aa|bb...)"));
                }
                flush(&mut fixed, &mut tokens);
                tokens.push(Token::Alt(alts));
                i += end + 1;
            }
            hi => {
                let lo = *b
                    .get(i + 1)
                    .ok_or_else(|| format!("odd number of hex digits at {i}"))?;
                let (hv, hm) = match hi {
                    b'?' => (0, 0),
                    c => (nibble(c).ok_or_else(|| bad_char(c, i))?, 0xf),
                };
                let (lv, lm) = match lo {
                    b'?' => (0, 0),
                    c => (nibble(c).ok_or_else(|| bad_char(c, i + 1))?, 0xf),
                };
                fixed.push(((hv << 4) | lv, (hm << 4) | lm));
                i += 2;
            }
        }
    }
    flush(&mut fixed, &mut tokens);
    let tokens = merge_gaps(tokens);
    if !matches!(tokens.first(), Some(Token::Fixed(_) | Token::Alt(_)))
        || !matches!(tokens.last(), Some(Token::Fixed(_) | Token::Alt(_)))
    {
        return Err("a signature must start and end with bytes, not a gap".into());
    }
    if let Some(span) = part_spans(&tokens).find(|&s| s > MAX_PART_SPAN) {
        return Err(format!(
            "a part between unbounded gaps spans up to {span} bytes: at most {MAX_PART_SPAN} (use * or {{n-}})"
        ));
    }
    Ok(tokens)
}

/// Adjacent gaps (`*{2}`, `{1-2}{3}`) as one, so that every gap lies
/// between bytes.
fn merge_gaps(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    for t in tokens {
        match (out.last_mut(), t) {
            (Some(Token::Gap { min, max }), Token::Gap { min: m2, max: x2 }) => {
                *min = min.saturating_add(m2);
                *max = match (*max, x2) {
                    (Some(a), Some(b)) => Some(a.saturating_add(b)),
                    _ => None,
                };
            }
            (_, t) => out.push(t),
        }
    }
    out
}

/// The most bytes each part of a signature can cover, parts being what lies
/// between unbounded gaps (`*`, `{n-}`). A stream is matched in windows
/// that overlap by the longest such span: a part always lies wholly inside
/// one window, and the parts are chained from window to window.
pub fn part_spans(tokens: &[Token]) -> impl Iterator<Item = u64> + '_ {
    tokens
        .split(|t| matches!(t, Token::Gap { max: None, .. }))
        .map(|part| {
            part.iter()
                .map(|t| match t {
                    Token::Fixed(b) => b.len() as u64,
                    Token::Alt(a) => a.iter().map(Vec::len).max().unwrap_or(0) as u64,
                    Token::Gap { max, .. } => max.unwrap_or(0),
                })
                .fold(0u64, u64::saturating_add)
        })
}

fn bad_char(c: u8, at: usize) -> String {
    format!("unexpected {:?} at {at}", c as char)
}

fn decode_plain_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

/// The search anchor: `MAX_ANCHOR` exact bytes (or the longest run, if
/// shorter) at a fixed distance from the start (before the first
/// variable-length token), and that distance. Among windows of that length
/// the one with the most distinct bytes, then the fewest 00 and FF bytes
/// (common in files), then the earliest, so that filler bytes do not make
/// the anchor hit everywhere.
fn anchor(tokens: &[Token]) -> Option<(Vec<u8>, usize)> {
    // (exact bytes, their distance) for every maximal exact run.
    let mut runs: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut at = 0usize;
    for t in tokens {
        match t {
            Token::Fixed(bytes) => {
                for (i, &(v, m)) in bytes.iter().enumerate() {
                    match runs.last_mut() {
                        Some((run, start)) if m == 0xff && *start + run.len() == at + i => {
                            run.push(v)
                        }
                        _ if m == 0xff => runs.push((vec![v], at + i)),
                        _ => {}
                    }
                }
                at += bytes.len();
            }
            Token::Alt(alts) if alts.iter().all(|a| a.len() == alts[0].len()) => {
                at += alts[0].len();
            }
            Token::Gap {
                min,
                max: Some(max),
            } if min == max => at += *min as usize,
            _ => break,
        }
    }
    let longest = runs.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let len = longest.min(MAX_ANCHOR);
    if len < MIN_ANCHOR {
        return None;
    }
    let score = |w: &[u8]| {
        let mut seen = [false; 256];
        let distinct = w
            .iter()
            .filter(|&&b| !std::mem::replace(&mut seen[b as usize], true))
            .count();
        let filler = w.iter().filter(|&&b| b == 0 || b == 0xff).count();
        (distinct, std::cmp::Reverse(filler))
    };
    let mut best: Option<(&[u8], usize)> = None;
    for (run, start) in &runs {
        for (k, w) in run.windows(len).enumerate() {
            if best.is_none_or(|(b, _)| score(w) > score(b)) {
                best = Some((w, start + k));
            }
        }
    }
    best.map(|(w, at)| (w.to_vec(), at))
}

/// Parses one `.ndb` line. `Ok(None)`: valid, but for a target type this
/// scanner does not implement.
pub fn parse_ndb(line: &str) -> Result<Option<BodySignature>, String> {
    let fields: Vec<&str> = line.split(':').collect();
    if !(4..=6).contains(&fields.len()) {
        return Err(format!(
            "expected Name:Target:Offset:HexSignature[:MinFL[:MaxFL]], found {} fields",
            fields.len()
        ));
    }
    let name = fields[0];
    if name.is_empty() {
        return Err("empty signature name".into());
    }
    let Some(target) = target(fields[1])? else {
        return Ok(None);
    };
    let offset = offset(fields[2])?;
    let tokens = parse_hex(fields[3])?;
    let (anchor, anchor_at) = anchor(&tokens).ok_or_else(|| {
        format!("no run of {MIN_ANCHOR} exact bytes before the first variable-length gap")
    })?;
    Ok(Some(BodySignature {
        name: name.to_string(),
        target,
        offset,
        tokens,
        anchor,
        anchor_at,
    }))
}

/// Parses one `.hdb`/`.hsb`/`.fp`/`.sfp` line.
pub fn parse_hash(line: &str) -> Result<HashSignature, String> {
    let fields: Vec<&str> = line.split(':').collect();
    if !(3..=5).contains(&fields.len()) {
        return Err(format!(
            "expected Hash:Size:Name[:MinFL], found {} fields",
            fields.len()
        ));
    }
    let hash = decode_plain_hex(fields[0])
        .ok_or_else(|| format!("hash {:?}: expected hex digits", fields[0]))?;
    let kind = match hash.len() {
        16 => HashKind::Md5,
        20 => HashKind::Sha1,
        32 => HashKind::Sha256,
        n => {
            return Err(format!(
                "hash of {n} bytes: expected MD5 (32 hex digits), SHA-1 (40) or SHA-256 (64)"
            ));
        }
    };
    let size = match fields[1] {
        "*" => None,
        s => Some(number(s, "size")?),
    };
    if fields[2].is_empty() {
        return Err("empty signature name".into());
    }
    Ok(HashSignature {
        kind,
        hash,
        size,
        name: fields[2].to_string(),
    })
}

/// The built-in EICAR signature.
pub fn eicar() -> BodySignature {
    BodySignature {
        name: EICAR_NAME.into(),
        target: Target::Any,
        offset: Offset::Any,
        tokens: vec![Token::Fixed(EICAR.iter().map(|&b| (b, 0xff)).collect())],
        anchor: EICAR.to_vec(),
        anchor_at: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        let t = parse_hex("4142??4??3(4445|46)*47{2}48{-3}49{4-}4a{1-2}4b[1-2]4c").unwrap();
        assert_eq!(
            t,
            vec![
                Token::Fixed(vec![
                    (0x41, 0xff),
                    (0x42, 0xff),
                    (0, 0),
                    (0x40, 0xf0),
                    (0x03, 0x0f)
                ]),
                Token::Alt(vec![vec![0x44, 0x45], vec![0x46]]),
                Token::Gap { min: 0, max: None },
                Token::Fixed(vec![(0x47, 0xff)]),
                Token::Gap {
                    min: 2,
                    max: Some(2)
                },
                Token::Fixed(vec![(0x48, 0xff)]),
                Token::Gap {
                    min: 0,
                    max: Some(3)
                },
                Token::Fixed(vec![(0x49, 0xff)]),
                Token::Gap { min: 4, max: None },
                Token::Fixed(vec![(0x4a, 0xff)]),
                Token::Gap {
                    min: 1,
                    max: Some(2)
                },
                Token::Fixed(vec![(0x4b, 0xff)]),
                Token::Gap {
                    min: 1,
                    max: Some(2)
                },
                Token::Fixed(vec![(0x4c, 0xff)]),
            ]
        );
    }

    #[test]
    fn bad_hex_is_an_error_not_a_panic() {
        for bad in [
            "",
            "4",
            "4g",
            "*41",
            "41*",
            "41{",
            "41{x}4142",
            "41{3-1}42",
            "41(42|)43",
            "41(4|43)44",
            "41(",
            "41[3-]42",
            "é",
        ] {
            assert!(parse_hex(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn anchors_are_exact_runs_at_a_fixed_distance() {
        let s = parse_ndb("A:0:*:41??424344{2}45464748494a*4b4c")
            .unwrap()
            .unwrap();
        // 45..48 follows a fixed gap of 2: distance 1+1+3+2 = 7.
        assert_eq!(s.anchor, b"EFGH");
        assert_eq!(s.anchor_at, 7);
        // Filler bytes are avoided, and repeated ones.
        let s = parse_ndb("A:0:*:000000004142434400").unwrap().unwrap();
        assert_eq!((s.anchor.as_slice(), s.anchor_at), (&b"ABCD"[..], 4));
        let s = parse_ndb("A:0:*:41414141??4142").unwrap().unwrap();
        assert_eq!((s.anchor.as_slice(), s.anchor_at), (&b"AAAA"[..], 0));
        let s = parse_ndb("A:0:*:4141414142??43").unwrap().unwrap();
        assert_eq!((s.anchor.as_slice(), s.anchor_at), (&b"AAAB"[..], 1));
        let s = parse_ndb("A:0:*:4142*434445464748").unwrap().unwrap();
        assert_eq!((s.anchor.as_slice(), s.anchor_at), (&b"AB"[..], 0));
        assert!(parse_ndb("A:0:*:41*4243").is_err(), "1-byte anchor");
        assert!(
            parse_ndb("A:0:*:(41|4243)4445").is_err(),
            "behind a variable alternative"
        );
    }

    #[test]
    fn ndb_fields() {
        let s = parse_ndb("Test.A:4:EOF-10,2:41424344:51:255")
            .unwrap()
            .unwrap();
        assert_eq!(s.target, Target::Mail);
        assert_eq!(s.offset, Offset::End(10, 2));
        assert_eq!(
            parse_ndb("X:1:*:41424344"),
            Ok(None),
            "PE targets are skipped"
        );
        assert!(parse_ndb("X:99:*:41424344").is_err());
        assert!(parse_ndb("X:0:EP+10:41424344").is_err());
        assert!(parse_ndb("X:0:*").is_err());
        assert!(parse_ndb(":0:*:4142").is_err());
        assert_eq!(
            parse_ndb("X:0:100,20:4142").unwrap().unwrap().offset,
            Offset::Start(100, 20)
        );
    }

    #[test]
    fn hash_lines() {
        let h = parse_hash("44d88612fea8a8f36de82e1278abb02f:68:Eicar-Hash").unwrap();
        assert_eq!((h.kind, h.size), (HashKind::Md5, Some(68)));
        let h = parse_hash(&format!("{}:*:Any:73", "ab".repeat(32))).unwrap();
        assert_eq!((h.kind, h.size), (HashKind::Sha256, None));
        assert_eq!(
            parse_hash(&format!("{}:1:S", "ab".repeat(20)))
                .unwrap()
                .kind,
            HashKind::Sha1
        );
        for bad in [
            "abc:1:x",
            "ab:1:x",
            "44d88612fea8a8f36de82e1278abb02f:x:y",
            "44d88612fea8a8f36de82e1278abb02f:1:",
        ] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(line in "\\PC{0,80}") {
            let _ = parse_ndb(&line);
            let _ = parse_hash(&line);
        }

        /// Signatures built from the grammar's pieces parse, and matching
        /// them against any bytes neither panics nor runs away.
        #[test]
        fn grammar_signatures_match_safely(
            hex in "4142(43|\\?\\?|4\\?|\\*|\\{[0-3]\\}|\\{-[0-3]\\}|\\{[0-3]-\\}|\\{1-3\\}|\\(44\\|4546\\)){0,6}47",
            data in proptest::collection::vec(0x40u8..0x48, 0..200),
        ) {
            let sig = parse_ndb(&format!("P:0:*:{hex}")).unwrap().unwrap();
            let m = super::super::matcher::BodyMatcher::new(vec![sig]).unwrap();
            let _ = m.find(&data, 0, data.len() as u64, super::super::matcher::ObjectKind::Other, &|_| false);
        }
    }
}
