//! The Redis engine in pyzor's v1 layout, so that Python pyzord and ours can
//! serve one database: a hash `pyzord.digest_v1.<digest>` per digest with
//! the fields `r_count`, `r_entered`, `r_updated`, `wl_count`, `wl_entered`,
//! `wl_updated` (times as Unix seconds, 0 for never), and an EXPIRE of
//! CleanupAge refreshed at every write, as pyzor's `redis_.py` does.
//!
//! The signed requests served are keys of their own, `pyzord.replay_v1.`
//! and the hex SHA-1 of the request's user and signature, set with `SET
//! NX EX` until the request's Time leaves pyzor's window: one atomic step
//! on one key, so of two pyzords on the database (a Cluster too) only one
//! serves a request, and Python pyzord never reads them.
//!
//! The connection manager reconnects by itself after Redis restarts: a
//! request that meets a dead connection fails and starts a reconnection,
//! which the next requests wait for. Every call is bounded by
//! [`BACKEND_TIMEOUT`](super::BACKEND_TIMEOUT), and a reconnection makes a
//! single quick attempt, so while Redis is down each request fails fast
//! (pyzord answers "Database temporarily unavailable") and the first one
//! after Redis is back finds it.
//!
//! A report is acknowledged once Redis has answered the write. Whether Redis
//! keeps it through its own crash is Redis's setting: `appendonly yes` with
//! `appendfsync always` for every acknowledged write.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo};

use super::{
    Kind, Page, Record, Seen, SignedRequest, Storage, StorageError, StorageFuture, bounded,
    now_secs,
};

/// pyzor's key prefix, `"pyzord.digest_v%s" % VERSION` with VERSION "1".
const NAMESPACE: &str = "pyzord.digest_v1.";

/// The prefix of the keys of signed requests served (ours; pyzor has none).
const REPLAY_NAMESPACE: &str = "pyzord.replay_v1.";

/// pyzor's defaults for empty DSN fields (`redis_.py`).
const DEFAULT_HOST: &str = "localhost";
const DEFAULT_PORT: u16 = 6379;

/// A TCP connect to a Redis that is up takes well under a millisecond on a
/// LAN; one second only ends attempts at a host that does not answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Attempts after the first when (re)connecting. None: requests wait for
/// the reconnection, and the backoff between attempts (a second and more)
/// would hold them while Redis is down; the next request that fails starts
/// another attempt anyway, so pyzord finds Redis as soon as it is back.
const CONNECT_RETRIES: usize = 0;

/// The engine's name in errors.
const ENGINE: &str = "redis";

/// The Redis engine.
pub struct RedisStorage {
    connection: ConnectionManager,
    max_age_secs: Option<u64>,
}

/// Parses pyzor's Redis DSN `host,port,password,db`; a host containing `/`
/// is a Unix socket, as in pyzor.
pub fn parse_dsn(dsn: &str) -> Result<ConnectionInfo, StorageError> {
    let invalid = |why| StorageError::InvalidDsn {
        dsn: super::redacted_dsn(dsn),
        why,
    };
    let parts: Vec<&str> = dsn.split(',').collect();
    let [host, port, password, db] = parts[..] else {
        return Err(invalid("expected host,port,password,db"));
    };
    let host = if host.is_empty() { DEFAULT_HOST } else { host };
    let port = if port.is_empty() {
        DEFAULT_PORT
    } else {
        port.parse()
            .map_err(|_| invalid("the port is not a number"))?
    };
    let db = if db.is_empty() {
        0
    } else {
        db.parse()
            .map_err(|_| invalid("the database is not a number"))?
    };
    let addr = if host.contains('/') {
        ConnectionAddr::Unix(host.into())
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    };
    Ok(ConnectionInfo {
        addr,
        redis: RedisConnectionInfo {
            db,
            username: None,
            password: (!password.is_empty()).then(|| password.to_owned()),
            protocol: ProtocolVersion::RESP2,
        },
    })
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
    /// Connects to the server named by a pyzor Redis DSN.
    pub async fn open(dsn: &str, max_age_secs: Option<u64>) -> Result<Self, StorageError> {
        let client = redis::Client::open(parse_dsn(dsn)?)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(super::BACKEND_TIMEOUT)
            .set_number_of_retries(CONNECT_RETRIES);
        let connection =
            bounded(ENGINE, ConnectionManager::new_with_config(client, config)).await?;
        Ok(Self {
            connection,
            max_age_secs,
        })
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
            let mut pipe = redis::pipe();
            for digest in digests {
                let key = real_key(digest);
                pipe.cmd("HINCRBY").arg(&key).arg(count).arg(1).ignore();
                pipe.cmd("HSETNX").arg(&key).arg(entered).arg(now).ignore();
                pipe.cmd("HSET").arg(&key).arg(updated).arg(now).ignore();
                // pyzor: `if self.max_age:` (0 means no expiry).
                if let Some(age) = self.max_age_secs.filter(|age| *age > 0) {
                    pipe.cmd("EXPIRE").arg(&key).arg(age).ignore();
                }
            }
            let mut connection = self.connection.clone();
            bounded(ENGINE, pipe.query_async::<()>(&mut connection)).await
        })
    }

    fn put_many<'a>(&'a self, records: &'a [(String, Record)]) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for (digest, record) in records {
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
            bounded(ENGINE, pipe.query_async::<()>(&mut connection)).await
        })
    }

    fn scan<'a>(&'a self, after: Option<String>, limit: usize) -> StorageFuture<'a, Page> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let cursor = after.unwrap_or_else(|| "0".to_owned());
            let mut command = redis::cmd("SCAN");
            command
                .arg(&cursor)
                .arg("MATCH")
                .arg(format!("{NAMESPACE}*"))
                .arg("COUNT")
                .arg(limit);
            let (next, keys): (String, Vec<String>) =
                bounded(ENGINE, command.query_async(&mut connection)).await?;
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("HGETALL").arg(key);
            }
            let all: Vec<HashMap<String, String>> = if keys.is_empty() {
                Vec::new()
            } else {
                bounded(ENGINE, pipe.query_async(&mut connection)).await?
            };
            let mut records = Vec::with_capacity(keys.len());
            for (key, fields) in keys.iter().zip(all) {
                let digest = key.rsplit('.').next().unwrap_or(key).to_owned();
                // A key that vanished between SCAN and HGETALL expired.
                if !fields.is_empty() {
                    let record = decode(&fields, &digest)?;
                    records.push((digest, record));
                }
            }
            Ok((records, (next != "0").then_some(next)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_fields_default_as_in_pyzor() {
        let info = parse_dsn(",,,").expect("valid");
        assert_eq!(info.addr, ConnectionAddr::Tcp("localhost".into(), 6379));
        assert_eq!(info.redis.db, 0);
        assert_eq!(info.redis.password, None);
        let info = parse_dsn("/run/redis.sock,,secret,2").expect("valid");
        assert_eq!(info.addr, ConnectionAddr::Unix("/run/redis.sock".into()));
        assert_eq!(
            (info.redis.db, info.redis.password.as_deref()),
            (2, Some("secret"))
        );
    }

    #[test]
    fn dsn_with_three_fields_is_refused() {
        assert!(matches!(
            parse_dsn("localhost,6379,"),
            Err(StorageError::InvalidDsn { .. })
        ));
    }
}
