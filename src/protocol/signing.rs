//! Request signing, exactly as Python pyzor 1.1.2's `pyzor.account` does it,
//! so that Python pyzord verifies our signatures.
//!
//! `Sig = lower(H(H(M) + ":" + T + ":" + K))` where `M` is the request text
//! without its `Sig` header and without surrounding whitespace, `T` the
//! Unix time in seconds and `K = lower(H(U + ":" + lower(key)))`; `H` is
//! SHA-1. Pure functions: no I/O, no clock.
//!
//! `M` is what Python's `msg.as_string().strip()` writes for the request
//! as its email parser read it ([`signed_text`]), so a server accepts and
//! refuses exactly the requests Python pyzord does, down to the values it
//! cannot write (Python answers those 500).

use sha1::{Digest as _, Sha1};

use super::header;
use crate::python;

/// The user name of unsigned requests (pyzor's `anonymous_user`).
pub const ANONYMOUS_USER: &str = "anonymous";

/// A Pyzor account as the client's accounts file gives it: a user name and
/// the hex key that the server's `pyzord.passwd` holds for that user.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    /// The salt from `salt,key`; unused for signing, kept because pyzor
    /// keeps it.
    pub salt: String,
    pub key: String,
}

impl Account {
    /// pyzor's `AnonymousAccount`: user `anonymous` with an empty key.
    pub fn anonymous() -> Account {
        Account {
            username: ANONYMOUS_USER.to_owned(),
            salt: String::new(),
            key: String::new(),
        }
    }

    /// The hashed key that enters the signature (`pyzor.account.hash_key`).
    pub fn hashed_key(&self) -> String {
        hash_key(&self.key, &self.username)
    }
}

impl std::fmt::Debug for Account {
    // The key is a secret: never print it in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `pyzor.account.hash_key(key, user)`: `lower(sha1(user + ":" + lower(key)))`.
pub fn hash_key(key: &str, user: &str) -> String {
    let text = format!("{user}:{}", key.to_lowercase());
    hex::encode(Sha1::digest(text.as_bytes()))
}

/// `pyzor.account.sign_msg(hashed_key, timestamp, msg)`, where `text` is
/// `msg.as_string()`: the request with its `User` and `Time` headers but
/// without `Sig`. Python strips the text before hashing; so do we.
pub fn sign(hashed_key: &str, timestamp: i64, text: &str) -> String {
    let message_hash = Sha1::digest(crate::python::strip(text).as_bytes());
    let mut hasher = Sha1::new();
    hasher.update(message_hash);
    hasher.update(format!(":{timestamp}:{hashed_key}").as_bytes());
    hex::encode(hasher.finalize())
}

/// Why Python cannot write a request's text to sign (pyzord answers 500
/// with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedTextError {
    /// `email.errors.HeaderParseError` from `Header.encode`.
    #[error("header value appears to contain an embedded header: {}", python::repr_str(.0))]
    EmbeddedHeader(String),
    /// `email.errors.HeaderWriteError` from the generator's check.
    #[error("folded header contains newline: {}", python::repr_str(.0))]
    FoldedNewline(String),
}

/// `msg.as_string().strip()` of a request read by [`header::parse`], its
/// `Sig` fields deleted: each field as compat32's `fold` writes it with
/// no line length limit, an empty line, then the body with its line ends
/// made `\n` and non-ASCII bytes made U+FFFD (`get_payload()` decodes a
/// body without charset as ASCII with `replace`).
pub fn signed_text(fields: &[(String, Vec<u8>)], body: &[u8]) -> Result<Vec<u8>, SignedTextError> {
    let mut text = String::new();
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("Sig") {
            continue;
        }
        let value = fold(value);
        if has_embedded_header(&value) {
            return Err(SignedTextError::EmbeddedHeader(value));
        }
        let folded = format!("{name}: {value}\n");
        if value
            .split('\n')
            .skip(1)
            .any(|line| !line.starts_with([' ', '\t']))
        {
            return Err(SignedTextError::FoldedNewline(folded));
        }
        text.push_str(&folded);
    }
    text.push('\n');
    let body: String = body
        .iter()
        .map(|&b| {
            if b.is_ascii() {
                char::from(b)
            } else {
                char::REPLACEMENT_CHARACTER
            }
        })
        .collect();
    for line in python::file_lines(&body) {
        text.push_str(line);
        text.push('\n');
    }
    if !body.is_empty() && !body.ends_with(['\n', '\r']) {
        text.pop();
    }
    Ok(python::strip(&text).as_bytes().to_vec())
}

/// `header._embedded_header`: `\n[^ \t]+:`, a line end and then a colon
/// after at least one character, with no space or tab between.
fn has_embedded_header(value: &str) -> bool {
    value.split([' ', '\t']).any(|run| {
        run.find('\n')
            .is_some_and(|at| run.get(at + 2..).is_some_and(|after| after.contains(':')))
    })
}

/// compat32's `fold` of one value, without the name: `Header(value)`
/// (or, with non-ASCII bytes, `Header(value, charset=UNKNOWN8BIT)`)
/// encoded with `maxlinelen=0`, lines joined by `\n`.
fn fold(value: &[u8]) -> String {
    let eight_bit = !value.is_ascii();
    let lines: Vec<&[u8]> = python::splitlines_escaped(value).collect();
    let mut formatter = Formatter {
        lines: Vec::new(),
        current: Vec::new(),
        initial: 1,
    };
    let first = lines.first().copied().unwrap_or_default();
    if eight_bit {
        formatter
            .current
            .push((String::new(), header::unknown_8bit_word(first)));
    } else {
        formatter.ascii_split(first);
    }
    for line in lines.iter().skip(1) {
        formatter.newline();
        if eight_bit {
            let mut continued = b" ".to_vec();
            continued.extend_from_slice(python::lstrip_escaped(line));
            formatter
                .current
                .push((" ".to_owned(), header::unknown_8bit_word(&continued)));
        } else {
            formatter.ascii_split(line);
        }
    }
    if lines.len() > 1 {
        formatter.newline();
    }
    formatter.current.push((" ".to_owned(), String::new()));
    formatter.newline();
    formatter.lines.join("\n")
}

