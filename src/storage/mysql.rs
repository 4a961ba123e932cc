//! The MySQL/MariaDB engine with pyzor's schema and statements, so that
//! Python pyzord and ours can share one table: the same `INSERT … ON
//! DUPLICATE KEY UPDATE` for reports and whitelists (which set every time
//! column on a new row, as pyzor's `mysql.py` does) and the same cleanup by
//! `r_updated`. Times are DATETIME in the server's time zone, converted with
//! `UNIX_TIMESTAMP`/`FROM_UNIXTIME` as pyzor converts with `time.mktime`.
//!
//! The signed requests served are rows of a table of our own beside
//! pyzor's, named after it (`<table>_replay`), created when missing:
//! `INSERT IGNORE` on its primary key is one atomic step, so of two
//! pyzords on the database only one serves a request. A task deletes the
//! rows whose time has come once a minute, in batches of
//! [`FORGET_BATCH`] rows so that no statement holds its locks for long.
//! When the table can be neither created nor read (a user without the
//! CREATE privilege), each pyzord refuses replays from its own memory
//! only, and says so at start.
//!
//! Connections come from a pool; a broken one is dropped and the pool opens
//! a new one, so pyzord reconnects by itself after MariaDB restarts. Every
//! call (taking a connection included: a connect to a dead host has no
//! timeout of its own) is bounded by [`BACKEND_TIMEOUT`](super::BACKEND_TIMEOUT),
//! so a dead or stuck server gives an error answer, never a hang. A request
//! that meets a pooled connection broken by a restart fails once; writes are
//! not retried, since a write whose answer was lost may have been applied.

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row};

use super::{
    Kind, Page, Record, Seen, SignedRequest, Storage, StorageError, StorageFuture, bounded,
    now_secs,
};

/// The port MySQLdb uses when neither the DSN nor MYSQL_TCP_PORT name one.
const DEFAULT_PORT: u16 = 3306;

/// The socket libmysqlclient uses for the host `localhost` on Debian.
const DEFAULT_SOCKET: &str = "/run/mysqld/mysqld.sock";

/// The most connections the pool keeps open.
const MAX_CONNECTIONS: usize = 16;

/// The engine's name in errors.
const ENGINE: &str = "mysql";

/// How often expired signed requests are deleted.
const FORGET_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

/// The most rows one statement deletes.
const FORGET_BATCH: u64 = 1000;

/// The MySQL engine.
pub struct MysqlStorage {
    pool: Pool,
    table: String,
    /// The table of signed requests served, when it could be made.
    replay_table: Option<String>,
    /// The task deleting expired signed requests.
    forgetting: Option<tokio::task::AbortHandle>,
}

impl Drop for MysqlStorage {
    fn drop(&mut self) {
        if let Some(task) = &self.forgetting {
            task.abort();
        }
    }
}

/// pyzor's MySQL DSN `host,user,password,db,table`, with the port from
/// `host:port`, else MYSQL_TCP_PORT (as libmysqlclient), else 3306.
pub fn parse_dsn(dsn: &str, env_port: Option<&str>) -> Result<(Opts, String), StorageError> {
    let invalid = |why| StorageError::InvalidDsn {
        dsn: super::redacted_dsn(dsn),
        why,
    };
    let parts: Vec<&str> = dsn.split(',').collect();
    let [host, user, password, db, table] = parts[..] else {
        return Err(invalid("expected host,user,password,db,table"));
    };
    if table.is_empty()
        || !table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.')
    {
        return Err(invalid("the table name must be a plain identifier"));
    }
    let (host, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (
            name,
            Some(
                port.parse()
                    .map_err(|_| invalid("the port is not a number"))?,
            ),
        ),
        _ => (host, None),
    };
    let port = match (port, env_port) {
        (Some(port), _) => port,
        (None, Some(env)) => env
            .trim()
            .parse()
            .map_err(|_| invalid("MYSQL_TCP_PORT is not a number"))?,
        (None, None) => DEFAULT_PORT,
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let pool = PoolOpts::default()
        .with_constraints(PoolConstraints::new(0, MAX_CONNECTIONS).expect("0 <= MAX_CONNECTIONS"));
    let mut builder = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user((!user.is_empty()).then_some(user))
        .pass((!password.is_empty()).then_some(password))
        .db_name((!db.is_empty()).then_some(db))
        .pool_opts(pool);
    if host == "localhost" {
        let socket = std::env::var("MYSQL_UNIX_PORT").unwrap_or_else(|_| DEFAULT_SOCKET.into());
        builder = builder.socket(Some(socket));
    }
    Ok((builder.into(), table.to_owned()))
}

/// pyzor's schema (the comment in `mysql.py`), created when missing.
fn create_table(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
          digest char(40) default NULL, r_count int(11) default NULL,
          wl_count int(11) default NULL, r_entered datetime default NULL,
          wl_entered datetime default NULL, r_updated datetime default NULL,
          wl_updated datetime default NULL, PRIMARY KEY (digest))"
    )
}

