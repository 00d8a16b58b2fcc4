//! IMAP rendering of ENVELOPE and BODY / BODYSTRUCTURE
//! (RFC 3501 section 7.4.2, RFC 9051 section 7.5.2).

use super::{Address, Envelope, Part};

/// Writes an IMAP string: a quoted string when possible, else a literal.
/// Quoted strings cannot hold CR, LF or NUL, and IMAP4rev1 quoted strings are
/// 7-bit only (RFC 3501 section 4.3), so those values become literals; like
/// Dovecot, '"' and '\\' also go as literals so no quoted-specials escaping
/// is ever needed.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    let literal = |b: &u8| matches!(*b, 0 | b'\r' | b'\n' | b'"' | b'\\') || *b >= 0x80;
    if s.iter().any(literal) {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
        return;
    }
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

fn address_list(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        nstring(out, a.name.as_deref());
        out.push(b' ');
        nstring(out, a.adl.as_deref());
        out.push(b' ');
        nstring(out, a.mailbox.as_deref());
        out.push(b' ');
        nstring(out, a.host.as_deref());
        out.push(b')');
    }
    out.push(b')');
}

/// `(date subject from sender reply-to to cc bcc in-reply-to message-id)`.
pub fn render_envelope(env: &Envelope, out: &mut Vec<u8>) {
    out.push(b'(');
    nstring(out, env.date.as_deref());
    out.push(b' ');
    nstring(out, env.subject.as_deref());
    for list in [
        &env.from,
        &env.sender,
        &env.reply_to,
        &env.to,
        &env.cc,
        &env.bcc,
    ] {
        out.push(b' ');
        address_list(out, list);
    }
    out.push(b' ');
    nstring(out, env.in_reply_to.as_deref());
    out.push(b' ');
    nstring(out, env.message_id.as_deref());
    out.push(b')');
}

fn params(out: &mut Vec<u8>, ps: &[(String, String)]) {
    if ps.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in ps.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.as_bytes());
        out.push(b' ');
        string(out, v.as_bytes());
    }
    out.push(b')');
}

/// body-fld-dsp SP body-fld-lang SP body-fld-loc (shared by both body kinds).
fn dsp_lang_loc(out: &mut Vec<u8>, p: &Part) {
    out.push(b' ');
    match &p.disposition {
        Some((ty, ps)) => {
            out.push(b'(');
            string(out, ty.as_bytes());
            out.push(b' ');
            params(out, ps);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    // body-fld-lang may be a string or a list; always a list, as Dovecot does.
    match p.language.as_deref() {
        Some(list) if !list.is_empty() => {
            out.push(b'(');
            for (i, l) in list.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, l.as_bytes());
            }
            out.push(b')');
        }
        _ => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstring(out, p.location.as_deref().map(str::as_bytes));
}

/// Writes BODYSTRUCTURE (`extensible`) or BODY for `part`.
pub fn render_bodystructure(part: &Part, extensible: bool, out: &mut Vec<u8>) {
    out.push(b'(');
    if part.is_multipart() {
        // RFC 3501 body-type-mpart is `1*body SP media-subtype`; a multipart
        // without parts gets an empty text/plain child, as Dovecot does.
        if part.children.is_empty() {
            let mut empty = Part::new(part.body_start);
            empty.params.push(("charset".into(), "us-ascii".into()));
            render_bodystructure(&empty, extensible, out);
        }
        for c in &part.children {
            render_bodystructure(c, extensible, out);
        }
        out.push(b' ');
        string(out, part.subtype.as_bytes());
        if extensible {
            out.push(b' ');
            params(out, &part.params);
            dsp_lang_loc(out, part);
        }
    } else {
        string(out, part.content_type.as_bytes());
        out.push(b' ');
        string(out, part.subtype.as_bytes());
        out.push(b' ');
        params(out, &part.params);
        out.push(b' ');
        nstring(out, part.id.as_deref().map(str::as_bytes));
        out.push(b' ');
        nstring(out, part.description.as_deref().map(str::as_bytes));
        out.push(b' ');
        string(out, part.encoding.as_bytes());
        out.extend_from_slice(format!(" {}", part.body_size()).as_bytes());
        if part.is_message() {
            // body-type-msg: envelope, body of the embedded message, lines.
            out.push(b' ');
            render_envelope(part.envelope.as_ref().unwrap_or(&Envelope::default()), out);
            out.push(b' ');
            match part.children.first() {
                Some(inner) => render_bodystructure(inner, extensible, out),
                None => {
                    let mut empty = Part::new(part.body_start);
                    empty.params.push(("charset".into(), "us-ascii".into()));
                    render_bodystructure(&empty, extensible, out);
                }
            }
        }
        if part.is_message() || part.content_type == "text" {
            out.extend_from_slice(format!(" {}", part.lines).as_bytes());
        }
        if extensible {
            out.push(b' ');
            nstring(out, part.md5.as_deref().map(str::as_bytes));
            dsp_lang_loc(out, part);
        }
    }
    out.push(b')');
}
