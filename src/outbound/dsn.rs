//! Delivery status notifications (RFC 3464, multipart/report of RFC 6522)
//! for recipients that failed for good.

/// One failed recipient.
pub struct FailedRecipient<'a> {
    pub rcpt: &'a str,
    /// Enhanced status code (RFC 3463), e.g. "5.1.1".
    pub status: String,
    pub diagnostic: &'a str,
    pub remote_mta: Option<&'a str>,
}

/// Finds an enhanced status code in a peer's reply text (after our
/// "host said after X: 550 " prefix), or derives one from the class.
pub fn status_of(text: &str, permanent: bool) -> String {
    for word in text.split_whitespace() {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() == 3
            && (parts[0] == "4" || parts[0] == "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return word.to_string();
        }
    }
    if permanent {
        "5.0.0".into()
    } else {
        "4.0.0".into()
    }
}

/// Builds the bounce message to `to` about a message whose header section
/// is `original_header`.
pub fn bounce(
    hostname: &str,
    to: &str,
    failed: &[FailedRecipient<'_>],
    original_header: &[u8],
    arrival: i64,
    now: i64,
    id: &str,
) -> Vec<u8> {
    let date = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .format("%a, %d %b %Y %H:%M:%S +0000")
            .to_string()
    };
    let boundary = format!("pimail-dsn-{id}");
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
    ));
    m.push_str(&format!("To: <{to}>\r\n"));
    m.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    m.push_str(&format!("Date: {}\r\n", date(now)));
    m.push_str(&format!("Message-ID: <dsn-{id}@{hostname}>\r\n"));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    m.push_str(&format!("This is the mail system at {hostname}.\r\n\r\nYour message could not be delivered to one or more recipients:\r\n\r\n"));
    for f in failed {
        m.push_str(&format!("<{}>: {}\r\n", f.rcpt, f.diagnostic));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!(
        "Reporting-MTA: dns; {hostname}\r\nArrival-Date: {}\r\n",
        date(arrival)
    ));
    for f in failed {
        m.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n",
            f.rcpt, f.status
        ));
        if let Some(mta) = f.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
        }
        let diag: String = f
            .diagnostic
            .chars()
            .filter(|c| !c.is_control())
            .take(900)
            .collect();
        m.push_str(&format!(
            "Diagnostic-Code: smtp; {diag}\r\nLast-Attempt-Date: {}\r\n",
            date(now)
        ));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ));
    let mut out = m.into_bytes();
    out.extend_from_slice(original_header);
    if !original_header.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(
            status_of(
                "mx.example said after RCPT TO: 550 5.1.1 no such user",
                true
            ),
            "5.1.1"
        );
        assert_eq!(status_of("said: 550 no such user", true), "5.0.0");
        assert_eq!(status_of("timeout", false), "4.0.0");
    }

    #[test]
    fn report_structure() {
        let failed = [FailedRecipient {
            rcpt: "bob@remote.example",
            status: "5.1.1".into(),
            diagnostic: "mx.remote.example said after RCPT TO: 550 5.1.1 unknown",
            remote_mta: Some("mx.remote.example"),
        }];
        let m = bounce(
            "mail.example.org",
            "alice@example.org",
            &failed,
            b"From: alice@example.org\r\nSubject: hi\r\n",
            0,
            60,
            "x1",
        );
        let text = String::from_utf8(m.clone()).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains(
            "Final-Recipient: rfc822; bob@remote.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(text.contains(
            "Content-Type: text/rfc822-headers\r\n\r\nFrom: alice@example.org\r\nSubject: hi\r\n"
        ));
        assert!(text.ends_with("--pimail-dsn-x1--\r\n"));
        // The structure scanner sees the three parts.
        let mut s = crate::message::StructureScanner::new(Default::default());
        s.feed(&m);
        let meta = s.finish();
        assert_eq!(meta.root.children.len(), 3);
        assert_eq!(meta.root.children[1].subtype, "delivery-status");
    }
}
