//! One request in, one response out: pyzord's `RequestHandler` as a
//! function of the parsed request and the server's context. The checks run
//! in pyzor's order (signature, then protocol version, then ACL, then the
//! operation) so that a bad request gets the Code and Diag Python pyzord
//! gives, including its quirks: only the first digest for check and info,
//! every digest for report and whitelist, no count fields when a request
//! has no digest, pong's counts, and Python's own error texts where pyzord
//! answers 500 for an exception it did not expect.

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha1::{Digest as _, Sha1};

use super::Context;
use super::access::ANONYMOUS;
use super::message::{Message, PROTOCOL_VERSION, Response};
use super::metrics::{Dropped, Rejection};
use super::reflection;
use super::replay::{self, Seen};
use crate::logging::{Chain, USAGE_TARGET};
use crate::python;
use crate::storage::{Kind, Record, SignedRequest, StorageError};

/// pyzor's `MAX_TIMESTAMP_DIFFERENCE`: how far a signed request's Time may
/// be from ours, in seconds.
pub const MAX_TIMESTAMP_DIFFERENCE_SECS: f64 = 300.0;

/// The most Op-Digest headers a request may carry (ours; Python pyzord
/// takes as many as fit in 8,192 bytes, about 740). Python's BatchClient
/// sends 10 and our forwarder 100.
pub const MAX_DIGESTS_PER_REQUEST: usize = 256;

/// The Diag of a request whose digest is not 40 hex digits (ours).
pub const NOT_A_DIGEST: &str = "Op-Digest is not 40 hex digits";

/// pyzor's `sys.maxsize`, the report count `pong` answers.
const PONG_COUNT: i64 = i64::MAX;

/// Why a request fails; each variant carries pyzor's code and Diag prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("Bad request: {0}")]
    Protocol(&'static str),
    #[error("Unauthorized: Signature Error: {0}")]
    Signature(&'static str),
    #[error("Forbidden: User is not authorized to request the operation.")]
    Forbidden,
    #[error("Internal Server Error: {0}")]
    Internal(String),
    #[error("Not implemented: Requested operation is not implemented.")]
    NotImplemented,
    #[error("Version Not Supported: ")]
    UnsupportedVersion,
}

impl RequestError {
    /// The response code pyzord sends for this error.
    pub fn code(&self) -> u16 {
        match self {
            Self::Protocol(_) => 400,
            Self::Signature(_) => 401,
            Self::Forbidden => 403,
            Self::Internal(_) => 500,
            Self::NotImplemented => 501,
            Self::UnsupportedVersion => 505,
        }
    }
}

/// What pyzor's `TypeError` says when a header held non-ASCII bytes (the
/// email package then hands out a `Header` object, not a string).
const UNHASHABLE_HEADER: &str = "unhashable type: 'Header'";

/// The operations pyzord dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Ping,
    Pong,
    Info,
    Check,
    Report,
    Whitelist,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Info => "info",
            Self::Check => "check",
            Self::Report => "report",
            Self::Whitelist => "whitelist",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ping" => Self::Ping,
            "pong" => Self::Pong,
            "info" => Self::Info,
            "check" => Self::Check,
            "report" => Self::Report,
            "whitelist" => Self::Whitelist,
            _ => return None,
        })
    }
}

/// What a request needs from the database before it can be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the answer is [`Prepared::finish`]ed with [`Found::Nothing`].
    Nothing,
    /// The record of this digest ([`Found::Record`]).
    Record(String),
    /// These digests counted once more ([`Found::Written`]).
    Write(Kind, Vec<String>),
}

/// What the database gave for a [`Need`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Nothing,
    Record(Option<Record>),
    Written,
}

/// The first half of handling a request ([`begin`]).
pub enum Step {
    /// The request is answered (or dropped, `None`) without the database.
    Answer(Option<Response>),
    /// The request passed every check; it is answered by
    /// [`Prepared::finish`] once its [`Need`] is met.
    Query(Prepared, Need),
}

/// A request that passed every check, waiting for the database. It owns
/// what its answer needs, so that it may be finished on another thread
/// (the one that committed its write).
pub struct Prepared {
    response: Response,
    operation: Operation,
    /// The usage log line but its code, when the usage log is on.
    usage: Option<String>,
    /// The request, when signed by an account: the engine's replay table
    /// must take it before it is served ([`crate::storage::Storage::remember`]).
    signed: Option<SignedRequest>,
}

