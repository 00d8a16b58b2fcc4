"""Regenerates the dkimpy-signed cases of tests/data/auth (run from this
directory). The messages are committed; this is kept to say how they were
made: dkimpy (PyPI) as the independent signer."""
import base64
import dkim

RSA = open("keys/rsa2048.pem", "rb").read()
# RFC 8463 A.2's Ed25519 seed.
ED = b"nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="

def msg(frm, subject, body):
    return (
        f"From: {frm}\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
        f"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@x>\r\n"
        f"\r\n{body}"
    ).encode()

def sign(m, sel, dom, key, canon, alg=b"rsa-sha256", length=False):
    sig = dkim.sign(m, sel, dom, key, canonicalize=canon, signature_algorithm=alg,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
                    length=length)
    return sig + m

def write(case, data):
    open(f"{case}/message.msg", "wb").write(data)

# Simple/simple RSA with l=, then text appended after signing (l= covers it).
m = sign(msg("Carol <carol@example.com>", "simple rsa", "Hello  there,\r\n\r\nCarol.\r\n\r\n"),
         b"rsa1", b"example.com", RSA, (b"simple", b"simple"), length=True)
write("dkimpy-rsa-simple-l", m + b"Appended by a list.\r\n")
# Relaxed ed25519, signed by a subdomain (relaxed DMARC alignment).
m = sign(msg("news@shop.example", "relaxed ed", "Sale  \t today\r\n"),
         b"ed1", b"mail.shop.example", ED, (b"relaxed", b"relaxed"), alg=b"ed25519-sha256")
write("dkimpy-ed25519-relaxed", m)
# Body changed after signing: body hash fails; DMARC quarantine.
m = sign(msg("dave@bank.example", "tampered", "Pay 10 EUR.\r\n"),
         b"rsa1", b"bank.example", RSA, (b"relaxed", b"relaxed"))
write("tampered-body", m.replace(b"Pay 10 EUR.", b"Pay 1000 EUR."))
# Revoked key (p= empty).
m = sign(msg("erin@revoked.example", "revoked", "Hi.\r\n"),
         b"old", b"revoked.example", RSA, (b"relaxed", b"simple"))
write("revoked-key", m)
