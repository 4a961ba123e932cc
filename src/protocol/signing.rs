//! Request signing, exactly as Python pyzor 1.1.2's `pyzor.account` does it,
//! so that Python pyzord verifies our signatures.
//!
//! `Sig = lower(H(H(M) + ":" + T + ":" + K))` where `M` is the request text
//! without its `Sig` header and without surrounding whitespace, `T` the
//! Unix time in seconds and `K = lower(H(U + ":" + lower(key)))`; `H` is
//! SHA-1. Pure functions: no I/O, no clock.

use sha1::{Digest as _, Sha1};

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
    let message_hash = Sha1::digest(python_strip(text).as_bytes());
    let mut hasher = Sha1::new();
    hasher.update(message_hash);
    hasher.update(format!(":{timestamp}:{hashed_key}").as_bytes());
    hex::encode(hasher.finalize())
}

/// Python's `str.strip()` with no argument: Unicode whitespace plus the
/// separators U+001C..U+001F that Python also counts as space.
pub fn python_strip(text: &str) -> &str {
    text.trim_matches(is_python_space)
}

pub use crate::digest::normalize::is_python_space;

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
}
