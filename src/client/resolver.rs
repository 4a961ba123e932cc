//! Server names to addresses, kept fresh for daemons that run for months.
//!
//! A name is looked up when first needed and again once its answer is
//! [`DEFAULT_REFRESH_SECS`] old; a failed lookup is never kept past
//! [`RETRY_AFTER_FAILURE`], and a failed refresh keeps the last good
//! address. One lookup runs at a time per server, and the requests that
//! arrive meanwhile wait for it (each no longer than its own deadline)
//! instead of starting their own. Lookups run on a thread of their own,
//! since `getaddrinfo` cannot be cancelled: one that hangs holds neither a
//! request nor the runtime's shutdown.
//!
//! A change of address, the first failure of an episode (with its cause)
//! and the recovery are logged once each, never per request.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ServerAddress;

/// How often a good answer is looked up again, in seconds: a server that
/// moves is followed within five minutes, while the resolver is asked
/// about each server a few hundred times a day, not once per message
/// (`getaddrinfo` does not tell a record's TTL).
pub const DEFAULT_REFRESH_SECS: u64 = 300;

/// How long a failed lookup answers for its name before the next request
/// tries again: short enough that a name which appears (a resolver that
/// came up after the milter, at boot) is used within seconds, long enough
/// that a dead resolver is not asked once per message.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// Why a name has no address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// `EAI_NONAME`: the name server says the name does not exist
    /// (NXDOMAIN), or no source knows it.
    #[error("name not found")]
    NotFound,
    /// `EAI_NODATA`, or an answer without IPv4 or IPv6 address.
    #[error("no address for this name")]
    NoAddress,
    /// `EAI_AGAIN`: the name server did not answer in time or could not
    /// be reached.
    #[error("temporary failure in name resolution (name server timed out or unreachable)")]
    Temporary,
    /// `EAI_FAIL`: the name server failed for good (SERVFAIL, REFUSED).
    #[error("name server failure")]
    Failed,
    /// The lookup had not finished by the request's deadline.
    #[error("lookup not finished within the request's deadline")]
    TimedOut,
    /// Anything else `getaddrinfo` or the system reports.
    #[error("{0}")]
    Other(String),
}

/// Looks one name up, blocking: `getaddrinfo`, or a stand-in in tests.
pub(crate) type Lookup = Arc<dyn Fn(&str, u16) -> Result<SocketAddr, ResolveError> + Send + Sync>;

type Outcome = Option<Result<SocketAddr, ResolveError>>;

/// One server's name and what is known of its address.
pub(crate) struct Resolver {
    shared: Arc<Shared>,
}

struct Shared {
    server: ServerAddress,
    refresh: Duration,
    retry_after: Duration,
    lookup: Lookup,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last good address and when it was looked up.
    good: Option<(SocketAddr, Instant)>,
    /// Set while an episode of failures lasts: the latest failure and when.
    failure: Option<(ResolveError, Instant)>,
    /// The lookup under way, if any; its result is sent once.
    pending: Option<watch::Receiver<Outcome>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("server", &self.shared.server)
            .field("refresh", &self.shared.refresh)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    pub(crate) fn new(server: ServerAddress, refresh: Duration) -> Resolver {
        Resolver::with_lookup(server, refresh, RETRY_AFTER_FAILURE, Arc::new(getaddrinfo))
    }

    pub(crate) fn with_lookup(
        server: ServerAddress,
        refresh: Duration,
        retry_after: Duration,
        lookup: Lookup,
    ) -> Resolver {
        Resolver {
            shared: Arc::new(Shared {
                server,
                refresh,
                retry_after,
                lookup,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The server's address: the last good one (a refresh that is due
    /// starts in the background), or the answer of a lookup awaited until
    /// `deadline` (`None`: until `getaddrinfo` returns, as Python pyzor
    /// waits).
    pub(crate) async fn resolve(
        &self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<SocketAddr, ResolveError> {
        let server = &self.shared.server;
        if let Ok(ip) = server.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, server.port));
        }
        let mut waiter = {
            let mut state = self.shared.lock();
            let now = Instant::now();
            let failed_recently = state
                .failure
                .as_ref()
                .is_some_and(|(_, at)| now.duration_since(*at) < self.shared.retry_after);
            if let Some((address, at)) = state.good {
                let due = now.duration_since(at) >= self.shared.refresh;
                if due && state.pending.is_none() && !failed_recently {
                    self.start(&mut state);
                }
                return Ok(address);
            }
            match (&state.failure, &state.pending) {
                (Some((error, _)), _) if failed_recently => return Err(error.clone()),
                (_, Some(pending)) => pending.clone(),
                (_, None) => self.start(&mut state),
            }
        };
        let answer = waiter.wait_for(Option::is_some);
        let answer = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, answer).await {
                Ok(answer) => answer,
                Err(_elapsed) => {
                    let mut state = self.shared.lock();
                    self.shared.record(&mut state, Err(ResolveError::TimedOut));
                    return Err(ResolveError::TimedOut);
                }
            },
            None => answer.await,
        };
        match answer {
            Ok(outcome) => outcome.clone().expect("waited for an outcome"),
            Err(_closed) => Err(ResolveError::Other(
                "the lookup ended without an answer".to_owned(),
            )),
        }
    }

