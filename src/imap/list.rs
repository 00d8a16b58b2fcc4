//! LIST pattern matching (RFC 9051 6.3.9): `*` matches anything, `%`
//! anything but the hierarchy delimiter.

/// Patterns longer than this never match: bounds the matcher's work.
pub const MAX_PATTERN: usize = 1024;

/// Whether `name` matches `pattern` (delimiter `delim`). Dynamic
/// programming over (pattern, name) positions: no exponential backtracking.
pub fn matches(pattern: &str, name: &str, delim: char) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    if p.len() > MAX_PATTERN {
        return false;
    }
    // row[j]: pattern prefix matches name prefix of length j.
    let mut row = vec![false; n.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            '*' | '%' => {
                for j in 0..=n.len() {
                    next[j] = row[j] || (j > 0 && next[j - 1] && (pc == '*' || n[j - 1] != delim));
                }
            }
            c => {
                for j in 1..=n.len() {
                    next[j] = row[j - 1] && n[j - 1] == c;
                }
            }
        }
        row = next;
    }
    row[n.len()]
}

/// Joins a LIST reference and pattern (RFC 9051 6.3.9: the reference is a
/// prefix, with the delimiter between them when needed).
pub fn join(reference: &str, pattern: &str, delim: char) -> String {
    if reference.is_empty() || pattern.starts_with(delim) {
        return pattern.to_string();
    }
    if reference.ends_with(delim) {
        format!("{reference}{pattern}")
    } else {
        format!("{reference}{delim}{pattern}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*", "a/b/c", '/'));
        assert!(matches("%", "INBOX", '/'));
        assert!(!matches("%", "a/b", '/'));
        assert!(matches("a/%", "a/b", '/'));
        assert!(!matches("a/%", "a/b/c", '/'));
        assert!(matches("a*c", "a/b/c", '/'));
        assert!(!matches("a%c", "a/b/c", '/'));
        assert!(matches("INBOX", "INBOX", '/'));
        assert!(!matches("INBOX", "INBOXES", '/'));
        let long = "*a".repeat(400);
        assert!(!matches(&long, &"b".repeat(200), '/'));
    }
}
