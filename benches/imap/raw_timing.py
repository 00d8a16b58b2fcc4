"""Server-side IMAP timings with a raw socket client (no imaplib parsing,
which dominates bench.py's wall times for 10,000-line responses).

usage: python3 benches/imap/raw_timing.py PIMAIL_PORT DOVECOT_PORT
Both servers must already hold the benchmark mailbox (run.sh loads it):
pimail user bench@bench.test, Dovecot user bench, password benchpass.
Prints the median of 5 runs per command; SELECT is timed once per login.
"""
import socket
import statistics
import sys
import time


def run(port, user, password, command):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(f"a LOGIN {user} {password}\r\n".encode())
    while not f.readline().startswith(b"a "):
        pass
    times = {}
    for tag, c in [("s", "SELECT INBOX")] + [(f"c{i}", command) for i in range(5)]:
        t = time.perf_counter()
        s.sendall(f"{tag} {c}\r\n".encode())
        while not f.readline().startswith(tag.encode() + b" "):
            pass
        times.setdefault(c, []).append((time.perf_counter() - t) * 1000)
    s.close()
    return {k: statistics.median(v) for k, v in times.items()}


pimail_port, dovecot_port = int(sys.argv[1]), int(sys.argv[2])
print("| command | pimail ms | Dovecot ms |")
print("|---|---:|---:|")
for cmd in ["UID FETCH 1:* (FLAGS)", "UID FETCH 1:* (ENVELOPE INTERNALDATE RFC822.SIZE)"]:
    p = run(pimail_port, "bench@bench.test", "benchpass", cmd)
    d = run(dovecot_port, "bench", "benchpass", cmd)
    for k in p:
        print(f"| {k} | {p[k]:.1f} | {d[k]:.1f} |")