    /// Starts a lookup on its own thread; the receiver gets its outcome.
    fn start(&self, state: &mut State) -> watch::Receiver<Outcome> {
        let (sender, receiver) = watch::channel(None);
        state.pending = Some(receiver.clone());
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("resolve".to_owned())
            .spawn(move || {
                let lookup = || (shared.lookup)(&shared.server.host, shared.server.port);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(lookup))
                    .unwrap_or_else(|_| Err(ResolveError::Other("the lookup failed".to_owned())));
                let mut state = shared.lock();
                state.pending = None;
                shared.record(&mut state, outcome.clone());
                drop(state);
                sender.send_replace(Some(outcome));
            });
        if let Err(error) = spawned {
            // The sender is gone with the closure: waiters see the channel
            // closed and report it.
            tracing::warn!(server = %self.shared.server, %error, "cannot start a lookup thread");
            state.pending = None;
        }
        receiver
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Keeps an outcome and logs what changed: an address that moved, the
    /// first failure of an episode, the recovery.
    fn record(&self, state: &mut State, outcome: Result<SocketAddr, ResolveError>) {
        let server = &self.server;
        let now = Instant::now();
        match outcome {
            Ok(address) => {
                let previous = state.good.map(|(address, _)| address);
                let recovered = state.failure.take().is_some();
                match previous {
                    _ if recovered => {
                        tracing::info!(%server, %address, "server name resolves again");
                    }
                    Some(previous) if previous != address => {
                        tracing::info!(%server, %previous, %address, "server moved to a new address");
                    }
                    None => tracing::debug!(%server, %address, "server name resolved"),
                    Some(_) => tracing::debug!(%server, %address, "server address unchanged"),
                }
                state.good = Some((address, now));
            }
            Err(error) => {
                let keeping = state.good.map(|(address, _)| address);
                if state.failure.is_some() {
                    tracing::debug!(%server, cause = %error, "server name still does not resolve");
                } else if let Some(address) = keeping {
                    tracing::warn!(%server, cause = %error, %address, "cannot resolve the server's name again; keeping its last address");
                } else {
                    tracing::warn!(%server, cause = %error, "cannot resolve the server's name");
                }
                state.failure = Some((error, now));
            }
        }
    }
}

