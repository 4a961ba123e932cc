#!/usr/bin/env python3
"""Writes a fixed, seeded set of adversarial e-mail messages for the
differential digest tests (tests/it/digest.rs).

Usage: gen_messages.py OUTDIR [COUNT]

The messages are not expectations: the test digests each one with Python
pyzor 1.1.2 (tests/ref/digest_ref.py) and with ours and compares. They aim
at the corners of the digest pipeline: charsets (real, aliased, bogus,
named like quoted-printable, RFC 2231), transfer encodings (valid and
broken), nested multiparts and message/rfc822, missing and wrong
boundaries, HTML oddities, Unicode whitespace and line boundaries, line
ends, NUL bytes, long lines, e-mail addresses and URLs.

The output depends only on SEED, COUNT and the Python version (3.11).
"""

import base64
import binascii
import os
import quopri
import random
import sys

SEED = 112  # pyzor 1.1.2
DEFAULT_COUNT = 3000

# (name written in the header, Python codec used to encode the text; None
# encodes as UTF-8 or Latin-1 at random, for names Python cannot decode).
CHARSETS = [
    ("us-ascii", "ascii"), ("US-ASCII", "ascii"), ("ascii", "ascii"),
    ("iso-8859-1", "latin-1"), ("ISO-8859-1", "latin-1"), ("latin1", "latin-1"),
    ("iso-8859-2", "iso-8859-2"), ("iso-8859-5", "iso-8859-5"),
    ("iso-8859-7", "iso-8859-7"), ("iso-8859-15", "iso-8859-15"),
    ("iso-8859-8-i", "iso-8859-8"), ("iso_8859-1:1987", "latin-1"),
    ("windows-1250", "cp1250"), ("windows-1251", "cp1251"),
    ("windows-1252", "cp1252"), ("windows-1253", "cp1253"),
    ("windows-1254", "cp1254"), ("windows-1255", "cp1255"),
    ("windows-1256", "cp1256"), ("windows-1257", "cp1257"),
    ("windows-1258", "cp1258"), ("cp1252", "cp1252"), ("windows-874", "cp874"),
    ("koi8-r", "koi8-r"), ("KOI8-U", "koi8-u"), ("cp866", "cp866"), ("ibm866", "cp866"),
    ("utf-8", "utf-8"), ("UTF-8", "utf-8"), ("utf8", "utf-8"), ("utf-8-sig", "utf-8-sig"),
    ("utf-16", "utf-16"), ("utf-16le", "utf-16-le"), ("UTF-16BE", "utf-16-be"),
    ("utf-32", "utf-32"), ("utf-7", "utf-7"), ("unicode-1-1-utf-7", "utf-7"),
    ("big5", "big5"), ("big5-hkscs", "big5hkscs"), ("gb2312", "gb2312"),
    ("GB2312", "gb2312"), ("gbk", "gbk"), ("gb18030", "gb18030"), ("hz-gb-2312", "hz"),
    ("euc-kr", "euc-kr"), ("ks_c_5601-1987", "euc-kr"), ("cp949", "cp949"),
    ("shift_jis", "shift_jis"), ("x-sjis", "shift_jis"), ("cp932", "cp932"),
    ("euc-jp", "euc-jp"), ("iso-2022-jp", "iso-2022-jp"), ("ISO-2022-JP-2", "iso-2022-jp-2"),
    ("iso-2022-kr", "iso-2022-kr"), ("tis-620", "tis-620"), ("macintosh", "mac-roman"),
    ("cp037", "cp037"), ("johab", "johab"),
    # Names Python does not know, or knows as something that is no text codec.
    ("x-unknown", None), ("unknown-8bit", None), ("foo", None), ("default", None),
    ("charset", None), ("x-user-defined", None), ("viscii", None), ("mbcs", None),
    ("base64", None), ("rot13", None), ("hex", None), ("zlib", None), ("bz2", None),
    ("uu", None), ("undefined", None), ("unicode_escape", None),
    ("raw-unicode-escape", None), ("idna", None), ("punycode", None),
    ("utf-8 ", None), (" utf-8", None), ("utf_8", None), ("UTF_16", None),
    # pyzor decodes these strictly.
    ("quoted-printable", None), ("QUOTED-PRINTABLE", None), ("quopri", None),
    ("quopri_codec", None), ("QuotedPrintable", None), ("quoted_printable", None),
]

