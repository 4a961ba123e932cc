//! Forwarding (pyzord's `--forward-client-homedir`): digests that pyzord
//! received as reports or whitelists are queued and sent on to upstream
//! Pyzor servers with the `client`.
//!
//! Each upstream server has its own queue and task, so that a dead or slow
//! one holds up none of the others. Like pyzor's `Forwarder`, a queue holds
//! 10,000 digests (here one per upstream) and drops what does not fit.
//! Unlike it, digests go out in batches (many `Op-Digest` headers in one
//! request, which pyzord accepts), flushed when a batch is full or after a
//! short delay; each server's answer is read, and a batch that fails is
//! tried again after a pause that doubles, a few times, then dropped. What
//! is dropped is counted (`pyzord_queue_dropped_total{queue="forward"}`)
//! and logged once per episode, not per digest. At shutdown
//! ([`Forwarder::finish`]) what is queued is sent within a bounded time,
//! then given up with one log line saying how many.
//!
//! This module sits above `server` and `client`, which never import each
//! other: the server only sees the [`Forward`] sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Client;
use crate::protocol::Op;
use crate::server::Forward;
use crate::server::metrics::{Dropped, Metrics, QueueStats};
use crate::storage::Kind;

/// pyzor's `max_queue_size`, here for each upstream server.
pub const MAX_QUEUE: usize = 10_000;

/// Digests per forwarded request: about 5 kB of `Op-Digest` lines, well
/// inside pyzord's 8,192-byte datagram.
pub const MAX_BATCH: usize = 100;

/// How long a digest may wait for its batch to fill.
pub const FLUSH_DELAY: Duration = Duration::from_secs(1);

/// How often a batch is tried on its server before it is dropped.
pub const ATTEMPTS: u32 = 4;

/// The pause before a batch's second try; it doubles before each further
/// one (1, 2 and 4 s: with the client's 5 s timeout, a dead server costs
/// a batch about 27 s, while the queue holds 100 batches).
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// How long the flush at shutdown may take before what is left is given
/// up: inside systemd's default stop timeout of 90 s, and short enough for
/// a restart not to be held up.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// The pause between tries during the flush at shutdown.
const SHUTDOWN_RETRY: Duration = Duration::from_millis(200);

/// A queued digest; one allocation shared by every upstream's queue.
type Item = (Arc<str>, Kind);

/// One upstream server, as its sink and its task share it.
struct Upstream {
    name: String,
    sender: mpsc::Sender<Item>,
    stats: Arc<QueueStats>,
    /// Digests are being dropped because the queue is full: logged when
    /// the first is, and again only after the queue has drained.
    dropping: AtomicBool,
}

/// The sink the server queues digests into: one queue per upstream.
#[derive(Clone)]
pub struct ForwardQueue {
    upstreams: Vec<Arc<Upstream>>,
}

impl Forward for ForwardQueue {
    fn queue(&self, digest: &str, kind: Kind) {
        let digest: Arc<str> = Arc::from(digest);
        for upstream in &self.upstreams {
            upstream.stats.moved(1, 0);
            match upstream.sender.try_send((Arc::clone(&digest), kind)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    upstream.stats.moved(0, 1);
                    upstream.stats.drop_items(Dropped::Full, 1);
                    if !upstream.dropping.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            server = upstream.name,
                            capacity = MAX_QUEUE,
                            "forwarding queue full: digests for this server are dropped until \
                             it has room"
                        );
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    upstream.stats.moved(0, 1);
                    upstream.stats.drop_items(Dropped::Shutdown, 1);
                }
            }
        }
    }
}

/// The forwarding tasks and the sink that feeds them.
pub struct Forwarder {
    sink: Arc<ForwardQueue>,
    closing: watch::Sender<Option<Instant>>,
    tasks: JoinSet<usize>,
}

impl Forwarder {
    /// Starts one task per server of `client`, whose queues are counted in
    /// `metrics`.
    pub fn start(client: &Client, metrics: &Metrics) -> Self {
        let (closing, watcher) = watch::channel(None);
        let mut tasks = JoinSet::new();
        let mut upstreams = Vec::new();
        for (index, server) in client.servers().enumerate() {
            let name = server.to_string();
            let (sender, receiver) = mpsc::channel(MAX_QUEUE);
            let stats = QueueStats::new("forward", &[("upstream", &name)], MAX_QUEUE);
            metrics.add_queue(Arc::clone(&stats));
            let upstream = Arc::new(Upstream {
                name,
                sender,
                stats,
                dropping: AtomicBool::new(false),
            });
            let worker = Worker {
                client: client.clone(),
                index,
                upstream: Arc::clone(&upstream),
                receiver,
                closing: watcher.clone(),
                held: Vec::new(),
                failing: None,
            };
            tasks.spawn(worker.run());
            upstreams.push(upstream);
        }
        Self {
            sink: Arc::new(ForwardQueue { upstreams }),
            closing,
            tasks,
        }
    }

