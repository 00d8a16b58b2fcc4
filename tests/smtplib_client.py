"""Python's smtplib against pimail: plain, STARTTLS (verifying the
certificate), and SMTPUTF8 with 8-bit content. Usage: PORT CERTFILE."""
import smtplib
import ssl
import sys
from email.message import EmailMessage

port, cert = int(sys.argv[1]), sys.argv[2]
to = "alice@example.test"

with smtplib.SMTP("127.0.0.1", port) as s:
    s.ehlo("py.example")
    assert s.has_extn("pipelining") and s.has_extn("chunking"), s.esmtp_features
    refused = s.sendmail("py@other.example", [to], b"Subject: plain\r\n\r\nplain body\r\n")
    assert refused == {}, refused
    try:
        s.sendmail("py@other.example", ["nobody@example.test"], b"x")
        raise SystemExit("unknown recipient accepted")
    except smtplib.SMTPRecipientsRefused as e:
        assert e.recipients["nobody@example.test"][0] == 550, e.recipients

ctx = ssl.create_default_context(cafile=cert)
with smtplib.SMTP("127.0.0.1", port) as s:
    s._host = "mail.example.test"  # verify the certificate against its name
    s.starttls(context=ctx)
    s.ehlo("py.example")
    assert not s.has_extn("starttls")
    s.sendmail("py@other.example", [to], b"Subject: tls\r\n\r\nover tls\r\n")

m = EmailMessage()
m["From"] = "jörg@other.example"
m["To"] = to
m["Subject"] = "utf8"
m.set_content("Grüße aus Köln\n", cte="8bit")
with smtplib.SMTP("127.0.0.1", port) as s:
    s.send_message(m, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
print("ok")
