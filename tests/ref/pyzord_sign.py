#!/usr/bin/env python3
"""The reference side of tests/it/server_compat.rs: for each datagram, how
Python pyzord 1.1.2 reads it and the signature it would accept.

Reads one JSON object from stdin: {"key": str, "datagrams": [hex...]}.
Writes a JSON list, one object per datagram:
  "request": whether the parsed message has PV, Op and a Thread of 1 to 5
             ASCII digits (what both servers must answer alike);
  "sig":     the Sig that verify_signature would compute for it with this
             key for its User, or null where Python raises instead.
Run with the interpreter of the reference pyzord (Debian's CPython 3.11).
"""
import email
import json
import re
import sys

import pyzor.account


def describe(datagram, key):
    message = email.message_from_bytes(datagram.replace(b"\n\n", b"\n") + b"\n")
    thread = message["Thread"]
    request = (
        "PV" in message
        and "Op" in message
        and isinstance(thread, str)
        and re.fullmatch(r"[0-9]{1,5}", thread) is not None
    )
    try:
        user = message["User"]
        timestamp = int(message["Time"])
        del message["Sig"]
        sig = pyzor.account.sign_msg(pyzor.account.hash_key(key, user), timestamp, message)
    except Exception:
        sig = None
    return {"request": request, "sig": sig}


def main():
    job = json.load(sys.stdin)
    answers = [describe(bytes.fromhex(d), job["key"]) for d in job["datagrams"]]
    json.dump(answers, sys.stdout)


main()
