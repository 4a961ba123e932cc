//! Asking Pyzor servers over UDP: every server at once, each with its own
//! timeout and one retransmission, IPv4 and IPv6. The retransmission is a
//! new request (another Thread, signed again with the current Time), since
//! pyzord refuses a signed request it has served already as a replay; an
//! answer to either one is taken.
//!
//! A [`Client`] owns the server list, the accounts that sign requests and
//! the per-server timeout. Host names are resolved on first use and looked
//! up again every few minutes ([`resolver`]); a failed lookup is tried again
//! at a later request. Each request has its own socket and a random
//! Thread id; only a datagram from the server's address that carries the
//! Thread is its answer, and the client waits for that one until the
//! timeout, ignoring the rest (Python pyzor takes the first datagram, so
//! anyone who knows the port can answer for the server).
//!
//! This module knows nothing of output formats: it returns each server's
//! [`Response`] or [`ServerError`]; `ServerError::pyzor_status` gives the
//! `(code, text)` Python pyzor prints for the same failure.

pub mod resolver;
pub mod servers;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::resolver::Resolver;
use crate::protocol::{Account, MAX_PACKET_SIZE, Op, Request, Response, ResponseError, ThreadId};

pub use self::resolver::{DEFAULT_REFRESH_SECS, ResolveError};
pub use self::servers::{Accounts, ServerAddress};

/// Seconds to wait for a server (pyzor's `Client.timeout`).
pub const DEFAULT_TIMEOUT_SECS: u64 = 5;

/// Why one server gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot resolve server \"{server}\"")]
    Resolve {
        server: ServerAddress,
        #[source]
        source: ResolveError,
    },
    #[error("cannot send to server \"{server}\"")]
    Send {
        server: ServerAddress,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the response of server \"{server}\"")]
    Receive {
        server: ServerAddress,
        #[source]
        source: io::Error,
    },
    #[error(
        "server \"{server}\" did not answer within {timeout_secs} s{}",
        ignored_note(*ignored)
    )]
    Timeout {
        server: ServerAddress,
        timeout_secs: f64,
        /// Datagrams from the server's address that were no answer to our
        /// request (another Thread or none): noise, or an off-path spoofer.
        ignored: usize,
    },
    #[error("bad response from server \"{server}\"")]
    Response {
        server: ServerAddress,
        #[source]
        source: ResponseError,
    },
}

impl ServerError {
    /// The `(code, text)` Python pyzor prints for this failure (its
    /// `CommError`), or `None` where Python's client crashes instead.
    pub fn pyzor_status(&self) -> Option<(i64, String)> {
        match self {
            ServerError::Resolve { .. } => None,
            ServerError::Send { server, .. } => Some((
                400,
                format!("Unable to send to {}:{}", server.host, server.port),
            )),
            ServerError::Receive { source, .. } => Some((
                400,
                format!(
                    "Socket error while reading response: {}",
                    python_os_error(source)
                ),
            )),
            ServerError::Timeout { .. } => Some((504, "Reading response timed-out.".to_owned())),
            ServerError::Response { source, .. } => source.pyzor_status(),
        }
    }
}

/// What a time-out message adds about the datagrams ignored meanwhile.
fn ignored_note(ignored: usize) -> String {
    match ignored {
        0 => String::new(),
        1 => "; 1 datagram was no answer to its request".to_owned(),
        n => format!("; {n} datagrams were no answer to its request"),
    }
}

/// An OS error as Python's `str(OSError)` prints it: `[Errno 111]
/// Connection refused`.
fn python_os_error(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => {
            let text = io::Error::from_raw_os_error(code).to_string();
            let suffix = format!(" (os error {code})");
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            format!("[Errno {code}] {text}")
        }
        None => error.to_string(),
    }
}

/// One server's answer.
#[derive(Debug)]
pub struct Answer {
    pub server: ServerAddress,
    pub result: Result<Response, ServerError>,
}

/// A Pyzor client: servers, accounts and timeout. Cheap to clone; clones
/// share the resolved addresses.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    servers: Vec<Endpoint>,
    accounts: Accounts,
    timeout: Duration,
}

#[derive(Debug)]
struct Endpoint {
    address: ServerAddress,
    resolver: Resolver,
}

