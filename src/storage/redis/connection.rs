//! The connection to whatever a Redis DSN names, as one
//! [`ConnectionLike`](redis::aio::ConnectionLike): a command or a pipeline
//! is written as for any redis-rs connection, and goes to the one server,
//! to the master the sentinels name now, or to the cluster node that holds
//! its key (a pipeline's commands must then share one slot).
//!
//! Each mode reconnects by itself: the connection manager for one server;
//! for Sentinel, a failed request forgets the master, and the next one asks
//! the sentinels again; the cluster connection follows `MOVED` and `ASK`
//! and relearns the slot map. Connecting makes one quick attempt, so that
//! while a server is down requests fail fast rather than queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind,
    Pipeline, ProtocolVersion, RedisConnectionInfo, RedisError, RedisFuture, RedisResult,
    TlsCertificates, TlsMode, Value,
};

use super::dsn::{Node, RedisDsn, Target};
use crate::storage::{BACKEND_TIMEOUT, StorageError};

/// A TCP connect to a Redis that is up takes well under a millisecond on a
/// LAN; one second only ends attempts at a host that does not answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Attempts after the first when (re)connecting. None: requests wait for
/// the reconnection, and the backoff between attempts (a second and more)
/// would hold them while Redis is down; the next request that fails starts
/// another attempt anyway, so pyzord finds Redis as soon as it is back.
const CONNECT_RETRIES: usize = 0;

/// How often the cluster connection tries a request again after a
/// redirection (`MOVED`, `ASK`) or a lost node, within
/// [`BACKEND_TIMEOUT`]: a resharding moves a key at most twice.
const CLUSTER_RETRIES: u32 = 4;

/// A connection to a single server, a Sentinel-managed master or a
/// cluster; cheap to clone, every clone shares it.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Sentinel(Arc<SentinelMaster>),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects (reading the TLS files the DSN names first), so that a
    /// wrong address, password or certificate is a start-up error.
    pub async fn open(dsn: &RedisDsn) -> Result<Self, StorageError> {
        let certificates = dsn.tls.as_ref().map(load_certificates).transpose()?;
        let redis_info = RedisConnectionInfo {
            db: dsn.db,
            username: dsn.username.clone(),
            password: dsn.password.clone(),
            protocol: ProtocolVersion::RESP2,
        };
        let connection = match &dsn.target {
            Target::Tcp(node) => {
                let info = ConnectionInfo {
                    addr: address(node, certificates.is_some()),
                    redis: redis_info,
                };
                Self::single(client(info, certificates)?).await?
            }
            Target::Unix(path) => {
                let info = ConnectionInfo {
                    addr: ConnectionAddr::Unix(path.clone()),
                    redis: redis_info,
                };
                Self::single(Client::open(info)?).await?
            }
            Target::Sentinel { sentinels, master } => Self::Sentinel(Arc::new(
                SentinelMaster::open(sentinels, master, redis_info, certificates).await?,
            )),
            Target::Cluster(nodes) => {
                let tls = certificates.is_some();
                let initial = nodes.iter().map(|node| ConnectionInfo {
                    addr: address(node, tls),
                    redis: redis_info.clone(),
                });
                let mut builder = ClusterClientBuilder::new(initial)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(BACKEND_TIMEOUT)
                    .retries(CLUSTER_RETRIES);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                Self::Cluster(builder.build()?.get_async_connection().await?)
            }
        };
        Ok(connection)
    }

    async fn single(client: Client) -> Result<Self, StorageError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(BACKEND_TIMEOUT)
            .set_number_of_retries(CONNECT_RETRIES);
        let manager = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::Single(manager))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, command: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(command),
            Self::Cluster(connection) => connection.req_packed_command(command),
            Self::Sentinel(master) => Box::pin(async move {
                let (generation, mut connection) = master.current().await?;
                let result = connection.req_packed_command(command).await;
                master.check(generation, result.as_ref().map(std::slice::from_ref));
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(master) => Box::pin(async move {
                let (generation, mut connection) = master.current().await?;
                let result = connection
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                master.check(generation, result.as_deref());
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
            Self::Sentinel(master) => master.db,
        }
    }
}

/// A host and port, over TLS or not.
fn address(node: &Node, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: node.host.clone(),
            port: node.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(node.host.clone(), node.port)
    }
}

fn client(info: ConnectionInfo, certificates: Option<TlsCertificates>) -> RedisResult<Client> {
    match certificates {
        Some(certificates) => Client::build_with_tls(info, certificates),
        None => Client::open(info),
    }
}

/// Reads the PEM files of a `rediss` DSN.
fn load_certificates(files: &super::dsn::TlsFiles) -> Result<TlsCertificates, StorageError> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| StorageError::TlsFile {
            path: path.clone(),
            source,
        })
    };
    let client_tls = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert: files.ca.as_ref().map(read).transpose()?,
    })
}

/// The master the sentinels name, found again after a failover: a request
/// that meets a dead connection, or a master turned replica (`READONLY`),
/// forgets it, and the next request asks the sentinels.
pub struct SentinelMaster {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: std::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
    db: i64,
}

impl SentinelMaster {
    async fn open(
        sentinels: &[Node],
        master: &str,
        redis: RedisConnectionInfo,
        certificates: Option<TlsCertificates>,
    ) -> Result<Self, StorageError> {
        let tls = certificates.is_some();
        let addresses = sentinels.iter().map(|node| address(node, tls));
        let mut builder =
            SentinelClientBuilder::new(addresses, master.to_owned(), SentinelServerType::Master)?
                .set_client_to_redis_db(redis.db);
        if let Some(username) = redis.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = redis.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(certificates) = certificates {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_certificates(certificates);
        }
        let master = Self {
            sentinels: tokio::sync::Mutex::new(builder.build()?),
            current: std::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(BACKEND_TIMEOUT),
            db: redis.db,
        };
        master.current().await?;
        Ok(master)
    }

    fn connected(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().ok().and_then(|current| current.clone())
    }

    /// The connection to the master, asking the sentinels where it is when
    /// there is none (one request at a time asks).
    async fn current(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.connected() {
            return Ok(current);
        }
        let mut sentinels = self.sentinels.lock().await;
        if let Some(current) = self.connected() {
            return Ok(current);
        }
        let client = sentinels.async_get_client().await?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut current) = self.current.lock() {
            *current = Some((generation, connection.clone()));
        }
        tracing::info!(master = %client.get_connection_info().addr, "redis master found through the sentinels");
        Ok((generation, connection))
    }

    /// Forgets the connection `generation` when its result shows the master
    /// is gone or no longer master.
    fn check(&self, generation: u64, result: Result<&[Value], &RedisError>) {
        let stale = match result {
            Err(error) => is_stale(error),
            Ok(values) => values.iter().any(|value| {
                matches!(value, Value::ServerError(error)
                    if matches!(error.code(), "READONLY" | "MASTERDOWN" | "LOADING"))
            }),
        };
        if stale
            && let Ok(mut current) = self.current.lock()
            && current
                .as_ref()
                .is_some_and(|(known, _)| *known == generation)
        {
            *current = None;
        }
    }
}

/// Whether an error means the master must be looked up again.
fn is_stale(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(error.kind(), ErrorKind::ReadOnly | ErrorKind::MasterDown)
        || error.code() == Some("LOADING")
}
