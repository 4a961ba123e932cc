//! The Pyzor digest of a message, identical to Python pyzor 1.1.2's
//! `DataDigester` over `email.message_from_bytes` on CPython 3.11.
//!
//! The pipeline: [`mime`] walks the message parts as Python's `email`
//! package does and hands back each part's payload; [`charset`] decodes text
//! parts with Python's codecs; [`html`] strips HTML parts as
//! `html.parser.HTMLParser` does; [`normalize`] splits lines as
//! `str.splitlines()` and removes what pyzor removes. The chosen lines are
//! hashed with SHA-1.
//!
//! This module does no I/O and no logging: bytes in, digest out.

pub mod charset;
pub mod html;
pub mod mime;
pub mod normalize;

use std::fmt;

use sha1::{Digest as _, Sha1};

use self::charset::Errors;
use self::mime::Payload;

/// Lines shorter than this (in code points) are left out
/// (pyzor's `DataDigester.min_line_length`).
pub const MIN_LINE_LENGTH: usize = 8;

/// Messages with at most this many lines are digested whole
/// (pyzor's `DataDigester.atomic_num_lines`).
pub const ATOMIC_NUM_LINES: usize = 4;

/// Which lines of a longer message are digested: (percent offset, count)
/// pairs, pyzor's hard-coded `digest_spec`.
pub const DIGEST_SPEC: [(usize, usize); 2] = [(20, 3), (60, 3)];

/// A Pyzor digest: the SHA-1 of the selected normalised lines.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 20]);

impl Digest {
    /// The digest of a message with no usable text (SHA-1 of nothing), the
    /// most common source of Pyzor false positives.
    pub const EMPTY: Digest = Digest([
        0xda, 0x39, 0xa3, 0xee, 0x5e, 0x6b, 0x4b, 0x0d, 0x32, 0x55, 0xbf, 0xef, 0x95, 0x60, 0x18,
        0x90, 0xaf, 0xd8, 0x07, 0x09,
    ]);

    /// The 40 lower-case hex digits pyzor prints and sends.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether this is the digest of a message with no usable text.
    pub fn is_empty(&self) -> bool {
        *self == Self::EMPTY
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// The digest of a raw RFC 5322 message, as `pyzor digest` prints it.
pub fn digest(message: &[u8]) -> Digest {
    let lines = predigest(message);
    let mut hasher = Sha1::new();
    for index in selected(lines.len()) {
        hasher.update(lines.get(index).as_bytes());
    }
    Digest(hasher.finalize().into())
}

/// The normalised lines that enter the digest, in the order they are
/// hashed: what `pyzor predigest` prints, one per line.
pub fn predigest_lines(message: &[u8]) -> Vec<String> {
    let lines = predigest(message);
    selected(lines.len())
        .map(|index| lines.get(index).to_owned())
        .collect()
}

/// Every normalised line long enough to count, in message order, before
/// the selection: what the differential tests compare with Python's.
#[doc(hidden)]
pub fn counted_lines(message: &[u8]) -> Vec<String> {
    let lines = predigest(message);
    (0..lines.len())
        .map(|index| lines.get(index).to_owned())
        .collect()
}

/// Every normalised line long enough to count, in message order.
fn predigest(message: &[u8]) -> normalize::Lines {
    let mut lines = normalize::Lines::default();
    for payload in text_payloads(message) {
        lines.push_text(&payload);
    }
    lines
}

/// The indices of the lines pyzor hashes, out of `count`: all of them for
/// short messages, otherwise a few at fixed percentages (an index past the
/// end is skipped, one may repeat).
fn selected(count: usize) -> impl Iterator<Item = usize> {
    let whole = count <= ATOMIC_NUM_LINES;
    let spec: &[(usize, usize)] = if whole {
        &[(0, ATOMIC_NUM_LINES)]
    } else {
        &DIGEST_SPEC
    };
    spec.iter().flat_map(move |&(offset, take)| {
        let start = offset * count / 100;
        (start..start + take).filter(move |&i| i < count)
    })
}

/// Each part's text, as pyzor's `DataDigester.digest_payloads` yields it.
fn text_payloads(message: &[u8]) -> impl Iterator<Item = String> {
    mime::payloads(message)
        .into_iter()
        .filter_map(|payload| match payload {
            Payload::Raw(text) => Some(text),
            Payload::Text {
                body,
                charset,
                html,
            } => {
                let text = decode_text(&body, charset.as_deref())?;
                Some(if html { html::strip(&text) } else { text })
            }
        })
}

/// Decodes a text part's body as pyzor does: with the part's charset and
/// errors ignored, strictly for charsets named like quoted-printable, and
/// with ascii when the charset is missing or unusable.
fn decode_text(body: &[u8], charset: Option<&str>) -> Option<String> {
    let charset = charset.map(|c| c.replace('\0', ""));
    let (name, errors) = match charset.as_deref() {
        None | Some("") => ("ascii", Errors::Ignore),
        Some(name) => {
            let folded = name.to_lowercase().replace('_', "-");
            let strict = matches!(
                folded.as_str(),
                "quopri-codec" | "quopri" | "quoted-printable" | "quotedprintable"
            );
            (
                name,
                if strict {
                    Errors::Strict
                } else {
                    Errors::Ignore
                },
            )
        }
    };
    match charset::decode(body, name, errors) {
        Ok(text) => Some(text),
        Err(_) => charset::decode(body, "ascii", Errors::Ignore).ok(),
    }
}
