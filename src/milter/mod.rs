//! The milter: Pyzor checks for Postfix and Sendmail at SMTP time, on
//! indymilter.
//!
//! [`run`] serves one listener until shutdown: each MTA connection is a
//! [`session::Session`] fed by thin callbacks ([`callbacks`]); at end of
//! message the digest is looked up in the [`cache::Cache`] or asked of
//! every server at once through [`crate::client`], and the decision turned
//! into milter actions. A new [`Config`] sent on the reload channel
//! replaces the old one for the messages that start after it; messages in
//! flight finish with the one they began with.
//!
//! A listener that stops working ends [`run`] with an error, so that the
//! process exits non-zero and its supervisor restarts it: an accept that
//! fails for good, or a unix socket whose file was removed or replaced
//! (nobody could connect to it any more). Running out of file descriptors
//! only pauses accepting.
//!
//! This module reaches pyzord only through `client`, and installs no
//! signal handlers or logging (that is `cli`'s job).

pub mod cache;
pub mod callbacks;
pub mod config;
pub mod rspamd;
pub mod session;
pub mod verdict;

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use indymilter::{EitherStream, Listener};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::client::{Accounts, Client};
pub use config::{Config, ConfigError, Socket};

/// A listening milter socket. Accepted TCP connections get TCP_NODELAY:
/// end of message is answered with several writes (header changes, then
/// the verdict), which Nagle's algorithm and delayed ACKs would hold back.
#[derive(Debug)]
pub struct MilterListener {
    socket: ListeningSocket,
    /// A unix socket's file and its identity (device, inode) when bound.
    file: Option<(PathBuf, (u64, u64))>,
    /// While set, accepting waits: the last accept ran out of descriptors.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Folds the warnings of a long shortage into a line now and then.
    repeats: crate::logging::Repeats,
}

#[derive(Debug)]
enum ListeningSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// How long accepting pauses after running out of file descriptors or
/// memory, so that connections in progress can end and free some.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How often [`run`] looks whether its unix socket's file is still there.
const SOCKET_CHECK: Duration = Duration::from_secs(2);

impl MilterListener {
    /// The local address of a TCP listener (for tests on port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.socket {
            ListeningSocket::Tcp(listener) => listener.local_addr().ok(),
            ListeningSocket::Unix(_) => None,
        }
    }

    fn poll_socket(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<<Self as Listener>::Io>> {
        match &mut self.socket {
            ListeningSocket::Tcp(listener) => {
                TcpListener::poll_accept(listener, cx).map_ok(|(stream, _)| {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "cannot set TCP_NODELAY");
                    }
                    EitherStream::Tcp(stream)
                })
            }
            ListeningSocket::Unix(listener) => UnixListener::poll_accept(listener, cx)
                .map_ok(|(stream, _)| EitherStream::Unix(stream)),
        }
    }
}

/// What to do about a failed accept: a connection that went away before
/// it was accepted is skipped, running out of descriptors or memory waits
/// a moment, anything else ends the milter.
enum AcceptFailure {
    Skip,
    Pause,
    Fatal,
}

fn accept_failure(error: &io::Error) -> AcceptFailure {
    match error.raw_os_error() {
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM) => AcceptFailure::Skip,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => AcceptFailure::Pause,
        _ => AcceptFailure::Fatal,
    }
}

impl Listener for MilterListener {
    type Io = EitherStream<TcpStream, UnixStream>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        loop {
            if let Some(pause) = &mut self.pause {
                std::task::ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match std::task::ready!(self.poll_socket(cx)) {
                Ok(stream) => return Poll::Ready(Ok(stream)),
                Err(error) => match accept_failure(&error) {
                    AcceptFailure::Skip => tracing::debug!(%error, "accept failed"),
                    AcceptFailure::Pause => {
                        if let Some(admitted) = self.repeats.admit("accept", Instant::now()) {
                            tracing::warn!(
                                "cannot accept a connection, pausing accepting for {} ms: {error}{admitted}",
                                ACCEPT_PAUSE.as_millis()
                            );
                        }
                        self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
                    }
                    AcceptFailure::Fatal => return Poll::Ready(Err(error)),
                },
            }
        }
    }
}

/// A file's device and inode, which change when it is replaced.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// Completes when a unix socket's file is gone or is another file: a
/// client connecting by that path no longer reaches this process.
async fn socket_files_lost(files: Vec<(PathBuf, (u64, u64))>) -> io::Error {
    if files.is_empty() {
        return std::future::pending().await;
    }
    let mut interval = tokio::time::interval(SOCKET_CHECK);
    loop {
        interval.tick().await;
        for (path, identity) in &files {
            if file_identity(path) != Some(*identity) {
                return io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the socket \"{}\" was removed or replaced", path.display()),
                );
            }
        }
    }
}

/// Binds the configured socket. A unix socket left behind by a previous
/// run (nobody accepts on it) is removed first; its mode is set after.
pub async fn bind(socket: &Socket, mode: u32) -> io::Result<MilterListener> {
    match socket {
        Socket::Inet { host, port } => Ok(MilterListener {
            socket: ListeningSocket::Tcp(bind_tcp(host, *port).await?),
            file: None,
            pause: None,
            repeats: Default::default(),
        }),
        Socket::Unix(path) => {
            remove_stale_socket(path).await?;
            let listener = UnixListener::bind(path)?;
            // Listening again on a listening socket only changes its backlog.
            // SAFETY: listen(2) on a descriptor the listener owns, with no pointer.
            if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG as libc::c_int) } != 0 {
                return Err(io::Error::last_os_error());
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            let file = file_identity(path).map(|identity| (path.clone(), identity));
            Ok(MilterListener {
                socket: ListeningSocket::Unix(listener),
                file,
                pause: None,
                repeats: Default::default(),
            })
        }
    }
}

