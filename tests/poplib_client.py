"""Python's poplib against pimail. Usage: PORT TLS_PORT CERTFILE.
Expects alice@example.test (password "secret") with three messages, the
second containing lines that begin with '.'."""
import poplib
import ssl
import sys

port, tls_port, cert = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
user, password = "alice@example.test", "secret"

# Plain (loopback, allowed by the dev config), USER/PASS.
p = poplib.POP3("127.0.0.1", port)
caps = p.capa()
for c in ["TOP", "UIDL", "USER", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE", "LOGIN-DELAY", "STLS"]:
    assert c in caps, (c, caps)
assert caps["SASL"] == ["PLAIN", "LOGIN"], caps
p.user(user)
p.pass_(password)
count, size = p.stat()
assert count == 3, count
resp, listing, _ = p.list()
sizes = {int(l.split()[0]): int(l.split()[1]) for l in listing}
assert sum(sizes.values()) == size, (sizes, size)
resp, uidls, _ = p.uidl()
uids = [l.split()[1] for l in uidls]
assert len(set(uids)) == 3, uids
# RETR: poplib un-stuffs; the octet count matches LIST.
for n in (1, 2, 3):
    resp, lines, octets = p.retr(n)
    body = b"\r\n".join(lines) + b"\r\n"
    assert len(body) == sizes[n], (n, len(body), sizes[n], octets)
resp, lines, _ = p.retr(2)
assert b".leading dot" in lines and b"." in lines and b"..two" in lines, lines
# TOP 0: the header only; TOP 2: header, blank line, two lines.
resp, lines, _ = p.top(2, 0)
assert lines[-1] == b"" and not any(l.startswith(b"body") for l in lines), lines
resp, lines, _ = p.top(2, 2)
blank = lines.index(b"")
assert len(lines) - blank - 1 == 2, lines
# DELE then RSET undoes it; DELE twice is an error.
p.dele(1)
try:
    p.dele(1)
    raise SystemExit("DELE twice accepted")
except poplib.error_proto as e:
    assert b"-ERR" in e.args[0]
assert p.stat()[0] == 2
p.rset()
assert p.stat()[0] == 3
try:
    p.retr(9)
    raise SystemExit("RETR 9 accepted")
except poplib.error_proto:
    pass
# A second session of the same user is refused while this one is open.
q = poplib.POP3("127.0.0.1", port)
q.user(user)
try:
    q.pass_(password)
    raise SystemExit("second login accepted")
except poplib.error_proto as e:
    assert b"[IN-USE]" in e.args[0], e
q.quit()
p.dele(3)
p.quit()  # UPDATE: message 3 goes

# POP3S with certificate verification, AUTH PLAIN; UIDLs are stable.
# The chain is verified against our certificate; the name is that of the
# host (mail.example.test), not the loopback address we connect to.
ctx = ssl.create_default_context(cafile=cert)
ctx.check_hostname = False
s = poplib.POP3_SSL("127.0.0.1", tls_port, context=ctx)
import base64
resp = s._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode())
assert resp.startswith(b"+OK"), resp
assert s.stat()[0] == 2
resp, uidls2, _ = s.uidl()
assert [l.split()[1] for l in uidls2] == uids[:2], (uidls2, uids)
s.quit()

# STLS on the plain port, then a bad password: [AUTH], after a delay.
t = poplib.POP3("127.0.0.1", port)
t.stls(context=ctx, )
t.user(user)
try:
    t.pass_("wrong")
    raise SystemExit("wrong password accepted")
except poplib.error_proto as e:
    assert b"[AUTH]" in e.args[0], e
t.quit()
print("ok")
