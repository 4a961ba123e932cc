//! pyzord: the Pyzor server. [`run`] serves one UDP socket until its
//! shutdown future completes; every datagram gets at most one response
//! datagram, no larger than [`reflection`] allows, from the handler
//! ([`handler::begin`] checks it and says what it needs from the database,
//! [`handler::Prepared::finish`] answers with what the database gave). An engine in a local file is served from
//! blocking threads ([`blocking`]), a networked one from a task per
//! datagram ([`handler::handle`]).
//!
//! This module owns the UDP loops, the shared [`Context`] and reloading of
//! the access files. A serving thread or task that ends before shutdown
//! (its socket lost, a panic) ends [`run`] with a [`ServeError`], so the
//! process exits non-zero and its supervisor can restart it. It never imports `client`: forwarding to upstream
//! servers is handed in as a [`Forward`] sink.

pub mod access;
mod blocking;
pub mod config;
mod datagrams;
pub mod handler;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod reflection;
pub mod replay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use crate::storage::{Kind, Storage};
use access::Access;
use message::{MAX_DATAGRAM, Message};
use metrics::Metrics;

/// How many requests to a networked engine may be in the works at once;
/// more wait in the socket's buffer (the kernel drops from it when full).
/// Exported as the `requests` queue.
const MAX_IN_FLIGHT: u32 = 1024;

/// Why [`run`] stopped serving before its shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the socket cannot receive any more")]
    SocketLost(#[source] std::io::Error),
    #[error("a serving thread panicked: {0}")]
    Panicked(String),
    #[error("a serving thread ended before shutdown")]
    Ended,
}

impl ServeError {
    /// What a finished serving thread or task says about why it ended.
    fn from_joined(joined: Result<std::io::Result<()>, tokio::task::JoinError>) -> Self {
        match joined {
            Ok(Ok(())) => ServeError::Ended,
            Ok(Err(error)) => ServeError::SocketLost(error),
            Err(error) => match error.try_into_panic() {
                Ok(panic) => ServeError::Panicked(panic_message(panic.as_ref())),
                Err(error) => ServeError::Panicked(error.to_string()),
            },
        }
    }
}

/// The text a panic was raised with, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "no message".to_owned()
    }
}

/// Whether a receive error means the socket itself is gone (closed,
/// replaced by something that is not a socket) rather than one datagram
/// or an ICMP error from an earlier send, which the loops skip.
pub(crate) fn socket_lost(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL)
    )
}

/// Where reported and whitelisted digests go to be forwarded upstream.
pub trait Forward: Send + Sync {
    /// Queues one digest; drops it when the queue is full, as pyzor does.
    fn queue(&self, digest: &str, kind: Kind);
}

/// What every request handler shares.
pub struct Context {
    pub storage: Arc<dyn Storage>,
    access: RwLock<Arc<Access>>,
    access_files: Option<(PathBuf, PathBuf)>,
    pub forward: Option<Arc<dyn Forward>>,
    pub metrics: Arc<Metrics>,
    /// Per-source rate limiting, off unless configured.
    pub limiter: Option<limits::RateLimiter>,
    /// Signed requests already served.
    pub replay: replay::ReplayCache,
    /// Error lines repeated within a few seconds, folded into one.
    pub repeats: crate::logging::Repeats,
    /// The engine's commit queue, when it has one: the writes it refused
    /// when full are counted here.
    pub commit_queue: Option<Arc<metrics::QueueStats>>,
}

impl Context {
    /// A context with fixed accounts and ACL.
    pub fn new(storage: Arc<dyn Storage>, access: Access) -> Self {
        let metrics = Arc::new(Metrics::default());
        let commit_queue = storage.write_queue().map(|queue| {
            let stats =
                metrics::QueueStats::with_depth("commit", &[], queue.capacity, queue.digests);
            metrics.add_queue(Arc::clone(&stats));
            stats
        });
        Self {
            storage,
            access: RwLock::new(Arc::new(access)),
            access_files: None,
            forward: None,
            metrics,
            limiter: None,
            replay: replay::ReplayCache::default(),
            repeats: crate::logging::Repeats::default(),
            commit_queue,
        }
    }

    /// A context whose accounts and ACL come from pyzord.passwd and
    /// pyzord.access, and are read again by [`Context::reload`].
    pub fn from_files(
        storage: Arc<dyn Storage>,
        passwd: PathBuf,
        access: PathBuf,
    ) -> Result<Self, access::AccessError> {
        let loaded = Access::load(&passwd, &access)?;
        let mut context = Self::new(storage, loaded);
        context.access_files = Some((passwd, access));
        Ok(context)
    }

