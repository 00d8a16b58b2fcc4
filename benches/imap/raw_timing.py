"""Server-side IMAP timings with a raw socket client (no imaplib parsing,
which dominates bench.py's wall times for 10,000-line responses).

usage: python3 benches/imap/raw_timing.py PIMAIL_PORT DOVECOT_PORT [RUNS]
Both servers must already hold the benchmark mailbox (run.sh loads it and
calls this script): pimail user bench@bench.test, Dovecot user bench,
password benchpass. Each command is sent RUNS times (default 11) in one
session, the servers alternating per round; prints the medians.
"""
import socket
import statistics
import sys
import time

COMMANDS = [
    "SELECT INBOX",
    "UID FETCH 1:* (FLAGS)",
    "UID FETCH 1:* (ENVELOPE INTERNALDATE RFC822.SIZE)",
]


class Client:
    def __init__(self, port, user):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")
        self.f.readline()
        self.n = 0
        self.run(f"LOGIN {user} benchpass")

    def run(self, command):
        self.n += 1
        tag = f"a{self.n}".encode()
        t = time.perf_counter()
        self.s.sendall(tag + b" " + command.encode() + b"\r\n")
        while True:
            line = self.f.readline()
            if not line:
                raise SystemExit(f"connection closed during {command}")
            if line.startswith(tag + b" "):
                break
        return (time.perf_counter() - t) * 1000


def main():
    pimail_port, dovecot_port = int(sys.argv[1]), int(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 11
    clients = {
        "pimail": Client(pimail_port, "bench@bench.test"),
        "Dovecot": Client(dovecot_port, "bench"),
    }
    for c in clients.values():
        c.run("SELECT INBOX")
    times = {(name, cmd): [] for name in clients for cmd in COMMANDS}
    for _ in range(runs):
        for cmd in COMMANDS:
            for name, c in clients.items():
                times[(name, cmd)].append(c.run(cmd))
    print(f"| command (raw socket, median of {runs}) | pimail ms | Dovecot ms | pimail/Dovecot |")
    print("|---|---:|---:|---:|")
    for cmd in COMMANDS:
        p = statistics.median(times[("pimail", cmd)])
        d = statistics.median(times[("Dovecot", cmd)])
        print(f"| {cmd} | {p:.2f} | {d:.2f} | {p / d:.2f} |")


main()
