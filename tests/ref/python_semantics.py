#!/usr/bin/env python3
"""The reference side of tests/it/python.rs: CPython 3.11's answers for
src/python.rs, for every code point and for a batch of texts, in one run.

Reads one JSON object from stdin: {"texts": [str...], "escaped": [hex...]}
(escaped: bytes that the email package would decode as ASCII with
surrogateescape). Writes one JSON object to stdout; each answer is a list
in input order. Where int() fails, the answer is ["error", message].
"""
import io
import json
import sys


def int_answer(text):
    try:
        return str(int(text))
    except ValueError as error:
        return ["error", str(error)]


def float_answer(text):
    """Whether float() of the int overflows; None when there is no int."""
    try:
        value = int(text)
    except ValueError:
        return None
    try:
        float(value)
        return False
    except OverflowError:
        return True


def file_lines(text):
    stream = io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8")
    return [line.rstrip("\n") for line in stream]


def main():
    request = json.load(sys.stdin)
    texts = request["texts"]
    escaped = [bytes.fromhex(h).decode("ascii", "surrogateescape") for h in request["escaped"]]
    every = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    answer = {
        "space": [ord(c) for c in every if c.isspace()],
        "boundary": [ord(c) for c in every if len(("a" + c + "b").splitlines()) == 2],
        "non_printable": [ord(c) for c in every if not c.isprintable()],
        "decimal": [[ord(c), int(c)] for c in every if c.isdecimal()],
        # int() around every code point: which of them it strips or reads.
        "int_before": [ord(c) for c in every if isinstance(int_answer(c + "5"), str)],
        "int_after": [ord(c) for c in every if isinstance(int_answer("5" + c), str)],
        "int": [int_answer(t) for t in texts],
        "float_overflows": [float_answer(t) for t in texts],
        "strip": [t.strip() for t in texts],
        "split": [t.split() for t in texts],
        "splitlines": [t.splitlines() for t in texts],
        "file_lines": [file_lines(t) for t in texts],
        "repr": [repr(t) for t in texts],
        "repr_tuple": [repr((200, t)) for t in texts],
        "int_escaped": [int_answer(t) for t in escaped],
        "strip_escaped": [t.strip().encode("ascii", "surrogateescape").hex() for t in escaped],
        "repr_escaped": [repr(t) for t in escaped],
    }
    json.dump(answer, sys.stdout, ensure_ascii=True)


main()
