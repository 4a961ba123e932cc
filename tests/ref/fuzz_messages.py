#!/usr/bin/env python3
"""Writes random MIME messages for the differential digest fuzzer
(tests/it/digest_fuzz.rs, scripts/fuzz-digest).

Usage: fuzz_messages.py OUTDIR COUNT SEED [CORPUS_DIR]

Unlike gen_messages.py (one fixed set), each SEED gives another set of
random message trees: nested multipart/* of any subtype, message/rfc822,
random, missing, duplicated and reused boundaries, preambles and
epilogues; every text codec Python knows under its aliases and spellings,
bogus names and RFC 2231 parameters; transfer encodings valid and broken;
random HTML (tags, attributes, comments, CDATA, declarations, script and
style, entities and character references, broken markup); Unicode
whitespace and line boundaries, CR/LF/CRLF mixes, long lines, NULs,
folded and 8-bit headers. A quarter are then mutated byte by byte, and
with CORPUS_DIR (the SpamAssassin corpus's package/data) a tenth are
mutated real messages. The messages are not expectations: the test
digests each with Python pyzor 1.1.2 and with ours and compares.

A message is drawn again (and counted as excluded) when one of its text
parts falls on a difference documented in src/digest/charset.rs: a JIS X
0213 codec, lone surrogates in the decoded text, `\\N{...}` under
unicode_escape, `xn--` labels under idna, or punycode. Messages on which
Python itself raises are kept: the test counts and skips them.

Prints "written N excluded M" on stdout.
"""

import codecs
import email
import encodings.aliases
import html.entities
import os
import random
import re
import sys
import warnings

import gen_messages
from gen_messages import BAD_BYTES, HTML_FRAGMENTS, SEPARATORS, WORDS

warnings.simplefilter("ignore")

# Codecs whose decoding is documented as not exact (src/digest/charset.rs).
INEXACT_CODECS = {
    "euc_jis_2004", "euc_jisx0213", "shift_jis_2004", "shift_jisx0213",
    "iso2022_jp_2004", "iso2022_jp_3", "punycode",
}

BOGUS_CHARSETS = [
    "x-unknown", "unknown-8bit", "foo", "default", "charset", "x-user-defined",
    "viscii", "mbcs", "utf-9", "iso-8859-99", "", " ", "\"\"", "utf-8\x00",
    "us-ascii\" format=flowed", "windows-1252; x=y", "cp65001", "x-mac-cyrillic",
    "ansi_x3.4-1968", "iso-ir-100", "csisolatin1", "l1", "866", "u8", "utf",
    "quoted-printable", "quopri", "QuotedPrintable", "base64", "hex", "rot13",
    "zlib", "bz2", "uu", "undefined", "raw-unicode-escape", "unicode_escape",
]

# Code point ranges text is drawn from, beyond the fixed words.
CODE_POINT_RANGES = [
    (0x20, 0x7e), (0x20, 0x7e), (0x20, 0x7e), (0x00, 0x1f), (0x7f, 0xa0),
    (0xa0, 0x17f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff),
    (0x0e00, 0x0e7f), (0x1100, 0x11ff), (0x2000, 0x206f), (0x2100, 0x214f),
    (0x3000, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xe000, 0xe0ff),
    (0xfb00, 0xfb4f), (0xfe00, 0xfe6f), (0xff00, 0xffef), (0xfff0, 0xffff),
    (0x1d400, 0x1d7ff), (0x1f300, 0x1f64f), (0x20000, 0x2a6df), (0xe0000, 0xe007f),
]

# Python's str.isspace() and str.splitlines() characters, the digest's edges.
SPACES = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003" \
    "\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
NEAR_SPACES = "\u180e\u200b\u200c\u200d\u2060\ufeff\x00"

TAG_NAMES = [
    "p", "br", "div", "span", "a", "b", "i", "table", "tr", "td", "img", "font",
    "html", "head", "body", "title", "meta", "link", "script", "style",
    "textarea", "pre", "SCRIPT", "Style", "sCrIpT", "x:y", "svg", "math",
    "noscript", "iframe", "object", "o:p", "1", "-", "a-b", "plaintext", "xmp",
]
ATTR_NAMES = ["href", "src", "class", "id", "style", "alt", "x", "on-click",
              "data-x", "HREF", "a:b", "=", "'", "\"", "<", "/"]