impl Prepared {
    /// The operation's name, for the metrics.
    pub fn operation(&self) -> &'static [u8] {
        self.operation.name().as_bytes()
    }

    /// The signed request the engine's replay table must take first.
    pub fn signed(&self) -> Option<SignedRequest> {
        self.signed
    }

    /// Refuses the request as a replay, which the engine's replay table
    /// found (served before by this pyzord before a restart, or by another
    /// on the same database).
    pub fn replayed(self, context: &Context) -> Response {
        context.metrics.reject(Rejection::Replayed);
        let error = RequestError::Signature(REPLAYED);
        if let Some(usage) = self.usage {
            tracing::info!(target: USAGE_TARGET, "{usage},{}", error.code());
        }
        failed(self.response, &error)
    }

    /// Answers the request with what the database gave, or with pyzord's
    /// "Database temporarily unavailable." when it failed.
    pub fn finish(self, found: Result<Found, StorageError>, context: &Context) -> Response {
        let Prepared {
            mut response,
            operation,
            usage,
            signed: _,
        } = self;
        match found {
            Ok(Found::Record(record)) => {
                let record = record.unwrap_or_default();
                if operation == Operation::Info {
                    info_fields(&record, &mut response);
                }
                response
                    .fields
                    .push(("Count", record.report_count.to_string()));
                response
                    .fields
                    .push(("WL-Count", record.whitelist_count.to_string()));
            }
            Ok(Found::Nothing | Found::Written) => {}
            // Counted and logged once per episode by the queue, not here.
            Err(StorageError::QueueFull { .. }) => {
                if let Some(queue) = &context.commit_queue {
                    queue.drop_items(Dropped::Full, 1);
                }
                return unavailable(response);
            }
            Err(error) => {
                context.metrics.backend_error();
                log_backend_error(&error, context);
                return unavailable(response);
            }
        }
        if let Some(usage) = usage {
            tracing::info!(target: USAGE_TARGET, "{usage},{}", response.code);
        }
        response
    }
}

/// One line for a failed database call, with the driver's error and its
/// causes; like failures within [`crate::logging::REPEAT_WINDOW`] are
/// counted on the next line rather than logged each.
fn log_backend_error(error: &StorageError, context: &Context) {
    let line = backend_error_line(error);
    if let Some(repeats) = context.repeats.admit(&line, Instant::now()) {
        tracing::error!("{line}{repeats}");
    }
}

/// What [`log_backend_error`] writes, but the count of repeats.
fn backend_error_line(error: &StorageError) -> String {
    format!("database operation failed: {}", Chain(error))
}

/// pyzord's answer when the database failed: Code 500, "Database
/// temporarily unavailable.", also in the usage log.
fn unavailable(response: Response) -> Response {
    let error = RequestError::Internal("Database temporarily unavailable.".into());
    tracing::info!(target: USAGE_TARGET, "{}: {}", error.code(), error);
    failed(response, &error)
}

/// Answers one request; `None` for a datagram that gets no answer
/// ([`reflection::screen`]: not a request, or no Thread a client could
/// match an answer to).
pub async fn handle(request: &Message, peer: IpAddr, context: &Context) -> Option<Response> {
    let (prepared, need) = match begin(request, peer, context) {
        Step::Answer(answer) => return answer,
        Step::Query(prepared, need) => (prepared, need),
    };
    let storage = &context.storage;
    if let Some(remembered) = prepared
        .signed()
        .and_then(|signed| storage.remember(signed))
    {
        match remembered.await {
            Ok(Seen::New) => {}
            Ok(Seen::Replayed) => return Some(prepared.replayed(context)),
            Err(error) => return Some(prepared.finish(Err(error), context)),
        }
    }
    let found = match need {
        Need::Nothing => Ok(Found::Nothing),
        Need::Record(digest) => storage.get(&digest).await.map(Found::Record),
        Need::Write(kind, digests) => {
            let written = storage.increment(kind, &digests).await;
            written.map(|()| {
                forward(context, kind, &digests);
                Found::Written
            })
        }
    };
    Some(prepared.finish(found, context))
}

