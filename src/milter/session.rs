//! One MTA connection's state and the per-message decision, with no socket
//! and no I/O: the milter callbacks hand each stage's data to a
//! [`Session`], and unit tests drive it the same way.
//!
//! A session collects the message as the file Python pyzor would be given
//! (headers as `Name: value` lines, a blank line, the body) up to
//! `max_message_size`, decides whether to skip it, and hands the servers'
//! counts to [`super::verdict`] for the [`Outcome`]: verdict, SMTP
//! disposition and header.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest as _, Sha256};

use super::cache::{DigestMemo, TextKey};
use super::config::Config;
pub use super::verdict::{Disposition, Failure, Outcome, ServerCheck, SkipReason, Verdict};
use super::verdict::{decide, skipped};
use crate::digest::{self, Digest};

/// What to do at end of message.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask the servers (or the cache) about this digest, then call
    /// [`decide`].
    Check(Digest),
    /// Decided without asking.
    Done(Outcome),
}

/// The state of one MTA connection.
#[derive(Debug)]
pub struct Session {
    config: Arc<Config>,
    /// Whether the MTA passes header values as they are (SMFIP_HDR_LEADSPC)
    /// rather than with one leading space removed.
    pub leading_space: bool,
    connection_skip: Option<SkipReason>,
    queue_id: Option<String>,
    message: Message,
}

/// What belongs to the current message only.
#[derive(Debug, Default)]
struct Message {
    started: Option<Instant>,
    skip: Option<SkipReason>,
    recipients: usize,
    skipped_recipients: usize,
    text: Vec<u8>,
    oversize: bool,
    /// Incoming headers of our name, to be removed.
    spoofed: usize,
    /// Where the `Content-*` header lines are in `text`.
    content_headers: Vec<Range<usize>>,
    /// A header whose line could end the header block or split into
    /// several lines was seen: the text has no [`Session::text_key`].
    odd_header: bool,
    /// Where the blank line after the headers starts in `text`.
    body_start: Option<usize>,
}

