//! pyzord's counters: requests by operation and response code, latency,
//! backend errors, datagrams rejected as abuse by reason, and the depth and
//! drops of each bounded queue. Lock-free atomics updated by every request,
//! written in the Prometheus text format on an optional HTTP listener and
//! logged at an interval.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The operation labels; anything else is `other`.
pub const OPERATIONS: [&str; 7] = [
    "ping",
    "pong",
    "info",
    "check",
    "report",
    "whitelist",
    "other",
];

/// The response codes pyzord sends.
pub const CODES: [u16; 7] = [200, 400, 401, 403, 500, 501, 505];

/// Upper bounds of the latency histogram, in seconds.
pub const LATENCY_BOUNDS_SECS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Why a datagram was dropped unanswered, or a request refused before its
/// operation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Over its source's rate limit: dropped.
    RateLimited,
    /// No Op or no PV: not a request, dropped.
    NotARequest,
    /// No Thread to answer to: dropped.
    NoThread,
    /// A Thread that is not 1 to 5 ASCII digits: dropped.
    BadThread,
    /// An answer larger than the request allows: dropped.
    AnswerTooLarge,
    /// A signed request seen before: answered 401.
    Replayed,
    /// More Op-Digest headers than allowed: answered 400.
    TooManyDigests,
    /// An Op-Digest that is not 40 hex digits: answered 400.
    BadDigest,
}

impl Rejection {
    pub const ALL: [Rejection; 8] = [
        Rejection::RateLimited,
        Rejection::NotARequest,
        Rejection::NoThread,
        Rejection::BadThread,
        Rejection::AnswerTooLarge,
        Rejection::Replayed,
        Rejection::TooManyDigests,
        Rejection::BadDigest,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::RateLimited => "rate_limited",
            Rejection::NotARequest => "not_a_request",
            Rejection::NoThread => "no_thread",
            Rejection::BadThread => "bad_thread",
            Rejection::AnswerTooLarge => "answer_too_large",
            Rejection::Replayed => "replayed",
            Rejection::TooManyDigests => "too_many_digests",
            Rejection::BadDigest => "bad_digest",
        }
    }
}

/// Why a bounded queue let an item go without doing its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The queue was full: the item was refused or dropped on arrival.
    Full,
    /// Its upstream did not take it after every retry.
    Failed,
    /// Still queued when the flush at shutdown ran out of time.
    Shutdown,
}

impl Dropped {
    pub const ALL: [Dropped; 3] = [Dropped::Full, Dropped::Failed, Dropped::Shutdown];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::Full => "full",
            Dropped::Failed => "failed",
            Dropped::Shutdown => "shutdown",
        }
    }
}

/// One bounded queue's figures: how many items wait in it, how many it
/// holds at most, and how many it let go, by reason. Its owner updates
/// them; [`Metrics`] writes them once registered ([`Metrics::add_queue`]).
#[derive(Debug)]
pub struct QueueStats {
    /// The Prometheus labels naming the queue: `queue="commit"`.
    labels: String,
    capacity: usize,
    depth: Arc<AtomicUsize>,
    dropped: [AtomicU64; Dropped::ALL.len()],
}

impl QueueStats {
    /// The figures of queue `name` (with further `labels`) holding at most
    /// `capacity` items.
    pub fn new(name: &str, labels: &[(&str, &str)], capacity: usize) -> Arc<Self> {
        Self::with_depth(name, labels, capacity, Arc::default())
    }

    /// [`QueueStats::new`] for a queue that counts its depth itself.
    pub fn with_depth(
        name: &str,
        labels: &[(&str, &str)],
        capacity: usize,
        depth: Arc<AtomicUsize>,
    ) -> Arc<Self> {
        let mut text = format!("queue=\"{}\"", escape(name));
        for (key, value) in labels {
            let _ = write!(text, ",{key}=\"{}\"", escape(value));
        }
        Arc::new(Self {
            labels: text,
            capacity,
            depth,
            dropped: Default::default(),
        })
    }