def text_codec_names():
    """Every name Python resolves to a text codec: the aliases table, the
    codec names themselves, and spellings codecs.lookup folds."""
    names = set()
    for alias, module in encodings.aliases.aliases.items():
        names.add(alias)
        names.add(module)
    names.update(name for name, _ in gen_messages.CHARSETS)
    usable = []
    for name in sorted(names):
        try:
            info = codecs.lookup(name)
        except LookupError:
            continue
        if info._is_text_encoding and info.name.replace("-", "_") not in INEXACT_CODECS:
            usable.append(name)
    return usable


def codec_of(name):
    """The Python codec name behind a charset name, or None."""
    try:
        return codecs.lookup(name).name.replace("-", "_")
    except (LookupError, TypeError, ValueError):
        return None


class Fuzzer(gen_messages.Generator):
    """Random message trees; the text, charset-parameter and
    transfer-encoding pieces come from gen_messages.Generator."""

    def __init__(self, rng, codec_names, corpus):
        super().__init__(rng)
        self.codec_names = codec_names
        self.corpus = corpus
        self.boundaries = []
        self.previous = b""

    # --- text -----------------------------------------------------------

    def random_chars(self):
        rng = self.rng
        low, high = rng.choice(CODE_POINT_RANGES)
        n = rng.choice([1, 2, 3, 5, 7, 8, 9, 10, 11, 20])
        span = high - low + 1
        random_ = rng.random
        return "".join(chr(low + int(random_() * span)) for _ in range(n))

    def token(self):
        rng = self.rng
        r = rng.random()
        if r < 0.55:
            return self.word()
        if r < 0.8:
            return self.random_chars()
        if r < 0.9:
            return rng.choice(SPACES + NEAR_SPACES) * rng.randint(1, 3)
        if r < 0.95:
            # Addresses and URLs with random parts.
            return rng.choice(["%s@%s", "%s:%s", "http://%s/%s", "<%s@%s>", "%s@@%s"]) % (
                self.random_chars(), self.word())
        return rng.choice(["=", "=3D", "=\n", "+", "+-", "~{", "\\", "\\N{SPACE}",
                           "\\u00e9", "xn--caf-dma", "--", "-->", "]]>", "&", ";"])

    def line(self):
        rng = self.rng
        n = rng.choice([0, 1, 2, 3, 4, 6, 9, 14])
        parts = []
        for i in range(n):
            if i:
                parts.append(rng.choice(SEPARATORS))
            parts.append(self.token())
        if self.chance(0.01):
            # A long line: a piece repeated, with or without spaces.
            parts.append((self.token() + rng.choice(["", " "])) * rng.choice([100, 1000, 5000]))
        return "".join(parts)

    def text(self):
        rng = self.rng
        lines = [self.line() for _ in range(rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 12, 20]))]
        end = rng.choice(["\n"] * 6 + ["\r\n", "\r", "\u2028", "\x85", ""])
        return end.join(lines) + (end if self.chance(0.8) else "")

    # --- HTML -----------------------------------------------------------

    def attribute(self):
        rng = self.rng
        name = rng.choice(ATTR_NAMES)
        value = rng.choice([self.word(), self.entity(), "", "a b", "x>y", "'\"", self.random_chars()])
        form = rng.randint(0, 5)
        if form == 0:
            return name
        if form == 1:
            return "%s=%s" % (name, value.replace(" ", ""))
        if form == 2:
            return "%s='%s'" % (name, value)
        if form == 3:
            return "%s = \"%s\"" % (name, value)
        if form == 4:
            return "%s=\"%s" % (name, value)  # Unterminated.
        return "%s=%s%s" % (name, rng.choice(["'", "\""]), value)

    def tag(self):
        rng = self.rng
        name = rng.choice(TAG_NAMES)
        attrs = "".join(rng.choice([" ", "\n", "\t", "  ", "/"]) + self.attribute()
                        for _ in range(rng.choice([0, 0, 1, 2, 4])))
        form = rng.randint(0, 9)
        if form < 5:
            return "<%s%s>" % (name, attrs)
        if form < 8:
            return "</%s%s>" % (name, rng.choice(["", "", " ", " x", "\n"]))
        if form == 8:
            return "<%s%s/>" % (name, attrs)
        return rng.choice(["<%s%s" % (name, attrs), "</%s" % name, "< %s>" % name, "<%s<" % name])

    def entity(self):
        rng = self.rng
        form = rng.randint(0, 6)
        if form < 2:
            name = rng.choice(ENTITY_NAMES)
            if self.chance(0.3):
                name = name[: rng.randint(1, len(name))]
            return "&" + name + rng.choice(["", ";", ";", " "])
        if form < 4:
            value = rng.choice([rng.randint(0, 0x80), rng.randint(0x80, 0xa0), rng.randint(0, 0xffff),
                                rng.randint(0xd800, 0xdfff), rng.randint(0, 0x10ffff),
                                rng.randint(0x10ffff, 0xffffffff), 0, 9, 10, 13])
            digits = ("%x" % value) if form == 2 else str(value)
            if self.chance(0.05):
                digits = "0" * rng.randint(1, 40) + digits
            return "&#%s%s%s" % ("xX"[rng.randint(0, 1)] if form == 2 else "", digits,
                                 rng.choice(["", ";", ";", " ", "x"]))
        if form == 4:
            return rng.choice(["&", "&#", "&#x", "&#;", "&;", "& ", "&&", "&#x;", "&#-1;", "&#+1;"])
        return rng.choice(HTML_FRAGMENTS)

    def markup(self):
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return self.tag()
        if r < 0.55:
            return self.entity()
        if r < 0.65:
            body = self.line()
            return rng.choice(["<!--%s-->", "<!-- %s --!>", "<!--%s", "<!%s>", "<?%s>",
                               "<![CDATA[%s]]>", "<!DOCTYPE %s>", "<!---%s--->", "<!-->%s"]) % body
        if r < 0.75:
            raw = rng.choice(["script", "style", "SCRIPT", "title", "textarea"])
            return "<%s>%s%s" % (raw, self.line(), rng.choice(
                ["</%s>" % raw, "</%s >" % raw.upper(), "</%sx>" % raw, "", "</%s" % raw]))
        return self.line()

    def html(self):
        rng = self.rng
        pieces = []
        if self.chance(0.5):
            pieces.append("<html><head><title>%s</title></head><body>" % self.word())
        for _ in range(rng.choice([0, 1, 3, 8, 15, 30, 60])):
            pieces.append(self.markup())
            if self.chance(0.25):
                pieces.append(rng.choice(["\n", "\r\n", " ", "\r", "\u2028"]))
        if self.chance(0.5):
            pieces.append("</body></html>\n")
        return "".join(pieces)

    # --- charsets --------------------------------------------------------

    def charset(self):
        """A charset name for the header and the codec the text is encoded
        with (None: UTF-8 or Latin-1 at random)."""
        rng = self.rng
        r = rng.random()
        if r < 0.12:
            return rng.choice(BOGUS_CHARSETS), None
        name = rng.choice(self.codec_names) if r < 0.7 else rng.choice(gen_messages.CHARSETS)[0]
        codec = codec_of(name)
        if codec in INEXACT_CODECS:
            codec = None  # Excluded after all; punycode also encodes slowly.
        if self.chance(0.2):
            name = rng.choice([name.upper(), name.title(), name.replace("-", "_"),
                               name.replace("_", "-"), " %s " % name, name + "\x00"])
        return name, codec

    def charset_param(self, name):
        """The charset parameter in forms beyond gen_messages': RFC 2231
        sections out of order or with gaps, 8-bit bytes, comments, broken
        quoting, encoded words, repeated parameters."""
        rng = self.rng
        if self.chance(0.7) or len(name) < 2:
            return super().charset_param(name)
        cut = rng.randint(1, len(name) - 1)
        head, tail = name[:cut], name[cut:]
        percent = "".join("%%%02X" % b for b in name.encode("utf-8", "surrogateescape"))
        return rng.choice([
            "; charset*1=%s; charset*0=%s" % (tail, head),
            "; charset*0=%s; charset*2=%s" % (head, tail),
            "; charset*0*=us-ascii''%s; charset*1*=%s" % (head, tail),
            "; charset*0*=%s; charset*1*=''%s" % (head, tail),
            "; charset*=utf-8'en'%s" % percent,
            "; charset*=%s" % percent,
            "; charset*=''%ZZ" + name,
            "; charset*=''%s%%" % name,
            "; charset=\"%s\udce9\"" % name,
            "; charset=%s\udcff" % name,
            "; charset=(comment)%s" % name,
            "; charset = %s ; charset*=''iso-8859-1" % name,
            "; charset=\"%s" % name,
            "; charset=%s\"" % name,
            "; charset==%s" % name,
            "; charset",
            "; charset=",
            "; charset=\"=?utf-8?q?%s?=\"" % name,
            ";\n\tcharset=\"%s\"" % name,
            "; charset=\"%s\n \"" % name,
            "; name=x; charset=%s; charset=%s" % (name, rng.choice(self.codec_names)),
        ])

    def encode_text(self, text, codec):
        try:
            return super().encode_text(text, codec)
        except (LookupError, UnicodeError, TypeError, ValueError):
            return text.encode("utf-8", "surrogatepass")

    # --- parts -----------------------------------------------------------

    def content_type_header(self, value):
        rng = self.rng
        name = rng.choice(["Content-Type"] * 8 + ["content-type", "CONTENT-TYPE", "Content-type"])
        if self.chance(0.1):
            value = value.replace("; ", rng.choice([";\n\t", ";\r\n ", ";\n "]))
        return "%s: %s" % (name, value)

    def leaf(self, depth):
        rng = self.rng
        r = rng.random()
        name, codec = self.charset()
        if r < 0.4:
            ctype = "text/" + rng.choice(["plain"] * 5 + ["PLAIN", "enriched", "x-foo", "csv", ""])
            data = self.encode_text(self.text(), codec)
        elif r < 0.75:
            ctype = "text/" + rng.choice(["html"] * 4 + ["HTML", "Html", "xhtml"])
            data = self.encode_text(self.html(), codec)
        elif r < 0.9:
            ctype = rng.choice(["application/octet-stream", "image/gif", "application/pdf",
                                "audio/x-wav", "message/delivery-status", "message/partial",
                                "text/rfc822-headers", "application/x-foo", "foo/bar", "foo"])
            if self.chance(0.5):
                data = rng.randbytes(rng.choice([0, 10, 200, 3000]))
            else:
                data = self.encode_text(rng.choice([self.text, self.html])(), codec)
        else:
            return self.transfer_headers([]), self.encode_text(self.text(), None)
        headers = []
        if self.chance(0.05):
            ctype = rng.choice([" %s", "%s ", "%s;", "%s (comment)", "%s\udce9"]) % ctype
            if self.chance(0.3):
                ctype = ctype.replace("/", rng.choice([" / ", "/ ", "//"]))
        if self.chance(0.95):
            if self.chance(0.85):
                ctype += self.charset_param(name)
            headers.append(self.content_type_header(ctype))
        if self.chance(0.05):
            headers.append(self.content_type_header("text/html; charset=%s" % self.charset()[0]))
        headers = self.transfer_headers(headers)
        cte = self.last_cte
        return headers, self.transfer_encode(data, cte)

    def transfer_headers(self, headers):
        rng = self.rng
        cte = rng.choice(gen_messages.TRANSFER_ENCODINGS + ["base64", "quoted-printable"])
        self.last_cte = cte
        if cte is not None:
            if self.chance(0.1):
                cte = rng.choice([" %s", "%s\t", "%s; x=y", "\"%s\"", "\n %s", "%s\udce9"]) % cte
            headers.append("%s: %s" % (rng.choice(["Content-Transfer-Encoding"] * 5 + [
                "content-transfer-encoding", "CONTENT-TRANSFER-ENCODING"]), cte))
            if self.chance(0.03):
                headers.append("Content-Transfer-Encoding: %s" % rng.choice(["base64", "7bit", "x"]))
        return headers

    def boundary(self):
        rng = self.rng
        if self.boundaries and self.chance(0.1):
            return rng.choice(self.boundaries)  # The same as an enclosing one.
        r = rng.random()
        if r < 0.2:
            chars = "abcXYZ0189'()+_,-./:=? "
            value = "".join(rng.choice(chars) for _ in range(rng.randint(1, 75))).strip() or "x"
        elif r < 0.3:
            value = rng.choice(["-", "--", "=", "a", "b", "==", "-=-"])
        else:
            value = super().boundary()
        self.boundaries.append(value)
        return value

    def multipart(self, depth):
        rng = self.rng
        subtype = rng.choice(["mixed", "alternative", "related", "digest", "report", "signed",
                              "parallel", "MIXED", "Alternative", "x-foo", ""])
        boundary = self.boundary()
        kind = rng.randint(0, 19)
        params = "; boundary=\"%s\"" % boundary
        if kind == 0:
            params = ""
        elif kind == 1:
            params = "; boundary=\"wrong-%s\"" % boundary
        elif kind == 2:
            params = "; boundary=\"\""
        elif kind == 3 and " " not in boundary and "\"" not in boundary:
            params = "; boundary=%s" % boundary
        elif kind == 4:
            params = "; boundary*=''%s" % "".join("%%%02X" % b for b in boundary.encode())
        elif kind == 5 and len(boundary) > 3:
            params = "; boundary*0=\"%s\"; boundary*1=\"%s\"" % (boundary[:3], boundary[3:])
        elif kind == 6:
            params = "; boundary=\"x\"; boundary=\"%s\"" % boundary
        headers = []
        if self.chance(0.9):
            headers.append("MIME-Version: 1.0")
        headers.append(self.content_type_header("multipart/%s%s" % (subtype, params)))
        if self.chance(0.08):
            headers.append("Content-Transfer-Encoding: %s" % rng.choice(["base64", "8bit", "quoted-printable"]))
        delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
        out = []
        if self.chance(0.35):
            out.append(self.encode_text(rng.choice([self.text, self.html])(), None))
            if self.chance(0.3):
                out.append(b"--" + delimiter + b"\n")  # A line that only looks like one.
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4, 6])):
            out.append(delimiter + rng.choice([b"", b"", b"", b"  ", b"\t", b" junk", b"--x"]) + b"\n")
            part_headers, part_body = self.part(depth + 1)
            r = rng.random()
            if r < 0.04:
                out.append(part_body)  # No blank line: the body is read as headers.
            elif r < 0.08:
                out.append(b"\n" + part_body)  # No headers at all.
            else:
                out.append(self.join(part_headers, part_body))
            if not part_body.endswith(b"\n") or self.chance(0.4):
                out.append(b"\n")
        kind = rng.randint(0, 9)
        if kind == 1:
            out.append(delimiter + b"--  \n")
        elif kind == 2:
            out.append(delimiter + b"--\n" + delimiter + b"--\n")
        elif kind == 3:
            out.append(delimiter + b"--")
        elif kind > 3:
            out.append(delimiter + b"--\n")
        if self.chance(0.3):
            out.append(self.encode_text(self.text(), None))
        return headers, b"".join(out)

    def rfc822(self, depth):
        headers = [self.content_type_header(self.rng.choice(
            ["message/rfc822"] * 4 + ["message/RFC822", "message/global", "message/news"]))]
        if self.chance(0.15):
            headers.append("Content-Transfer-Encoding: %s" % self.rng.choice(["7bit", "base64", "8bit"]))
        if self.chance(0.08):
            return headers, b""
        return headers, self.message(depth + 1)

    def noise_headers(self):
        headers = super().noise_headers()
        rng = self.rng
        if self.chance(0.1):
            headers.append("X-Folded: %s\n %s\n\t%s" % (self.word(), self.word(), self.word()))
        if self.chance(0.05):
            headers.append(rng.choice(["no colon here", " leading space: x", "X-Nul: a\x00b",
                                       "X-8bit: caf\udce9 \udcff", ": empty name", "X:"]))
        if self.chance(0.05):
            headers.append("Subject: =?%s?%s?%s?=" % (self.charset()[0], rng.choice("bBqQx"), self.word()))
        rng.shuffle(headers)
        return headers

    def top_level(self):
        self.boundaries = []
        if self.corpus and self.chance(0.1):
            with open(self.rng.choice(self.corpus), "rb") as f:
                data = self.mutate(f.read())
            self.previous = data
            return data
        data = super().top_level()
        if self.chance(0.003):
            data = self.deep(data)
        if self.chance(0.1):
            data = self.mixed_line_ends(data)
        if self.chance(0.25):
            data = self.mutate(data)
        self.previous = data
        return data

    def deep(self, data):
        """The message at the bottom of a chain of hundreds of multipart
        or message/rfc822 levels (Python's recursion limit is near 1000)."""
        rng = self.rng
        levels = rng.choice([20, 100, 300, 600, 950])
        text = self.line().encode("utf-8") + b"\n"
        if self.chance(0.5):
            return b"Content-Type: message/rfc822\n\n" * levels + data
        head, tail = [], []
        for level in range(levels):
            head.append(b"Content-Type: multipart/mixed; boundary=\"d%d\"\n\n%s--d%d\n" % (
                level, text if level % 50 == 0 else b"", level))
            tail.append(b"\n--d%d--\n%s" % (level, text if level % 70 == 0 else b""))
        return b"".join(head) + data + b"".join(reversed(tail))

    def mutate(self, data):
        """Byte-level mutations of a whole message, as a mutating fuzzer
        makes them: spans deleted, repeated or moved, bytes flipped,
        structural pieces inserted, or spliced with the previous message."""
        rng = self.rng
        data = bytearray(data)
        pieces = [b"\n", b"\r", b"\r\n", b"\n\n", b"--", b"\n--", b":", b";", b"=", b"\"",
                  b"<", b">", b"&", b"&#", b"<!", b"-->", b"\x00", b"\t", b" ", b"\x0b", b"\x0c",
                  b"\x1c", b"\x85", b"\xe2\x80\xa8", b"\xff", b"\x1b$B", b"+", b"~{",
                  b"Content-Type: text/html\n", b"Content-Transfer-Encoding: base64\n",
                  b"charset=utf-16", b"boundary=", b"\n\n--" + (self.boundaries[-1].encode(
                      "utf-8", "surrogateescape") if self.boundaries else b"x")]
        for _ in range(rng.randint(1, 8)):
            size = len(data)
            at = rng.randint(0, size)
            span = rng.choice([1, 2, 4, 16, 100, 1000])
            kind = rng.randint(0, 6)
            if kind == 0:
                del data[at:at + span]
            elif kind == 1:
                data[at:at] = data[at:at + span] * rng.randint(1, 4)
            elif kind == 2 and size:
                data[min(at, size - 1)] ^= 1 << rng.randint(0, 7)
            elif kind == 3:
                data[at:at] = rng.choice(pieces)
            elif kind == 4 and size:
                moved = data[at:at + span]
                del data[at:at + span]
                to = rng.randint(0, len(data))
                data[to:to] = moved
            elif kind == 5:
                data[at:at] = rng.randbytes(rng.choice([1, 3, 8]))
            elif self.previous:
                other = self.previous
                data = data[:at] + other[rng.randint(0, len(other)):]
        return bytes(data)

    def mixed_line_ends(self, data):
        pieces = data.split(b"\n")
        return b"".join(p + self.rng.choice([b"\n", b"\r\n", b"\r", b"\n\r", b"\r\r\n"])
                        for p in pieces)