TRANSFER_ENCODINGS = [
    None, "7bit", "8bit", "binary", "quoted-printable", "Quoted-Printable",
    "base64", "BASE64", "x-uuencode", "uuencode", "uue", "x-uue",
    "x-gzip64", "foo", "", "base64 ", "7-bit", "quoted-printable (comment)",
]

WORDS = (
    "hello world free money click here offer limited time only viagra "
    "cheap meds unsubscribe dear friend business proposal the of and to in "
    "is you that it he was for on are as with his they I at be this have "
    "from or one had by word but not what all were we when your can said "
    "there use an each which she do how their if will up other about out "
    "many then them these so some her would make like him into time has "
    "look two more write go see number no way could people my than first"
).split() + [
    "café", "naïve", "Übermäßig", "façade", "señor", "€uro", "ﬁne", "Ǆemal",
    "привет", "мир", "Ёлка", "καλημέρα", "Ωμέγα", "中文测试", "漢字", "繁體",
    "こんにちは", "カタカナ", "ｶﾀｶﾅ", "안녕하세요", "שלום", "مرحبا", "ไทย",
    "😀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "e\u0301", "Å", "\ufffd", "\u00ad", "\u200bzero",
    "ǅ", "ß", "İstanbul", "ıi", "ſtraße", "\u212aelvin",
    # Shapes of e-mail addresses and URLs.
    "john@example.com", "@foo", "foo@", "a@b", "x@@y", "@", "@@", "<user@host>",
    "mailto:x@y", "http://example.com/path?x=1", "HTTPS://EXAMPLE.COM", "ftp:x",
    "a:b", "ab:", ":ab", "a:", "www.example.com", "ſ:xx", "\u212a:xx", "İx:y",
    "ı:z", "x:y:z", "1:2", "é:x", "ab1:cd", "(http://x)", "<a:b>", "a@",
    "user.name+tag@sub.example.co.uk", "[x]@[y]", "ñ@ñ", "foo:bar@baz",
    # Lengths around pyzor's limits (8 per line, 10 per run).
    "aaaaaaaaa", "aaaaaaaaaa", "abcdefghijklmnop", "1234567", "12345678",
    "ÄÖÜÄÖÜÄÖÜ", "ÄÖÜÄÖÜÄÖÜÄ", "中文中文中文中文中文", "中文中文中文中文中",
    "x", "ab", "abc", "--", "...", "&amp;", "<b>", "=3D", "=\n",
]

SEPARATORS = (
    [" "] * 30 + ["  ", "\t", "\xa0", "\u2000", "\u3000", "\u1680", "\u202f",
                  "\u205f", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f",
                  "\x85", "\u2028", "\u2029", "\u200b", "\u180e", "\ufeff",
                  "\x00", "\r", "\x00 ", " \x00", "\u0085\u0085"]
)