/// Hands reported or whitelisted digests to the forwarder, once stored.
pub fn forward(context: &Context, kind: Kind, digests: &[String]) {
    if let Some(forward) = &context.forward {
        for digest in digests {
            forward.queue(digest, kind);
        }
    }
}

/// Runs every check of a request in pyzor's order, up to what it needs
/// from the database.
pub fn begin(request: &Message, peer: IpAddr, context: &Context) -> Step {
    let thread = match reflection::screen(request) {
        Ok(thread) => thread,
        Err(reason) => {
            context.metrics.reject(reason);
            tracing::debug!(%peer, reason = reason.label(), "datagram dropped unanswered");
            return Step::Answer(None);
        }
    };
    let mut response = Response::ok(thread);
    let user = match request.get("User") {
        Some(user) if !user.is_empty() => String::from_utf8_lossy(user),
        _ => ANONYMOUS.into(),
    };
    match check(request, &user, context, &mut response) {
        Ok((operation, need, signed)) => {
            let usage = crate::logging::usage_log().then(|| usage_line(request, &user, peer));
            let prepared = Prepared {
                response,
                operation,
                usage,
                signed,
            };
            Step::Query(prepared, need)
        }
        Err(error) => {
            tracing::info!(target: USAGE_TARGET, %peer, "{}: {}", error.code(), error);
            Step::Answer(Some(failed(response, &error)))
        }
    }
}

/// The usage log line of a request that passed its checks, but its code.
fn usage_line(request: &Message, user: &str, peer: IpAddr) -> String {
    let operation = request.get("Op").map_or("None".into(), |op| {
        python::repr_escaped(op).trim_matches('\'').to_owned()
    });
    let digests = request.get_all("Op-Digest").map_or("None".into(), |all| {
        let items: Vec<String> = all
            .iter()
            .map(|digest| python::repr_escaped(digest))
            .collect();
        format!("[{}]", items.join(", "))
    });
    format!("{user},{peer},{operation},{digests}")
}

/// The response carrying an error's code and Diag.
fn failed(mut response: Response, error: &RequestError) -> Response {
    response.code = error.code();
    response.diag = error.to_string();
    response
}

/// The Diag of a replayed signed request.
const REPLAYED: &str = "Signature already used.";

/// pyzor's checks (signature, protocol version, ACL, operation, digests);
/// returns the operation, what it needs from the database, and the signed
/// request for the engine's replay table.
fn check(
    request: &Message,
    user: &str,
    context: &Context,
    response: &mut Response,
) -> Result<(Operation, Need, Option<SignedRequest>), RequestError> {
    let access = context.access();
    let mut signed = None;
    if user != ANONYMOUS {
        if !request.get("User").unwrap_or_default().is_ascii() {
            return Err(RequestError::Internal(UNHASHABLE_HEADER.into()));
        }
        let key = access
            .accounts
            .get(user)
            .ok_or(RequestError::Signature("Unknown user."))?;
        let now = now_f64();
        let time = verify_signature(request, user, key, now)?;
        let key = replay::request_key(user, request.get("Sig").unwrap_or_default());
        // Forgotten once the Time is out of the window, which then refuses it.
        let forget_at = time.saturating_add(MAX_TIMESTAMP_DIFFERENCE_SECS as i64 + 1);
        if context.replay.check(user, key, forget_at, now as i64) == Seen::Replayed {
            context.metrics.reject(Rejection::Replayed);
            return Err(RequestError::Signature(REPLAYED));
        }
        signed = Some(SignedRequest { key, forget_at });
    }
    check_version(request.get("PV"))?;
    let operation = match request.get("Op") {
        None => return Err(RequestError::Forbidden),
        Some(op) if !op.is_ascii() => return Err(RequestError::Internal(UNHASHABLE_HEADER.into())),
        Some(op) => String::from_utf8_lossy(op),
    };
    if !access.allows(user, &operation) {
        return Err(RequestError::Forbidden);
    }
    let operation = Operation::parse(&operation).ok_or(RequestError::NotImplemented)?;
    let Some(digests) = request.get_all("Op-Digest") else {
        return Ok((operation, Need::Nothing, signed));
    };
    if digests.len() > MAX_DIGESTS_PER_REQUEST {
        context.metrics.reject(Rejection::TooManyDigests);
        return Err(RequestError::Protocol("Too many digests in request"));
    }
    let non_ascii = match operation {
        Operation::Check | Operation::Info => !digests[0].is_ascii(),
        Operation::Report | Operation::Whitelist => digests.iter().any(|d| !d.is_ascii()),
        Operation::Ping | Operation::Pong => false,
    };
    if non_ascii {
        // pyzor's gdbm engine refuses the `Header` object the email package
        // makes of a non-ASCII value; we refuse before writing anything.
        return Err(RequestError::Internal(
            "a bytes-like object is required, not 'Header'".into(),
        ));
    }
    // Ours: Python pyzord stores and looks up any text as a digest.
    let used = match operation {
        Operation::Check | Operation::Info => &digests[..1],
        Operation::Report | Operation::Whitelist => &digests[..],
        Operation::Ping | Operation::Pong => &[],
    };
    if !used.iter().all(|digest| is_digest(digest)) {
        context.metrics.reject(Rejection::BadDigest);
        return Err(RequestError::Protocol(NOT_A_DIGEST));
    }
    let text = |digest: &[u8]| String::from_utf8_lossy(digest).into_owned();
    let need = match operation {
        Operation::Ping => Need::Nothing,
        Operation::Pong => {
            response.fields.push(("Count", PONG_COUNT.to_string()));
            response.fields.push(("WL-Count", "0".into()));
            Need::Nothing
        }
        Operation::Check | Operation::Info => Need::Record(text(digests[0])),
        Operation::Report => Need::Write(Kind::Report, digests.iter().map(|d| text(d)).collect()),
        Operation::Whitelist => {
            Need::Write(Kind::Whitelist, digests.iter().map(|d| text(d)).collect())
        }
    };
    Ok((operation, need, signed))
}