impl Client {
    /// A client for these servers; requests to a server listed in
    /// `accounts` are signed with that account, others are anonymous.
    /// Names are looked up again every [`DEFAULT_REFRESH_SECS`].
    pub fn new(servers: Vec<ServerAddress>, accounts: Accounts, timeout: Duration) -> Client {
        let refresh = Duration::from_secs(DEFAULT_REFRESH_SECS);
        Client::with_refresh(servers, accounts, timeout, refresh)
    }

    /// As [`Client::new`], looking names up again every `refresh`.
    pub fn with_refresh(
        servers: Vec<ServerAddress>,
        accounts: Accounts,
        timeout: Duration,
        refresh: Duration,
    ) -> Client {
        let resolver = |address: &ServerAddress| Resolver::new(address.clone(), refresh);
        Client::with_resolvers(servers, accounts, timeout, resolver)
    }

    fn with_resolvers(
        servers: Vec<ServerAddress>,
        accounts: Accounts,
        timeout: Duration,
        resolver: impl Fn(&ServerAddress) -> Resolver,
    ) -> Client {
        let servers = servers
            .into_iter()
            .map(|address| Endpoint {
                resolver: resolver(&address),
                address,
            })
            .collect();
        Client {
            inner: Arc::new(Inner {
                servers,
                accounts,
                timeout,
            }),
        }
    }

    pub fn servers(&self) -> impl Iterator<Item = &ServerAddress> {
        self.inner.servers.iter().map(|endpoint| &endpoint.address)
    }

    /// Checks one digest against every server at once; no answer waits past
    /// `deadline`. Answers are in server order.
    pub async fn check(&self, digest: &str, deadline: Instant) -> Vec<Answer> {
        self.ask_all(Op::Check, &[digest.to_owned()], Some(deadline))
            .await
    }

    /// Sends one request to every server at once and collects the answers
    /// in server order.
    pub async fn ask_all(
        &self,
        op: Op,
        digests: &[String],
        deadline: Option<Instant>,
    ) -> Vec<Answer> {
        let mut tasks = JoinSet::new();
        for index in 0..self.inner.servers.len() {
            let client = self.clone();
            let digests = digests.to_vec();
            tasks.spawn(async move {
                let result = client.ask(index, op, digests, deadline).await;
                (index, result)
            });
        }
        let mut answers: Vec<Option<Answer>> = self.inner.servers.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            let (index, result) = joined.expect("server tasks do not panic");
            let server = self.inner.servers[index].address.clone();
            answers[index] = Some(Answer { server, result });
        }
        answers.into_iter().flatten().collect()
    }

    /// Sends one request to the server at `index` (in the order given to
    /// [`Client::new`]) and waits for its response. The server's name is
    /// resolved within `deadline`; without one, the lookup takes as long as
    /// `getaddrinfo` takes (Python pyzor's wait), and the timeout starts
    /// after it.
    pub async fn ask(
        &self,
        index: usize,
        op: Op,
        digests: Vec<String>,
        deadline: Option<Instant>,
    ) -> Result<Response, ServerError> {
        let endpoint = &self.inner.servers[index];
        let server = &endpoint.address;
        let peer = endpoint
            .resolver
            .resolve(deadline)
            .await
            .map_err(|source| ServerError::Resolve {
                server: server.clone(),
                source,
            })?;
        let account = self
            .inner
            .accounts
            .get(&(server.host.clone(), server.port))
            .cloned()
            .unwrap_or_else(Account::anonymous);
        let random = RandomState::new().hash_one(index);
        let thread = ThreadId::from_random(random);
        // Another id for the retransmission, never the first one.
        let span = u64::from(u16::MAX - ThreadId::MIN_OK);
        let offset = u64::from(thread.get() - ThreadId::MIN_OK);
        let retry_thread = ThreadId::from_random(offset + 1 + (random >> 16) % span);
        let mut request = Request::new(op, digests, thread);
        let datagram = request.encode(&account, unix_time());
        tracing::debug!(%server, %thread, %op, user = %account.username, "sending");
        let mut end = Instant::now() + self.inner.timeout;
        if let Some(deadline) = deadline {
            end = end.min(deadline);
        }
        let retry = || {
            request.thread = retry_thread;
            request.encode(&account, unix_time())
        };
        let threads = [thread, retry_thread];
        let response = exchange(server, peer, &datagram, threads, retry, end).await?;
        tracing::debug!(%server, %thread, ?response, "received");
        response.verify().map_err(|source| ServerError::Response {
            server: server.clone(),
            source,
        })?;
        Ok(response)
    }
}