    /// The sink to hand to the server.
    pub fn sink(&self) -> Arc<ForwardQueue> {
        Arc::clone(&self.sink)
    }

    /// Sends what is queued within `within`, then gives the rest up with
    /// one log line; returns how many digests were given up (counted once
    /// per upstream that did not take them).
    pub async fn finish(mut self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let _ = self.closing.send(Some(deadline));
        let mut left = 0;
        // Every request gives up at the deadline; a moment more for the
        // tasks to count what they hold.
        let joined = tokio::time::timeout_at(deadline + SHUTDOWN_RETRY, async {
            while let Some(result) = self.tasks.join_next().await {
                left += result.unwrap_or(0);
            }
        })
        .await;
        if joined.is_err() {
            self.tasks.abort_all();
            for upstream in &self.sink.upstreams {
                let depth = upstream.stats.depth();
                upstream.stats.moved(0, depth);
                upstream.stats.drop_items(Dropped::Shutdown, depth as u64);
                left += depth;
            }
        }
        if left > 0 {
            tracing::warn!(
                digests = left,
                "forwarding stopped at shutdown: digests not sent upstream"
            );
        }
        left
    }
}

/// What became of a batch.
enum Outcome {
    /// Sent, or dropped after its last try.
    Done,
    /// Shutdown began: the batch is back in [`Worker::held`].
    Closing,
}

/// One upstream's task: its queue, and the digests taken from it not yet
/// sent.
struct Worker {
    client: Client,
    index: usize,
    upstream: Arc<Upstream>,
    receiver: mpsc::Receiver<Item>,
    closing: watch::Receiver<Option<Instant>>,
    /// Taken from the queue and not yet sent; still counted in its depth.
    held: Vec<Item>,
    /// Forwarding to this server fails, since the drops counted then.
    failing: Option<u64>,
}

impl Worker {
    /// Forwards batches until shutdown, then flushes; returns how many
    /// digests it gave up at shutdown.
    async fn run(mut self) -> usize {
        while self.next_batch().await {
            let batch = std::mem::take(&mut self.held);
            if let Outcome::Closing = self.deliver(batch).await {
                break;
            }
        }
        self.flush_at_shutdown().await
    }