/// Whether a digest is one pyzor makes: SHA-1 as 40 hex digits.
fn is_digest(digest: &[u8]) -> bool {
    digest.len() == 40 && digest.iter().all(u8::is_ascii_hexdigit)
}

fn info_fields(record: &Record, response: &mut Response) {
    let time = |value: Option<i64>| value.unwrap_or(0).to_string();
    response
        .fields
        .push(("Entered", time(record.report_entered)));
    response
        .fields
        .push(("Updated", time(record.report_updated)));
    response
        .fields
        .push(("WL-Entered", time(record.whitelist_entered)));
    response
        .fields
        .push(("WL-Updated", time(record.whitelist_updated)));
}

/// pyzor's version check: `int(float(PV))` must equal 2.
fn check_version(version: Option<&[u8]>) -> Result<(), RequestError> {
    let version = version.ok_or(RequestError::Protocol(
        "Protocol Version not specified in request",
    ))?;
    let text = std::str::from_utf8(version)
        .ok()
        .filter(|text| text.is_ascii())
        .ok_or_else(|| {
            RequestError::Internal(
                "float() argument must be a string or a real number, not 'Header'".into(),
            )
        })?;
    let value = python_float(text).ok_or(RequestError::Protocol("Invalid Protocol Version"))?;
    if value.is_nan() {
        return Err(RequestError::Protocol("Invalid Protocol Version"));
    }
    if value.is_infinite() {
        return Err(RequestError::Internal(
            "cannot convert float infinity to integer".into(),
        ));
    }
    let major = PROTOCOL_VERSION
        .split('.')
        .next()
        .and_then(|major| major.parse::<f64>().ok())
        .unwrap_or(2.0);
    if value.trunc() != major {
        return Err(RequestError::UnsupportedVersion);
    }
    Ok(())
}

/// Python's `float(str)` for ASCII text: surrounding whitespace, and `_`
/// only between digits.
fn python_float(text: &str) -> Option<f64> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b');
    let bytes = text.as_bytes();
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == b'_' {
            let digit = |at: Option<&u8>| at.is_some_and(u8::is_ascii_digit);
            if index == 0 || !digit(bytes.get(index - 1)) || !digit(bytes.get(index + 1)) {
                return None;
            }
        }
    }
    let cleaned = text.replace('_', "");
    let lower = cleaned.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    let named = ["inf", "infinity", "nan"].contains(&unsigned);
    if !named && !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    cleaned.parse().ok()
}

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