    /// How many items wait now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Counts items coming in (`added`) and going out (`removed`).
    pub fn moved(&self, added: usize, removed: usize) {
        if added > 0 {
            self.depth.fetch_add(added, Ordering::Relaxed);
        }
        if removed > 0 {
            self.depth.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Counts `count` items let go for `reason`.
    pub fn drop_items(&self, reason: Dropped, count: u64) {
        self.dropped[reason as usize].fetch_add(count, Ordering::Relaxed);
    }

    /// How many items were let go for `reason`.
    pub fn dropped(&self, reason: Dropped) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every counter of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; CODES.len()]; OPERATIONS.len()],
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_SECS.len() + 1],
    latency_sum_micros: AtomicU64,
    backend_errors: AtomicU64,
    rejections: [AtomicU64; Rejection::ALL.len()],
    queues: Mutex<Vec<Arc<QueueStats>>>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, operation: &[u8], code: u16, elapsed: Duration) {
        let op = OPERATIONS
            .iter()
            .position(|name| name.as_bytes() == operation)
            .unwrap_or(OPERATIONS.len() - 1);
        if let Some(code) = CODES.iter().position(|known| *known == code) {
            self.requests[op][code].fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS_SECS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BOUNDS_SECS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts one failed database operation.
    pub fn backend_error(&self) {
        self.backend_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one datagram rejected as abuse.
    pub fn reject(&self, reason: Rejection) {
        self.rejections[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many datagrams were rejected for this reason.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejections[reason as usize].load(Ordering::Relaxed)
    }

    /// The rejections so far by reason, for the log: `rate_limited=3
    /// replayed=1`, or `none`.
    pub fn rejections_summary(&self) -> String {
        let mut summary = String::new();
        for reason in Rejection::ALL {
            let count = self.rejected(reason);
            if count > 0 {
                let gap = if summary.is_empty() { "" } else { " " };
                let _ = write!(summary, "{gap}{}={count}", reason.label());
            }
        }
        if summary.is_empty() {
            summary.push_str("none");
        }
        summary
    }

    /// Exports `queue`'s figures from now on.
    pub fn add_queue(&self, queue: Arc<QueueStats>) {
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(queue);
    }

    fn queues(&self) -> Vec<Arc<QueueStats>> {
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// All requests answered so far.
    pub fn total(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// The Prometheus text exposition of every counter.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP pyzord_requests_total Requests answered, by operation and code.\n");
        out.push_str("# TYPE pyzord_requests_total counter\n");
        for (op, codes) in OPERATIONS.iter().zip(&self.requests) {
            for (code, count) in CODES.iter().zip(codes) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "pyzord_requests_total{{op=\"{op}\",code=\"{code}\"}} {count}"
                    );
                }
            }
        }
        out.push_str("# HELP pyzord_request_duration_seconds Time from datagram to answer.\n");
        out.push_str("# TYPE pyzord_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (index, bucket) in self.latency_buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = LATENCY_BOUNDS_SECS
                .get(index)
                .map_or("+Inf".to_owned(), |bound| bound.to_string());
            let _ = writeln!(
                out,
                "pyzord_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "pyzord_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "pyzord_request_duration_seconds_count {cumulative}");
        out.push_str("# HELP pyzord_backend_errors_total Failed database operations.\n");
        out.push_str("# TYPE pyzord_backend_errors_total counter\n");
        let errors = self.backend_errors.load(Ordering::Relaxed);
        let _ = writeln!(out, "pyzord_backend_errors_total {errors}");
        out.push_str(
            "# HELP pyzord_rejected_total Datagrams dropped unanswered (rate_limited, \
             not_a_request, no_thread, bad_thread, answer_too_large) or refused before \
             their operation (replayed, too_many_digests, bad_digest).\n",
        );
        out.push_str("# TYPE pyzord_rejected_total counter\n");
        for reason in Rejection::ALL {
            let count = self.rejected(reason);
            let label = reason.label();
            let _ = writeln!(out, "pyzord_rejected_total{{reason=\"{label}\"}} {count}");
        }
        self.write_queues(&mut out);
        out
    }

    /// The queue gauges and drop counters, in the exposition.
    fn write_queues(&self, out: &mut String) {
        let queues = self.queues();
        out.push_str(
            "# HELP pyzord_queue_depth Items waiting in a bounded queue (commit: reports and \
             whitelists for the next SQLite transaction; log: lines for a log file; forward: \
             digests for one upstream server; requests: requests to Redis or MySQL in the \
             works).\n",
        );
        out.push_str("# TYPE pyzord_queue_depth gauge\n");
        for queue in &queues {
            let _ = writeln!(
                out,
                "pyzord_queue_depth{{{}}} {}",
                queue.labels,
                queue.depth()
            );
        }
        out.push_str("# HELP pyzord_queue_capacity The most items a bounded queue holds.\n");
        out.push_str("# TYPE pyzord_queue_capacity gauge\n");
        for queue in &queues {
            let _ = writeln!(
                out,
                "pyzord_queue_capacity{{{}}} {}",
                queue.labels, queue.capacity
            );
        }
        out.push_str(
            "# HELP pyzord_queue_dropped_total Items a bounded queue let go: refused or dropped \
             when full (full), not taken by an upstream after every retry (failed), or still \
             queued when the flush at shutdown ended (shutdown).\n",
        );
        out.push_str("# TYPE pyzord_queue_dropped_total counter\n");
        for queue in &queues {
            for reason in Dropped::ALL {
                let _ = writeln!(
                    out,
                    "pyzord_queue_dropped_total{{{},reason=\"{}\"}} {}",
                    queue.labels,
                    reason.label(),
                    queue.dropped(reason)
                );
            }
        }
    }
}

/// How long the metrics listener waits after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Answers every HTTP request on `listener` with the metrics.
pub async fn serve_http(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    let repeats = crate::logging::Repeats::default();
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors, most likely: retrying at once would spin.
            Err(error) => {
                if let Some(admitted) = repeats.admit("accept", std::time::Instant::now()) {
                    tracing::warn!("cannot accept a metrics connection: {error}{admitted}");
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let metrics = std::sync::Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
            let body = metrics.prometheus();
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

/// Logs the request total and rate, the backend errors and the rejections
/// every `period`.
pub async fn log_every(metrics: std::sync::Arc<Metrics>, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.tick().await;
    let mut last = metrics.total();
    loop {
        interval.tick().await;
        let total = metrics.total();
        let rate = (total - last) as f64 / period.as_secs_f64();
        let errors = metrics.backend_errors.load(Ordering::Relaxed);
        tracing::info!(
            total,
            rate = format!("{rate:.1}/s"),
            backend_errors = errors,
            rejected = metrics.rejections_summary(),
            "requests"
        );
        last = total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_op_and_code() {
        let metrics = Metrics::default();
        metrics.record(b"check", 200, Duration::from_micros(50));
        metrics.record(b"bogus", 403, Duration::from_millis(2));
        metrics.backend_error();
        metrics.reject(Rejection::Replayed);
        let text = metrics.prometheus();
        assert!(text.contains("pyzord_requests_total{op=\"check\",code=\"200\"} 1\n"));
        assert!(text.contains("pyzord_requests_total{op=\"other\",code=\"403\"} 1\n"));
        assert!(text.contains("pyzord_request_duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("pyzord_request_duration_seconds_count 2\n"));
        assert!(text.contains("pyzord_backend_errors_total 1\n"));
        assert!(text.contains("pyzord_rejected_total{reason=\"replayed\"} 1\n"));
        assert!(text.contains("pyzord_rejected_total{reason=\"rate_limited\"} 0\n"));
    }

    #[test]
    fn queues_are_exported_with_their_labels() {
        let metrics = Metrics::default();
        let commit = QueueStats::new("commit", &[], 100);
        let forward = QueueStats::new("forward", &[("upstream", "a\"b:1")], 10);
        metrics.add_queue(Arc::clone(&commit));
        metrics.add_queue(Arc::clone(&forward));
        commit.moved(5, 2);
        commit.drop_items(Dropped::Full, 7);
        forward.drop_items(Dropped::Shutdown, 1);
        let text = metrics.prometheus();
        assert!(text.contains("pyzord_queue_depth{queue=\"commit\"} 3\n"));
        assert!(text.contains("pyzord_queue_capacity{queue=\"commit\"} 100\n"));
        assert!(text.contains("pyzord_queue_dropped_total{queue=\"commit\",reason=\"full\"} 7\n"));
        assert!(text.contains(
            "pyzord_queue_dropped_total{queue=\"forward\",upstream=\"a\\\"b:1\",reason=\"shutdown\"} 1\n"
        ));
        assert!(text.contains("pyzord_queue_depth{queue=\"forward\",upstream=\"a\\\"b:1\"} 0\n"));
    }

    #[test]
    fn the_log_names_each_reason_seen() {
        let metrics = Metrics::default();
        assert_eq!(metrics.rejections_summary(), "none");
        metrics.reject(Rejection::RateLimited);
        metrics.reject(Rejection::RateLimited);
        metrics.reject(Rejection::TooManyDigests);
        assert_eq!(
            metrics.rejections_summary(),
            "rate_limited=2 too_many_digests=1"
        );
    }
}
