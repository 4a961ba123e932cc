#!/usr/bin/env python3
"""Prints the charset differential cases with the reference Python's results.

Run by the Rust test digest::charset::tests::matches_python_on_generated_cases
(interpreter from PYZOR_REF_PYTHON). Each line is tab-separated:
charset (hex of UTF-8), handler, input (hex), and Python's
`input.decode(charset, handler)` as hex of UTF-8, or LookupError or
UnicodeError. Lone surrogates are left out of results: the Rust side drops
them (see src/digest/charset.rs).
"""

import encodings.aliases
import random
import sys
import warnings

warnings.simplefilter("ignore")

MODES = ("strict", "ignore", "replace")
# JIS X 0213 codecs: only their JIS X 0208 subset is implemented, so they are
# checked by name only (see the report in src/digest/charset.rs)
INEXACT = {"euc_jis_2004", "euc_jisx0213", "shift_jis_2004", "shift_jisx0213", "iso2022_jp_2004", "iso2022_jp_3"}
MAIL_NAMES = (
    "us-ascii iso-8859-1 windows-1252 iso-8859-15 utf-8 big5 gb2312 default iso-8859-2 "
    "default_charset windows-1251 iso-2022-jp ks_c_5601-1987 windows-1254 koi8-r iso-8859-9 "
    "unknown-8bit windows-1256 iso-8859-3 chinesebig5 euc-kr gb2312_charset ascii UTF-8 "
    "Windows-1252 ISO-8859-1 x-unknown cp-850 utf8 latin1 shift_jis sjis x-sjis euc-jp gbk "
    "gb18030 cp936 ms936 big5-hkscs koi8-u utf-16 utf-16le utf-16be utf-32 utf-7 x-mac-roman "
    "macintosh tis-620 windows-874 iso-2022-kr hz-gb-2312 johab cp949 uhc quoted-printable "
    "base64 rot13 hex zlib bz2 uu quopri base64_codec rot-13 idna punycode unicode-escape "
    "raw-unicode-escape undefined charmap mbcs dbcs oem aliases __init__ utf_8_sig "
    "8859 iso8859.1 iso-8859.15 latin1. u.t.f.8 _utf8 UTF 8 utf--8"
).split(" ")


def text_codecs():
    import encodings
    import importlib
    import os

    names = []
    directory = os.path.dirname(encodings.__file__)
    for file in sorted(os.listdir(directory)):
        if not file.endswith(".py"):
            continue
        try:
            module = importlib.import_module("encodings." + file[:-3])
            info = module.getregentry()
        except (ImportError, AttributeError):
            continue
        if getattr(info, "_is_text_encoding", True):
            names.append(file[:-3])
    return names


def result(data, charset, mode):
    try:
        text = data.decode(charset, mode)
    except LookupError:
        return "LookupError"
    except (UnicodeError, ValueError):
        return "UnicodeError"
    text = "".join(c for c in text if not 0xD800 <= ord(c) < 0xE000)
    return text.encode("utf-8").hex()


def emit(out, charset, mode, data):
    out.append("\t".join((charset.encode("utf-8").hex(), mode, data.hex(), result(data, charset, mode))))


SAMPLE = (
    "Hello, world! caf\u00e9 na\u00efve \u00a3\u20ac \u0436\u0443\u0440\u043d\u0430\u043b "
    "\u03b1\u03b2\u03b3 \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 "
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \uff76\uff80\uff76\uff85 "
    "\u4e2d\u6587\u7b80\u4f53 \u7e41\u9ad4\u4e2d\u6587 \ud55c\uad6d\uc5b4 "
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22 \U0001f600 ~\\ \u2014\u00b7\u301c\uff5e\n"
)


def main():
    rng = random.Random(20240601)
    out = []
    names = set(MAIL_NAMES)
    for alias, module in encodings.aliases.aliases.items():
        names.update((alias, module, alias.upper(), alias.replace("_", "-"), " " + alias + " ", alias.replace("_", ".")))
    codecs = text_codecs()
    names.update(codecs)
    for name in sorted(names):
        for mode in ("strict", "ignore"):
            emit(out, name, mode, b"a\xe9\x80b+AGE-")
    high = bytes(range(0x80, 0x100))
    for codec in [codec for codec in codecs if codec not in INEXACT]:
        for mode in MODES:
            emit(out, codec, mode, bytes(range(256)))
            emit(out, codec, mode, SAMPLE.encode("utf-8"))
            try:
                emit(out, codec, mode, SAMPLE.encode(codec, "ignore"))
            except Exception:
                pass
        for byte in range(256):
            emit(out, codec, "replace", bytes([byte]))
            emit(out, codec, "replace", bytes([byte]) + b"A")
        # every pair after each lead byte, separated so each starts afresh
        for lead in range(0x80, 0x100):
            for mode in ("ignore", "replace"):
                emit(out, codec, mode, b"".join(bytes([lead, trail]) + b"\n" for trail in range(256)))
        alphabets = (
            bytes(range(256)),
            high + b"A\n",
            b"+-/AZaz09!\\ \x1b$()B@JN.&uxU{}~\x0e\x0f" + high[:8] + b"0123456789abcdefABCDEF",
            b"\x1b$B(J" + bytes(range(0x21, 0x7F)),
            b"\x8e\x8f\xa1\xa4\xd4\xfe\x81\x30\x39\x40\x7e\xff\x00\xd8\xdc",
        )
        for _ in range(150):
            alphabet = rng.choice(alphabets)
            data = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 24)))
            for mode in MODES:
                emit(out, codec, mode, data)
    for codec in ("euc_jp",):
        for c2 in range(0xA0, 0x100):
            emit(out, codec, "replace", b"".join(bytes([0x8F, c2, c3]) + b"\n" for c3 in range(0xA0, 0x100)))
    for codec in ("iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_ext", "iso2022_kr"):
        for escape in (b"\x1b$B", b"\x1b$(D", b"\x1b$(C", b"\x1b$A", b"\x1b(J", b"\x1b(I", b"\x1b$)C\x0e"):
            for row in range(0x20, 0x80):
                data = escape + b"".join(bytes([row, cell]) for cell in range(0x20, 0x80)) + b"\x1b(B\n"
                emit(out, codec, "replace", data)
    for _ in range(3000):
        data = bytes([rng.randrange(0x81, 0xFF), rng.randrange(0x30, 0x3A), rng.randrange(0x80, 0x100), rng.randrange(0x2F, 0x3B)])
        emit(out, "gb18030", "replace", data)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
