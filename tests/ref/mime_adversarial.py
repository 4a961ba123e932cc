#!/usr/bin/env python3
"""Writes adversarial messages for the MIME walk to a directory:

    python3 tests/ref/mime_adversarial.py OUTDIR [COUNT] [SEED]

A fixed set of hand-written cases (broken boundaries, nested multiparts,
rfc822 and delivery-status parts, CR-only and mixed line ends, NULs, 8-bit
headers, RFC 2231 parameters, bad base64 and quoted-printable, uuencode,
headers without body, no trailing newline) plus COUNT random ones assembled
from the same pieces. Compare the two implementations on them with
tests/ref/mime_payloads.py and `cargo run --example mime_dump`.
"""
import os
import random
import sys

FIXED = [
    b"",
    b"\n",
    b"Subject: x",
    b"Subject: x\n",
    b"Subject: x\n\nbody",
    b"Subject: x\r\n\r\nbody\r\n",
    b"Subject: x\r\rbody\rline\r",
    b"From someone Mon Jan 1\nSubject: x\n\nbody\n",
    b"Subject: x\nFrom inner\n\nbody\n",
    b"Subject: x\nFrom inner\nTo: y\n\nbody\n",
    b" folded first\nSubject: x\n\nbody\n",
    b"Subject: x\nnot a header\nbody\n",
    b":colon\nContent-Type: text/html\n\n<b>x</b>\n",
    b"Content-Type: text/plain; charset=\"UTF-8\"\nContent-Transfer-Encoding: BASE64\n\nw6k=\n",
    b"Content-Transfer-Encoding: base64 \n\nQUJD\n",
    b"Content-Transfer-Encoding:\n base64\n\nQUJD\n",
    b"Content-Type: text/plain; charset*=utf-8''%C3%A9\n\nx\n",
    b"Content-Type: text/plain; charset*0*=us-ascii''utf; charset*1=-8\n\nx\n",
    b"Content-Type: multipart/mixed\n\nno boundary\n",
    b"Content-Type: multipart/mixed; boundary=b\n\npreamble\n--b\n\none\n--b\nContent-Type: text/html\n\ntwo\n--b--\nepilogue\n",
    b"Content-Type: multipart/mixed; boundary=b\n\npreamble only\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b--\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nunclosed\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n--b--\nx\n--b\n\ny\n",
    b"Content-Type: multipart/mixed; boundary=\"o\"\n\n--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\n\ninner\n--o\n\nouter\n--o--\n",
    b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: a\n\ndigest body\n--d\nContent-Type: text/plain\n\nplain\n--d--\n",
    b"Content-Type: message/rfc822\n\nSubject: inner\nContent-Type: text/html\n\n<p>x</p>\n",
    b"Content-Type: message/delivery-status\n\nReporting-MTA: x\n\nFinal-Recipient: y\nAction: failed\n\n\nStatus: 5.0.0\nbody line\n",
    b"Content-Type: multipart/report; boundary=r\n\n--r\nContent-Type: message/delivery-status\n\nA: b\n\nC: d\n--r\nContent-Type: text/plain\n\nz\n--r--\n",
    b"Content-Type: application/octet-stream; charset=latin-1\n\n\xe9\xe8\n",
    b"Content-Type: application/octet-stream\n\n\xe9\x00\n",
    b"Content-Type: image/gif; charset*=utf-8''x\n\n\xe9\n",
    b"Content-Type: text/pl\xe9in\n\nx\n",
    b"Content-Type: text/plain; charset=\xe9\n\nx\n",
    b"Content-Type: multipart/mixed; boundary=\"\xe9\"\n\n--\xe9\n\nx\n",
    b"Content-Transfer-Encoding: quoted-printable\n\na=\r\nb=3D=4=\n=ZZ=\rzz\nend=",
    b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 f\n#86)C\n`\nend\n",
    b"Content-Transfer-Encoding: uue\n\nbegin 0o_7 f\n#86)Cxx\n\nend\n",
    b"Content-Transfer-Encoding: uuencode\n\nbegin x f\nbegin 644\n$86)C\nend\n",
    b"Content-Type: text/plain; charset=\"a\\\"b\"; x=\"y;z\"\n\nq\n",
    b"Content-Type: ; charset=x\n\nq\n",
    b"Content-Type: charset=koi8-r\n\nq\n",
    b"Content-Type: text/plain\nContent-Type: text/html\n\nfirst wins\n",
    b"Content-Type: multipart/mixed; boundary=\"\"\n\n--\n\nempty boundary\n----\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ncrlf\r\n--b--\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\rpre\r--b\r\rcr only\r--b--\r",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b \t\n\nws\n--b-- \n",
]