/// Our table of signed requests served: the SHA-1 of each request's user
/// and signature, and the Unix second from which it may be forgotten.
fn create_replay_table(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
          request BINARY(20) NOT NULL, forget_at BIGINT NOT NULL,
          PRIMARY KEY (request), KEY forget_at (forget_at))"
    )
}

/// Makes sure the replay table exists and can be read.
async fn open_replay_table(pool: &Pool, table: &str) -> Result<(), StorageError> {
    let mut connection = bounded(ENGINE, pool.get_conn()).await?;
    if let Err(error) = bounded(ENGINE, connection.query_drop(create_replay_table(table))).await {
        tracing::debug!(table, %error, "cannot create the replay table");
    }
    let probe = format!("SELECT request FROM {table} LIMIT 0");
    bounded(ENGINE, connection.query_drop(probe)).await
}

/// Deletes the expired rows of the replay table every [`FORGET_PERIOD`].
async fn forget_expired(pool: Pool, table: String) {
    let sql = format!("DELETE FROM {table} WHERE forget_at <= ? LIMIT {FORGET_BATCH}");
    let mut interval = tokio::time::interval(FORGET_PERIOD);
    loop {
        interval.tick().await;
        loop {
            let deleted = bounded(ENGINE, async {
                let mut connection = pool.get_conn().await?;
                connection.exec_drop(&sql, (now_secs(),)).await?;
                Ok::<_, mysql_async::Error>(connection.affected_rows())
            })
            .await;
            match deleted {
                Ok(deleted) if deleted == FORGET_BATCH => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::debug!(%error, "cannot delete expired signed requests");
                    break;
                }
            }
        }
    }
}

fn record_from(row: &Row, first: usize) -> Record {
    let get = |index: usize| row.get::<Option<i64>, _>(index).flatten();
    Record {
        report_count: get(first).unwrap_or(0),
        whitelist_count: get(first + 1).unwrap_or(0),
        report_entered: get(first + 2),
        report_updated: get(first + 3),
        whitelist_entered: get(first + 4),
        whitelist_updated: get(first + 5),
    }
}

const COLUMNS: &str = "r_count, wl_count, CAST(UNIX_TIMESTAMP(r_entered) AS SIGNED),
    CAST(UNIX_TIMESTAMP(r_updated) AS SIGNED), CAST(UNIX_TIMESTAMP(wl_entered) AS SIGNED),
    CAST(UNIX_TIMESTAMP(wl_updated) AS SIGNED)";

impl MysqlStorage {
    /// Connects to the server of a pyzor MySQL DSN and makes sure the
    /// table exists.
    pub async fn open(dsn: &str) -> Result<Self, StorageError> {
        let env_port = std::env::var("MYSQL_TCP_PORT").ok();
        let (opts, table) = parse_dsn(dsn, env_port.as_deref())?;
        let pool = Pool::new(opts);
        let mut connection = bounded(ENGINE, pool.get_conn()).await?;
        // pyzor expects the table to exist; creating it is a courtesy that
        // a user without the CREATE privilege does without.
        if let Err(error) = bounded(ENGINE, connection.query_drop(create_table(&table))).await {
            tracing::warn!(table, %error, "cannot create the table; using it as it is");
        }
        drop(connection);
        let replay = format!("{table}_replay");
        let replay_table = match open_replay_table(&pool, &replay).await {
            Ok(()) => Some(replay),
            Err(error) => {
                tracing::warn!(
                    table = replay,
                    "cannot create or read the replay table: each pyzord refuses replays \
                     from its own memory only, and forgets them when it restarts: {}",
                    crate::logging::Chain(&error)
                );
                None
            }
        };
        let forgetting = replay_table.as_ref().map(|replay| {
            tokio::spawn(forget_expired(pool.clone(), replay.clone())).abort_handle()
        });
        Ok(Self {
            pool,
            table,
            replay_table,
            forgetting,
        })
    }
}

impl Storage for MysqlStorage {
    fn get<'a>(&'a self, digest: &'a str) -> StorageFuture<'a, Option<Record>> {
        Box::pin(async move {
            let sql = format!("SELECT {COLUMNS} FROM {} WHERE digest=?", self.table);
            let row: Option<Row> = bounded(ENGINE, async {
                let mut connection = self.pool.get_conn().await?;
                connection.exec_first(sql, (digest,)).await
            })
            .await?;
            Ok(row.map(|row| record_from(&row, 0)))
        })
    }

