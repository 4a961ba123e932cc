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
//! Memory is bounded whatever the sources, and grows only as sources
//! arrive: at most `max_sources` buckets (at most [`MAX_SOURCES`]). When
//! the table is full, the sources at rest go first: a bucket that has
//! refilled and logged nothing for [`LOG_QUIET_PERIOD`] is the same as no
//! bucket, so forgetting it changes nothing. If that frees less than a
//! quarter of the table, the sources that dropped nothing go next, nearest
//! to a full bucket first, so a source over its limit stays limited: cycling through the 65,536 /64s of a /48
//! evicts the attacker's own fresh sources before the source they mean to
//! free. Each sweep frees a quarter of the table, so its cost is spread
//! over the sources that fill that quarter.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::metrics::{Metrics, Rejection};

/// How many sources are tracked by default: 65,536 buckets of about 64
/// bytes with the table's own, some 5 MB when full.
pub const DEFAULT_MAX_SOURCES: usize = 65_536;

/// The most sources `RateLimitSources` may ask for: some 80 MB when full
/// (a million sources active within a few seconds of each other is more
/// than any Pyzor server has seen). Past it pyzord refuses to start.
pub const MAX_SOURCES: usize = 1 << 20;

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
    buckets: Mutex<HashMap<Source, Bucket>>,
}

impl RateLimiter {
    /// A limiter with no source yet; its table grows as sources arrive.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::default(),
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
        let mut buckets = match self.buckets.lock() {
            Ok(buckets) => buckets,
            Err(poisoned) => poisoned.into_inner(),
        };
        let max_sources = self.limit.max_sources.max(1);
        if buckets.len() >= max_sources && !buckets.contains_key(&source) {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: self.limit.burst,
            refilled: now,
            last_drop: None,
        });
        self.take(bucket, now)
    }

    /// Frees at least a quarter of a full table: the sources at rest, then
    /// the ones that dropped nothing, nearest to a full bucket first.
    fn evict(&self, buckets: &mut HashMap<Source, Bucket>, now: Instant) {
        let max_sources = self.limit.max_sources.max(1);
        let keep = max_sources - max_sources.div_ceil(4);
        buckets.retain(|_, bucket| !self.at_rest(bucket, now));
        if buckets.len() <= keep {
            return;
        }
        // Sources in a logged episode of drops last, then the fullest first.
        let mut order: Vec<(bool, f64, Source)> = buckets
            .iter()
            .map(|(source, bucket)| {
                let limited = bucket.last_drop.is_some();
                (limited, self.tokens_at(bucket, now), *source)
            })
            .collect();
        let excess = buckets.len() - keep;
        order.select_nth_unstable_by(excess - 1, |a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        for (_, _, source) in &order[..excess] {
            buckets.remove(source);
        }
    }

    /// The tokens a bucket holds at `now`, refilled since it was last used.
    fn tokens_at(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        (bucket.tokens + elapsed * self.limit.per_second).min(self.limit.burst)
    }

    /// Whether a bucket is as good as none: full again, and out of any
    /// logged episode.
    fn at_rest(&self, bucket: &Bucket, now: Instant) -> bool {
        self.tokens_at(bucket, now) >= self.limit.burst
            && bucket
                .last_drop
                .is_none_or(|last| now.saturating_duration_since(last) >= LOG_QUIET_PERIOD)
    }

    fn take(&self, bucket: &mut Bucket, now: Instant) -> Verdict {
        bucket.tokens = self.tokens_at(bucket, now);
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
        match self.buckets.lock() {
            Ok(buckets) => buckets.len(),
            Err(poisoned) => poisoned.into_inner().len(),
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

    #[test]
    fn cycling_fresh_sources_does_not_free_a_limited_one() {
        let limiter = limiter(1.0, 5.0, DEFAULT_MAX_SOURCES);
        let start = Instant::now();
        let limited = ip("2001:db8:ffff:1::1");
        for _ in 0..5 {
            assert_eq!(limiter.admit(limited, start), Verdict::Pass);
        }
        assert_eq!(limiter.admit(limited, start), Verdict::Drop { log: true });
        // Every /64 of another /48, twice over, within the same second.
        for round in 0..2u128 {
            for index in 0..65_536u128 {
                let address = (0x2001_0db8_0001u128 << 80) | (index << 64) | round;
                let forged = IpAddr::V6(Ipv6Addr::from(address));
                assert_eq!(limiter.admit(forged, start), Verdict::Pass);
                assert!(limiter.tracked_sources() <= DEFAULT_MAX_SOURCES);
            }
        }
        let soon = start + Duration::from_millis(500);
        assert_eq!(limiter.admit(limited, soon), Verdict::Drop { log: false });
    }

    #[test]
    fn the_table_grows_only_as_sources_arrive() {
        let limiter = limiter(1.0, 1.0, MAX_SOURCES);
        let capacity =
            |limiter: &RateLimiter| limiter.buckets.lock().expect("not poisoned").capacity();
        assert_eq!(capacity(&limiter), 0);
        limiter.admit(ip("192.0.2.1"), Instant::now());
        assert!(capacity(&limiter) < 64);
    }
}
