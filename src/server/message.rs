//! The server's side of the wire: a request datagram read as Python pyzord
//! reads it (`email.message_from_bytes` with the compat32 policy, after its
//! `\n\n` → `\n` collapse), and a response written as `Message.as_string`
//! writes it. Pure: no I/O, no logging.
//!
//! Header names compare without regard to case; `get` returns the first
//! occurrence and `get_all` every one, as `email.message.Message` does. A
//! value keeps its bytes (pyzor sees non-ASCII bytes as a `Header` object,
//! which the handler treats as pyzor's `TypeError`s would).

use std::fmt::Write as _;

use crate::protocol::header;
use crate::protocol::signing::{self, SignedTextError};
pub use crate::protocol::{MAX_PACKET_SIZE as MAX_DATAGRAM, PROTOCOL_VERSION};

/// A parsed request: its headers in order and the body after them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Message {
    /// Reads a datagram as Python pyzord does, never failing: what the
    /// feedparser treats as a defect is skipped the same way.
    pub fn parse(datagram: &[u8]) -> Self {
        let mut data = Vec::with_capacity(datagram.len() + 1);
        let mut index = 0;
        while index < datagram.len() {
            if datagram[index..].starts_with(b"\n\n") {
                data.push(b'\n');
                index += 2;
            } else {
                data.push(datagram[index]);
                index += 1;
            }
        }
        data.push(b'\n');

        let block = header::parse(&data);
        Message {
            headers: block.fields,
            body: block.body,
        }
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Every value of a header, `None` when there is none (pyzor's
    /// `get_all` returns None rather than an empty list).
    pub fn get_all(&self, name: &str) -> Option<Vec<&[u8]>> {
        let values: Vec<&[u8]> = self
            .headers
            .iter()
            .filter(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
            .collect();
        (!values.is_empty()).then_some(values)
    }

    /// The text pyzor signs: the message without its `Sig` headers, as
    /// `as_string().strip()` writes it; an error where Python cannot.
    pub fn signed_text(&self) -> Result<Vec<u8>, SignedTextError> {
        signing::signed_text(&self.headers, &self.body)
    }
}

/// A response: Code, Diag, PV and Thread first, then the op's fields, in
/// the order pyzord sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub diag: String,
    pub thread: Vec<u8>,
    pub fields: Vec<(&'static str, String)>,
}

impl Response {
    /// `200 OK` for a thread, with no fields yet.
    pub fn ok(thread: &[u8]) -> Self {
        Self {
            code: 200,
            diag: "OK".into(),
            thread: thread.to_vec(),
            fields: Vec::new(),
        }
    }

    /// The datagram, as `Message.as_string()` writes it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = String::with_capacity(96);
        let _ = write!(
            head,
            "Code: {}\nDiag: {}\nPV: {PROTOCOL_VERSION}\nThread: ",
            self.code, self.diag
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.thread);
        bytes.push(b'\n');
        for (name, value) in &self.fields {
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(b'\n');
        }
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_header_wins_and_names_ignore_case() {
        let message = Message::parse(b"op: check\nOp-Digest: a\nOP-DIGEST: b\nOp: ping\n");
        assert_eq!(message.get("Op"), Some(&b"check"[..]));
        assert_eq!(
            message.get_all("Op-Digest"),
            Some(vec![&b"a"[..], &b"b"[..]])
        );
        assert_eq!(message.get_all("Thread"), None);
    }

    #[test]
    fn double_newline_collapses_so_headers_continue() {
        let message = Message::parse(b"Op: check\n\nThread: 5\n\n");
        assert_eq!(message.get("Thread"), Some(&b"5"[..]));
    }

    #[test]
    fn crlf_and_continuation_lines_are_read_as_the_feedparser_does() {
        let message = Message::parse(b"Op: check\r\nThread: 1\r\n 2\r\n\r\nPV: 2.1\r\n");
        assert_eq!(message.get("Op"), Some(&b"check"[..]));
        assert_eq!(message.get("Thread"), Some(&b"1\r\n 2"[..]));
        assert_eq!(message.get("PV"), None);
    }

    #[test]
    fn a_line_without_colon_ends_the_headers() {
        let message = Message::parse(b"Op: check\ngarbage\nThread: 1\n");
        assert_eq!(message.get("Thread"), None);
    }

    #[test]
    fn signed_text_drops_sig_and_strips() {
        let message = Message::parse(b"Op: ping\nThread: 1\nSig: abc\nUser: u\n\n");
        assert_eq!(
            message.signed_text(),
            Ok(b"Op: ping\nThread: 1\nUser: u".to_vec())
        );
    }

    #[test]
    fn response_is_written_in_pyzords_order() {
        let mut response = Response::ok(b"77");
        response.fields.push(("Count", "1".into()));
        assert_eq!(
            response.to_bytes(),
            b"Code: 200\nDiag: OK\nPV: 2.1\nThread: 77\nCount: 1\n\n".to_vec()
        );
    }
}
