//! The Pyzor 2.1 protocol: requests to datagrams and datagrams to
//! responses, as Python pyzor 1.1.2 writes and reads them.
//!
//! A request is an RFC 822-style header block: `Op`, the `Op-Digest`s,
//! `Op-Spec` (report and whitelist), `Thread`, `PV`, `User`, `Time`, `Sig`,
//! in that order, each line ending in LF, then an empty line. Responses are
//! read as Python's `email` parser reads them: LF, CR or CRLF line ends, any
//! header order, first occurrence wins, names compared without case.
//!
//! This module does no I/O, no logging and reads no clock: the caller picks
//! the Thread id and the timestamp.

pub mod header;
pub mod signing;

use std::fmt;

use crate::digest::DIGEST_SPEC;
use crate::python::{self, Int};

pub use self::signing::Account;

/// The protocol version we speak (pyzor's `proto_version`).
pub const PROTOCOL_VERSION: &str = "2.1";

/// The port Pyzor servers listen on (pyzor's default for the client's
/// servers and for pyzord).
pub const DEFAULT_PORT: u16 = 24441;

/// The largest datagram pyzor reads (`Client.max_packet_size`).
pub const MAX_PACKET_SIZE: usize = 8192;

/// The response code of success (`Response.ok_code`).
pub const OK_CODE: i64 = 200;

/// The operations of the Pyzor protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Ping,
    Pong,
    Check,
    Info,
    Report,
    Whitelist,
}

