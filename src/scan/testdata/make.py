#!/usr/bin/env python3
"""Regenerates the test messages here (python3 make.py). Each NAME.eml has
its expected clamscan-style verdict in expected.txt."""
import base64, binascii, io, quopri, zipfile

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
HEAD = "From: a@example.org\r\nTo: b@example.test\r\nSubject: {s}\r\nMIME-Version: 1.0\r\n"
expected = []

def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

def b64(data):
    e = base64.encodebytes(data)
    return crlf(e).decode()

def multipart(subject, body_parts):
    m = HEAD.format(s=subject) + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n'
    for p in body_parts:
        m += "--b1\r\n" + p
    return m + "--b1--\r\n"

def attachment(name, data, ctype="application/octet-stream"):
    return (f'Content-Type: {ctype}; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n\r\n{b64(data)}')

TEXT = "Content-Type: text/plain\r\n\r\nSee the attachment.\r\n"

def zipped(files, method=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for n, d in files:
            z.writestr(n, d)
    return buf.getvalue()

def write(name, text, verdict):
    with open(name, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)
    expected.append(f"{name}: {verdict}")

FOUND = "Eicar-Test-Signature FOUND"
write("clean-text.eml", HEAD.format(s="hello") + "\r\nJust text.\r\n", "OK")
write("eicar-base64.eml", multipart("b64", [TEXT, attachment("eicar.com", EICAR)]), FOUND)
qp = crlf(quopri.encodestring(b"Look: " + EICAR + b" " * 20 + b"end", quotetabs=False))
# Split the signature with a soft line break, as long lines get.
qp = qp.replace(b"EICAR-STANDARD", b"EICAR-STAN=\r\nDARD")
write("eicar-qp.eml", multipart("qp", ["Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp.decode() + "\r\n"]), FOUND)
inner = multipart("inner", [TEXT, attachment("eicar.com", EICAR)])
write("eicar-nested-message.eml", multipart("nested", [TEXT, "Content-Type: message/rfc822\r\n\r\n" + inner]), FOUND)
write("eicar-zip-deflated.eml", multipart("zip", [TEXT, attachment("e.zip", zipped([("readme.txt", b"hi"), ("eicar.com", EICAR)]), "application/zip")]), FOUND)
write("eicar-zip-stored.eml", multipart("zip", [TEXT, attachment("e.zip", zipped([("eicar.com", EICAR)], zipfile.ZIP_STORED), "application/zip")]), FOUND)
write("eicar-zip-in-zip.eml", multipart("zip", [TEXT, attachment("e.zip", zipped([("inner.zip", zipped([("eicar.com", EICAR)]))]), "application/zip")]), FOUND)
uu = binascii.b2a_uu(EICAR[:45]) + binascii.b2a_uu(EICAR[45:])
write("eicar-uuencode.eml", HEAD.format(s="uu") + "\r\nHere:\r\n\r\nbegin 644 eicar.com\r\n" + crlf(uu).decode() + "`\r\nend\r\n", FOUND)
write("clean-zip.eml", multipart("zip", [TEXT, attachment("c.zip", zipped([("a.txt", b"nothing here " * 1000)]))]), "OK")
# 40 MiB of zeros, deflated to ~40 KiB: past max_object_size (32 MiB).
write("zip-bomb.eml", multipart("bomb", [TEXT, attachment("bomb.zip", zipped([("zeros.bin", b"\0" * (40 << 20))]))]), "Heuristics.Limits.Exceeded.MaxFileSize FOUND")
write("eicar-plain-body.eml", HEAD.format(s="plain") + "\r\n" + EICAR.decode() + "\r\n", FOUND)
with open("expected.txt", "w") as f:
    f.write("\n".join(expected) + "\n")
