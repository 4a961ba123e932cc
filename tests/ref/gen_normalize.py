#!/usr/bin/env python3
"""Regenerates tests/data/normalize.tsv from the reference.

Each line is: hex(UTF-8 input text) TAB hex(UTF-8 of each line pyzor keeps,
NUL-separated). The input is split with str.splitlines(), each line
normalised with pyzor 1.1.2's DataDigester.normalize and kept when
should_handle_line says so, exactly as DataDigester.__init__ does.

Run with the reference Python (pyzor 1.1.2 installed):
    .cache/ref-client/bin/python tests/ref/gen_normalize.py > tests/data/normalize.tsv
"""
import random

from pyzor.digest import DataDigester

ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789@:.-_/") * 4
    + [" ", " ", " ", "\t", "\n", "\r", "\r\n", "\x00"]
    + ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0"]
    + ["\u1680", "\u2000", "\u200a", "\u200b", "\u2028", "\u2029", "\u202f"]
    + ["\u205f", "\u3000", "\u180e", "\ufeff", "\u0130", "\u0131", "\u017f"]
    + ["\u212a", "\u00e9", "\u4e2d", "\U0001f600", "K", "s"]
)


def kept_lines(text):
    out = []
    for line in text.splitlines():
        norm = DataDigester.normalize(line)
        if DataDigester.should_handle_line(norm):
            out.append(norm)
    return out


def main():
    rng = random.Random(20261122)
    for _ in range(5000):
        length = rng.randint(0, 60)
        text = "".join(rng.choice(ALPHABET) for _ in range(length))
        kept = "\x00".join(kept_lines(text))
        print("%s\t%s" % (text.encode("utf8").hex(), kept.encode("utf8").hex()))


if __name__ == "__main__":
    main()
