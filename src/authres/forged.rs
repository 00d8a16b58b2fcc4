//! Incoming `Authentication-Results:` fields that claim our authserv-id
//! (RFC 8601 5): renamed in place to `X-Original-AuthResults:`, a name of
//! the same length, so every offset of the received message (its MIME
//! structure, its chunking) stays valid and nothing has to be copied.

use crate::store::content::Content;

const FIELD: &[u8] = b"Authentication-Results";
/// Same length as [`FIELD`].
const RENAMED: &[u8] = b"X-Original-AuthResults";

/// Offsets of the field names to rename in a header section.
pub fn find(header: &[u8], authserv_id: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < header.len() {
        let line_end = header[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |i| pos + i + 1);
        let line = &header[pos..line_end];
        if line.len() > FIELD.len() && line[..FIELD.len()].eq_ignore_ascii_case(FIELD) {
            let rest = &line[FIELD.len()..];
            let colon = rest.iter().position(|&b| b == b':');
            if let Some(c) = colon
                && rest[..c].iter().all(|b| *b == b' ' || *b == b'\t')
            {
                // The value with its continuation lines, unfolded.
                let mut value = rest[c + 1..].to_vec();
                let mut next = line_end;
                while next < header.len() && (header[next] == b' ' || header[next] == b'\t') {
                    let e = header[next..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(header.len(), |i| next + i + 1);
                    value.extend_from_slice(&header[next..e]);
                    next = e;
                }
                if authserv_id_of(&value).eq_ignore_ascii_case(authserv_id) {
                    out.push(pos);
                }
            }
        }
        pos = line_end;
    }
    out
}

/// The authserv-id: the first token of the value, after comments.
fn authserv_id_of(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut depth = 0;
    let mut id = String::new();
    for ch in text.chars() {
        match ch {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            ';' => break,
            c if c.is_whitespace() => {
                if !id.is_empty() {
                    break;
                }
            }
            c => id.push(c),
        }
    }
    id
}

/// Renames the forged fields of a received message in place. Returns how
/// many were renamed.
pub fn rename(content: &mut Content, header_len: u64, authserv_id: &str) -> usize {
    const MAX_HEADER: u64 = 256 * 1024;
    let len = header_len.min(MAX_HEADER) as usize;
    let mut header = Vec::with_capacity(len);
    let _ = content.for_each_chunk(|_, c| {
        let take = (len - header.len()).min(c.len());
        header.extend_from_slice(&c[..take]);
        Ok(())
    });
    let found = find(&header, authserv_id);
    for &offset in &found {
        content.patch(offset as u64, RENAMED);
    }
    found.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_our_authserv_id() {
        let h = b"Received: x\r\nAuthentication-Results: mail.example.org; spf=pass\r\nauthentication-results : (comment) MAIL.example.org;\r\n\tdkim=pass\r\nAuthentication-Results: other.example; spf=fail\r\nX-Authentication-Results: mail.example.org\r\n\r\n";
        let found = find(h, "mail.example.org");
        assert_eq!(found.len(), 2);
        assert_eq!(&h[found[0]..found[0] + 22], b"Authentication-Results");
        assert_eq!(RENAMED.len(), FIELD.len());
    }

    #[test]
    fn renames_in_memory_and_in_the_file() {
        let msg =
            b"Authentication-Results: mail.example.org; dkim=pass\r\nSubject: x\r\n\r\nbody\r\n"
                .to_vec();
        let mut c = Content::from_chunks(vec![msg.clone()]);
        assert_eq!(rename(&mut c, 70, "mail.example.org"), 1);
        let out = c.to_vec();
        assert!(out.starts_with(b"X-Original-AuthResults: mail.example.org; dkim=pass\r\n"));
        assert_eq!(out.len(), msg.len());
    }
}
