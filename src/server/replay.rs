//! The replay cache: signed requests already served, so that a request
//! captured on the wire and sent again while its Time is still within
//! pyzor's ±300 s window is refused rather than counted twice. Python
//! pyzord has none; without it one captured signed report can be replayed
//! for ten minutes.
//!
//! Only requests from a real account whose signature verified are
//! remembered (the `anonymous` key is public, so its requests prove
//! nothing and two equal anonymous requests are both served). An entry is
//! the SHA-1 of the user and signature ([`request_key`]), kept until the
//! request's Time leaves the window, after which the server refuses the
//! request for its Time anyway.
//!
//! This cache is in memory and serves one process: it refuses a replay
//! sent to the pyzord that served the original without asking the
//! database. The engine's own table (a Redis key, a SQLite or MySQL table,
//! see [`crate::storage::Storage::remember`]) is what refuses a replay
//! after a restart or at another pyzord on the same database.
//!
//! Memory is bounded: entries expire by time, and past a hard cap the
//! account holding the most entries gives up its entry nearest expiry. So
//! an account can only push out its own entries, never another's, unless
//! that other holds more: each account keeps at least its fair share of
//! the cap (the cap divided by the accounts sending signed requests). The
//! other choice, refusing new signed requests while full, would turn a busy
//! hour into refused reports from every legitimate account; evicting can
//! only let through a request of the busiest account that was captured and
//! is replayed after more than its share of newer signed requests, and the
//! evictions are counted so that an operator can raise the cap.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha1::{Digest as _, Sha1};

pub use crate::storage::{RequestKey, Seen};

/// How many signed requests are remembered at most by default: about 200
/// bytes each, so at most some 50 MB; 874 signed requests a second
/// sustained over the 300 s window.
pub const DEFAULT_CAPACITY: usize = 262_144;

/// The longest an entry can be needed, in seconds: a request dated at the
/// far end of pyzor's ±300 s window is valid for 600 s more. The Time check
/// refuses anything dated later before it reaches the cache; an entry
/// asked to live longer is cut to this, so that none can hold a place for
/// longer than its request can be replayed.
pub const MAX_ENTRY_LIFE_SECS: i64 = 601;