    fn increment<'a>(&'a self, kind: Kind, digests: &'a [String]) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let (counts, update) = match kind {
                Kind::Report => ("1, 0", "r_count=r_count+1, r_updated=NOW()"),
                Kind::Whitelist => ("0, 1", "wl_count=wl_count+1, wl_updated=NOW()"),
            };
            let sql = format!(
                "INSERT INTO {} (digest, r_count, wl_count, r_entered, r_updated, wl_entered, \
                 wl_updated) VALUES (?, {counts}, NOW(), NOW(), NOW(), NOW()) \
                 ON DUPLICATE KEY UPDATE {update}",
                self.table
            );
            bounded(ENGINE, async {
                let mut connection = self.pool.get_conn().await?;
                connection
                    .exec_batch(sql, digests.iter().map(|digest| (digest,)))
                    .await
            })
            .await
        })
    }

    fn put_many<'a>(&'a self, records: &'a [(String, Record)]) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let sql = format!(
                "REPLACE INTO {} (digest, r_count, wl_count, r_entered, r_updated, wl_entered, \
                 wl_updated) VALUES (?, ?, ?, FROM_UNIXTIME(?), FROM_UNIXTIME(?), \
                 FROM_UNIXTIME(?), FROM_UNIXTIME(?))",
                self.table
            );
            let params = records.iter().map(|(digest, record)| {
                (
                    digest,
                    record.report_count,
                    record.whitelist_count,
                    record.report_entered,
                    record.report_updated,
                    record.whitelist_entered,
                    record.whitelist_updated,
                )
            });
            bounded(ENGINE, async {
                let mut connection = self.pool.get_conn().await?;
                connection.exec_batch(sql, params).await
            })
            .await
        })
    }

    fn scan<'a>(&'a self, after: Option<String>, limit: usize) -> StorageFuture<'a, Page> {
        Box::pin(async move {
            let sql = format!(
                "SELECT digest, {COLUMNS} FROM {} WHERE digest > ? ORDER BY digest LIMIT ?",
                self.table
            );
            let rows: Vec<Row> = bounded(ENGINE, async {
                let mut connection = self.pool.get_conn().await?;
                connection
                    .exec(sql, (after.unwrap_or_default(), limit as u64))
                    .await
            })
            .await?;
            let records: Vec<(String, Record)> = rows
                .iter()
                .map(|row| {
                    let digest = row
                        .get::<Option<String>, _>(0)
                        .flatten()
                        .unwrap_or_default();
                    (digest, record_from(row, 1))
                })
                .collect();
            let next = match records.last() {
                Some((digest, _)) if records.len() == limit => Some(digest.clone()),
                _ => None,
            };
            Ok((records, next))
        })
    }

    fn remember(&self, request: SignedRequest) -> Option<StorageFuture<'_, Seen>> {
        let table = self.replay_table.as_ref()?;
        Some(Box::pin(async move {
            let sql = format!("INSERT IGNORE INTO {table} (request, forget_at) VALUES (?, ?)");
            let added = bounded(ENGINE, async {
                let mut connection = self.pool.get_conn().await?;
                let key = request.key.to_vec();
                connection.exec_drop(sql, (key, request.forget_at)).await?;
                Ok::<_, mysql_async::Error>(connection.affected_rows())
            })
            .await?;
            Ok(if added > 0 { Seen::New } else { Seen::Replayed })
        }))
    }

    fn cleanup(&self, max_age_secs: u64) -> StorageFuture<'_, u64> {
        Box::pin(async move {
            let breakpoint = now_secs().saturating_sub(i64::try_from(max_age_secs).unwrap_or(0));
            let sql = format!(
                "DELETE FROM {} WHERE r_updated<FROM_UNIXTIME(?)",
                self.table
            );
            // Only the connection is bounded: the periodic cleanup is on no
            // request's path, and a large DELETE may rightly take long.
            let mut connection = bounded(ENGINE, self.pool.get_conn()).await?;
            connection.exec_drop(sql, (breakpoint,)).await?;
            Ok(connection.affected_rows())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_comes_from_host_then_environment_then_default() {
        let (opts, table) = parse_dsn("db.example:3307,u,p,pyzor,public", Some("9")).expect("ok");
        assert_eq!(
            (opts.ip_or_hostname(), opts.tcp_port()),
            ("db.example", 3307)
        );
        assert_eq!(table, "public");
        let (opts, _) = parse_dsn("127.0.0.1,u,p,pyzor,public", Some("3310")).expect("ok");
        assert_eq!(opts.tcp_port(), 3310);
        let (opts, _) = parse_dsn("127.0.0.1,u,,pyzor,public", None).expect("ok");
        assert_eq!((opts.tcp_port(), opts.pass()), (3306, None));
    }

    #[test]
    fn table_names_cannot_carry_sql() {
        assert!(matches!(
            parse_dsn("h,u,p,d,t; DROP TABLE x", None),
            Err(StorageError::InvalidDsn { .. })
        ));
    }
}
