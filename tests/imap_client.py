#!/usr/bin/env python3
"""imaplib against pimail: argv = IMAP port, IMAPS port, CA certificate.

One message (a multipart with a base64 attachment) is in alice's INBOX
when this starts. Exits non-zero on the first failed check.
"""
import imaplib
import ssl
import sys

port, imaps_port, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
USER, PASSWORD = "alice@example.test", "secret"


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


m = imaplib.IMAP4("127.0.0.1", port)
check("IMAP4REV1" in m.capabilities, m.capabilities)
typ, _ = m.login(USER, PASSWORD)
check(typ == "OK", "login")
typ, data = m.select("INBOX")
check(typ == "OK" and data == [b"1"], ("select", data))
typ, data = m.fetch("1", "(RFC822)")
check(typ == "OK" and isinstance(data[0], tuple) and b"hello body" in data[0][1], ("fetch rfc822", data))
typ, data = m.uid("FETCH", "1", "(BODY.PEEK[2])")
check(isinstance(data[0], tuple) and data[0][1].strip() == b"aGVsbG8gYmluYXJ5", ("body[2]", data))
typ, data = m.search(None, "SUBJECT", "multi")
check(data == [b"1"], ("search", data))
typ, data = m.store("1", "+FLAGS", "(\\Flagged)")
check(typ == "OK" and b"\\Flagged" in data[0], ("store", data))
msg = b"From: me@example.test\r\nSubject: from imaplib\r\n\r\nappended\r\n"
typ, data = m.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(1700000000), msg)
check(typ == "OK" and b"APPENDUID" in data[0], ("append", data))
typ, data = m.status("Sent", "(MESSAGES UNSEEN)")
check(b"MESSAGES 1 UNSEEN 0" in data[0], ("status", data))
typ, data = m.copy("1", "Archive")
check(typ == "OK", ("copy", data))
typ, data = m.list()
check(any(b"Archive" in d for d in data), ("list", data))
m.create("imaplib/sub")
typ, data = m.list('""', "imaplib/*")
check(len(data) == 1 and b"imaplib/sub" in data[0], ("create", data))
m.delete("imaplib/sub")
typ, data = m.getquotaroot("INBOX")
check(typ == "OK", ("quota", data))
m.store("1", "+FLAGS", "(\\Deleted)")
typ, data = m.expunge()
check(data == [b"1"], ("expunge", data))
m.close()
m.logout()

ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
s = imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=ctx)
s.login(USER, PASSWORD)
typ, data = s.select("Archive", readonly=True)
check(data == [b"1"], ("imaps select", data))
s.logout()

t = imaplib.IMAP4("127.0.0.1", port)
t.starttls(ssl_context=ctx)
t.login(USER, PASSWORD)
t.logout()
print("imaplib: all checks passed")