SURROGATE = re.compile("[\ud800-\udfff]")
ENTITY_NAMES = sorted(name.rstrip(";") for name in html.entities.html5)


def documented_difference(data):
    """Whether a part of the message is decoded where src/digest/charset.rs
    documents a difference (see the module doc): a text part with its
    content charset, or a non-text part holding 8-bit bytes, which
    email's get_payload() decodes with its charset parameter."""
    try:
        msg = email.message_from_bytes(data)
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                charset = part.get_content_charset()
                if charset and inexact_decoding(part.get_payload(decode=True),
                                                charset.replace("\x00", ""), "ignore"):
                    return True
            elif not part.is_multipart():
                payload = part._payload
                charset = part.get_param("charset", "ascii")
                if (isinstance(payload, str) and isinstance(charset, str)
                        and inexact_decoding(payload.encode("ascii", "surrogateescape"),
                                             charset, "replace")):
                    return True
    except Exception:
        return False  # Python raises on it: the test counts and skips it.
    return False


def inexact_decoding(payload, charset, errors):
    codec = codec_of(charset)
    if codec is None:
        return False
    if codec in INEXACT_CODECS:
        return True
    if codec == "unicode_escape" and b"\\N" in payload:
        return True
    if codec == "idna" and b"xn--" in payload.lower():
        return True
    try:
        return bool(SURROGATE.search(payload.decode(charset, errors)))
    except Exception:
        return False


def corpus_files(top):
    """The raw corpus messages (*/*.txt), sorted so a seed gives one set."""
    files = []
    for sub in sorted(os.listdir(top)):
        folder = os.path.join(top, sub)
        if os.path.isdir(folder):
            files.extend(os.path.join(folder, name) for name in sorted(os.listdir(folder))
                         if name.endswith(".txt"))
    return files


def main():
    outdir, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    corpus = corpus_files(sys.argv[4]) if len(sys.argv) > 4 else []
    fuzzer = Fuzzer(random.Random(seed), text_codec_names(), corpus)
    os.makedirs(outdir, exist_ok=True)
    written = excluded = 0
    while written < count:
        data = fuzzer.top_level()
        if documented_difference(data):
            excluded += 1
            continue
        with open(os.path.join(outdir, "%05d.eml" % written), "wb") as f:
            f.write(data)
        written += 1
    print("written %d excluded %d" % (written, excluded))


if __name__ == "__main__":
    main()