HTML_FRAGMENTS = [
    "<p>", "</p>", "<br>", "<br/>", "<BR />", "<div class=x>", "</div>",
    "<a href=\"http://example.com/\">", "</a>", "<A HREF='x'>", "<img src=x alt=\"a > b\">",
    "&amp;", "&amp", "&lt;", "&gt", "&nbsp;", "&nbsp", "&eacute;", "&eacute",
    "&copy", "&notit;", "&notin;", "&unknown;", "&#233;", "&#233", "&#xE9;",
    "&#XE9;", "&#x110000;", "&#0;", "&#55296;", "&#128512;", "&#x;", "&#;",
    "&#65", "&", "&&", "& amp;", "&ampx", "&AMP;", "&#x80;", "&#150;",
    "<script>var a = '<p>not text</p>';</script>", "<SCRIPT>x < y</SCRIPT>",
    "<style>p { color: red }</style>", "<Style type=text/css>.x{}</stYle>",
    "<script>", "</script>", "<style>", "</style>", "<scriptx>", "</script >",
    "<!-- a comment -->", "<!--", "-->", "<!---->", "<!-- <p>hidden</p> -->",
    "<!DOCTYPE html>", "<!doctype html public>", "<![CDATA[ cdata text ]]>",
    "<![if !IE]>", "<![endif]>", "<!bogus>", "<?xml version=\"1.0\"?>", "<?php ?>",
    "< p>", "</ p>", "</>", "<>", "<", ">", "<a", "<a href=", "<a href=\"x",
    "<div\nclass=y>", "<p\tid=1>", "<textarea><b>x</b></textarea>",
    "<title>A title here</title>", "<td>cell</td>", "<table><tr><td>",
    "<a b=c d='e' f=\"g\" h>", "<a b='c>", "<x:y>", "</x:y>", "<p/>", "<1>",
    "</1>", "<<p>>", "<!-->", "<!--->", "<! -- x -- >", "<img src=x/>",
]

# Bytes that no charset, or not all of them, accept.
BAD_BYTES = [b"\xff", b"\xfe\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80",
             b"\x1b$B", b"\x1b(B", b"~{", b"~}", b"\x8e", b"\xa1", b"\x00",
             b"\xf4\x90\x80\x80", b"+AGEA-", b"+", b"\x0e", b"\x0f"]