    /// The accounts and ACL in force.
    pub fn access(&self) -> Arc<Access> {
        match self.access.read() {
            Ok(access) => Arc::clone(&access),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reads the access files again (SIGUSR1); keeps the old ones when
    /// they cannot be read.
    pub fn reload(&self) {
        let Some((passwd, access)) = &self.access_files else {
            return;
        };
        match Access::load(passwd, access) {
            Ok(loaded) => {
                let mut slot = match self.access.write() {
                    Ok(slot) => slot,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *slot = Arc::new(loaded);
                tracing::info!("reloaded the accounts and the ACL");
            }
            Err(error) => tracing::error!(
                "cannot reload the access files, keeping the old ones: {}",
                crate::logging::Chain(&error)
            ),
        }
    }
}

/// How many threads serve an engine in a local file: one receives and
/// answers reads while another commits and answers writes; more only help
/// when the answers of one commit go out while the next one runs.
const MIN_THREADS: usize = 2;
const MAX_THREADS: usize = 4;

/// How often a blocking serving thread looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Serves `socket` until `shutdown` completes, then waits for the requests
/// in the works (so every write that was started is committed and answered).
/// A serving thread or task that ends first is an error ([`ServeError`]).
///
/// An engine in a local file is served from a few blocking threads that
/// take turns at receiving datagrams in batches ([`blocking`]); a
/// networked engine (Redis, MySQL) from a task per request, so that
/// thousands of requests can wait on the database at once.
pub async fn run(
    socket: UdpSocket,
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    if context.storage.as_local().is_some() {
        return run_on_threads(socket, context, shutdown).await;
    }
    let socket = Arc::new(socket);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize));
    let requests = metrics::QueueStats::new("requests", &[], MAX_IN_FLIGHT as usize);
    context.metrics.add_queue(Arc::clone(&requests));
    let loops = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut receivers = tokio::task::JoinSet::new();
    for _ in 0..loops {
        receivers.spawn(receive_loop(
            Arc::clone(&socket),
            Arc::clone(&context),
            Arc::clone(&in_flight),
            Arc::clone(&requests),
        ));
    }
    let ended = tokio::select! {
        Some(joined) = receivers.join_next() => Some(ServeError::from_joined(joined)),
        () = shutdown => {
            tracing::info!("shutting down");
            None
        }
    };
    receivers.abort_all();
    // Every request holds a permit until its response is sent.
    let _all = in_flight.acquire_many(MAX_IN_FLIGHT).await;
    ended.map_or(Ok(()), |error| Err(std::io::Error::other(error)))
}

/// [`run`] on blocking threads, which serve the socket until `stop` is
/// set and each finish the batch in hand (its writes committed and
/// answered).
async fn run_on_threads(
    socket: UdpSocket,
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let socket = socket.into_std()?;
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(STOP_POLL))?;
    let socket = Arc::new(socket);
    let stop = Arc::new(AtomicBool::new(false));
    let receiving = Arc::new(std::sync::Mutex::new(()));
    let count = std::thread::available_parallelism()
        .map_or(MIN_THREADS, |cores| cores.get())
        .clamp(MIN_THREADS, MAX_THREADS);
    let mut threads = tokio::task::JoinSet::new();
    for _ in 0..count {
        let socket = Arc::clone(&socket);
        let context = Arc::clone(&context);
        let receiving = Arc::clone(&receiving);
        let stop = Arc::clone(&stop);
        threads.spawn_blocking(move || blocking::serve(&socket, &context, &receiving, &stop));
    }
    let ended = tokio::select! {
        Some(joined) = threads.join_next() => Some(ServeError::from_joined(joined)),
        () = shutdown => {
            tracing::info!("shutting down");
            None
        }
    };
    // The other threads finish their batches (writes committed, answered).
    stop.store(true, Ordering::Relaxed);
    while threads.join_next().await.is_some() {}
    ended.map_or(Ok(()), |error| Err(std::io::Error::other(error)))
}

async fn receive_loop(
    socket: Arc<UdpSocket>,
    context: Arc<Context>,
    in_flight: Arc<Semaphore>,
    requests: Arc<metrics::QueueStats>,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (length, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) if socket_lost(&error) => return Err(error),
            // ICMP errors from earlier sends surface here on some systems.
            Err(error) => {
                tracing::debug!(%error, "receive failed");
                continue;
            }
        };
        let received = Instant::now();
        let request_in_flight = InFlight::new(permit, &requests);
        if let Some(limiter) = &context.limiter
            && !limiter.admit_logged(peer, received, &context.metrics)
        {
            continue;
        }
        let request = Message::parse(&buffer[..length]);
        let socket = Arc::clone(&socket);
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            respond(&socket, (&request, length), peer, &context, received).await;
            drop(request_in_flight);
        });
    }
}

/// A request in the works: it holds its permit, and counts in the
/// `requests` queue, until dropped.
struct InFlight {
    _permit: tokio::sync::OwnedSemaphorePermit,
    requests: Arc<metrics::QueueStats>,
}

impl InFlight {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, requests: &Arc<metrics::QueueStats>) -> Self {
        requests.moved(1, 0);
        Self {
            _permit: permit,
            requests: Arc::clone(requests),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.requests.moved(0, 1);
    }
}

/// Answers a request of `length` bytes, unless the answer would be larger
/// than [`reflection`] allows.
async fn respond(
    socket: &UdpSocket,
    (request, length): (&Message, usize),
    peer: SocketAddr,
    context: &Context,
    received: Instant,
) {
    let Some(response) = handler::handle(request, peer.ip(), context).await else {
        return;
    };
    let Some(bytes) = reflection::datagram(&response, length, &context.metrics) else {
        return;
    };
    let operation = request.get("Op").unwrap_or_default();
    context
        .metrics
        .record(operation, response.code, received.elapsed());
    if let Err(error) = socket.send_to(&bytes, peer).await {
        tracing::debug!(%peer, %error, "cannot send the response");
    }
}
