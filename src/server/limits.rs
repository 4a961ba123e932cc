//! Per-source rate limiting for pyzord: one token bucket per source,
//! where a source is an IPv4 address or an IPv6 /64 (one customer's
//! network, the smallest prefix an ISP hands out; a host picks any address
//! in it at will). Python pyzord has no such limit: it is ours, off unless
//! `RateLimit` is set.
//!
//! A datagram over the limit is dropped without an answer, so a flood with
//! a forged source address is not reflected at its victim. The first drop
//! of a source is logged once; the next line for it comes only after a
//! quiet period without drops, so a flood writes one line per source, not
//! one per datagram.
//!
//! Memory is bounded whatever the sources: the buckets live in two
//! generations of at most half the cap each. When the current generation is
//! full it becomes the previous one and the old previous one is dropped, so
//! a source seen in the last two generations keeps its bucket and a flood
//! of forged sources only evicts idle ones. An evicted source starts again
//! with a full bucket, which is what it would have after being idle. The
//! maps are cleared and swapped, never reallocated, so their memory stays
//! what the cap makes it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::metrics::{Metrics, Rejection};

/// How many sources are tracked by default: 65,536 buckets of about 48
/// bytes, a few MB at most.
pub const DEFAULT_MAX_SOURCES: usize = 65_536;

/// A source that was limited is logged again only after this long without
/// a dropped datagram.
pub const LOG_QUIET_PERIOD: Duration = Duration::from_secs(60);

/// The settings of the limiter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Datagrams per second each source may send, on average.
    pub per_second: f64,
    /// How many datagrams a source may send at once after being idle.
    pub burst: f64,
    /// How many sources are remembered at most.
    pub max_sources: usize,
}

/// Where a datagram comes from, for counting: an IPv4 address or the /64
/// of an IPv6 one (IPv4-mapped IPv6 addresses count as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(u32),
    V6Prefix(u64),
}

impl Source {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::V4(address) => write!(f, "{}", Ipv4Addr::from(address)),
            Self::V6Prefix(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from(u128::from(prefix) << 64))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// The last dropped datagram, while the source is in a logged episode.
    last_drop: Option<Instant>,
}

/// What the limiter says about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: serve it.
    Pass,
    /// Over the limit: drop it; `log` is true for the first drop of an
    /// episode (after a quiet period).
    Drop { log: bool },
}

/// Token buckets for every recent source.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    generations: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<Source, Bucket>,
    previous: HashMap<Source, Bucket>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let half = (limit.max_sources / 2).max(1);
        Self {
            limit,
            generations: Mutex::new(Generations {
                current: HashMap::with_capacity(half),
                previous: HashMap::with_capacity(half),
            }),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Whether to serve a datagram from `peer`; a dropped one is counted,
    /// and logged at the start of an episode.
    pub fn admit_logged(&self, peer: SocketAddr, now: Instant, metrics: &Metrics) -> bool {
        match self.admit(peer.ip(), now) {
            Verdict::Pass => true,
            Verdict::Drop { log } => {
                metrics.reject(Rejection::RateLimited);
                if log {
                    tracing::warn!(
                        source = %Source::of(peer.ip()),
                        per_second = self.limit.per_second,
                        burst = self.limit.burst,
                        "source over its rate limit: its datagrams are dropped unanswered"
                    );
                }
                false
            }
        }
    }

    /// Takes one token from the source's bucket, if it has one.
    pub fn admit(&self, address: IpAddr, now: Instant) -> Verdict {
        let source = Source::of(address);
        let mut generations = match self.generations.lock() {
            Ok(generations) => generations,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !generations.current.contains_key(&source) {
            let half = (self.limit.max_sources / 2).max(1);
            let known = generations.previous.remove(&source);
            if generations.current.len() >= half {
                let Generations { current, previous } = &mut *generations;
                std::mem::swap(current, previous);
                current.clear();
            }
            let bucket = known.unwrap_or(Bucket {
                tokens: self.limit.burst,
                refilled: now,
                last_drop: None,
            });
            generations.current.insert(source, bucket);
        }
        let bucket = generations
            .current
            .get_mut(&source)
            .expect("the source was inserted above");
        self.take(bucket, now)
    }

    fn take(&self, bucket: &mut Bucket, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.limit.per_second).min(self.limit.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Pass;
        }
        let log = bucket
            .last_drop
            .is_none_or(|last| now.saturating_duration_since(last) >= LOG_QUIET_PERIOD);
        bucket.last_drop = Some(now);
        Verdict::Drop { log }
    }

    /// How many sources are remembered now.
    pub fn tracked_sources(&self) -> usize {
        match self.generations.lock() {
            Ok(generations) => generations.current.len() + generations.previous.len(),
            Err(poisoned) => {
                let generations = poisoned.into_inner();
                generations.current.len() + generations.previous.len()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: f64, max_sources: usize) -> RateLimiter {
        RateLimiter::new(RateLimit {
            per_second,
            burst,
            max_sources,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn burst_passes_then_drops_then_refills() {
        let limiter = limiter(2.0, 3.0, 16);
        let start = Instant::now();
        let source = ip("192.0.2.1");
        let verdicts: Vec<Verdict> = (0..5).map(|_| limiter.admit(source, start)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Pass,
                Verdict::Pass,
                Verdict::Pass,
                Verdict::Drop { log: true },
                Verdict::Drop { log: false },
            ]
        );
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.admit(source, later), Verdict::Pass);
        assert_eq!(limiter.admit(source, later), Verdict::Drop { log: false });
        assert_eq!(limiter.admit(ip("192.0.2.2"), later), Verdict::Pass);
    }

    #[test]
    fn a_source_is_logged_again_only_after_a_quiet_period() {
        let limiter = limiter(1.0, 1.0, 16);
        let start = Instant::now();
        let source = ip("192.0.2.1");
        assert_eq!(limiter.admit(source, start), Verdict::Pass);
        assert_eq!(limiter.admit(source, start), Verdict::Drop { log: true });
        let soon = start + Duration::from_secs(30);
        assert_eq!(limiter.admit(source, soon), Verdict::Pass);
        assert_eq!(limiter.admit(source, soon), Verdict::Drop { log: false });
        let quiet = soon + LOG_QUIET_PERIOD;
        assert_eq!(limiter.admit(source, quiet), Verdict::Pass);
        assert_eq!(limiter.admit(source, quiet), Verdict::Drop { log: true });
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1")),
            Source::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.7")),
            Source::of(ip("192.0.2.7"))
        );
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn forged_sources_never_grow_the_table_past_its_cap() {
        let limiter = limiter(1.0, 1.0, 64);
        let start = Instant::now();
        let busy = ip("198.51.100.1");
        assert_eq!(limiter.admit(busy, start), Verdict::Pass);
        for index in 0..10_000u32 {
            let forged = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + index));
            assert_eq!(limiter.admit(forged, start), Verdict::Pass);
            assert!(limiter.tracked_sources() <= 64);
            if index % 16 == 0 {
                // A source that keeps sending keeps its empty bucket.
                assert!(matches!(limiter.admit(busy, start), Verdict::Drop { .. }));
            }
        }
    }
}
