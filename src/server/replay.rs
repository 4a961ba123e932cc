//! The replay cache: signed requests already served, so that a request
//! captured on the wire and sent again while its Time is still within
//! pyzor's ±300 s window is refused rather than counted twice. Python
//! pyzord has none; without it one captured signed report can be replayed
//! for ten minutes.
//!
//! Only requests from a real account whose signature verified are
//! remembered (the `anonymous` key is public, so its requests prove
//! nothing and two equal anonymous requests are both served). An entry is
//! the SHA-1 of the user and signature, kept until the request's Time
//! leaves the window, after which the server refuses the request for its
//! Time anyway.
//!
//! Memory is bounded: entries expire by time, and past a hard cap the entry
//! nearest its expiry is evicted to make room. The other choice, refusing
//! new signed requests while full, would turn a busy hour into refused
//! reports from every legitimate account; evicting can only let through a
//! request that was captured and is replayed after more than the cap of
//! newer signed requests, in its last seconds of validity, and the
//! evictions are counted so that an operator can raise the cap.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha1::{Digest as _, Sha1};

/// How many signed requests are remembered at most by default: about 100
/// bytes each, so at most some 25 MB; 874 signed requests a second
/// sustained over the 300 s window.
pub const DEFAULT_CAPACITY: usize = 262_144;

/// One remembered request: the SHA-1 of its user and signature.
type Key = [u8; 20];

/// What the cache says about a signed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: remembered now.
    New,
    /// The same user and signature were served before.
    Replayed,
}

/// The signed requests seen within the window.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    entries: Mutex<Entries>,
    evictions: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    /// Each key and the second from which it may be forgotten.
    expiry_of: HashMap<Key, i64>,
    /// The same entries ordered by expiry.
    by_expiry: BTreeSet<(i64, Key)>,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::default(),
            evictions: AtomicU64::new(0),
        }
    }

    /// Remembers `user`'s request signed `signature` at `time` until
    /// `forget_at` (a Unix second), or says it was seen already. Entries
    /// whose time has come are forgotten first, with `now`.
    pub fn check(&self, user: &str, signature: &[u8], forget_at: i64, now: i64) -> Seen {
        let mut hasher = Sha1::new();
        hasher.update(user.as_bytes());
        hasher.update(b"\0");
        hasher.update(signature);
        let key: Key = hasher.finalize().into();
        let mut entries = match self.entries.lock() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries.expire(now);
        if entries.expiry_of.contains_key(&key) {
            return Seen::Replayed;
        }
        while entries.expiry_of.len() >= self.capacity {
            entries.evict_first();
            let evictions = self.evictions.fetch_add(1, Ordering::Relaxed);
            if evictions.is_multiple_of(10_000) {
                tracing::warn!(
                    capacity = self.capacity,
                    "replay cache full: forgetting signed requests before they expire; \
                     raise ReplayCacheSize"
                );
            }
        }
        entries.expiry_of.insert(key, forget_at);
        entries.by_expiry.insert((forget_at, key));
        Seen::New
    }

    /// How many requests are remembered now.
    pub fn len(&self) -> usize {
        match self.entries.lock() {
            Ok(entries) => entries.expiry_of.len(),
            Err(poisoned) => poisoned.into_inner().expiry_of.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entries were evicted before their expiry.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

impl Entries {
    fn expire(&mut self, now: i64) {
        while let Some(&(forget_at, _)) = self.by_expiry.first() {
            if forget_at > now {
                break;
            }
            self.evict_first();
        }
    }

    fn evict_first(&mut self) {
        if let Some((_, key)) = self.by_expiry.pop_first() {
            self.expiry_of.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_request_is_a_replay_until_it_expires() {
        let cache = ReplayCache::new(16);
        assert_eq!(cache.check("alice", b"aa", 1_300, 1_000), Seen::New);
        assert_eq!(cache.check("alice", b"aa", 1_300, 1_299), Seen::Replayed);
        assert_eq!(cache.check("bob", b"aa", 1_300, 1_299), Seen::New);
        // Both expire at 1,300; alice's request counts as new again.
        assert_eq!(cache.check("alice", b"aa", 1_300, 1_300), Seen::New);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cap_evicts_the_entry_nearest_expiry() {
        let cache = ReplayCache::new(3);
        assert_eq!(cache.check("u", b"late", 2_000, 1_000), Seen::New);
        assert_eq!(cache.check("u", b"soon", 1_100, 1_000), Seen::New);
        assert_eq!(cache.check("u", b"mid", 1_500, 1_000), Seen::New);
        assert_eq!(cache.check("u", b"new", 1_600, 1_000), Seen::New);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.evictions(), 1);
        assert_eq!(cache.check("u", b"late", 2_000, 1_000), Seen::Replayed);
        assert_eq!(cache.check("u", b"mid", 1_500, 1_000), Seen::Replayed);
        assert_eq!(cache.check("u", b"soon", 1_100, 1_000), Seen::New);
    }
}