impl Session {
    pub fn new(config: Arc<Config>) -> Session {
        Session {
            config,
            leading_space: false,
            connection_skip: None,
            queue_id: None,
            message: Message::default(),
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The SMTP client's address, when the MTA knows it.
    pub fn connect(&mut self, client: Option<IpAddr>) {
        self.connection_skip = client
            .filter(|&ip| {
                self.config
                    .trusted_networks
                    .iter()
                    .any(|net| net.contains(ip))
            })
            .map(|_| SkipReason::TrustedNetwork);
    }

    /// Remembers the queue id, whichever stage the MTA sends it with
    /// (Sendmail at MAIL FROM, Postfix from DATA on).
    pub fn set_queue_id(&mut self, id: &str) {
        if !id.is_empty() {
            self.queue_id = Some(id.to_owned());
        }
    }

    pub fn queue_id(&self) -> &str {
        self.queue_id.as_deref().unwrap_or("NOQUEUE")
    }

    /// MAIL FROM: a new message starts. `config` is the configuration in
    /// force now (it may have been reloaded since the last message).
    pub fn mail(&mut self, config: Arc<Config>, sender: &str, auth_authen: Option<&str>) {
        self.config = config;
        self.message = Message {
            started: Some(Instant::now()),
            ..Message::default()
        };
        if self.config.skip_authenticated && auth_authen.is_some_and(|user| !user.is_empty()) {
            self.message.skip = Some(SkipReason::Authenticated);
        } else if domain_listed(sender, &self.config.skip_sender_domains) {
            self.message.skip = Some(SkipReason::SenderDomain);
        }
    }

    pub fn rcpt(&mut self, recipient: &str) {
        self.message.recipients += 1;
        if domain_listed(recipient, &self.config.skip_recipient_domains) {
            self.message.skipped_recipients += 1;
        }
    }

    /// One header as the MTA passes it: folded lines joined by a bare LF.
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(self.config.header.as_bytes()) {
            self.message.spoofed += 1;
        }
        let space: &[u8] = if self.leading_space { b"" } else { b" " };
        let shape = ValueShape::of(value);
        // Exactly what is written below: each LF becomes CRLF and each CR
        // is dropped, so the text never passes `max_message_size`.
        let length =
            name.len() + 1 + space.len() + value.len() + shape.line_ends - shape.dropped + 2;
        if !self.reserve(length) {
            return;
        }
        if !(shape.plain && is_header_name(name)) {
            self.message.odd_header = true;
        }
        let start = self.message.text.len();
        let text = &mut self.message.text;
        text.extend_from_slice(name);
        text.push(b':');
        text.extend_from_slice(space);
        if shape.line_ends == 0 && shape.dropped == 0 {
            text.extend_from_slice(value);
        } else {
            for (index, line) in value.split(|&byte| byte == b'\n').enumerate() {
                if index > 0 {
                    text.extend_from_slice(b"\r\n");
                }
                text.extend(line.iter().filter(|&&byte| byte != b'\r'));
            }
        }
        text.extend_from_slice(b"\r\n");
        if name.len() >= 8 && name[..8].eq_ignore_ascii_case(b"content-") {
            let end = text.len();
            self.message.content_headers.push(start..end);
        }
    }

    pub fn end_of_headers(&mut self) {
        if self.reserve(2) {
            self.message.body_start = Some(self.message.text.len());
            self.message.text.extend_from_slice(b"\r\n");
        }
    }

    pub fn body(&mut self, chunk: &[u8]) {
        if self.reserve(chunk.len()) {
            self.message.text.extend_from_slice(chunk);
        }
    }

    /// Whether `length` more bytes fit; past the limit the text is dropped
    /// so that memory stays bounded by `max_message_size`.
    fn reserve(&mut self, length: usize) -> bool {
        if self.message.oversize {
            return false;
        }
        if self.message.text.len().saturating_add(length) > self.config.max_message_size {
            self.message.oversize = true;
            self.message.text = Vec::new();
            return false;
        }
        true
    }

    /// The message bytes collected so far.
    pub fn message_len(&self) -> usize {
        self.message.text.len()
    }

    /// Incoming headers of our name, to be removed before ours is added.
    pub fn spoofed_headers(&self) -> usize {
        self.message.spoofed
    }

    /// Time since MAIL FROM.
    pub fn elapsed(&self) -> std::time::Duration {
        self.message
            .started
            .map(|started| started.elapsed())
            .unwrap_or_default()
    }

    /// End of message: skip, or digest the message for checking (through
    /// `memo`, when the text has a key).
    pub fn end_of_message(&mut self, memo: &DigestMemo) -> Step {
        if let Some(reason) = self.skip_reason() {
            return Step::Done(skipped(reason, None));
        }
        let key = memo.enabled().then(|| self.text_key()).flatten();
        let digest = match key.as_ref().and_then(|key| memo.get(key)) {
            Some(digest) => digest,
            None => {
                let digest = digest::digest(&self.message.text);
                if let Some(key) = key {
                    memo.put(key, digest);
                }
                digest
            }
        };
        self.message.text = Vec::new();
        if digest.is_empty() && !self.config.check_empty_digest {
            return Step::Done(skipped(SkipReason::EmptyDigest, Some(digest)));
        }
        Step::Check(digest)
    }

    /// A key for the parts of the message the digest depends on: the
    /// `Content-*` header lines, in order, and everything from the blank
    /// line after the headers on. `None` when another header could change
    /// how the text parses.
    ///
    /// Why that is exact: the parser (Python's feedparser, which
    /// `digest::mime` follows) reads a top-level header only for the first
    /// `Content-Type` and `Content-Transfer-Encoding`. Every other header
    /// can only matter through the shape of its lines: by ending the header
    /// block early (a line that is not a header line, or a blank one), which
    /// moves what follows into the body. Only names of feedparser's header
    /// characters ([`is_header_name`]) and values whose only line breaks are
    /// folds followed by a space or tab are admitted (other control
    /// characters, which some line readers break at, are refused too:
    /// [`ValueShape`]), so such headers are ordinary header lines wherever
    /// they stand, and two texts with the same key have the same digest.
    pub fn text_key(&self) -> Option<TextKey> {
        let message = &self.message;
        let body_start = message.body_start?;
        if message.odd_header || message.oversize {
            return None;
        }
        let mut hasher = Sha256::new();
        for range in &message.content_headers {
            hasher.update((range.len() as u64).to_le_bytes());
            hasher.update(&message.text[range.clone()]);
        }
        hasher.update(u64::MAX.to_le_bytes());
        hasher.update(&message.text[body_start..]);
        Some(hasher.finalize().into())
    }

    fn skip_reason(&self) -> Option<SkipReason> {
        let all_recipients_skipped = self.message.recipients > 0
            && self.message.skipped_recipients == self.message.recipients;
        self.connection_skip
            .or(self.message.skip)
            .or(all_recipients_skipped.then_some(SkipReason::RecipientDomain))
            .or(self.message.oversize.then_some(SkipReason::Oversize))
    }

    /// The decision from the servers' answers under this session's
    /// configuration ([`decide`]).
    pub fn decide(&self, digest: Digest, checks: Vec<ServerCheck>) -> Outcome {
        decide(&self.config, digest, checks)
    }

    /// The one log line of a message (after the queue id).
    pub fn summary(&self, outcome: &Outcome) -> String {
        format!(
            "{} action={}{} elapsed_ms={:.1}",
            outcome.describe(),
            outcome.disposition.as_str(),
            if self.config.dry_run {
                " dry_run=true"
            } else {
                ""
            },
            self.elapsed().as_secs_f64() * 1000.0
        )
    }

    /// The message is over (end of message or abort): forget it.
    pub fn reset(&mut self) {
        self.message = Message::default();
    }
}

/// What a header value holds that changes how it is written into the text
/// and whether the text can have a key ([`Session::text_key`]).
struct ValueShape {
    /// LFs (each written as CRLF).
    line_ends: usize,
    /// CRs (dropped).
    dropped: usize,
    /// No control characters other than tab, CR and LF before a space or
    /// tab: the value is one header line plus folds wherever it stands.
    plain: bool,
}

impl ValueShape {
    fn of(value: &[u8]) -> ValueShape {
        let mut shape = ValueShape {
            line_ends: 0,
            dropped: 0,
            plain: true,
        };
        for (index, &byte) in value.iter().enumerate() {
            match byte {
                b'\n' => {
                    shape.line_ends += 1;
                    shape.plain &= matches!(value.get(index + 1), Some(b' ' | b'\t'));
                }
                b'\r' => shape.dropped += 1,
                b'\t' => {}
                _ => shape.plain &= byte >= 0x20,
            }
        }
        shape
    }
}

/// Whether a header name is non-empty and all of feedparser's header
/// characters (`[\x21-\x39\x3b-\x7e]`).
fn is_header_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&byte| (0x21..=0x7e).contains(&byte) && byte != b':')
}

/// Whether the address's domain (case-insensitive, without a trailing
/// dot, as Sendmail writes it) or a parent of it is in `domains`.
fn domain_listed(address: &str, domains: &[String]) -> bool {
    if domains.is_empty() {
        return false;
    }
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let Some((_, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    domains.iter().any(|listed| {
        domain == *listed
            || domain
                .strip_suffix(listed.as_str())
                .is_some_and(|head| head.ends_with('.'))
    })
}

#[cfg(test)]
mod tests;