CRLF = [b"\n", b"\r\n", b"\r"]
TYPES = [b"text/plain", b"text/html", b"TEXT/HTML", b"text/", b"text", b"application/octet-stream",
         b"image/png", b"multipart/mixed", b"multipart/alternative", b"multipart/digest",
         b"message/rfc822", b"message/delivery-status", b"message/partial", b"bogus//x",
         b" text/plain ", b"multipart/related"]
CTES = [b"7bit", b"base64", b"quoted-printable", b"Quoted-Printable", b"x-uuencode", b"uue",
        b"8bit", b"base64 ", b"bogus"]
CHARSETS = [b"us-ascii", b"UTF-8", b"\"iso-8859-1\"", b"'x'", b"\xe9", b"", b"utf-8\x00"]
WORDS = [b"hello", b"=3D", b"=", b"=\n", b"QUJD", b"QQ==", b"\xe9\xe8", b"\x00", b"--", b"From x",
         b"begin 644 f", b"#86)C", b"`", b"end", b" ", b"\t", b":", b"<b>", b"Subject: y", b"%41",
         b"abcdefghijklmnop", b"====", b"\xff"]


def line(r):
    return b" ".join(r.choice(WORDS) for _ in range(r.randint(0, 4)))


def content_type(r, boundary):
    ctype = r.choice(TYPES)
    params = []
    if r.random() < 0.5:
        params.append(b"charset=" + r.choice(CHARSETS))
    if r.random() < 0.2:
        params.append(b"charset*=" + r.choice([b"utf-8''%41", b"us-ascii'en'x", b"''y", b"z"]))
    if r.random() < 0.1:
        params.append(b"charset*0=ut; charset*1=f-8")
    if ctype.startswith(b"multipart") or r.random() < 0.2:
        if r.random() < 0.9:
            q = r.random() < 0.5
            params.append(b"boundary=" + (b'"' + boundary + b'"' if q else boundary))
    r.shuffle(params)
    return b"; ".join([ctype] + params)


def part(r, depth, boundaries, nl):
    out = []
    if r.random() < 0.05:
        out.append(b"From x" + nl)
    boundary = b"b%d" % depth + r.choice([b"", b"=_x", b" "])
    headers = []
    if r.random() < 0.85:
        headers.append(b"Content-Type: " + content_type(r, boundary))
    if r.random() < 0.4:
        headers.append(b"Content-Transfer-Encoding: " + r.choice(CTES))
    if r.random() < 0.3:
        headers.append(b"Subject: " + line(r))
    if r.random() < 0.1:
        headers.append(b" continuation")
    if r.random() < 0.05:
        headers.append(b"From inner")
    r.shuffle(headers)
    for h in headers:
        out.append(h + (nl if r.random() < 0.9 else r.choice(CRLF)))
    if r.random() < 0.9:
        out.append(nl)
    ctype = headers and b"multipart" in b"".join(headers)
    if ctype and depth < 4 and r.random() < 0.8:
        if r.random() < 0.5:
            out.append(line(r) + nl)
        for _ in range(r.randint(0, 3)):
            out.append(b"--" + boundary.strip() + r.choice([b"", b" ", b"--"]) + nl)
            out.append(part(r, depth + 1, boundaries + [boundary], nl))
        if r.random() < 0.7:
            out.append(b"--" + boundary.strip() + b"--" + nl)
        if r.random() < 0.3:
            out.append(line(r) + nl)
    else:
        for _ in range(r.randint(0, 6)):
            if boundaries and r.random() < 0.05:
                out.append(b"--" + r.choice(boundaries).strip() + nl)
            out.append(line(r) + (nl if r.random() < 0.85 else r.choice(CRLF)))
    return b"".join(out)


def main():
    outdir = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    r = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    os.makedirs(outdir, exist_ok=True)
    for i, data in enumerate(FIXED):
        with open(os.path.join(outdir, "fixed-%03d.eml" % i), "wb") as f:
            f.write(data)
    for i in range(count):
        data = part(r, 0, [], r.choice(CRLF))
        if r.random() < 0.2:
            data = data.rstrip(b"\r\n")
        with open(os.path.join(outdir, "random-%05d.eml" % i), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