/// The first IPv4 or IPv6 address of the name, as Python pyzor takes the
/// first of `getaddrinfo(host, port, 0, SOCK_DGRAM)`.
pub(crate) fn getaddrinfo(host: &str, port: u16) -> Result<SocketAddr, ResolveError> {
    // A name with a NUL byte cannot exist.
    let host = CString::new(host).map_err(|_| ResolveError::NotFound)?;
    let service = CString::new(port.to_string()).expect("digits have no NUL byte");
    // SAFETY: a zeroed addrinfo is a valid value (no flags, null pointers).
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_socktype = libc::SOCK_DGRAM;
    hints.ai_flags = libc::AI_NUMERICSERV;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: the strings are NUL-terminated and outlive the call; `list`
    // is written only on success and freed below.
    let code = unsafe { libc::getaddrinfo(host.as_ptr(), service.as_ptr(), &hints, &mut list) };
    if code != 0 {
        return Err(gai_error(code, std::io::Error::last_os_error()));
    }
    let mut first = None;
    let mut entry = list;
    while first.is_none() && !entry.is_null() {
        // SAFETY: `entry` is a node of the list getaddrinfo returned.
        let info = unsafe { &*entry };
        first = address_of(info);
        entry = info.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    first.ok_or(ResolveError::NoAddress)
}

/// The address one `getaddrinfo` entry holds, if IPv4 or IPv6.
fn address_of(info: &libc::addrinfo) -> Option<SocketAddr> {
    let length = usize::try_from(info.ai_addrlen).unwrap_or_default();
    if info.ai_addr.is_null() {
        return None;
    }
    if info.ai_family == libc::AF_INET && length >= std::mem::size_of::<libc::sockaddr_in>() {
        // SAFETY: the family and length say ai_addr points at a sockaddr_in.
        let v4 = unsafe { info.ai_addr.cast::<libc::sockaddr_in>().read_unaligned() };
        let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
        return Some(SocketAddrV4::new(ip, u16::from_be(v4.sin_port)).into());
    }
    if info.ai_family == libc::AF_INET6 && length >= std::mem::size_of::<libc::sockaddr_in6>() {
        // SAFETY: as above, for a sockaddr_in6.
        let v6 = unsafe { info.ai_addr.cast::<libc::sockaddr_in6>().read_unaligned() };
        let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
        let port = u16::from_be(v6.sin6_port);
        return Some(SocketAddrV6::new(ip, port, v6.sin6_flowinfo, v6.sin6_scope_id).into());
    }
    None
}

/// A `getaddrinfo` failure in our terms; `os_error` is errno, which
/// `EAI_SYSTEM` refers to.
fn gai_error(code: i32, os_error: std::io::Error) -> ResolveError {
    match code {
        libc::EAI_NONAME => ResolveError::NotFound,
        libc::EAI_NODATA => ResolveError::NoAddress,
        libc::EAI_AGAIN => ResolveError::Temporary,
        libc::EAI_FAIL => ResolveError::Failed,
        libc::EAI_SYSTEM => ResolveError::Other(format!("lookup failed: {os_error}")),
        _ => {
            // SAFETY: gai_strerror returns a static NUL-terminated string
            // for any code.
            let text = unsafe { CStr::from_ptr(libc::gai_strerror(code)) };
            let text = text.to_string_lossy().to_lowercase();
            ResolveError::Other(format!("lookup failed: {text}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A name whose answer the test sets, counting the lookups.
    #[derive(Clone)]
    struct Zone {
        answer: Arc<Mutex<Result<SocketAddr, ResolveError>>>,
        delay: Arc<Mutex<Duration>>,
        lookups: Arc<AtomicUsize>,
    }

    impl Zone {
        fn new(answer: Result<SocketAddr, ResolveError>) -> Zone {
            Zone {
                answer: Arc::new(Mutex::new(answer)),
                delay: Arc::new(Mutex::new(Duration::ZERO)),
                lookups: Arc::new(AtomicUsize::new(0)),
            }
        }

        fn set(&self, answer: Result<SocketAddr, ResolveError>) {
            *self.answer.lock().expect("lock") = answer;
        }

        fn lookups(&self) -> usize {
            self.lookups.load(Ordering::SeqCst)
        }

        fn resolver(&self, refresh: Duration, retry_after: Duration) -> Resolver {
            let zone = self.clone();
            let lookup: Lookup = Arc::new(move |_host, _port| {
                zone.lookups.fetch_add(1, Ordering::SeqCst);
                let delay = *zone.delay.lock().expect("lock");
                std::thread::sleep(delay);
                zone.answer.lock().expect("lock").clone()
            });
            let server = ServerAddress::new("pyzor.example", 24441);
            Resolver::with_lookup(server, refresh, retry_after, lookup)
        }
    }

    fn address(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 24441))
    }

    fn within(duration: Duration) -> Option<tokio::time::Instant> {
        Some(tokio::time::Instant::now() + duration)
    }

    /// Waits until the background lookup under way, if any, has finished.
    async fn settle(resolver: &Resolver) {
        let pending = resolver.shared.lock().pending.clone();
        if let Some(mut pending) = pending {
            let _ = pending.wait_for(Option::is_some).await;
        }
    }

    #[tokio::test]
    async fn a_failure_is_retried_after_a_short_while_and_never_kept() {
        let zone = Zone::new(Err(ResolveError::NotFound));
        let retry_after = Duration::from_millis(500);
        let resolver = zone.resolver(Duration::from_secs(300), retry_after);
        let second = within(Duration::from_secs(5));
        assert_eq!(resolver.resolve(second).await, Err(ResolveError::NotFound));
        // Within the retry delay the failure answers without a lookup.
        zone.set(Ok(address(1)));
        assert_eq!(resolver.resolve(second).await, Err(ResolveError::NotFound));
        assert_eq!(zone.lookups(), 1);
        tokio::time::sleep(retry_after).await;
        assert_eq!(resolver.resolve(second).await, Ok(address(1)));
        assert_eq!(zone.lookups(), 2);
    }

    #[tokio::test]
    async fn a_good_answer_is_refreshed_and_kept_while_the_refresh_fails() {
        let zone = Zone::new(Ok(address(1)));
        let refresh = Duration::from_millis(500);
        let resolver = zone.resolver(refresh, Duration::from_millis(100));
        let deadline = within(Duration::from_secs(5));
        assert_eq!(resolver.resolve(deadline).await, Ok(address(1)));
        // Fresh: no new lookup.
        assert_eq!(resolver.resolve(deadline).await, Ok(address(1)));
        assert_eq!(zone.lookups(), 1);

        zone.set(Err(ResolveError::Temporary));
        tokio::time::sleep(refresh).await;
        // Due: the request gets the last address while the refresh runs.
        assert_eq!(resolver.resolve(deadline).await, Ok(address(1)));
        settle(&resolver).await;
        assert_eq!(zone.lookups(), 2);
        assert_eq!(resolver.resolve(deadline).await, Ok(address(1)));

        zone.set(Ok(address(2)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(resolver.resolve(deadline).await, Ok(address(1)));
        settle(&resolver).await;
        assert_eq!(resolver.resolve(deadline).await, Ok(address(2)));
        assert_eq!(zone.lookups(), 3);
    }

    #[tokio::test]
    async fn a_hanging_lookup_holds_no_request_past_its_deadline_and_is_shared() {
        let zone = Zone::new(Ok(address(1)));
        *zone.delay.lock().expect("lock") = Duration::from_secs(3);
        let resolver = Arc::new(zone.resolver(Duration::from_secs(300), Duration::ZERO));
        let started = tokio::time::Instant::now();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let resolver = resolver.clone();
            requests
                .spawn(async move { resolver.resolve(within(Duration::from_millis(100))).await });
        }
        while let Some(result) = requests.join_next().await {
            assert_eq!(result.expect("no panic"), Err(ResolveError::TimedOut));
        }
        // Well before the lookup ends, even on a loaded machine.
        assert!(started.elapsed() < Duration::from_millis(2500));
        // The one lookup goes on, and a request that may wait gets it.
        let answer = resolver.resolve(within(Duration::from_secs(10))).await;
        assert_eq!(answer, Ok(address(1)));
        assert_eq!(zone.lookups(), 1);
    }

    #[tokio::test]
    async fn without_a_deadline_the_request_waits_for_the_lookup() {
        let zone = Zone::new(Err(ResolveError::Failed));
        *zone.delay.lock().expect("lock") = Duration::from_millis(300);
        let resolver = zone.resolver(Duration::from_secs(300), Duration::from_secs(2));
        assert_eq!(resolver.resolve(None).await, Err(ResolveError::Failed));
    }

    #[tokio::test]
    async fn an_address_is_used_as_it_is() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let counter = lookups.clone();
        let lookup: Lookup = Arc::new(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            Err(ResolveError::NotFound)
        });
        let server = ServerAddress::new("::1", 24441);
        let resolver = Resolver::with_lookup(server, Duration::ZERO, Duration::ZERO, lookup);
        let expected = SocketAddr::from((Ipv6Addr::LOCALHOST, 24441));
        assert_eq!(resolver.resolve(None).await, Ok(expected));
        assert_eq!(lookups.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn getaddrinfo_reads_the_hosts_file_and_refuses_impossible_names() {
        // /etc/hosts names localhost on every system this builds on.
        let address = getaddrinfo("localhost", 24441).expect("localhost resolves");
        assert!(address.ip().is_loopback(), "{address}");
        assert_eq!(address.port(), 24441);
        assert_eq!(
            getaddrinfo("127.0.0.2", 1),
            Ok(SocketAddr::from(([127, 0, 0, 2], 1)))
        );
        assert_eq!(getaddrinfo("bad\0name", 1), Err(ResolveError::NotFound));
    }

    #[test]
    fn getaddrinfo_failures_say_what_happened() {
        let errno = || std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(gai_error(libc::EAI_NONAME, errno()), ResolveError::NotFound);
        assert_eq!(gai_error(libc::EAI_AGAIN, errno()), ResolveError::Temporary);
        assert_eq!(
            gai_error(libc::EAI_SYSTEM, errno()).to_string(),
            "lookup failed: Connection refused (os error 111)"
        );
        assert_eq!(
            gai_error(libc::EAI_MEMORY, errno()).to_string(),
            "lookup failed: memory allocation failure"
        );
    }
}
