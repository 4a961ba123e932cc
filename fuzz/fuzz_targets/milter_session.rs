//! The milter's per-connection session fed arbitrary headers and body
//! chunks as an MTA passes them (folded lines joined by a bare LF, one
//! leading space removed unless negotiated), two messages per session
//! through one digest memo, then decided on arbitrary server counts.
//!
//! Input: a flags byte, a chunking seed byte, then a message whose header
//! block (up to the first empty line) becomes the header callbacks and
//! whose rest becomes the body chunks.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pyzor_milter::digest;
use pyzor_milter::milter::cache::DigestMemo;
use pyzor_milter::milter::config::Config;
use pyzor_milter::milter::session::{Failure, ServerCheck, Session, SkipReason, Step, Verdict};

/// Limits small enough for a fuzz input to cross them, and the default.
const MAX_SIZES: [usize; 4] = [
    256,
    2048,
    16384,
    pyzor_milter::milter::config::DEFAULT_MAX_MESSAGE_SIZE,
];

struct Message {
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

/// Header callbacks as an MTA makes them from the raw header block.
fn split_message(data: &[u8], leading_space: bool) -> Message {
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |at| at + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        match (line[0], headers.last_mut()) {
            (b' ' | b'\t', Some((_, value))) => {
                value.push(b'\n');
                value.extend_from_slice(line);
            }
            _ => {
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let mut value = &line[(colon + 1).min(line.len())..];
                if !leading_space {
                    value = value.strip_prefix(b" ").unwrap_or(value);
                }
                headers.push((line[..colon].to_vec(), value.to_vec()));
            }
        }
    }
    Message {
        headers,
        body: rest.to_vec(),
    }
}

/// The text the session documents it digests: `Name: value` lines with
/// LF made CRLF and CR dropped, a blank line, the body.
fn expected_text(message: &Message, leading_space: bool) -> Vec<u8> {
    let mut text = Vec::new();
    let separator: &[u8] = if leading_space { b":" } else { b": " };
    for (name, value) in &message.headers {
        let value: Vec<u8> = value.iter().copied().filter(|&b| b != b'\r').collect();
        let lines: Vec<&[u8]> = value.split(|&b| b == b'\n').collect();
        text.extend(
            [
                name.as_slice(),
                separator,
                &lines.join(&b"\r\n"[..]),
                b"\r\n",
            ]
            .concat(),
        );
    }
    text.extend_from_slice(b"\r\n");
    text.extend_from_slice(&message.body);
    text
}

fn feed(session: &mut Session, config: &Arc<Config>, message: &Message, seed: &mut u32) {
    session.mail(Arc::clone(config), "<sender@example.org>", None);
    session.rcpt("<rcpt@example.net>");
    for (name, value) in &message.headers {
        session.header(name, value);
        assert!(session.message_len() <= config.max_message_size);
    }
    session.end_of_headers();
    let mut body = message.body.as_slice();
    while !body.is_empty() {
        // xorshift: chunk sizes from 1 to 64 KiB, as MTAs send them.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        let size = (*seed as usize % 65536).max(1).min(body.len());
        let (chunk, rest) = body.split_at(size);
        session.body(chunk);
        assert!(session.message_len() <= config.max_message_size);
        body = rest;
    }
}

/// One message through the session: the digest is that of the text the
/// session documents, the skip reasons are the ones the limits give.
fn check_message(
    session: &mut Session,
    config: &Arc<Config>,
    memo: &DigestMemo,
    message: &Message,
    seed: &mut u32,
) {
    feed(session, config, message, seed);
    let text = expected_text(message, session.leading_space);
    let step = session.end_of_message(memo);
    let fresh = digest::digest(&text);
    match step {
        Step::Check(digest) => {
            assert!(text.len() <= config.max_message_size);
            assert_eq!(digest, fresh, "digest of {text:?}");
            assert!(!digest.is_empty() || config.check_empty_digest);
            let checks = (0..3)
                .map(|index| ServerCheck {
                    server: format!("server{index}:24441"),
                    result: match (*seed >> (index * 8)) & 0xff {
                        0..=15 => Err(Failure::timeout()),
                        16..=31 => Err(Failure::error("unreachable")),
                        byte => Ok((i64::from(byte) - 100, i64::from(*seed >> 28) - 4)),
                    },
                })
                .collect::<Vec<_>>();
            let outcome = session.decide(digest, checks.clone());
            if let Some(header) = &outcome.header {
                assert!(header.contains(&format!("digest={digest}")), "{header}");
            }
            let counts: Vec<(i64, i64)> = checks
                .iter()
                .filter_map(|c| c.result.clone().ok())
                .collect();
            assert_eq!(outcome.verdict == Verdict::Error, counts.is_empty());
            if outcome.verdict == Verdict::Listed {
                assert!(
                    counts
                        .iter()
                        .any(|&(count, _)| count > config.report_threshold)
                );
            }
            assert!(session.summary(&outcome).starts_with("verdict="));
        }
        Step::Done(outcome) => match outcome.verdict {
            Verdict::Skipped(SkipReason::Oversize) => {}
            Verdict::Skipped(SkipReason::EmptyDigest) => {
                assert!(fresh.is_empty() && !config.check_empty_digest);
                assert_eq!(outcome.digest, Some(fresh));
            }
            other => panic!("skipped as {other:?}"),
        },
    }
    session.reset();
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed_byte, raw @ ..] = data else {
        return;
    };
    let config = Arc::new(Config {
        check_empty_digest: flags & 2 != 0,
        max_message_size: MAX_SIZES[usize::from(flags >> 2) & 3],
        ..Config::default()
    });
    let memo = DigestMemo::new(if flags & 16 != 0 { 4 } else { 0 });
    let mut session = Session::new(Arc::clone(&config));
    session.leading_space = flags & 1 != 0;
    session.connect(Some("192.0.2.1".parse().expect("an address")));
    let mut seed = u32::from(*seed_byte) | 0x100;

    let message = split_message(raw, session.leading_space);
    check_message(&mut session, &config, &memo, &message, &mut seed);
    // The same body and Content-* headers under other envelope headers:
    // the memo may answer for it, and must answer right.
    let other = Message {
        headers: std::iter::once((b"Received".to_vec(), b"from fuzz by fuzz".to_vec()))
            .chain(
                message
                    .headers
                    .iter()
                    .filter(|(name, _)| {
                        name.len() >= 8 && name[..8].eq_ignore_ascii_case(b"content-")
                    })
                    .cloned(),
            )
            .collect(),
        body: message.body.clone(),
    };
    check_message(&mut session, &config, &memo, &other, &mut seed);
});
