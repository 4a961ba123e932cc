//! A short-lived cache of digest to the servers' answers, so that a spam
//! wave of one message costs one query per server per TTL.
//!
//! Only answers where at least one server answered are kept: a timeout is
//! asked again with the next message.
//!
//! Beside it, [`DigestMemo`] remembers the digest of each message text it
//! saw, keyed by the parts of the text the digest depends on (see
//! [`super::session::Session::text_key`]), so that the copies of one spam
//! run, which differ only in their envelope headers, are digested once.
//! The digest is a pure function of those parts, so the memo needs no
//! expiry, only a bound on its size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::verdict::ServerCheck;
use crate::digest::Digest;

#[derive(Debug)]
pub struct Cache {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<Digest, (Instant, Vec<ServerCheck>)>>,
}

impl Cache {
    /// A cache keeping answers for `ttl`; a zero TTL or size turns it off.
    pub fn new(ttl: Duration, max_entries: usize) -> Cache {
        Cache {
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max_entries > 0
    }

    pub fn get(&self, digest: &Digest) -> Option<Vec<ServerCheck>> {
        if !self.enabled() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (stored, checks) = entries.get(digest)?;
        (stored.elapsed() < self.ttl).then(|| checks.clone())
    }

    pub fn put(&self, digest: Digest, checks: &[ServerCheck]) {
        if !self.enabled() || checks.iter().all(|check| check.result.is_err()) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_entries {
            entries.retain(|_, (stored, _)| stored.elapsed() < self.ttl);
            if entries.len() >= self.max_entries {
                // A flood of distinct digests: start over rather than scan
                // for the oldest on every insert.
                entries.clear();
            }
        }
        entries.insert(digest, (Instant::now(), checks.to_vec()));
    }
}

/// A text key: SHA-256 of the parts of a message its digest depends on.
pub type TextKey = [u8; 32];

/// Digests by text key, at most `max_entries` of them.
#[derive(Debug)]
pub struct DigestMemo {
    max_entries: usize,
    entries: Mutex<HashMap<TextKey, Digest>>,
}

impl DigestMemo {
    /// A memo of at most `max_entries` digests; zero turns it off.
    pub fn new(max_entries: usize) -> DigestMemo {
        DigestMemo {
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }

    pub fn get(&self, key: &TextKey) -> Option<Digest> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(key).copied()
    }

    pub fn put(&self, key: TextKey, digest: Digest) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_entries {
            // A flood of distinct texts: start over rather than track age.
            entries.clear();
        }
        entries.insert(key, digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(count: i64) -> Vec<ServerCheck> {
        vec![ServerCheck {
            server: "s:1".into(),
            result: Ok((count, 0)),
        }]
    }

    #[test]
    fn keeps_answers_for_the_ttl_and_not_errors() {
        let cache = Cache::new(Duration::from_secs(60), 2);
        cache.put(Digest([1; 20]), &answer(3));
        assert_eq!(cache.get(&Digest([1; 20])), Some(answer(3)));
        let failed = vec![ServerCheck {
            server: "s:1".into(),
            result: Err(super::super::verdict::Failure::timeout()),
        }];
        cache.put(Digest([2; 20]), &failed);
        assert_eq!(cache.get(&Digest([2; 20])), None);
        cache.put(Digest([2; 20]), &answer(1));
        cache.put(Digest([3; 20]), &answer(1));
        assert_eq!(cache.get(&Digest([3; 20])), Some(answer(1)));
    }

    #[test]
    fn memo_is_bounded_and_can_be_off() {
        let memo = DigestMemo::new(2);
        memo.put([1; 32], Digest([1; 20]));
        memo.put([2; 32], Digest([2; 20]));
        assert_eq!(memo.get(&[1; 32]), Some(Digest([1; 20])));
        memo.put([3; 32], Digest([3; 20]));
        assert_eq!(memo.get(&[1; 32]), None);
        assert_eq!(memo.get(&[3; 32]), Some(Digest([3; 20])));
        let off = DigestMemo::new(0);
        off.put([1; 32], Digest([1; 20]));
        assert_eq!(off.get(&[1; 32]), None);
    }

    #[test]
    fn zero_ttl_is_off() {
        let cache = Cache::new(Duration::ZERO, 10);
        cache.put(Digest([1; 20]), &answer(3));
        assert_eq!(cache.get(&Digest([1; 20])), None);
    }
}