/// Connections the kernel holds for us beyond those being served: a burst
/// (a queue run, a restarted rspamd) waits there instead of having its
/// SYNs dropped and retried seconds later, as past the 128 that Rust's
/// standard library asks for.
const LISTEN_BACKLOG: u32 = 1024;

/// A TCP listener on the first address of `host` that binds.
async fn bind_tcp(host: &str, port: u16) -> io::Result<TcpListener> {
    let mut last = None;
    for address in tokio::net::lookup_host((host, port)).await? {
        let socket = match address {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(address) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("\"{host}\" has no address"),
        )
    }))
}

async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("\"{}\" exists and is not a socket", path.display()),
        ));
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another milter listens on \"{}\"", path.display()),
        ));
    }
    tracing::info!(path = %path.display(), "removing a stale socket");
    std::fs::remove_file(path)
}

/// What the messages share: the configuration in force, the client built
/// from it, the cache of answers and the memo of digests (on and off
/// together).
#[derive(Debug)]
pub struct Runtime {
    pub config: Arc<Config>,
    pub client: Client,
    pub cache: cache::Cache,
    pub memo: cache::DigestMemo,
    /// Server failures repeated within a few seconds, logged as one line.
    pub repeats: crate::logging::Repeats,
}

impl Runtime {
    pub fn new(config: Config) -> Runtime {
        let accounts = config
            .accounts_file
            .as_ref()
            .map(|path| load_accounts(path))
            .unwrap_or_default();
        let client = Client::with_refresh(
            config.servers.clone(),
            accounts,
            config.timeout,
            config.resolve_refresh,
        );
        let cache = cache::Cache::new(config.cache_ttl, config.cache_max_entries);
        let memo_entries = if config.cache_ttl.is_zero() {
            0
        } else {
            config.cache_max_entries
        };
        Runtime {
            config: Arc::new(config),
            client,
            cache,
            memo: cache::DigestMemo::new(memo_entries),
            repeats: crate::logging::Repeats::default(),
        }
    }
}

/// pyzor's accounts file, read as pyzor reads it: lenient, each skipped
/// line a warning.
fn load_accounts(path: &Path) -> Accounts {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (accounts, skipped) = crate::client::servers::parse_accounts(&text);
            for line in skipped {
                tracing::warn!(path = %path.display(), ?line, "skipping a line of the accounts file");
            }
            accounts
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the accounts file; asking anonymously");
            Accounts::new()
        }
    }
}

/// The runtime in force, replaced as a whole on reload.
#[derive(Debug)]
pub struct Shared {
    current: RwLock<Arc<Runtime>>,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        Shared {
            current: RwLock::new(Arc::new(Runtime::new(config))),
        }
    }

    pub fn current(&self) -> Arc<Runtime> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn replace(&self, config: Config) {
        let old = self.current();
        if old.config.socket != config.socket
            || old.config.rspamd_socket != config.rspamd_socket
            || old.config.max_connections != config.max_connections
        {
            tracing::warn!("socket, rspamd_socket and max_connections change only on restart");
        }
        let runtime = Arc::new(Runtime::new(config));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = runtime;
        tracing::info!("configuration reloaded");
    }
}

/// Serves `listener` until `shutdown` completes, then lets the commands in
/// progress finish. Each config received on `reload` replaces the one in
/// force (the caller has already checked it). A listener that stops
/// working ends it early with an error, after the commands in progress.
pub async fn run(
    listener: MilterListener,
    config: Config,
    reload: mpsc::Receiver<Config>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve(Some(listener), None, config, reload, shutdown).await
}

/// [`run`] for the milter's listener and the rspamd listener
/// ([`rspamd::serve`]), either of them or both, sharing one runtime
/// (configuration, client, cache and memo) and its reloads. The first
/// listener that stops working ends both.
pub async fn serve(
    milter: Option<MilterListener>,
    rspamd: Option<MilterListener>,
    config: Config,
    mut reload: mpsc::Receiver<Config>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let milter_config = indymilter::Config {
        max_connections: config.max_connections,
        ..Default::default()
    };
    let shared = Arc::new(Shared::new(config));
    let reloader = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Some(config) = reload.recv().await {
                shared.replace(config);
            }
        })
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopping = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|&stop| stop).await;
    };
    let files: Vec<_> = [&milter, &rspamd]
        .into_iter()
        .flatten()
        .filter_map(|listener| listener.file.clone())
        .collect();
    let watcher = async {
        tokio::select! {
            () = shutdown => None,
            error = socket_files_lost(files) => Some(error),
        }
    };
    let mut listeners = tokio::task::JoinSet::new();
    if let Some(listener) = milter {
        let callbacks = callbacks::callbacks(Arc::clone(&shared));
        let stop = stopping(stopped.clone());
        listeners.spawn(indymilter::run(listener, callbacks, milter_config, stop));
    }
    if let Some(listener) = rspamd {
        let stop = stopping(stopped.clone());
        listeners.spawn(rspamd::serve(listener, Arc::clone(&shared), stop));
    }
    let joined = |joined: Result<io::Result<()>, tokio::task::JoinError>| {
        joined.unwrap_or_else(|error| Err(io::Error::other(error)))
    };
    // Until shutdown, a lost socket file or a listener that ended; then
    // each listener finishes the connections in progress.
    let mut results = Vec::new();
    let lost = tokio::select! {
        lost = watcher => lost,
        Some(result) = listeners.join_next() => {
            results.push(joined(result));
            None
        }
    };
    let _ = stop.send(true);
    while let Some(result) = listeners.join_next().await {
        results.push(joined(result));
    }
    reloader.abort();
    match lost {
        Some(error) => Err(error),
        None => results.into_iter().collect(),
    }
}
