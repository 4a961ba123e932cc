//! The MIME walk of pyzor's `DataDigester.digest_payloads` over CPython
//! 3.11's `email.message_from_bytes` (compat32): which parts there are, in
//! `Message.walk()` order, and what `get_payload` gives for each.
//!
//! [`parser`] emulates the feed parser, [`params`] the `Content-Type`
//! parameter code and [`transfer`] the transfer-encoding decoders. Text is
//! not decoded here (that is [`super::charset`]'s job), except where Python's
//! `get_payload()` itself decodes a non-text part holding 8-bit bytes.

mod params;
mod parser;
mod transfer;

use std::borrow::Cow;
use std::ops::Range;

use self::params::Param;
use super::charset::{self, Errors};

/// What one part of a message gives to the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A `text/*` part: its body after `get_payload(decode=True)` and its
    /// `get_content_charset()`; `html` when the subtype is `html`.
    Text {
        body: Vec<u8>,
        charset: Option<String>,
        html: bool,
    },
    /// A leaf that is neither text nor multipart: `get_payload()` as Python
    /// returns it (a `str`, still transfer-encoded).
    Raw(String),
}

/// The payloads of a message's parts in `Message.walk()` order.
pub fn payloads(message: &[u8]) -> Vec<Payload> {
    parser::parse(message)
        .iter()
        .filter_map(|part| payload(message, part))
        .collect()
}

/// What `digest_payloads` takes from one part; `None` for containers.
fn payload(message: &[u8], part: &parser::Part) -> Option<Payload> {
    let content_type = part.content_type.clone().map(|range| &message[range]);
    if part.ctype.is_text() {
        let raw = join(message, part.payload.as_deref().unwrap_or_default());
        let encoding = part.transfer_encoding.clone().map(|range| &message[range]);
        return Some(Payload::Text {
            body: decode_body(raw, encoding.unwrap_or_default()),
            charset: content_type.and_then(params::content_charset),
            html: part.ctype.is_html(),
        });
    }
    if part.multipart {
        return None;
    }
    let raw = join(message, part.payload.as_deref()?);
    Some(Payload::Raw(raw_text(&raw, content_type)))
}

/// The payload string's bytes (`surrogateescape` maps them 1:1).
fn join<'a>(message: &'a [u8], pieces: &[Range<usize>]) -> Cow<'a, [u8]> {
    match pieces {
        [] => Cow::Borrowed(&[]),
        [one] => Cow::Borrowed(&message[one.clone()]),
        many => Cow::Owned(
            many.iter()
                .flat_map(|r| &message[r.clone()])
                .copied()
                .collect(),
        ),
    }
}

/// `get_payload(decode=True)` by `str(Content-Transfer-Encoding).lower()`,
/// which Python compares whole, without stripping.
fn decode_body(raw: Cow<'_, [u8]>, encoding: &[u8]) -> Vec<u8> {
    let is = |name: &str| encoding.eq_ignore_ascii_case(name.as_bytes());
    if is("quoted-printable") {
        transfer::quoted_printable(&raw)
    } else if is("base64") {
        transfer::base64(&raw)
    } else if ["x-uuencode", "uuencode", "uue", "x-uue"]
        .into_iter()
        .any(is)
    {
        transfer::uudecode(&raw).unwrap_or_else(|| raw.into_owned())
    } else {
        raw.into_owned()
    }
}

