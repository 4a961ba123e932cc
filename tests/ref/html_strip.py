#!/usr/bin/env python3
"""Reference results of pyzor 1.1.2's DataDigester.normalize_html_part, for
the differential tests of src/digest/html.rs.

Run with the reference Python (pyzor 1.1.2 on CPython 3.11.7), from the
repository root:

    PY=.cache/ref-client/bin/python
    # text/html parts of the messages (*.txt) under the given directories,
    # decoded as pyzor decodes them:
    $PY tests/ref/html_strip.py corpus .cache/corpus/package/data/*/
    # random markup, entities and whitespace, plus every prefix of some:
    $PY tests/ref/html_strip.py adversarial --count 4000 --seed 7
    # random sequences of markup characters and keywords:
    $PY tests/ref/html_strip.py fuzz --count 100000 --seed 2
    # random tags and declarations with odd insides:
    $PY tests/ref/html_strip.py tags --count 100000 --seed 2
    # the committed data files:
    $PY tests/ref/html_strip.py adversarial --tsv > tests/data/html/adversarial.tsv
    $PY tests/ref/html_strip.py cases --tsv > tests/data/html/cases.tsv
    $PY tests/ref/html_strip.py tags --count 5000 --tsv > tests/data/html/tags.tsv

Output is one JSON object per line, {"name", "input", "output"}, with
"output" null where pyzor itself fails (HTMLParser.feed raises, and pyzor's
`except` clause then raises AttributeError). With --tsv each line is
hex(UTF-8 input) TAB (hex(UTF-8 output) or "!" where pyzor fails) TAB name.
"""
import argparse
import email
import glob
import json
import os
import random
import sys

from pyzor.digest import DataDigester


def reference(text):
    try:
        return DataDigester.normalize_html_part(text)
    except AttributeError:
        return None


def corpus_inputs(directories):
    for directory in directories:
        for path in sorted(glob.glob(os.path.join(directory, "*.txt"))):
            with open(path, "rb") as handle:
                msg = email.message_from_bytes(handle.read())
            for index, part in enumerate(msg.walk()):
                if part.get_content_type() != "text/html":
                    continue
                payload = part.get_payload(decode=True)
                if payload is None:
                    continue
                charset = part.get_content_charset() or "ascii"
                try:
                    text = payload.decode(charset, "ignore")
                except (LookupError, UnicodeError, AssertionError):
                    text = payload.decode("ascii", "ignore")
                yield "%s#%d" % (os.path.relpath(path, directory), index), text


TAGS = [
    "<a>", "<A HREF='x'>", '<b class="y z">', "<br/>", "<br />", "<p", "</p>",
    "<script>", "</script>", "<SCRIPT type=x>", "</SCRIPT >", "</script foo>",
    "<style>", "</style>", "</Style\t>", "<script/>", "<style />", "</\u017fcript>",
    "</scr\u0130pt>", "</ script>", "<scriptx>", "</script\x0b>", "</style\xa0>",
    "<img src=x alt='a>b'>", "<a b='c", "<a b= 'c", "<a b=='c", '<a b="c', "<a =x>",
    "<a\x00>", "<a\u3000b>", "<a'\x00b>", "< a>", "<3", "<", "<<", "</>", "</", "</ a>",
    "</a b>", "</3>", "<!-- c -->", "<!--", "-->", "-- >", "--\n>", "<!---->", "<!>",
    "<!x>", "<!DOCTYPE html>", "<!doctype", "<![CDATA[x]]>", "<![if !IE]>",
    "<![endif]>", "]]>", "] ]>", "<![cdata ", "<?php x ?>", "<?", ">", "/", "=", "'",
    '"', "<a/b>", "<a//>", "<a b/>", "<a b=/>", "<a b c=d e='f' g=\"h\">", "<a b=>",
    "<a\tb\n=\r'c'\x0c/>", "<a b='c'd>", "<a b=\"c\"'d'>", "<x:y>", "<a-b.c>", "</a\x00>",
    "<a b= >", "<a b = c >", "<a/ >", "<a / b>", "<a b='c' / >", "<a\x1cb>", "<a b\x85=c>",
]
ENTITIES = [
    "&amp;", "&amp", "&ampx", "&notit;", "&notin;", "&not", "&#65;", "&#x41;", "&#X41",
    "&#0;", "&#128;", "&#x80;", "&#13;", "&#xD800;", "&#1114112;", "&#xFFFE;", "&#1;",
    "&#", "&#x", "&#;", "&;", "&", "& ", "&abc", "&Aacute", "&aacute;x", "&lt", "&LT;",
    "&gt=", "&" + "a" * 40, "&amp" + "b" * 40 + ";", "&#x110000", "&#00000065", "&#x00041;",
    "&\u00e9;", "&copy\r", "&#9;", "&#160;", "&nbsp;", "&nbsp", "&#x3000;", "&#8203;",
    "&#x85;", "&#133;", "&NotNestedGreaterGreater;", "&b.", "&-x;", "&#12345678901234;",
]
TEXT = [
    "hello", "world", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f",
    "\x85", "\xa0", "\u1680", "\u2000", "\u200b", "\u2028", "\u202f", "\u3000", "\ufeff",
    "\u00e9", "\u4e2d\u6587", "\U0001f600", "\x00", ";", "#", "x", "A", "0", "-", ".",
]


def random_document(rng):
    pools = [TAGS, ENTITIES, TEXT, TEXT]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 30)))