class Generator:
    def __init__(self, rng):
        self.rng = rng
        self.boundary_serial = 0

    def chance(self, p):
        return self.rng.random() < p

    # --- text -----------------------------------------------------------

    def word(self):
        return self.rng.choice(WORDS)

    def line(self):
        rng = self.rng
        n = rng.choice([0, 1, 2, 3, 5, 8, 12, 20]) if not self.chance(0.01) else 3000
        parts = []
        for i in range(n):
            if i:
                parts.append(rng.choice(SEPARATORS))
            parts.append(self.word())
        return "".join(parts)

    def text(self):
        rng = self.rng
        count = rng.choice([0, 1, 2, 3, 4, 5, 6, 10, 25, 60])
        lines = [self.line() for _ in range(count)]
        return "\n".join(lines) + ("\n" if self.chance(0.8) else "")

    def html(self):
        rng = self.rng
        pieces = []
        if self.chance(0.7):
            pieces.append("<html><head><title>%s</title></head><body>" % self.word())
        for _ in range(rng.randint(0, 40)):
            if self.chance(0.5):
                pieces.append(self.line())
            else:
                pieces.append(rng.choice(HTML_FRAGMENTS))
            if self.chance(0.3):
                pieces.append("\n")
        if self.chance(0.6):
            pieces.append("</body></html>\n")
        return "".join(pieces)

    def encode_text(self, text, codec):
        rng = self.rng
        if codec is None:
            codec = rng.choice(["utf-8", "latin-1"])
        if self.chance(0.1):
            # Mislabelled: encoded with another charset than declared.
            codec = rng.choice(["utf-8", "latin-1", "cp1252", "shift_jis", "utf-16"])
        data = text.encode(codec, "replace" if self.chance(0.8) else "ignore")
        if self.chance(0.15):
            data = bytearray(data)
            for _ in range(rng.randint(1, 5)):
                at = rng.randint(0, len(data))
                data[at:at] = rng.choice(BAD_BYTES)
            data = bytes(data)
        return data

    # --- transfer encodings ----------------------------------------------

    def transfer_encode(self, data, cte):
        rng = self.rng
        name = (cte or "").strip().lower().split(" ")[0]
        if name == "quoted-printable":
            body = quopri.encodestring(data)
            if self.chance(0.4):
                body = self.corrupt(body, [b"=ZZ", b"=4", b"=\n", b"=  \n", b"=e9",
                                           b"==41", b"=", b"=\r\n", b"=0", b"= ", b"=3d"])
            return body
        if name == "base64":
            body = base64.encodebytes(data)
            if self.chance(0.5):
                kind = rng.randint(0, 6)
                if kind == 0:
                    body = body.replace(b"=", b"")
                elif kind == 1:
                    body = body.rstrip(b"\n") + b"==\n"
                elif kind == 2:
                    body = self.corrupt(body, [b"!", b"*", b"#", b"\xe9", b" ", b"\n\n", b"-", b"_"])
                elif kind == 3:
                    body = body[: max(0, len(body) - rng.randint(1, 7))]
                elif kind == 4:
                    body = self.corrupt(body, [b"====", b"=", b"A=", b"AB=C"])
                elif kind == 5:
                    body = data  # Not base64 at all.
                else:
                    body = b"\n".join(b"  " + chunk for chunk in body.split(b"\n"))
            return body
        if name in ("x-uuencode", "uuencode", "uue", "x-uue"):
            lines = [b"begin 644 file.txt\n"]
            for at in range(0, len(data), 45):
                lines.append(binascii.b2a_uu(data[at:at + 45]))
            lines.append(b"`\nend\n")
            kind = rng.randint(0, 5)
            if kind == 0:
                lines = lines[1:]  # No begin line.
            elif kind == 1:
                lines = lines[:-1]  # No end line.
            elif kind == 2 and len(lines) > 2:
                lines[1] = b"}" + lines[1][1:]  # Wrong length character.
            elif kind == 3:
                return data  # Not uuencoded at all.
            return b"".join(lines)
        return data

    def corrupt(self, body, junk):
        body = bytearray(body)
        for _ in range(self.rng.randint(1, 6)):
            at = self.rng.randint(0, len(body))
            body[at:at] = self.rng.choice(junk)
        return bytes(body)

    # --- headers ---------------------------------------------------------

    def charset_param(self, name):
        rng = self.rng
        kind = rng.randint(0, 19)
        if kind == 0:
            return "; charset*=us-ascii'en'%s" % name
        if kind == 1:
            return "; charset*=''%s" % "".join("%%%02X" % b for b in name.encode())
        if kind == 2 and len(name) > 2:
            return "; charset*0=%s; charset*1=%s" % (name[:2], name[2:])
        if kind == 3 and len(name) > 2:
            return "; charset*0*=''%s; charset*1=%s" % (name[:2], name[2:])
        if kind == 4:
            return "; charset*=bogus''%s" % name
        if kind == 5:
            return "; charset*=utf-8''%FF%FE"
        if kind == 6:
            return "; charset='%s'" % name
        if kind == 7:
            return "; CHARSET = \"%s\" ; format=flowed" % name
        if kind == 8:
            return ";charset=%s;" % name
        if kind == 9:
            return "; charset=\"%s\" (comment)" % name
        if kind == 10:
            return "; charset=\"%s\"; charset=utf-16" % name
        if kind == 11:
            return "; charset=\"%s\\\"\"" % name
        return "; charset=\"%s\"" % name if self.chance(0.5) else "; charset=%s" % name

    def noise_headers(self):
        rng = self.rng
        headers = [
            "From: %s <sender@example.com>" % self.word(),
            "To: victim@example.org",
            "Subject: %s" % self.line()[:200],
            "Date: Mon, 1 Jan 2024 00:00:00 +0000",
            "Message-ID: <%d@gen.example>" % rng.randint(0, 10 ** 9),
        ]
        if self.chance(0.1):
            headers.append("X-Folded: a\n\tb\n c")
        if self.chance(0.05):
            headers.append("X-Long: " + "x" * rng.choice([998, 5000, 20000]))
        if self.chance(0.05):
            headers.append("Subject: =?utf-8?b?w6nDqQ==?= =?iso-8859-1?q?caf=E9?=")
        if self.chance(0.05):
            headers.append("X-Eight-Bit: caf\udce9")
        rng.shuffle(headers)
        return headers

    # --- parts -----------------------------------------------------------

    def leaf(self, depth):
        rng = self.rng
        kind = rng.random()
        headers = []
        if kind < 0.45:
            subtype = rng.choice(["plain"] * 6 + ["PLAIN", "enriched", "x-foo", "calendar", ""])
            maintype = rng.choice(["text"] * 9 + ["TEXT"])
            name, codec = rng.choice(CHARSETS)
            text = self.text()
            data = self.encode_text(text, codec)
        elif kind < 0.75:
            subtype = rng.choice(["html"] * 5 + ["HTML", "Html"])
            maintype = "text"
            name, codec = rng.choice(CHARSETS)
            data = self.encode_text(self.html(), codec)
        elif kind < 0.92:
            maintype, subtype = rng.choice([("application", "octet-stream"), ("image", "gif"),
                                            ("application", "pdf"), ("audio", "x-wav"),
                                            ("application", "x-foo"), ("video", "mp4")])
            name, codec = rng.choice(CHARSETS)
            if self.chance(0.5):
                data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
            else:
                data = self.encode_text(self.text(), codec)
        else:
            # No Content-Type at all: text/plain us-ascii (or message/rfc822
            # inside multipart/digest).
            cte = rng.choice(TRANSFER_ENCODINGS)
            if cte is not None:
                headers.append("Content-Transfer-Encoding: %s" % cte)
            return headers, self.transfer_encode(self.encode_text(self.text(), None), cte)
        ctype = "%s/%s" % (maintype, subtype) if subtype else maintype
        if self.chance(0.03):
            ctype = rng.choice(["text", "text/", "/plain", "text/plain/x", "text plain", ""])
        if self.chance(0.85):
            ctype += self.charset_param(name)
        if maintype != "text" and self.chance(0.5):
            ctype += "; name=\"file.bin\""
        headers.append("Content-Type: %s" % ctype)
        cte = rng.choice(TRANSFER_ENCODINGS)
        if cte is not None:
            headers.append("Content-Transfer-Encoding: %s" % cte)
        if self.chance(0.05):
            headers.append("Content-Type: text/html; charset=utf-16")
        return headers, self.transfer_encode(data, cte)

    def boundary(self):
        rng = self.rng
        self.boundary_serial += 1
        kind = rng.randint(0, 9)
        if kind == 0:
            return "b%d '()+_,-./:=?" % self.boundary_serial
        if kind == 1:
            return "=_" + "x" * 68 + str(self.boundary_serial)
        if kind == 2:
            return "a b c %d" % self.boundary_serial
        return "----=_Part_%d_%d" % (self.boundary_serial, rng.randint(0, 99999))

    def multipart(self, depth):
        rng = self.rng
        subtype = rng.choice(["mixed", "alternative", "related", "digest", "report",
                              "signed", "MIXED", "x-foo"])
        boundary = self.boundary()
        kind = rng.randint(0, 14)
        ctype = "multipart/%s; boundary=\"%s\"" % (subtype, boundary)
        if kind == 0:
            ctype = "multipart/%s" % subtype  # No boundary parameter.
        elif kind == 1:
            ctype = "multipart/%s; boundary=\"wrong-%s\"" % (subtype, boundary)
        elif kind == 2:
            ctype = "multipart/%s; boundary=\"\"" % subtype
        headers = ["MIME-Version: 1.0", "Content-Type: %s" % ctype]
        if self.chance(0.1):
            headers.append("Content-Transfer-Encoding: %s" % rng.choice(["base64", "8bit", "7bit"]))
        out = []
        if self.chance(0.3):
            out.append(self.encode_text(self.text(), None))
        for _ in range(rng.randint(0, 4)):
            out.append(b"--" + boundary.encode() + (b"  junk" if self.chance(0.05) else b"") + b"\n")
            part_headers, part_body = self.part(depth + 1)
            if self.chance(0.05):
                out.append(part_body)  # No blank line: the body is read as headers.
            else:
                out.append(self.join(part_headers, part_body))
            if not part_body.endswith(b"\n") or self.chance(0.5):
                out.append(b"\n")
        kind = rng.randint(0, 9)
        if kind == 0:
            pass  # No closing delimiter.
        elif kind == 1:
            out.append(b"--" + boundary.encode() + b"--  \n")
        else:
            out.append(b"--" + boundary.encode() + b"--\n")
        if self.chance(0.3):
            out.append(self.encode_text(self.text(), None))
        return headers, b"".join(out)

    def rfc822(self, depth):
        headers = ["Content-Type: message/rfc822"]
        if self.chance(0.2):
            headers.append("Content-Transfer-Encoding: %s" % self.rng.choice(["7bit", "base64", "8bit"]))
        if self.chance(0.1):
            return headers, b""
        return headers, self.message(depth + 1)

    def part(self, depth):
        r = self.rng.random()
        if depth < 5 and r < 0.25:
            return self.multipart(depth)
        if depth < 5 and r < 0.32:
            return self.rfc822(depth)
        return self.leaf(depth)

    def join(self, headers, body):
        head = "".join(h + "\n" for h in headers).encode("utf-8", "surrogateescape")
        return head + b"\n" + body

    def message(self, depth=0):
        headers, body = self.part(depth)
        return self.join(self.noise_headers() + headers, body)

    # --- whole messages --------------------------------------------------

    def line_ends(self, data):
        kind = self.rng.randint(0, 9)
        if kind == 0:
            return data.replace(b"\n", b"\r\n")
        if kind == 1:
            return data.replace(b"\n", b"\r")
        if kind == 2:
            pieces = data.split(b"\n")
            return b"".join(p + self.rng.choice([b"\n", b"\r\n", b"\r", b"\n\r"]) for p in pieces)
        return data

    def top_level(self):
        rng = self.rng
        r = rng.random()
        if r < 0.01:
            return bytes(rng.randrange(256) for _ in range(rng.randint(0, 5000)))
        if r < 0.02:
            return rng.choice([b"", b"\n", b"\r\n", b"Subject: x", b"Subject: x\n",
                               b"no header here\n\nbody body body\n", b"\n\nbody only line\n",
                               b"From someone Mon Jan 1 00:00:00 2024\nSubject: x\n\nbody text line\n",
                               b"Content-Type: text/plain\n\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\n"])
        data = self.message()
        if self.chance(0.03):
            data = b"From sender@example.com Mon Jan  1 00:00:00 2024\n" + data
        return self.line_ends(data)


def systematic(gen):
    """One message per charset and transfer encoding, text and HTML."""
    for name, codec in CHARSETS:
        for cte in (None, "8bit", "quoted-printable", "base64", "x-uuencode"):
            for subtype, body in (("plain", gen.text()), ("html", gen.html())):
                data = gen.transfer_encode(gen.encode_text(body, codec), cte)
                headers = ["Content-Type: text/%s%s" % (subtype, gen.charset_param(name))]
                if cte is not None:
                    headers.append("Content-Transfer-Encoding: %s" % cte)
                yield gen.join(["Subject: systematic"] + headers, data)


def main():
    outdir = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_COUNT
    gen = Generator(random.Random(SEED))
    os.makedirs(outdir, exist_ok=True)
    n = 0
    messages = list(systematic(gen))
    while len(messages) < count:
        messages.append(gen.top_level())
    for data in messages:
        with open(os.path.join(outdir, "%05d.eml" % n), "wb") as f:
            f.write(data)
        n += 1
    print(n)


if __name__ == "__main__":
    main()
