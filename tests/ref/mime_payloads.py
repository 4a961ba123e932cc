#!/usr/bin/env python3
"""Prints what pyzor 1.1.2's DataDigester.digest_payloads sees of each message
file given, as CPython's email package parses it: one JSON line per file,

    {"file": PATH, "payloads": [["text", HEX_BODY, HEX_CHARSET|null, HTML],
                                ["raw", HEX_UTF8_OF_STR], ...]}

or {"file": PATH, "error": "ExceptionName"} when Python raises. Run it with
the reference interpreter (CPython 3.11, pyzor 1.1.2 installed) and compare
with `cargo run --example mime_dump -- FILES...`, which prints the same
format from src/digest/mime.rs.
"""
import email
import json
import sys


def payloads(raw):
    msg = email.message_from_bytes(raw)
    out = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            body = part.get_payload(decode=True)
            charset = part.get_content_charset()
            out.append(["text", body.hex(),
                        None if charset is None else charset.encode("utf-8", "surrogatepass").hex(),
                        part.get_content_subtype() == "html"])
        elif part.is_multipart():
            pass
        else:
            text = part.get_payload()
            out.append(["raw", text.encode("utf-8", "surrogatepass").hex()])
    return out


def main(paths):
    for path in paths:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            line = {"file": path, "payloads": payloads(raw)}
        except Exception as exc:  # pyzor itself would fail on this message
            line = {"file": path, "error": type(exc).__name__}
        print(json.dumps(line, separators=(",", ":")))


if __name__ == "__main__":
    main(sys.argv[1:])