fn sha1_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// pyzor's `verify_signature`: Time within ±300 s, then
/// `Sig == H(H(M) + ":" + T + ":" + H(U + ":" + lower(K)))`. Returns the
/// request's Time.
fn verify_signature(
    request: &Message,
    user: &str,
    key: &str,
    now: f64,
) -> Result<i64, RequestError> {
    let time = match request.get("Time") {
        None => {
            return Err(RequestError::Internal(
                "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"
                    .into(),
            ));
        }
        Some(time) if !time.is_ascii() => {
            return Err(RequestError::Internal(
                "int() argument must be a string, a bytes-like object or a real number, not 'Header'"
                    .into(),
            ));
        }
        Some(time) => {
            python::int_escaped(time).map_err(|error| RequestError::Internal(error.to_string()))?
        }
    };
    // `time.time() - timestamp` turns Python's unbounded int into a float.
    let Some(seconds) = time.to_f64() else {
        return Err(RequestError::Internal(
            "int too large to convert to float".into(),
        ));
    };
    if (now - seconds).abs() > MAX_TIMESTAMP_DIFFERENCE_SECS {
        return Err(RequestError::Signature(
            "Timestamp not within allowed range.",
        ));
    }
    let hashed_key = sha1_hex(&[user.as_bytes(), b":", key.to_lowercase().as_bytes()]);
    let signed = request
        .signed_text()
        .map_err(|error| RequestError::Internal(error.to_string()))?;
    let message_hash = Sha1::digest(signed);
    let time = time.saturating();
    let tail = format!(":{time}:{hashed_key}");
    let expected = sha1_hex(&[message_hash.as_slice(), tail.as_bytes()]);
    let signature = request.get("Sig").unwrap_or_default();
    if !same_bytes(signature, expected.as_bytes()) {
        return Err(RequestError::Signature("Invalid signature."));
    }
    Ok(time)
}

/// Whether two byte strings are equal, in a time that does not depend on
/// where they differ, so that timing tells nothing about the expected
/// signature.
fn same_bytes(received: &[u8], expected: &[u8]) -> bool {
    if received.len() != expected.len() {
        return false;
    }
    let difference = received
        .iter()
        .zip(expected)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_checks_follow_int_of_float() {
        assert_eq!(check_version(Some(b"2.1")), Ok(()));
        assert_eq!(check_version(Some(b" 2.9 ")), Ok(()));
        assert_eq!(
            check_version(Some(b"3.0")),
            Err(RequestError::UnsupportedVersion)
        );
        assert_eq!(
            check_version(Some(b"abc")),
            Err(RequestError::Protocol("Invalid Protocol Version"))
        );
        assert_eq!(
            check_version(Some(b"nan")),
            Err(RequestError::Protocol("Invalid Protocol Version"))
        );
        assert_eq!(check_version(Some(b"2.1_0")), Ok(()));
        assert_eq!(
            check_version(Some(b"2_0")),
            Err(RequestError::UnsupportedVersion)
        );
    }

    #[test]
    fn a_backend_error_line_carries_the_drivers_error() {
        let driver = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let error = StorageError::Commit(std::sync::Arc::new(driver));
        assert_eq!(
            backend_error_line(&error),
            "database operation failed: sqlite transaction failed: database or disk is full: \
             Error code 13: Insertion failed because database is full"
        );
        let timeout = StorageError::Timeout {
            engine: "redis",
            timeout_ms: 2000,
        };
        assert_eq!(
            backend_error_line(&timeout),
            "database operation failed: the redis server did not answer within 2000 ms"
        );
    }

    #[test]
    fn signatures_compare_whole() {
        let expected = b"0123456789abcdef0123456789abcdef01234567";
        assert!(same_bytes(expected, expected));
        let mut last = *expected;
        last[39] = b'8';
        assert!(!same_bytes(&last, expected));
        assert!(!same_bytes(&expected[..39], expected));
        assert!(!same_bytes(b"", expected));
        assert!(same_bytes(b"", b""));
    }

    #[test]
    fn digests_are_40_hex_digits() {
        assert!(is_digest(b"0123456789abcdefABCDEF0123456789abcdef01"));
        assert!(!is_digest(b"0123456789abcdef0123456789abcdef0123456"));
        assert!(!is_digest(b"0123456789abcdef0123456789abcdef012345678"));
        assert!(!is_digest(b"g123456789abcdef0123456789abcdef01234567"));
        assert!(!is_digest(&[b'a'; 6000]));
    }
}
