//! The Redis engine in pyzor's v1 layout, so that Python pyzord and ours can
//! serve one database: a hash `pyzord.digest_v1.<digest>` per digest with
//! the fields `r_count`, `r_entered`, `r_updated`, `wl_count`, `wl_entered`,
//! `wl_updated` (times as Unix seconds, 0 for never), and an EXPIRE of
//! CleanupAge refreshed at every write, as pyzor's `redis_.py` does. The
//! layout is the same on one server, behind Sentinel and in a cluster
//! (each hash is one key, so it lives in one slot).
//!
//! The signed requests served are keys of their own, `pyzord.replay_v1.`
//! and the hex SHA-1 of the request's user and signature, set with `SET
//! NX EX` until the request's Time leaves pyzor's window: one atomic step
//! on one key, so of two pyzords on the database (a Cluster too) only one
//! serves a request, and Python pyzord never reads them.
//!
//! [`connection`] reaches what the DSN ([`dsn`]) names and reconnects by
//! itself. Every call is bounded by
//! [`BACKEND_TIMEOUT`](super::BACKEND_TIMEOUT), and a reconnection makes a
//! single quick attempt, so while Redis is down each request fails fast
//! (pyzord answers "Database temporarily unavailable") and the first one
//! after Redis is back finds it.
//!
//! A request is one round trip: a pipeline of a script per digest (one per
//! digest in a cluster, where a pipeline stays within a slot). No `KEYS`:
//! `migrate` walks with `SCAN`, on each master of a cluster.
//!
//! A report is acknowledged once Redis has answered the write, or with
//! RedisWait once `WAIT` says that many replicas have it too. Whether Redis
//! keeps it through its own crash is Redis's setting: `appendonly yes` with
//! `appendfsync always` for every acknowledged write.

use std::collections::HashMap;

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Pipeline, Value};

use super::{
    Kind, Page, Record, Seen, SignedRequest, Storage, StorageError, StorageFuture, bounded,
    now_secs,
};

pub mod connection;
pub mod dsn;

pub use connection::Connection;
pub use dsn::{RedisDsn, parse_dsn, redacted};

/// pyzor's key prefix, `"pyzord.digest_v%s" % VERSION` with VERSION "1".
const NAMESPACE: &str = "pyzord.digest_v1.";

/// The prefix of the keys of signed requests served (ours; pyzor has none).
const REPLAY_NAMESPACE: &str = "pyzord.replay_v1.";

/// The engine's name in errors.
const ENGINE: &str = "redis";

/// How long `WAIT` waits for the replicas to confirm a report: well inside
/// [`BACKEND_TIMEOUT`](super::BACKEND_TIMEOUT), so that a replica that
/// does not answer turns into an error answer rather than a timeout.
pub const WAIT_TIMEOUT_MS: u64 = 1000;

/// pyzor's `report` and `whitelist` for one digest as one atomic script,
/// so that a cluster may send it again after a redirection without
/// counting twice: HINCRBY the count, HSETNX the entered time, HSET the
/// updated time, and EXPIRE when CleanupAge is above 0 (pyzor's
/// `if self.max_age:`).
const INCREMENT: &str = "redis.call('HINCRBY', KEYS[1], ARGV[1], 1) \
redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[4]) \
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4]) \
if ARGV[5] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[5]) end \
return 1";

/// The Redis engine.
pub struct RedisStorage {
    connection: Connection,
    /// Reports and whitelists: a connection of their own when they WAIT
    /// for replicas, since WAIT holds its connection until they answer.
    writes: Connection,
    max_age_secs: Option<u64>,
    /// How many replicas must confirm a write before it is acknowledged
    /// (RedisWait), 0 for none.
    wait_replicas: u32,
}

fn real_key(digest: &str) -> String {
    format!("{NAMESPACE}{digest}")
}

/// pyzor's `_decode_record`: missing fields are 0, a time of 0 is never.
fn decode(fields: &HashMap<String, String>, digest: &str) -> Result<Record, StorageError> {
    let number = |name: &str| -> Result<i64, StorageError> {
        fields.get(name).map_or(Ok(0), |value| {
            value
                .trim()
                .parse()
                .map_err(|_| StorageError::InvalidRecord {
                    digest: digest.to_owned(),
                    why: format!("field {name} is \"{value}\""),
                })
        })
    };
    let time = |name: &str| number(name).map(|value| (value != 0).then_some(value));
    Ok(Record {
        report_count: number("r_count")?,
        whitelist_count: number("wl_count")?,
        report_entered: time("r_entered")?,
        report_updated: time("r_updated")?,
        whitelist_entered: time("wl_entered")?,
        whitelist_updated: time("wl_updated")?,
    })
}