/// `email.header._ValueFormatter` with no line length limit: chunks of
/// (folding white space, text) on the current line, finished lines.
struct Formatter {
    lines: Vec<String>,
    current: Vec<(String, String)>,
    /// Non-zero on the first line (`_Accumulator._initial_size`, the
    /// header name's length; only whether it is zero matters here).
    initial: usize,
}

impl Formatter {
    /// `_ascii_split`: the line cut before each run of spaces and tabs.
    fn ascii_split(&mut self, line: &[u8]) {
        let mut rest = std::str::from_utf8(line).expect("ASCII line");
        while !rest.is_empty() {
            let blanks = rest.len() - rest.trim_start_matches([' ', '\t']).len();
            let (fws, after) = rest.split_at(blanks);
            let word = after.len() - after.trim_start_matches(|c| c != ' ' && c != '\t').len();
            self.current
                .push((fws.to_owned(), after[..word].to_owned()));
            rest = &after[word..];
        }
    }

    /// `newline`: a final lone-space chunk goes; a line of white space only
    /// joins the line before.
    fn newline(&mut self) {
        if self
            .current
            .last()
            .is_some_and(|(fws, part)| fws == " " && part.is_empty())
        {
            self.current.pop();
        }
        let line: String = self
            .current
            .iter()
            .flat_map(|(fws, part)| [fws.as_str(), part.as_str()])
            .collect();
        if self.initial > 0 || !line.is_empty() {
            let only_space =
                self.initial == 0 && !line.is_empty() && line.chars().all(python::is_space);
            match self.lines.last_mut() {
                Some(last) if only_space => last.push_str(&line),
                _ => self.lines.push(line),
            }
        }
        self.current.clear();
        self.initial = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_key_matches_python() {
        // python3 -c 'import pyzor.account as a; print(a.hash_key("", "anonymous"))'
        assert_eq!(
            hash_key("", "anonymous"),
            "993fddad78000f2246ee74c4b1b9edcb89f91937"
        );
        // python3 -c 'import pyzor.account as a; print(a.hash_key("DEF", "bob"))'
        assert_eq!(
            hash_key("DEF", "bob"),
            "5da6090b6a6974ff51e6528a773cba56057351f7"
        );
    }

    #[test]
    fn signature_matches_python() {
        // The datagram Python pyzor 1.1.2 sent for `pyzor report` of an
        // empty message with account `bob`, key `DEF`:
        // python3 -c 'import pyzor.account as a, pyzor.message as m;
        //   r = m.ReportRequest("da39a3ee5e6b4b0d3255bfef95601890afd80709", [(20, 3), (60, 3)]);
        //   r.set_thread(17694); r.init_for_sending(); r["User"] = "bob"; r["Time"] = "1795314327";
        //   print(a.sign_msg(a.hash_key("DEF", "bob"), 1795314327, r))'
        let text = "Op: report\nOp-Digest: da39a3ee5e6b4b0d3255bfef95601890afd80709\n\
                    Op-Spec: 20,3,60,3\nThread: 17694\nPV: 2.1\nUser: bob\nTime: 1795314327\n\n";
        assert_eq!(
            sign(&hash_key("DEF", "bob"), 1_795_314_327, text),
            "0d38d8c28790326b40155ac69c77b475e65197aa"
        );
    }

    fn text_of(datagram: &[u8]) -> Result<String, String> {
        let block = header::parse(datagram);
        signed_text(&block.fields, &block.body)
            .map(|text| String::from_utf8(text).expect("UTF-8"))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn signed_text_is_pythons_as_string_stripped() {
        // python3 (Debian 3.11.2): m = email.message_from_bytes(D); del m["Sig"];
        // m.as_string().strip()
        assert_eq!(
            text_of(b"Op: ping\r\nThread: 1 \r\n 2\r\nX: 1\r\n  \r\nY: 1\r\n \r\nZ: \r\n\t\r\nSig: x\r\n"),
            Ok("Op: ping\nThread: 1\n 2\nX: 1  \nY: 1\nZ:".into())
        );
        assert_eq!(
            text_of(b"Op: p\xff\x0bx\nT: \xff\r\n\r\nab\xffc\r\n"),
            Ok("Op: =?unknown-8bit?q?p=FF?=\n =?unknown-8bit?q?_x?=\nT: =?unknown-8bit?q?=FF?=\n\nab\u{fffd}c".into())
        );
        assert_eq!(
            text_of(b"Op: ping\nThread: 1\nFrom x\n\n"),
            Ok("Op: ping\nThread: 1\n\nFrom x".into())
        );
        assert_eq!(
            text_of(b"Op: ping\x0cx\n"),
            Err("folded header contains newline: 'Op: ping\\nx\\n'".into())
        );
        assert_eq!(
            text_of(b"Op: ping\x1cx:y\n"),
            Err("header value appears to contain an embedded header: 'ping\\nx:y'".into())
        );
    }
}