impl Op {
    /// The wire name (`Op:` value).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::Pong => "pong",
            Op::Check => "check",
            Op::Info => "info",
            Op::Report => "report",
            Op::Whitelist => "whitelist",
        }
    }

    /// Whether Python's client sends `Op-Spec` with this operation
    /// (`SimpleDigestSpecBasedRequest`).
    fn has_spec(self) -> bool {
        matches!(self, Op::Report | Op::Whitelist)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request Thread id. Ids below 1024 are reserved for errors, so clients
/// pick theirs in 1024..=65535 (pyzor's `ThreadId.ok_range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThreadId(u16);

impl ThreadId {
    /// The first id a client may use.
    pub const MIN_OK: u16 = 1024;

    /// A client Thread id; `None` below 1024.
    pub fn new(id: u16) -> Option<ThreadId> {
        (id >= Self::MIN_OK).then_some(ThreadId(id))
    }

    /// The id chosen from 64 random bits, spread over 1024..=65535.
    pub fn from_random(bits: u64) -> ThreadId {
        let span = u64::from(u16::MAX - Self::MIN_OK) + 1;
        let offset = u16::try_from(bits % span).expect("span fits in u16");
        ThreadId(Self::MIN_OK + offset)
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client request: the operation, its digests and its Thread id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    /// Digests as text: the `digests` input style sends any line as is.
    pub digests: Vec<String>,
    pub thread: ThreadId,
}

impl Request {
    pub fn new(op: Op, digests: Vec<String>, thread: ThreadId) -> Request {
        Request {
            op,
            digests,
            thread,
        }
    }

    /// The datagram, signed for `account` at `timestamp` (Unix seconds),
    /// byte for byte as Python's `Client.send` builds it.
    pub fn encode(&self, account: &Account, timestamp: i64) -> Vec<u8> {
        let mut text = self.unsigned_text(&account.username, timestamp);
        let signature = signing::sign(&account.hashed_key(), timestamp, &text);
        // `as_string()` ends with the empty line; Sig goes before it.
        text.pop();
        text.push_str(&format!("Sig: {signature}\n\n"));
        text.into_bytes()
    }

    /// The request as `msg.as_string()` reads before `Sig` is added.
    fn unsigned_text(&self, user: &str, timestamp: i64) -> String {
        let mut text = format!("Op: {}\n", self.op);
        for digest in &self.digests {
            text.push_str(&format!("Op-Digest: {digest}\n"));
        }
        if self.op.has_spec() {
            let spec: Vec<String> = DIGEST_SPEC
                .iter()
                .flat_map(|&(offset, count)| [offset.to_string(), count.to_string()])
                .collect();
            text.push_str(&format!("Op-Spec: {}\n", spec.join(",")));
        }
        text.push_str(&format!(
            "Thread: {}\nPV: {PROTOCOL_VERSION}\nUser: {user}\nTime: {timestamp}\n\n",
            self.thread
        ));
        text
    }
}

/// Why a response cannot be used. [`ResponseError::pyzor_status`] says how
/// Python pyzor reports the same datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("response has no \"{0}\" field")]
    MissingField(&'static str),
    /// The value is the server's text, printed as Python's `repr` prints
    /// it (so that its control characters reach no terminal or log), as
    /// in Python's `ValueError: invalid literal for int()`.
    #[error("response field \"{field}\" is not a valid number: {}", python::repr_str(.value))]
    BadNumber { field: &'static str, value: String },
}

impl ResponseError {
    /// Python's `(code, message)` for this error when pyzor reports it as a
    /// `CommError` line; `None` where Python's client crashes instead.
    pub fn pyzor_status(&self) -> Option<(i64, String)> {
        match self {
            ResponseError::MissingField("Code" | "Diag") => {
                Some((400, "doesn't have fields for a Response".to_owned()))
            }
            ResponseError::MissingField("PV" | "Thread") => {
                Some((400, "Doesn't have fields for a ThreadedMessage.".to_owned()))
            }
            ResponseError::MissingField(_) | ResponseError::BadNumber { .. } => None,
        }
    }
}

/// A response datagram read as Python's `email.message_from_bytes` reads
/// it: the header fields in order, values with their leading blanks and
/// final line end removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub fields: Vec<(String, String)>,
}

impl Response {
    /// Reads the header block; never fails (missing fields are found by
    /// [`Response::verify`]).
    pub fn parse(datagram: &[u8]) -> Response {
        let fields = header::parse(datagram)
            .fields
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        Response { fields }
    }

    /// The first field of this name, compared without case (`msg[name]`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether this is an answer to the request sent with `thread`: its
    /// Thread field, read as Python's `int()` reads it, is that id. Python
    /// pyzor takes the first datagram from the server's address (and any
    /// Thread below 1024 with a warning); a datagram that is no answer to
    /// ours says nothing about our request, so the client ignores it and
    /// waits on. This is the one place where an answer is matched to its
    /// request.
    pub fn answers(&self, thread: ThreadId) -> bool {
        self.int_field("Thread")
            .map(|id| id.and_then(|id| id.exact()))
            == Ok(Some(i64::from(thread.get())))
    }

    /// Python's `ensure_complete`: the fields Code, Diag, PV and Thread
    /// are present.
    pub fn verify(&self) -> Result<(), ResponseError> {
        for field in ["Code", "Diag", "PV", "Thread"] {
            if self.get(field).is_none() {
                return Err(ResponseError::MissingField(field));
            }
        }
        Ok(())
    }

    /// The `Code` field as a number (saturated: no code is that large).
    pub fn code(&self) -> Result<i64, ResponseError> {
        Ok(self.required_int("Code")?.saturating())
    }

    /// The `Diag` field (empty if absent).
    pub fn diag(&self) -> &str {
        self.get("Diag").unwrap_or_default()
    }

    /// Whether the code is 200 (`Response.is_ok`).
    pub fn is_ok(&self) -> Result<bool, ResponseError> {
        Ok(self.code()? == OK_CODE)
    }

    /// A numeric field read as Python's `int()` reads it, of any size;
    /// `None` if absent. A value with a non-ASCII byte is no number: the
    /// email package hands Python a `Header` object for it, which `int()`
    /// refuses.
    pub fn int_field(&self, field: &'static str) -> Result<Option<Int>, ResponseError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let number = value.is_ascii().then(|| python::int(value).ok()).flatten();
        number.map(Some).ok_or_else(|| ResponseError::BadNumber {
            field,
            value: value.to_owned(),
        })
    }

    /// A numeric field that must be present (`int(response[field])`).
    pub fn required_int(&self, field: &'static str) -> Result<Int, ResponseError> {
        self.int_field(field)?
            .ok_or(ResponseError::MissingField(field))
    }

    /// The spam and whitelist counts of a check answer, as Python reads
    /// them: any size, any sign.
    pub fn counts(&self) -> Result<(Int, Int), ResponseError> {
        Ok((self.required_int("Count")?, self.required_int("WL-Count")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saturated(counts: Result<(Int, Int), ResponseError>) -> Result<(i64, i64), ResponseError> {
        counts.map(|(count, whitelist)| (count.saturating(), whitelist.saturating()))
    }

    #[test]
    fn counts_keep_pythons_size_and_sign() {
        let response = Response::parse(
            b"Code: 200\nDiag: OK\nPV: 2.1\nThread: 1234\nCount: 99999999999999999999\nWL-Count: -1\n",
        );
        let (count, whitelist) = response.counts().expect("Python reads both");
        assert_eq!(
            (count.to_string(), count.saturating()),
            ("99999999999999999999".into(), i64::MAX)
        );
        assert!(whitelist.is_negative());
        // A non-ASCII byte makes the value a Header object, which int() refuses.
        let response = Response::parse("Count: \u{663}\n".as_bytes());
        assert!(matches!(
            response.int_field("Count"),
            Err(ResponseError::BadNumber { .. })
        ));
    }

    fn thread(id: u16) -> ThreadId {
        ThreadId::new(id).expect("test id is in range")
    }

    #[test]
    fn report_request_is_python_bytes() {
        // The datagram Python pyzor 1.1.2 sent for `pyzor report` of an
        // empty message, account `bob` with key `DEF` (captured with a UDP
        // listener; see signing.rs for the Python expression of the Sig).
        let account = Account {
            username: "bob".to_owned(),
            salt: "abc".to_owned(),
            key: "DEF".to_owned(),
        };
        let request = Request::new(
            Op::Report,
            vec!["da39a3ee5e6b4b0d3255bfef95601890afd80709".to_owned()],
            thread(17694),
        );
        assert_eq!(
            String::from_utf8(request.encode(&account, 1_795_314_327)).expect("ascii"),
            "Op: report\nOp-Digest: da39a3ee5e6b4b0d3255bfef95601890afd80709\n\
             Op-Spec: 20,3,60,3\nThread: 17694\nPV: 2.1\nUser: bob\nTime: 1795314327\n\
             Sig: 0d38d8c28790326b40155ac69c77b475e65197aa\n\n"
        );
    }

    #[test]
    fn ping_has_no_digest_and_no_spec() {
        let request = Request::new(Op::Ping, Vec::new(), thread(1024));
        let text = String::from_utf8(request.encode(&Account::anonymous(), 5)).expect("ascii");
        assert!(
            text.starts_with("Op: ping\nThread: 1024\nPV: 2.1\nUser: anonymous\nTime: 5\nSig: ")
        );
    }

    #[test]
    fn response_parsing_is_lenient() {
        let response = Response::parse(
            b"thread: 1234\r\nCode:  200\r\nDiag: OK\r\nPV: 2.1\r\nCount: 3\r\nWL-Count: 0\r\n\r\n",
        );
        assert!(response.answers(thread(1234)));
        assert_eq!(response.verify(), Ok(()));
        assert_eq!(response.code(), Ok(200));
        assert_eq!(saturated(response.counts()), Ok((3, 0)));
        assert_eq!(response.diag(), "OK");
    }

    #[test]
    fn first_field_wins_and_headers_stop_at_non_header_line() {
        let response = Response::parse(b"Code: 200\nCode: 500\nbad line\nDiag: OK\n");
        assert_eq!(response.get("code"), Some("200"));
        assert_eq!(response.get("Diag"), None);
    }

    #[test]
    fn missing_fields_are_python_comm_errors() {
        let response = Response::parse(b"Code: 200\nPV: 2.1\nThread: 1234\n");
        let error = response.verify().expect_err("no Diag");
        assert_eq!(error, ResponseError::MissingField("Diag"));
        assert_eq!(
            error.pyzor_status(),
            Some((400, "doesn't have fields for a Response".to_owned()))
        );
        let response = Response::parse(b"Code: 200\nDiag: OK\nThread: 1234\n");
        assert_eq!(
            response.verify().map_err(|e| e.pyzor_status()),
            Err(Some((
                400,
                "Doesn't have fields for a ThreadedMessage.".to_owned()
            )))
        );
    }

    #[test]
    fn only_our_thread_answers() {
        let with_thread = |value: &str| {
            let text = format!("Code: 200\nDiag: OK\nPV: 2.1\nThread: {value}\nCount: 9\n");
            Response::parse(text.as_bytes())
        };
        assert!(with_thread("1234").answers(thread(1234)));
        assert!(with_thread(" +1_234 ").answers(thread(1234)));
        // Another request's Thread, an error Thread (Python accepts those
        // with a warning), one out of range, none at all: not our answer.
        for other in ["5000", "0", "1023", "70000", "-1234", "abc", ""] {
            assert!(!with_thread(other).answers(thread(1234)), "{other:?}");
        }
        let no_thread = Response::parse(b"Code: 200\nDiag: OK\nPV: 2.1\nCount: 9\n");
        assert!(!no_thread.answers(thread(1234)));
    }

    #[test]
    fn a_bad_number_is_shown_as_python_repr_shows_it() {
        let response = Response::parse(b"Count: \x1b]0;owned\x07\x1b[2J5\nWL-Count: 0\n");
        let error = response.counts().expect_err("not a number");
        // ValueError: invalid literal for int() with base 10: '\x1b]0;owned\x07\x1b[2J5'
        assert_eq!(
            error.to_string(),
            r#"response field "Count" is not a valid number: '\x1b]0;owned\x07\x1b[2J5'"#
        );
    }

    #[test]
    fn garbage_never_panics() {
        for datagram in [&b""[..], b"\xff\xfe", b":::", b"Code", b"\r\r\n\n", b" x\n"] {
            let response = Response::parse(datagram);
            assert!(response.verify().is_err());
            assert!(!response.answers(thread(1234)));
        }
    }

    #[test]
    fn thread_ids_stay_in_range() {
        assert_eq!(ThreadId::from_random(0).get(), 1024);
        assert_eq!(
            ThreadId::from_random(u64::from(u16::MAX - 1024)).get(),
            u16::MAX
        );
        assert_eq!(ThreadId::new(1023), None);
    }
}