impl RedisStorage {
    /// Connects to what a Redis DSN names; a report is acknowledged once
    /// `wait_replicas` replicas have it.
    pub async fn open(
        dsn: &str,
        max_age_secs: Option<u64>,
        wait_replicas: u32,
    ) -> Result<Self, StorageError> {
        let dsn = parse_dsn(dsn)?;
        let connection = bounded(ENGINE, Connection::open(&dsn)).await?;
        let writes = if wait_replicas > 0 {
            bounded(ENGINE, Connection::open(&dsn)).await?
        } else {
            connection.clone()
        };
        Ok(Self {
            connection,
            writes,
            max_age_secs,
            wait_replicas,
        })
    }

    fn cluster(&self) -> Option<&ClusterConnection> {
        match &self.connection {
            Connection::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }

    /// Runs a pipeline of writes on one slot, then WAITs for the replicas
    /// RedisWait asks for.
    async fn write(&self, mut pipe: Pipeline) -> Result<(), StorageError> {
        let mut connection = self.writes.clone();
        if self.wait_replicas == 0 {
            return bounded(ENGINE, pipe.query_async::<()>(&mut connection)).await;
        }
        pipe.cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(WAIT_TIMEOUT_MS);
        let (confirmed,): (u32,) = bounded(ENGINE, pipe.query_async(&mut connection)).await?;
        if confirmed < self.wait_replicas {
            return Err(StorageError::NotReplicated {
                wanted: self.wait_replicas,
                confirmed,
                timeout_ms: WAIT_TIMEOUT_MS,
            });
        }
        Ok(())
    }

    /// The pipelines a batch of keys is written in: one, or one per key in
    /// a cluster.
    fn batches<'a, T>(&self, items: &'a [T]) -> Vec<&'a [T]> {
        if self.cluster().is_some() {
            items.chunks(1).collect()
        } else {
            vec![items]
        }
    }
}

impl Storage for RedisStorage {
    fn get<'a>(&'a self, digest: &'a str) -> StorageFuture<'a, Option<Record>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let mut command = redis::cmd("HGETALL");
            command.arg(real_key(digest));
            let fields: HashMap<String, String> =
                bounded(ENGINE, command.query_async(&mut connection)).await?;
            if fields.is_empty() {
                return Ok(None);
            }
            decode(&fields, digest).map(Some)
        })
    }

    fn increment<'a>(&'a self, kind: Kind, digests: &'a [String]) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let (count, entered, updated) = match kind {
                Kind::Report => ("r_count", "r_entered", "r_updated"),
                Kind::Whitelist => ("wl_count", "wl_entered", "wl_updated"),
            };
            let now = now_secs();
            let age = self.max_age_secs.unwrap_or(0);
            for batch in self.batches(digests) {
                let mut pipe = redis::pipe();
                for digest in batch {
                    pipe.cmd("EVAL")
                        .arg(INCREMENT)
                        .arg(1)
                        .arg(real_key(digest))
                        .arg(count)
                        .arg(entered)
                        .arg(updated)
                        .arg(now)
                        .arg(age)
                        .ignore();
                }
                self.write(pipe).await?;
            }
            Ok(())
        })
    }

    fn put_many<'a>(&'a self, records: &'a [(String, Record)]) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            for batch in self.batches(records) {
                let mut pipe = redis::pipe();
                for (digest, record) in batch {
                    let key = real_key(digest);
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg("r_count")
                        .arg(record.report_count)
                        .arg("r_entered")
                        .arg(record.report_entered.unwrap_or(0))
                        .arg("r_updated")
                        .arg(record.report_updated.unwrap_or(0))
                        .arg("wl_count")
                        .arg(record.whitelist_count)
                        .arg("wl_entered")
                        .arg(record.whitelist_entered.unwrap_or(0))
                        .arg("wl_updated")
                        .arg(record.whitelist_updated.unwrap_or(0))
                        .ignore();
                    if let Some(age) = self.max_age_secs {
                        pipe.cmd("EXPIRE").arg(&key).arg(age).ignore();
                    }
                }
                let mut connection = self.connection.clone();
                bounded(ENGINE, pipe.query_async::<()>(&mut connection)).await?;
            }
            Ok(())
        })
    }

    fn scan<'a>(&'a self, after: Option<String>, limit: usize) -> StorageFuture<'a, Page> {
        Box::pin(async move {
            match self.cluster() {
                Some(cluster) => scan_cluster(cluster, after, limit).await,
                None => {
                    let mut node = NodeCalls::Any(self.connection.clone());
                    let cursor = after.unwrap_or_else(|| "0".to_owned());
                    let (records, next) = scan_node(&mut node, &cursor, limit).await?;
                    Ok((records, (next != "0").then_some(next)))
                }
            }
        })
    }

    fn remember(&self, request: SignedRequest) -> Option<StorageFuture<'_, Seen>> {
        Some(Box::pin(async move {
            let key = format!("{REPLAY_NAMESPACE}{}", hex::encode(request.key));
            let ttl = request.forget_at.saturating_sub(now_secs()).max(1);
            let mut command = redis::cmd("SET");
            command.arg(key).arg(1).arg("NX").arg("EX").arg(ttl);
            let mut connection = self.connection.clone();
            let set: Option<String> = bounded(ENGINE, command.query_async(&mut connection)).await?;
            Ok(if set.is_some() {
                Seen::New
            } else {
                Seen::Replayed
            })
        }))
    }

    fn cleanup(&self, _max_age_secs: u64) -> StorageFuture<'_, u64> {
        // Redis expires the keys itself (EXPIRE at every write).
        Box::pin(async { Ok(0) })
    }
}