/// The key of a signed request in the cache and in the engines' tables:
/// the SHA-1 of its user and signature (the signature covers the request's
/// text and Time, so two requests with one signature are the same request).
pub fn request_key(user: &str, signature: &[u8]) -> RequestKey {
    let mut hasher = Sha1::new();
    hasher.update(user.as_bytes());
    hasher.update(b"\0");
    hasher.update(signature);
    hasher.finalize().into()
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
    /// Each key, the second from which it may be forgotten, and its account.
    expiry_of: HashMap<RequestKey, (i64, usize)>,
    /// The same entries ordered by expiry.
    by_expiry: BTreeSet<(i64, RequestKey)>,
    /// Each account's number, given when it first had an entry.
    account_ids: HashMap<String, usize>,
    /// Each account's entries ordered by expiry, by account number.
    accounts: Vec<BTreeSet<(i64, RequestKey)>>,
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

    /// Remembers `user`'s request `key` until `forget_at` (a Unix second,
    /// at most [`MAX_ENTRY_LIFE_SECS`] after `now`), or says it was seen
    /// already. Entries whose time has come are forgotten first.
    pub fn check(&self, user: &str, key: RequestKey, forget_at: i64, now: i64) -> Seen {
        let forget_at = forget_at.min(now.saturating_add(MAX_ENTRY_LIFE_SECS));
        let mut entries = match self.entries.lock() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries.expire(now);
        if entries.expiry_of.contains_key(&key) {
            return Seen::Replayed;
        }
        while entries.expiry_of.len() >= self.capacity {
            entries.evict_from_busiest();
            let evictions = self.evictions.fetch_add(1, Ordering::Relaxed);
            if evictions.is_multiple_of(10_000) {
                tracing::warn!(
                    capacity = self.capacity,
                    "replay cache full: forgetting signed requests of the busiest account \
                     before they expire; raise ReplayCacheSize"
                );
            }
        }
        entries.insert(user, key, forget_at);
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
    fn insert(&mut self, user: &str, key: RequestKey, forget_at: i64) {
        let account = match self.account_ids.get(user) {
            Some(&account) => account,
            None => {
                let account = self.accounts.len();
                self.account_ids.insert(user.to_owned(), account);
                self.accounts.push(BTreeSet::new());
                account
            }
        };
        self.expiry_of.insert(key, (forget_at, account));
        self.by_expiry.insert((forget_at, key));
        self.accounts[account].insert((forget_at, key));
    }

    fn expire(&mut self, now: i64) {
        while let Some(&(forget_at, key)) = self.by_expiry.first() {
            if forget_at > now {
                break;
            }
            self.remove(key);
        }
    }

    /// Forgets the entry nearest expiry of the account holding the most.
    fn evict_from_busiest(&mut self) {
        let busiest = self.accounts.iter().max_by_key(|entries| entries.len());
        if let Some(&(_, key)) = busiest.and_then(BTreeSet::first) {
            self.remove(key);
        }
    }

    fn remove(&mut self, key: RequestKey) {
        if let Some((forget_at, account)) = self.expiry_of.remove(&key) {
            self.by_expiry.remove(&(forget_at, key));
            self.accounts[account].remove(&(forget_at, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> RequestKey {
        request_key("u", text.as_bytes())
    }

    #[test]
    fn a_second_request_is_a_replay_until_it_expires() {
        let cache = ReplayCache::new(16);
        let alice = request_key("alice", b"aa");
        let bob = request_key("bob", b"aa");
        assert_ne!(alice, bob);
        assert_eq!(cache.check("alice", alice, 1_300, 1_000), Seen::New);
        assert_eq!(cache.check("alice", alice, 1_300, 1_299), Seen::Replayed);
        assert_eq!(cache.check("bob", bob, 1_300, 1_299), Seen::New);
        // Both expire at 1,300; alice's request counts as new again.
        assert_eq!(cache.check("alice", alice, 1_300, 1_300), Seen::New);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cap_evicts_the_entry_nearest_expiry() {
        let cache = ReplayCache::new(3);
        assert_eq!(cache.check("u", key("late"), 2_000, 1_500), Seen::New);
        assert_eq!(cache.check("u", key("soon"), 1_600, 1_500), Seen::New);
        assert_eq!(cache.check("u", key("mid"), 1_800, 1_500), Seen::New);
        assert_eq!(cache.check("u", key("new"), 1_900, 1_500), Seen::New);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.evictions(), 1);
        assert_eq!(cache.check("u", key("late"), 2_000, 1_500), Seen::Replayed);
        assert_eq!(cache.check("u", key("mid"), 1_800, 1_500), Seen::Replayed);
        assert_eq!(cache.check("u", key("soon"), 1_600, 1_500), Seen::New);
    }

    #[test]
    fn one_account_cannot_push_out_anothers_entries() {
        let cache = ReplayCache::new(8);
        let victim = request_key("bob", b"report");
        assert_eq!(cache.check("bob", victim, 1_301, 1_000), Seen::New);
        // Future-dated requests from alice expire last; still they only
        // push out each other.
        for index in 0..20 {
            let flood = request_key("alice", format!("ping {index}").as_bytes());
            assert_eq!(cache.check("alice", flood, 1_601, 1_000), Seen::New);
        }
        assert_eq!(cache.len(), 8);
        assert_eq!(cache.evictions(), 13);
        assert_eq!(cache.check("bob", victim, 1_301, 1_001), Seen::Replayed);
        // The latest of alice's are there, the earliest pushed out.
        let latest = request_key("alice", b"ping 19");
        assert_eq!(cache.check("alice", latest, 1_601, 1_001), Seen::Replayed);
    }

    #[test]
    fn no_entry_outlives_the_window() {
        let cache = ReplayCache::new(4);
        assert_eq!(cache.check("u", key("far"), 1_000_000, 1_000), Seen::New);
        assert_eq!(
            cache.check("u", key("far"), 1_000_000, 1_600),
            Seen::Replayed
        );
        assert_eq!(cache.check("u", key("x"), 2_000, 1_601), Seen::New);
        assert_eq!(cache.len(), 1, "the far-dated entry went at 1,601");
    }
}