def adversarial_inputs(count, seed):
    rng = random.Random(seed)
    for index in range(count):
        yield "random-%d" % index, random_document(rng)
    for index in range(count // 40):
        text = random_document(rng)
        for cut in range(len(text) + 1):
            yield "prefix-%d-%d" % (index, cut), text[:cut]


FUZZ = (
    list("<<<>>>//!-?[]'\"==&#;") + list("abcsriptyle09xX") + [" ", "\t", "\n", "\r"]
    + ["\x0b", "\x0c", "\x00", "\x1c", "\xa0", "\u3000", "\u017f", "\u0130", "\u00e9"]
    + ["script", "style", "SCRIPT", "</script", "<script", "<style", "</style", "CDATA"]
    + ["if", "endif", "doctype", "<!--", "-->", "<![", "]]>", "amp", "lt", "not", "&#x"]
)


def fuzz_inputs(count, seed):
    rng = random.Random(seed)
    for index in range(count):
        length = rng.randint(1, 40)
        yield "fuzz-%d" % index, "".join(rng.choice(FUZZ) for _ in range(length))


TAG_INSIDES = [
    " ", "\t", "\n", "/", "/", "=", "=", "'", '"', ">", "a", "b", "\x00", "\x0b", "\u3000",
    "\x1c", "&", "#", "1", "x", "<", "script", "style", "\u017f", "\u0130",
]
DECLARATION_INSIDES = [
    "-", "-", " ", ">", "[", "]", "CDATA", "if", "endif", "doctype", "DOCTYPE", "x", "<",
    "\n", "'", "?", "!", "temp",
]


def random_markup(rng):
    """A start tag, end tag or declaration with random insides, or text."""
    draw = rng.random()
    if draw < 0.5:
        insides = "".join(rng.choice(TAG_INSIDES) for _ in range(rng.randint(0, 14)))
        return "<" + rng.choice("aAsSbz") + insides + rng.choice([">", "", "x>", " y"])
    if draw < 0.7:
        insides = "".join(rng.choice(TAG_INSIDES) for _ in range(rng.randint(0, 10)))
        return "</" + insides + rng.choice([">", "", "x>"])
    if draw < 0.85:
        return "<!" + "".join(rng.choice(DECLARATION_INSIDES) for _ in range(rng.randint(0, 10)))
    return rng.choice(TEXT + ENTITIES + ["<script>", "<style>", "</script>", "</style>", "<?x>"])


def tag_inputs(count, seed):
    rng = random.Random(seed)
    for index in range(count):
        pieces = rng.randint(1, 6)
        yield "tags-%d" % index, "".join(random_markup(rng) for _ in range(pieces))


CASES = [
    "", "plain text", "  a  b  ", "<p>one</p><p>two</p>", "a<b>c</b>d", "x &amp; y",
    "tail &amp", "tail &amp;", "tail & x", "tail &x", "a&" + "b" * 40,
    "<script>var a = '<p>x</p>';</script>after", "<script>never closed", "<style>a{}",
    "<script/>kept", "<SCRIPT>x</SCRIPT>y", "<script>x</\u017fcript>y</script>z",
    "<a b='c>lost", "<a b= 'c>kept?", "<a b=='c>x", "<!-- c -->x", "<!-- open x",
    "<![CDATA[x]]>y", "<![if !IE]>x<![endif]>y", "<![foo]>x", "<![ x]>y", "<?pi>x",
    "<!DOCTYPE html>x", "<!x>y", "a < b", "a <", "</>x", "</ a>x", "</a b>x",
    "&#" + "1" * 4301 + ";", "&#" + "1" * 4300 + ";", "&#x" + "1" * 5000 + ";",
    "<a\x00>x", "\u3000x\u3000", "x\x1cy", "<p>\xa0</p>",
    '<a href="&#' + "1" * 4301 + '">x', "<a b=&#" + "1" * 4301 + ">x",
    "<a b='&#" + "1" * 4301 + "' c>x", '<a b="c&#' + "1" * 4301, "x<a\x00 b=&#" + "9" * 4301,
    "<a b=&#" + "1" * 4300 + ">x", "&" + "\u00e9" * 40 + ";", "&not" + "\u00e9" * 40 + ";",
] + [
    "<p>x&" + filler * count
    for filler in ["a", "\u00e9", "\U0001f600", "a\u3000"]
    for count in range(30, 37)
]


def case_inputs():
    for index, text in enumerate(CASES):
        yield "case-%d" % index, text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=["corpus", "adversarial", "fuzz", "tags", "cases"])
    parser.add_argument("directories", nargs="*")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tsv", action="store_true")
    args = parser.parse_args()
    if args.source == "corpus":
        inputs = corpus_inputs(args.directories)
    elif args.source == "adversarial":
        inputs = adversarial_inputs(args.count, args.seed)
    elif args.source == "tags":
        inputs = tag_inputs(args.count, args.seed)
    elif args.source == "fuzz":
        inputs = fuzz_inputs(args.count, args.seed)
    else:
        inputs = case_inputs()
    out = sys.stdout
    for name, text in inputs:
        result = reference(text)
        if args.tsv:
            expected = "!" if result is None else result.encode("utf8").hex()
            out.write("%s\t%s\t%s\n" % (text.encode("utf8").hex(), expected, name))
        else:
            record = {"name": name, "input": text, "output": result}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