/// Where `migrate`'s SCAN and HGETALLs go: the one server, or one master
/// of a cluster (SCAN walks the keys of the node it is sent to).
enum NodeCalls {
    Any(Connection),
    Master {
        cluster: ClusterConnection,
        host: String,
        port: u16,
    },
}

impl NodeCalls {
    async fn command<T: redis::FromRedisValue>(
        &mut self,
        command: &redis::Cmd,
    ) -> Result<T, StorageError> {
        match self {
            Self::Any(connection) => bounded(ENGINE, command.query_async(connection)).await,
            Self::Master {
                cluster,
                host,
                port,
            } => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = bounded(ENGINE, cluster.route_command(command, routing)).await?;
                Ok(redis::from_redis_value(&value)?)
            }
        }
    }

    async fn pipeline(
        &mut self,
        pipe: &Pipeline,
        count: usize,
    ) -> Result<Vec<Value>, StorageError> {
        match self {
            Self::Any(connection) => bounded(ENGINE, pipe.query_async(connection)).await,
            Self::Master {
                cluster,
                host,
                port,
            } => {
                let routing = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                bounded(ENGINE, cluster.route_pipeline(pipe, 0, count, routing)).await
            }
        }
    }
}

/// One SCAN page of one node and its records; the node's next cursor.
async fn scan_node(
    node: &mut NodeCalls,
    cursor: &str,
    limit: usize,
) -> Result<(Vec<(String, Record)>, String), StorageError> {
    let mut command = redis::cmd("SCAN");
    command
        .arg(cursor)
        .arg("MATCH")
        .arg(format!("{NAMESPACE}*"))
        .arg("COUNT")
        .arg(limit);
    let (next, keys): (String, Vec<String>) = node.command(&command).await?;
    if keys.is_empty() {
        return Ok((Vec::new(), next));
    }
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("HGETALL").arg(key);
    }
    let all = node.pipeline(&pipe, keys.len()).await?;
    let mut records = Vec::with_capacity(keys.len());
    for (key, fields) in keys.iter().zip(all) {
        let fields: HashMap<String, String> = redis::from_redis_value(&fields)?;
        let digest = key.rsplit('.').next().unwrap_or(key).to_owned();
        // A key that vanished between SCAN and HGETALL expired.
        if !fields.is_empty() {
            let record = decode(&fields, &digest)?;
            records.push((digest, record));
        }
    }
    Ok((records, next))
}

/// A cluster's pages: each master's SCAN in turn, the cursor
/// `MASTER_INDEX:NODE_CURSOR` over the masters sorted by address.
async fn scan_cluster(
    cluster: &ClusterConnection,
    after: Option<String>,
    limit: usize,
) -> Result<Page, StorageError> {
    let masters = masters(cluster).await?;
    let (index, cursor) = match after.as_deref().and_then(|after| after.split_once(':')) {
        Some((index, cursor)) => (index.parse::<usize>().unwrap_or(usize::MAX), cursor),
        None => (0, "0"),
    };
    let Some((host, port)) = masters.get(index).cloned() else {
        return Ok((Vec::new(), None));
    };
    let mut node = NodeCalls::Master {
        cluster: cluster.clone(),
        host,
        port,
    };
    let (records, next) = scan_node(&mut node, cursor, limit).await?;
    let next = if next != "0" {
        Some(format!("{index}:{next}"))
    } else {
        (index + 1 < masters.len()).then(|| format!("{}:0", index + 1))
    };
    Ok((records, next))
}

/// The masters of a cluster (CLUSTER SLOTS), sorted by address.
async fn masters(cluster: &ClusterConnection) -> Result<Vec<(String, u16)>, StorageError> {
    let slots: Vec<Value> = bounded(
        ENGINE,
        redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut cluster.clone()),
    )
    .await?;
    let mut masters = Vec::new();
    for range in slots {
        // [start, end, [host, port, id, ...], replicas...]
        if let Value::Array(range) = range
            && let Some(Value::Array(master)) = range.get(2)
            && let (Some(host), Some(port)) = (master.first(), master.get(1))
        {
            let host: String = redis::from_redis_value(host)?;
            let port: u16 = redis::from_redis_value(port)?;
            if !host.is_empty() && !masters.contains(&(host.clone(), port)) {
                masters.push((host, port));
            }
        }
    }
    masters.sort();
    Ok(masters)
}
