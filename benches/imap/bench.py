#!/usr/bin/env python3
"""IMAP benchmark: pimail next to Dovecot, same machine, same run, same
10,000-message mailbox loaded the same way (APPEND over IMAP).

Usage (from the repo root, as root for the Dovecot peer):
    python3 benches/imap/bench.py [--messages 10000] [--sessions 100,500]

Needs a release build (target/release/pimail) and Dovecot from
/work/shared/reference-stack-style setup (benches/imap/run.sh does both).
Prints a Markdown table. Memory: pimail is the VmRSS of its one process;
Dovecot is the sum of PSS over all its processes (it forks per session).
"""
import argparse
import imaplib
import os
import random
import socket
import subprocess
import sys
import time

RARE = "zyxomorphic"


def message(i):
    rnd = random.Random(i)
    words = ["mail", "board", "pi", "store", "chunk", "imap", "server", "quick",
             "brown", "fox", "lazy", "dog", "river", "stone", "cloud", "paper"]
    lines = []
    while sum(len(l) + 2 for l in lines) < 4000:
        lines.append(" ".join(rnd.choice(words) for _ in range(12)))
    if i == 7777:
        lines[10] += " " + RARE
    head = (f"From: Sender {i % 50} <sender{i % 50}@example.org>\r\n"
            f"To: bench@bench.test\r\nSubject: message {i} {rnd.choice(words)}\r\n"
            f"Date: Mon, 1 Jan 2024 10:{i % 60:02d}:00 +0000\r\n"
            f"Message-ID: <{i}@example.org>\r\n\r\n")
    return (head + "\r\n".join(lines) + "\r\n").encode()


def connect(port, user, password):
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login(user, password)
    return m


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_server(name, port, user, password, pids_fn, count, session_counts, memory_fn):
    m = connect(port, user, password)
    typ, data = m.select("INBOX")
    have = int(data[0])
    if have < count:
        t = time.perf_counter()
        for i in range(have, count):
            m.append("INBOX", None, imaplib.Time2Internaldate(1704103200 + i), message(i))
        print(f"{name}: loaded {count - have} messages in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    m.logout()
    time.sleep(1)
    idle_mem = memory_fn()
    m = connect(port, user, password)
    r = {}
    r["SELECT"] = timed(lambda: m.select("INBOX"))
    r["UID FETCH 1:* (FLAGS)"] = timed(lambda: m.uid("FETCH", "1:*", "(FLAGS)"))
    r["UID FETCH 1:* (ENVELOPE INTERNALDATE RFC822.SIZE)"] = timed(
        lambda: m.uid("FETCH", "1:*", "(ENVELOPE INTERNALDATE RFC822.SIZE)"))
    typ, data = m.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    step = max(1, len(uids) // 100)

    def bodies():
        for u in uids[::step][:100]:
            m.uid("FETCH", u, "(BODY.PEEK[])")
    r["100 × UID FETCH BODY.PEEK[]"] = timed(bodies)
    found = []
    r[f"UID SEARCH TEXT {RARE}"] = timed(lambda: found.append(m.uid("SEARCH", None, "TEXT", RARE)))
    assert found[0][1][0].split(), f"{name}: rare word not found"
    r["STORE 1:* +FLAGS (\\Flagged)"] = timed(lambda: m.store("1:*", "+FLAGS", "(\\Flagged)"))
    m.store("1:*", "-FLAGS", "(\\Flagged)")
    m.logout()
    mem = {"idle": idle_mem}
    for n in session_counts:
        sessions = []
        for _ in range(n):
            s = connect(port, user, password)
            s.select("INBOX")
            sessions.append(s)
        time.sleep(2)
        mem[n] = memory_fn()
        for s in sessions:
            try:
                s.logout()
            except Exception:
                pass
        time.sleep(1)
    return r, mem


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--sessions", default="100,500")
    ap.add_argument("--pimail-port", type=int, default=30143)
    ap.add_argument("--pimail-pid", type=int, required=True)
    ap.add_argument("--dovecot-port", type=int, default=2143)
    ap.add_argument("--dovecot-pidfile", default="/tmp/mailbench-ref/dovecot/run/master.pid")
    a = ap.parse_args()
    counts = [int(x) for x in a.sessions.split(",") if x]

    def dovecot_pids():
        master = open(a.dovecot_pidfile).read().strip()
        out = subprocess.run(["pgrep", "-g", subprocess.run(["ps", "-o", "pgid=", master], capture_output=True, text=True).stdout.strip()],
                             capture_output=True, text=True).stdout.split()
        kids = subprocess.run(["pgrep", "-P", master], capture_output=True, text=True).stdout.split()
        return set(out) | set(kids) | {master}

    pim = run_server("pimail", a.pimail_port, "bench@bench.test", "benchpass", None, a.messages, counts,
                     lambda: rss_kib(a.pimail_pid))
    dov = run_server("dovecot", a.dovecot_port, "bench", "benchpass", None, a.messages, counts,
                     lambda: pss_kib(dovecot_pids()))
    print(f"| operation ({a.messages} messages) | pimail | Dovecot | pimail/Dovecot |")
    print("|---|---|---|---|")
    for k in pim[0]:
        p, d = pim[0][k], dov[0][k]
        print(f"| {k} | {p * 1000:.1f} ms | {d * 1000:.1f} ms | {p / d:.2f} |")
    for k in pim[1]:
        label = "memory idle" if k == "idle" else f"memory with {k} idle sessions"
        p, d = pim[1][k], dov[1][k]
        print(f"| {label} | {p / 1024:.1f} MiB | {d / 1024:.1f} MiB | {p / d:.3f} |")
    for n in counts:
        p = (pim[1][n] - pim[1]["idle"]) / n
        d = (dov[1][n] - dov[1]["idle"]) / n
        print(f"| per idle session ({n}) | {p:.1f} KiB | {d:.1f} KiB | {p / d:.3f} |")


if __name__ == "__main__":
    main()
