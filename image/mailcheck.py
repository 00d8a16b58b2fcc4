#!/usr/bin/env python3
"""Talks to a booted pimail image through qemu's forwarded ports: waits for
the SMTP, POP3 and IMAP greetings, sends one message to the first-boot admin
account over SMTP and reads it back (POP3 or IMAP, --read-back). Prints one
`ok`/`FAIL`/`skip` line per check; the caller counts them."""

import argparse
import imaplib
import os
import poplib
import smtplib
import socket
import ssl
import sys
import time
import uuid


def report(status, name, detail=""):
    print(f"{status} {name}{': ' + detail if detail else ''}", flush=True)


def greeting(port, timeout):
    """The first line the server sends on connect, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(512)
                if not chunk:
                    break
                data += chunk
            return data.decode("ascii", "replace").strip() or None
    except OSError:
        return None


QEMU_PID = None


def qemu_alive():
    try:
        os.kill(QEMU_PID, 0)
        return True
    except OSError:
        return False


def wait_greeting(port, prefix, deadline, contains=""):
    """Polls until a greeting starting with prefix arrives (the guest is
    booting: slirp accepts and closes at once while nothing listens)."""
    while time.monotonic() < deadline and qemu_alive():
        line = greeting(port, 10)
        if line and line.startswith(prefix) and contains in line:
            return line
        time.sleep(2)
    return None


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False  # the image's certificate is self-signed
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def read_back_pop3(args, token):
    box = poplib.POP3_SSL("127.0.0.1", args.port_base + 995, context=tls_context(), timeout=30)
    try:
        box.user(args.user)
        box.pass_(args.password)
        count, _ = box.stat()
        for i in range(1, count + 1):
            _, lines, _ = box.retr(i)
            if any(token.encode() in l for l in lines):
                return True
        return False
    finally:
        box.quit()


def read_back_imap(args, token):
    box = imaplib.IMAP4_SSL("127.0.0.1", args.port_base + 993, ssl_context=tls_context(), timeout=30)
    try:
        box.login(args.user, args.password)
        box.select("INBOX")
        typ, data = box.search(None, "SUBJECT", token)
        if typ != "OK" or not data[0].split():
            return False
        typ, msg = box.fetch(data[0].split()[-1], "(BODY.PEEK[])")
        return typ == "OK" and token.encode() in msg[0][1]
    finally:
        box.logout()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-base", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--read-back", choices=["pop3", "imap"], default="pop3")
    ap.add_argument("--timeout", type=int, default=420)
    ap.add_argument("--qemu-pid", type=int, required=True)
    ap.add_argument("--hostname", required=True, help="expected in the SMTP greeting")
    args = ap.parse_args()
    global QEMU_PID
    QEMU_PID = args.qemu_pid
    start = time.monotonic()
    deadline = start + args.timeout

    line = wait_greeting(args.port_base + 25, "220 ", deadline, args.hostname)
    if not line:
        report("FAIL", "SMTP greeting", f"none within {args.timeout} s")
        return
    report("ok", "SMTP greeting", f"{line!r} after {time.monotonic() - start:.0f} s")
    for name, port, prefix, needed in [
        ("POP3 greeting", 110, "+OK", args.read_back == "pop3"),
        ("IMAP greeting", 143, "* OK", args.read_back == "imap"),
    ]:
        line = wait_greeting(args.port_base + port, prefix, time.monotonic() + 30)
        if line:
            report("ok", name, repr(line))
        elif needed:
            report("FAIL", name, "none within 30 s")
        else:
            report("skip", name, "not served by this build")

    token = "pimail-image-test-" + uuid.uuid4().hex[:12]
    message = (
        f"From: tester@outside.example\r\nTo: {args.user}\r\nSubject: {token}\r\n"
        f"Message-ID: <{token}@outside.example>\r\n\r\nsent by make image-test\r\n"
    )
    try:
        with smtplib.SMTP("127.0.0.1", args.port_base + 25, timeout=60) as smtp:
            smtp.ehlo("outside.example")
            refused = smtp.sendmail("tester@outside.example", [args.user], message)
        if refused:
            report("FAIL", "SMTP delivery", repr(refused))
        else:
            report("ok", "SMTP delivery", f"to {args.user}")
    except (OSError, smtplib.SMTPException) as e:
        report("FAIL", "SMTP delivery", repr(e))
        return

    read_back = read_back_imap if args.read_back == "imap" else read_back_pop3
    found = False
    for _ in range(10):
        try:
            found = read_back(args, token)
        except (OSError, poplib.error_proto, imaplib.IMAP4.error) as e:
            report("FAIL", f"{args.read_back.upper()} read back", repr(e))
            return
        if found:
            break
        time.sleep(2)
    report("ok" if found else "FAIL", f"{args.read_back.upper()} read back", token)


if __name__ == "__main__":
    main()
    sys.exit(0)
