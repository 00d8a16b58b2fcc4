"""Verifies a DKIM-signed message with dkimpy, given the key record.

usage: dkim_verify.py MESSAGE_FILE 'NAME=v=DKIM1; k=...; p=...'
Exit 0 and "pass" when the signature verifies, 1 otherwise.
"""
import sys

import dkim

message = open(sys.argv[1], "rb").read()
name, record = sys.argv[2].split("=", 1)


def dnsfunc(qname, timeout=5):
    if qname.decode().rstrip(".") == name:
        return record.encode()
    return None


ok = dkim.verify(message, dnsfunc=dnsfunc)
print("pass" if ok else "fail")
sys.exit(0 if ok else 1)