    /// Fills [`Worker::held`] with a batch: a first digest, then what comes
    /// within [`FLUSH_DELAY`], up to [`MAX_BATCH`]. False at shutdown.
    async fn next_batch(&mut self) -> bool {
        if self.receiver.is_empty() {
            // The queue has drained: the next overflow is a new episode.
            self.upstream.dropping.store(false, Ordering::Relaxed);
        }
        let first = tokio::select! {
            biased;
            _ = self.closing.changed() => return false,
            item = self.receiver.recv() => item,
        };
        let Some(first) = first else {
            return false;
        };
        self.held.push(first);
        let flush_at = Instant::now() + FLUSH_DELAY;
        while self.held.len() < MAX_BATCH {
            tokio::select! {
                biased;
                _ = self.closing.changed() => return false,
                item = tokio::time::timeout_at(flush_at, self.receiver.recv()) => match item {
                    Ok(Some(item)) => self.held.push(item),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        true
    }

    /// Sends a batch, its reports and its whitelists each in one request,
    /// with retries.
    async fn deliver(&mut self, batch: Vec<Item>) -> Outcome {
        let (reports, whitelists): (Vec<Item>, Vec<Item>) = batch
            .into_iter()
            .partition(|(_, kind)| *kind == Kind::Report);
        let mut groups = [(Op::Report, reports), (Op::Whitelist, whitelists)].into_iter();
        while let Some((op, digests)) = groups.next() {
            if digests.is_empty() {
                continue;
            }
            if let Outcome::Closing = self.send_with_retries(op, &digests).await {
                self.held.extend(digests);
                self.held.extend(groups.flat_map(|(_, rest)| rest));
                return Outcome::Closing;
            }
            self.upstream.stats.moved(0, digests.len());
        }
        Outcome::Done
    }

    /// Tries one request [`ATTEMPTS`] times with a doubling pause; a batch
    /// still not taken, or refused, is dropped and counted.
    async fn send_with_retries(&mut self, op: Op, items: &[Item]) -> Outcome {
        let digests: Vec<String> = items.iter().map(|(digest, _)| digest.to_string()).collect();
        let mut pause = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let asked = self.client.ask(self.index, op, digests.clone(), None);
            let answer = tokio::select! {
                biased;
                _ = self.closing.changed() => return Outcome::Closing,
                answer = asked => answer,
            };
            let why = match answer {
                Ok(response) if response.is_ok().unwrap_or(false) => {
                    self.recovered();
                    return Outcome::Done;
                }
                Ok(response) => {
                    // Not worth retrying: this server will not take them.
                    self.failed(&format_args!("refused: {}", response.diag()));
                    break;
                }
                Err(error) => error.to_string(),
            };
            self.failed(&why);
            if attempt < ATTEMPTS {
                tokio::select! {
                    biased;
                    _ = self.closing.changed() => return Outcome::Closing,
                    () = tokio::time::sleep(pause) => {}
                }
                pause *= 2;
            }
        }
        self.upstream
            .stats
            .drop_items(Dropped::Failed, digests.len() as u64);
        Outcome::Done
    }

    /// All drops so far.
    fn dropped(&self) -> u64 {
        Dropped::ALL
            .iter()
            .map(|reason| self.upstream.stats.dropped(*reason))
            .sum()
    }

    /// A request failed: logged when it begins an episode of failures.
    fn failed(&mut self, why: &dyn std::fmt::Display) {
        if self.failing.is_none() {
            tracing::warn!(
                server = self.upstream.name,
                error = %why,
                "forwarding to this server fails: retrying with backoff, then dropping"
            );
            self.failing = Some(self.dropped());
        }
    }

    /// A request was taken: ends an episode of failures with its count.
    fn recovered(&mut self) {
        if let Some(before) = self.failing.take() {
            tracing::info!(
                server = self.upstream.name,
                dropped = self.dropped() - before,
                "forwarding to this server works again"
            );
        }
    }

    /// Sends what is held and queued until the shutdown deadline, trying
    /// each request again after a short pause; returns how many digests
    /// were left.
    async fn flush_at_shutdown(mut self) -> usize {
        let deadline = (*self.closing.borrow()).unwrap_or_else(Instant::now);
        self.receiver.close();
        while let Some(item) = self.receiver.recv().await {
            self.held.push(item);
        }
        let (reports, whitelists): (Vec<Item>, Vec<Item>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, kind)| *kind == Kind::Report);
        let mut left = 0;
        for (op, items) in [(Op::Report, reports), (Op::Whitelist, whitelists)] {
            for chunk in items.chunks(MAX_BATCH) {
                if !self.send_before(op, chunk, deadline).await {
                    left += chunk.len();
                }
                self.upstream.stats.moved(0, chunk.len());
            }
        }
        self.upstream
            .stats
            .drop_items(Dropped::Shutdown, left as u64);
        left
    }

    /// Tries one request until it is taken or `deadline` passes.
    async fn send_before(&mut self, op: Op, items: &[Item], deadline: Instant) -> bool {
        let digests: Vec<String> = items.iter().map(|(digest, _)| digest.to_string()).collect();
        while Instant::now() < deadline {
            let answer = self
                .client
                .ask(self.index, op, digests.clone(), Some(deadline))
                .await;
            match answer {
                Ok(response) if response.is_ok().unwrap_or(false) => return true,
                Ok(_) => return false,
                Err(_) => {
                    tokio::time::sleep_until(deadline.min(Instant::now() + SHUTDOWN_RETRY)).await
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Accounts;
    use crate::client::servers::parse_servers;

    /// A client of one server on a port nobody listens on.
    fn dead_client() -> Client {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .expect("a free port")
            .port();
        let (servers, _) = parse_servers(&format!("127.0.0.1:{port}\n")).expect("servers");
        Client::new(servers, Accounts::default(), Duration::from_millis(200))
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_shutdown_gives_the_rest_up_in_time() {
        let metrics = Metrics::default();
        let forwarder = Forwarder::start(&dead_client(), &metrics);
        let sink = forwarder.sink();
        let extra = 50;
        for number in 0..MAX_QUEUE + MAX_BATCH + extra {
            sink.queue(&format!("{number:040x}"), Kind::Report);
        }
        let stats = &sink.upstreams[0].stats;
        // The task holds at most a batch; the queue takes MAX_QUEUE more.
        assert!(stats.dropped(Dropped::Full) >= extra as u64);
        assert_eq!(
            stats.depth() as u64 + stats.dropped(Dropped::Full),
            (MAX_QUEUE + MAX_BATCH + extra) as u64
        );
        let started = Instant::now();
        let left = forwarder.finish(Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(left as u64, stats.dropped(Dropped::Shutdown));
        assert_eq!(
            left as u64 + stats.dropped(Dropped::Full),
            (MAX_QUEUE + MAX_BATCH + extra) as u64
        );
        assert_eq!(stats.depth(), 0);
    }
}