/// Sends the datagram and waits until `end` for the answer from `peer`
/// that carries its Thread (`threads[0]`), sending the `retry` datagram
/// (Thread `threads[1]`) halfway if none came back (a lost request or
/// response); from then on an answer to either one is taken. Every other
/// datagram is ignored: one from another address, and one from the
/// server's address that answers no request of ours, so that a spoofer
/// who knows only the port cannot make the verdict.
///
/// The socket stays unconnected, as Python's: Linux then reports no ICMP
/// "port unreachable", so a closed port times out as it does for Python.
async fn exchange(
    server: &ServerAddress,
    peer: SocketAddr,
    datagram: &[u8],
    threads: [ThreadId; 2],
    retry: impl FnOnce() -> Vec<u8>,
    end: Instant,
) -> Result<Response, ServerError> {
    let send_error = |source| ServerError::Send {
        server: server.clone(),
        source,
    };
    let receive_error = |source| ServerError::Receive {
        server: server.clone(),
        source,
    };
    let local: SocketAddr = if peer.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(send_error)?;
    let start = Instant::now();
    let timeout = end.saturating_duration_since(start);
    socket.send_to(datagram, peer).await.map_err(send_error)?;
    let mut buffer = vec![0; MAX_PACKET_SIZE];
    let mut ignored = 0;
    // The answer if this datagram is one to a request sent so far.
    let mut answer = |datagram: &[u8], from: SocketAddr, resent: bool| {
        if from != peer {
            tracing::debug!(%server, %from, "ignoring a datagram from another address");
            return None;
        }
        let sent = if resent { &threads[..] } else { &threads[..1] };
        let response = answer_to(datagram, sent);
        if response.is_none() {
            ignored += 1;
            let thread = Response::parse(datagram).get("Thread").map(str::to_owned);
            tracing::debug!(%server, ?thread, "ignoring a datagram that answers no request of ours");
        }
        response
    };
    if timeout.is_zero() {
        // Python's `settimeout(0)` makes the socket non-blocking: a read
        // that finds nothing fails at once.
        loop {
            match socket.try_recv_from(&mut buffer) {
                Ok((length, from)) => {
                    if let Some(response) = answer(&buffer[..length], from, false) {
                        return Ok(response);
                    }
                }
                // tokio reports "not ready" without an OS code; Python
                // shows the EAGAIN of its non-blocking read.
                Err(error)
                    if error.kind() == io::ErrorKind::WouldBlock
                        && error.raw_os_error().is_none() =>
                {
                    return Err(receive_error(io::Error::from_raw_os_error(libc::EAGAIN)));
                }
                Err(error) => return Err(receive_error(error)),
            }
        }
    }
    let mut retry = Some(retry);
    let resend_at = start + timeout / 2;
    loop {
        let resent = retry.is_none();
        let wait_until = if resent { end } else { resend_at };
        match tokio::time::timeout_at(wait_until, socket.recv_from(&mut buffer)).await {
            Ok(Ok((length, from))) => {
                if let Some(response) = answer(&buffer[..length], from, resent) {
                    return Ok(response);
                }
            }
            Ok(Err(error)) => return Err(receive_error(error)),
            Err(_elapsed) if !resent => {
                tracing::debug!(%server, "no answer yet, sending again");
                let retry = retry.take().expect("not resent yet");
                socket.send_to(&retry(), peer).await.map_err(send_error)?;
            }
            Err(_elapsed) => {
                return Err(ServerError::Timeout {
                    server: server.clone(),
                    timeout_secs: timeout.as_secs_f64(),
                    ignored,
                });
            }
        }
    }
}

/// The datagram read as a response if it answers one of the requests
/// sent with these Threads ([`Response::answers`]); `None` for anything
/// else, which then never reaches a verdict.
pub fn answer_to(datagram: &[u8], threads: &[ThreadId]) -> Option<Response> {
    let response = Response::parse(datagram);
    threads
        .iter()
        .any(|&thread| response.answers(thread))
        .then_some(response)
}