/// `get_payload()` of a non-text leaf: ASCII as it is; with 8-bit bytes,
/// decoded with `get_param('charset', 'ascii')` and `errors='replace'`,
/// falling back to ASCII for unknown charsets.
fn raw_text(raw: &[u8], content_type: Option<&[u8]>) -> String {
    if raw.is_ascii() {
        return String::from_utf8_lossy(raw).into_owned();
    }
    // An RFC 2231 charset is a tuple that `bytes.decode` rejects with
    // TypeError in Python; ASCII is used for it here.
    let name = match content_type.and_then(|value| params::get_param(value, "charset")) {
        Some(Param::Plain(name)) => name,
        _ => "ascii".to_owned(),
    };
    charset::decode(raw, &name, Errors::Replace)
        .or_else(|_| charset::decode(raw, "ascii", Errors::Replace))
        .unwrap_or_else(|_| {
            raw.iter()
                .map(|&b| {
                    if b.is_ascii() {
                        char::from(b)
                    } else {
                        '\u{fffd}'
                    }
                })
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &[u8], charset: Option<&str>, html: bool) -> Payload {
        Payload::Text {
            body: body.to_vec(),
            charset: charset.map(str::to_owned),
            html,
        }
    }

    fn raw(text: &str) -> Payload {
        Payload::Raw(text.to_owned())
    }

    // Each expectation is what CPython 3.11.7 gives for
    // [(p.get_payload(decode=True), p.get_content_charset(), ...) for p in
    //  email.message_from_bytes(MESSAGE).walk()] the way pyzor walks it.
    #[test]
    fn walks_as_python() {
        let cases: Vec<(&[u8], Vec<Payload>)> = vec![
            (
                // The line break before a boundary belongs to the boundary.
                b"Content-Type: multipart/mixed; boundary=b\n\npre\n--b\n\none\r\n--b\n\
                  Content-Type: text/html; charset=UTF-8\n\
                  Content-Transfer-Encoding: quoted-printable\n\n<p>=E9</p>=\n\n--b--\nepi\n",
                vec![
                    text(b"one", None, false),
                    text(b"<p>\xe9</p>", Some("utf-8"), true),
                ],
            ),
            (
                // A `From ` line ending the headers starts the body.
                b"Subject: x\nFrom inner\n\nbody\n",
                vec![text(b"From inner\nbody\n", None, false)],
            ),
            (
                b"Content-Type: multipart/mixed\n\nno boundary\n",
                vec![raw("no boundary\n")],
            ),
            (
                b"Content-Type: multipart/mixed; boundary=b\n\n--b--\n",
                vec![raw("")],
            ),
            (
                b"Content-Type: message/delivery-status\n\nA: b\n\nC: d\nbody\n",
                vec![text(b"", None, false), text(b"body\n", None, false)],
            ),
            (
                // 8-bit bytes in a non-text part: decoded with errors='replace'.
                b"Content-Type: application/octet-stream; charset=ascii\n\
                  Content-Transfer-Encoding: base64\n\n\xe9QUJD\n",
                vec![raw("\u{fffd}QUJD\n")],
            ),
            (
                // In multipart/digest the default type is message/rfc822.
                b"Content-Type: multipart/digest; boundary=d\n\n--d\n\n\
                  Content-Type: text/plain\n\ninner\n--d--\n",
                vec![text(b"inner", None, false)],
            ),
            (
                // The encoding is compared unstripped.
                b"Content-Transfer-Encoding: base64 \n\nQUJD\n",
                vec![text(b"QUJD\n", None, false)],
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(payloads(message), expected, "{}", message.escape_ascii());
        }
    }

    #[test]
    fn deep_nesting_stays_bounded() {
        // Python raises RecursionError here; we stop nesting at MAX_DEPTH
        // and must neither overflow the stack nor panic.
        let mut message = b"Content-Type: message/rfc822\n\n".repeat(5000);
        message.extend_from_slice(b"x\n");
        let walked = payloads(&message);
        assert_eq!(walked.len(), 1);
        let mut message = Vec::new();
        for depth in 0..5000 {
            message.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{depth}\n\n--b{depth}\n")
                    .as_bytes(),
            );
        }
        assert_eq!(payloads(&message).len(), 1);
    }

    #[test]
    fn empty_message() {
        // [p.get_payload(decode=True) for p in message_from_bytes(b'').walk()] == [b'']
        assert_eq!(payloads(b""), vec![text(b"", None, false)]);
    }
}
