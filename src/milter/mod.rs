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
//! This module reaches pyzord only through `client`, and installs no
//! signal handlers or logging (that is `cli`'s job).

pub mod cache;
pub mod callbacks;
pub mod config;
pub mod session;

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use indymilter::{EitherStream, Listener};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::client::{Accounts, Client};
pub use config::{Config, ConfigError, Socket};

/// A listening milter socket. Accepted TCP connections get TCP_NODELAY:
/// end of message is answered with several writes (header changes, then
/// the verdict), which Nagle's algorithm and delayed ACKs would hold back.
#[derive(Debug)]
pub enum MilterListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl MilterListener {
    /// The local address of a TCP listener (for tests on port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            MilterListener::Tcp(listener) => listener.local_addr().ok(),
            MilterListener::Unix(_) => None,
        }
    }
}

impl Listener for MilterListener {
    type Io = EitherStream<TcpStream, UnixStream>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        match self {
            MilterListener::Tcp(listener) => {
                TcpListener::poll_accept(listener, cx).map_ok(|(stream, _)| {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "cannot set TCP_NODELAY");
                    }
                    EitherStream::Tcp(stream)
                })
            }
            MilterListener::Unix(listener) => UnixListener::poll_accept(listener, cx)
                .map_ok(|(stream, _)| EitherStream::Unix(stream)),
        }
    }
}

/// Binds the configured socket. A unix socket left behind by a previous
/// run (nobody accepts on it) is removed first; its mode is set after.
pub async fn bind(socket: &Socket, mode: u32) -> io::Result<MilterListener> {
    match socket {
        Socket::Inet { host, port } => Ok(MilterListener::Tcp(
            TcpListener::bind((host.as_str(), *port)).await?,
        )),
        Socket::Unix(path) => {
            remove_stale_socket(path).await?;
            let listener = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            Ok(MilterListener::Unix(listener))
        }
    }
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
}

impl Runtime {
    pub fn new(config: Config) -> Runtime {
        let accounts = config
            .accounts_file
            .as_ref()
            .map(|path| load_accounts(path))
            .unwrap_or_default();
        let client = Client::new(config.servers.clone(), accounts, config.timeout);
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
            || old.config.max_connections != config.max_connections
        {
            tracing::warn!("socket and max_connections change only on restart");
        }
        let runtime = Arc::new(Runtime::new(config));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = runtime;
        tracing::info!("configuration reloaded");
    }
}

/// Serves `listener` until `shutdown` completes, then lets the commands in
/// progress finish. Each config received on `reload` replaces the one in
/// force (the caller has already checked it).
pub async fn run(
    listener: MilterListener,
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
    let result = indymilter::run(
        listener,
        callbacks::callbacks(shared),
        milter_config,
        shutdown,
    )
    .await;
    reloader.abort();
    result
}