fn unix_time() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fake_server(reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> SocketAddr {
        fake_server_sending(move |request| reply(request).into_iter().collect()).await
    }

    /// A server that answers each request with these datagrams, in order.
    async fn fake_server_sending(
        reply: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let address = socket.local_addr().expect("address");
        tokio::spawn(async move {
            let mut buffer = vec![0; MAX_PACKET_SIZE];
            while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
                for answer in reply(&buffer[..length]) {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        });
        address
    }

    fn thread_of(request: &[u8]) -> String {
        Response::parse(request)
            .get("Thread")
            .unwrap_or_default()
            .to_owned()
    }

    fn client_for(addresses: &[SocketAddr], timeout: Duration) -> Client {
        let servers = addresses
            .iter()
            .map(|a| ServerAddress::new(a.ip().to_string(), a.port()))
            .collect();
        Client::new(servers, Accounts::new(), timeout)
    }

    #[tokio::test]
    async fn answers_come_back_in_server_order() {
        let good = fake_server(|request| {
            let text = format!(
                "Code: 200\nDiag: OK\nPV: 2.1\nThread: {}\nCount: 2\nWL-Count: 0\n\n",
                thread_of(request)
            );
            Some(text.into_bytes())
        })
        .await;
        let silent = fake_server(|_| None).await;
        let client = client_for(&[silent, good], Duration::from_millis(300));
        let answers = client
            .check(
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                Instant::now() + Duration::from_secs(5),
            )
            .await;
        assert_eq!(answers.len(), 2);
        assert!(matches!(
            answers[0].result,
            Err(ServerError::Timeout { .. })
        ));
        let response = answers[1].result.as_ref().expect("good server answers");
        let (count, whitelist) = response.counts().expect("counts");
        assert_eq!((count.exact(), whitelist.exact()), (Some(2), Some(0)));
    }

    #[tokio::test]
    async fn one_lost_request_is_sent_again() {
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let server = fake_server(move |request| {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return None;
            }
            let text = format!(
                "Code: 200\nDiag: OK\nPV: 2.1\nThread: {}\n\n",
                thread_of(request)
            );
            Some(text.into_bytes())
        })
        .await;
        let client = client_for(&[server], Duration::from_millis(400));
        let answers = client.ask_all(Op::Ping, &[], None).await;
        assert!(answers[0].result.is_ok(), "{:?}", answers[0].result);
    }

    #[tokio::test]
    async fn the_retransmission_is_signed_again_with_another_thread() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
        let requests = seen.clone();
        let server = fake_server(move |request| {
            let mut requests = requests.lock().expect("lock");
            requests.push(request.to_vec());
            // The first request is lost; the answer to the second carries
            // the second's Thread.
            (requests.len() > 1).then(|| {
                let thread = thread_of(request);
                format!("Code: 200\nDiag: OK\nPV: 2.1\nThread: {thread}\n\n").into_bytes()
            })
        })
        .await;
        let host = (server.ip().to_string(), server.port());
        let accounts = Accounts::from([(
            host,
            Account {
                username: "alice".into(),
                salt: "salt".into(),
                key: "0123abcd".into(),
            },
        )]);
        let servers = vec![ServerAddress::new(server.ip().to_string(), server.port())];
        let client = Client::new(servers, accounts, Duration::from_millis(400));
        let answer = client.ask_all(Op::Report, &["a".repeat(40)], None).await;
        assert!(answer[0].result.is_ok(), "{:?}", answer[0].result);
        let requests = seen.lock().expect("lock").clone();
        assert_eq!(requests.len(), 2);
        let field =
            |request: &[u8], name: &str| Response::parse(request).get(name).map(str::to_owned);
        assert_ne!(field(&requests[0], "Thread"), field(&requests[1], "Thread"));
        assert_ne!(field(&requests[0], "Sig"), field(&requests[1], "Sig"));
        assert_eq!(field(&requests[1], "User").as_deref(), Some("alice"));
    }

    /// A datagram carrying `thread` and these counts.
    fn answer(thread: &str, count: u32) -> Vec<u8> {
        format!("Code: 200\nDiag: OK\nPV: 2.1\nThread: {thread}\nCount: {count}\nWL-Count: 0\n")
            .into_bytes()
    }

    /// Another request's Thread.
    fn other_thread(request: &[u8]) -> String {
        let thread: u32 = thread_of(request).parse().unwrap_or(2000);
        let other = if thread == 65535 { 1024 } else { thread + 1 };
        other.to_string()
    }

    #[tokio::test]
    async fn only_the_answer_with_our_thread_counts() {
        // Answers that are not to our request come first, from the
        // server's own address; the real one comes last.
        let server = fake_server_sending(|request| {
            let mut datagrams: Vec<Vec<u8>> = ["1023", "0", "", "abc", "70000"]
                .iter()
                .map(|thread| answer(thread, 999))
                .collect();
            datagrams.push(answer(&other_thread(request), 999));
            datagrams.push(b"Code: 200\nDiag: OK\nPV: 2.1\nCount: 999\nWL-Count: 0\n".to_vec());
            datagrams.push(answer(&thread_of(request), 3));
            datagrams
        })
        .await;
        let client = client_for(&[server], Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(5);
        let answers = client.check(&"0".repeat(40), deadline).await;
        let response = answers.into_iter().next().expect("one server");
        let response = response.result.expect("the real answer");
        let (count, whitelist) = response.counts().expect("counts");
        assert_eq!((count.exact(), whitelist.exact()), (Some(3), Some(0)));
    }

    #[tokio::test]
    async fn answers_to_no_request_of_ours_end_in_a_timeout_that_counts_them() {
        let server = fake_server(|request| Some(answer(&other_thread(request), 5))).await;
        let client = client_for(&[server], Duration::from_millis(400));
        let error = client
            .ask_all(Op::Ping, &[], None)
            .await
            .remove(0)
            .result
            .expect_err("no answer of ours");
        // One wrong answer to the request, one to the retransmission.
        assert!(
            matches!(error, ServerError::Timeout { ignored: 2, .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .ends_with(" s; 2 datagrams were no answer to its request"),
            "{error}"
        );
        assert_eq!(
            error.pyzor_status(),
            Some((504, "Reading response timed-out.".to_owned()))
        );
    }

    #[tokio::test]
    async fn closed_port_times_out_as_for_python() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let address = socket.local_addr().expect("address");
        drop(socket);
        let client = client_for(&[address], Duration::from_millis(200));
        let error = client
            .ask_all(Op::Ping, &[], None)
            .await
            .remove(0)
            .result
            .expect_err("closed port");
        assert_eq!(
            error.pyzor_status(),
            Some((504, "Reading response timed-out.".to_owned()))
        );
    }

    #[tokio::test]
    async fn a_name_that_appears_later_is_used_at_a_later_request() {
        let server = fake_server(|request| {
            let thread = thread_of(request);
            Some(format!("Code: 200\nDiag: OK\nPV: 2.1\nThread: {thread}\n\n").into_bytes())
        })
        .await;
        let zone = Arc::new(std::sync::Mutex::new(Err(ResolveError::NotFound)));
        let answer = zone.clone();
        let retry_after = Duration::from_millis(100);
        let resolver = |address: &ServerAddress| {
            let answer = answer.clone();
            let lookup: resolver::Lookup =
                Arc::new(move |_, _| answer.lock().expect("lock").clone());
            Resolver::with_lookup(
                address.clone(),
                Duration::from_secs(300),
                retry_after,
                lookup,
            )
        };
        let name = ServerAddress::new("pyzor.example", server.port());
        let timeout = Duration::from_secs(2);
        let client = Client::with_resolvers(vec![name], Accounts::new(), timeout, resolver);
        let deadline = || Some(Instant::now() + timeout);

        let error = client.ask(0, Op::Ping, vec![], deadline()).await;
        let error = error.expect_err("the name does not resolve yet");
        assert!(
            matches!(
                &error,
                ServerError::Resolve {
                    source: ResolveError::NotFound,
                    ..
                }
            ),
            "{error:?}"
        );
        let expected = format!("cannot resolve server \"pyzor.example:{}\"", server.port());
        assert_eq!(error.to_string(), expected);
        // Python's client crashes on a resolution failure: no CommError.
        assert_eq!(error.pyzor_status(), None);

        *zone.lock().expect("lock") = Ok(server);
        tokio::time::sleep(retry_after).await;
        let response = client.ask(0, Op::Ping, vec![], deadline()).await;
        assert_eq!(response.expect("answered").code(), Ok(200));
    }

    #[test]
    fn os_errors_read_as_python_prints_them() {
        // python3 -c 'import errno, os; print(OSError(111, os.strerror(111)))'
        assert_eq!(
            python_os_error(&io::Error::from_raw_os_error(111)),
            "[Errno 111] Connection refused"
        );
    }
}
