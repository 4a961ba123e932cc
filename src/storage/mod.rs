//! Where pyzord keeps its digest records: one [`Storage`] trait and its
//! engines — the embedded default ([`sqlite`]), [`redis`] with pyzor's v1
//! layout and [`mysql`] with pyzor's schema — plus a read-only importer for
//! a Python pyzord gdbm file ([`gdbm`]).
//!
//! An engine knows nothing of the wire protocol, of access control or of
//! forwarding; it stores counts and times, and the keys of the signed
//! requests it served ([`Storage::remember`]), so that every pyzord on the
//! database, and the same one after a restart, refuses a replay. Times are
//! Unix seconds, as pyzor's `info` reports them (`time.mktime` of the
//! stored local time).

pub mod gdbm;
pub mod mysql;
pub mod redis;
pub mod sqlite;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A future returned by a storage engine.
pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// One digest's counts and times, as pyzor's `Record` holds them.
///
/// A time is `None` when the event never happened (pyzor's `None`, shown as
/// 0 by `info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub report_count: i64,
    pub whitelist_count: i64,
    pub report_entered: Option<i64>,
    pub report_updated: Option<i64>,
    pub whitelist_entered: Option<i64>,
    pub whitelist_updated: Option<i64>,
}

impl Record {
    /// Counts one spam report at `now`, as pyzor's `Record.r_increment`.
    pub fn count_report(&mut self, now: i64) {
        self.report_count = self.report_count.saturating_add(1);
        self.report_entered.get_or_insert(now);
        self.report_updated = Some(now);
    }

    /// Counts one whitelisting at `now`, as pyzor's `Record.wl_increment`.
    pub fn count_whitelist(&mut self, now: i64) {
        self.whitelist_count = self.whitelist_count.saturating_add(1);
        self.whitelist_entered.get_or_insert(now);
        self.whitelist_updated = Some(now);
    }

    /// The latest update of either kind, which decides when a record expires.
    pub fn last_update(&self) -> Option<i64> {
        self.report_updated.max(self.whitelist_updated)
    }
}

/// Which count a write increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Report,
    Whitelist,
}

/// The key of a signed request: the SHA-1 of its user and signature.
pub type RequestKey = [u8; 20];

/// A signed request to remember, and the Unix second from which it may be
/// forgotten (its Time is then out of pyzor's window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRequest {
    pub key: RequestKey,
    pub forget_at: i64,
}

/// Whether a signed request was served before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: remembered now.
    New,
    /// Served before: a replay.
    Replayed,
}

/// One page of records read for `migrate`, and where the next page starts.
pub type Page = (Vec<(String, Record)>, Option<String>);

/// A digest database. Every engine is shared by all the server's tasks.
pub trait Storage: Send + Sync {
    /// The record of one digest, `None` when it was never stored.
    fn get<'a>(&'a self, digest: &'a str) -> StorageFuture<'a, Option<Record>>;

    /// Increments the report or whitelist count of every digest (a batch
    /// from one request). Returns once the write is durable.
    fn increment<'a>(&'a self, kind: Kind, digests: &'a [String]) -> StorageFuture<'a, ()>;

    /// Stores whole records, replacing what is there (for `migrate`).
    fn put_many<'a>(&'a self, records: &'a [(String, Record)]) -> StorageFuture<'a, ()>;

    /// Up to `limit` records after the cursor `after` (`None`: from the
    /// start), and the cursor of the next page (`None`: that was the last).
    fn scan<'a>(&'a self, after: Option<String>, limit: usize) -> StorageFuture<'a, Page>;

    /// Deletes the records not updated for `max_age_secs`; returns how many
    /// went. Engines that expire by themselves (Redis) return 0.
    fn cleanup(&self, max_age_secs: u64) -> StorageFuture<'_, u64>;

    /// Remembers a signed request unless it is remembered already, in one
    /// atomic step, so that of two pyzords on the database that get the
    /// same request only one serves it. `None` when the engine keeps no
    /// table of them (pyzord's in-memory cache is then all there is).
    fn remember(&self, _request: SignedRequest) -> Option<StorageFuture<'_, Seen>> {
        None
    }

    /// The engine's calls on the caller's thread, when it is a local file
    /// whose calls never wait on the network (pyzord then serves it from
    /// plain threads rather than a task per request).
    fn as_local(&self) -> Option<&dyn LocalStorage> {
        None
    }

    /// The engine's queue of writes waiting for their commit, when it has
    /// one (SQLite's group commit).
    fn write_queue(&self) -> Option<WriteQueue> {
        None
    }
}

/// A bounded queue of writes: how many digests wait in it, and how many
/// it takes before it refuses writes with [`StorageError::QueueFull`].
pub struct WriteQueue {
    pub digests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub capacity: usize,
}

/// An engine in a local file, called from the caller's thread.
pub trait LocalStorage: Send + Sync {
    /// The record of one digest, `None` when it was never stored. Never
    /// waits for a write.
    fn get_now(&self, digest: &str) -> Result<Option<Record>, StorageError>;

    /// Whether a signed request is in the engine's table of those served,
    /// as far as committed (a read, for requests answered before any
    /// commit; their keys reach the table with a [`LocalWrite`]).
    fn remembered(&self, key: &RequestKey) -> Result<bool, StorageError>;

    /// The records of several digests, read from one snapshot of the
    /// database (one read transaction rather than one per digest).
    fn get_many(&self, digests: &[&str]) -> Result<Vec<Option<Record>>, StorageError> {
        digests.iter().map(|digest| self.get_now(digest)).collect()
    }

    /// Counts every write, in one transaction with the writes other
    /// threads queue meanwhile. Each write's `done` is called once that
    /// transaction committed or failed, on the thread that ran it: this
    /// one, before returning, or another thread already committing, which
    /// takes these writes into its next transaction while this one returns
    /// at once. `hooks` learns what this thread does meanwhile.
    fn write_all(&self, writes: Vec<LocalWrite>, hooks: &dyn CommitHooks);
}

/// What the caller of [`LocalStorage::write_all`] does around the commits
/// its thread runs.
pub trait CommitHooks {
    /// This thread is about to commit (no other was committing).
    fn committing(&self) {}

    /// This thread made a round of `done` calls (so that their answers
    /// may go out together).
    fn told(&self) {}
}

/// No hooks.
impl CommitHooks for () {}

/// A report or whitelist for [`LocalStorage::write_all`], or with no
/// digests the key of a signed read to remember.
pub struct LocalWrite {
    pub kind: Kind,
    pub digests: Vec<String>,
    /// The signed request to remember in the same transaction: when it is
    /// remembered already, nothing is written and `done` hears
    /// [`Seen::Replayed`].
    pub request: Option<SignedRequest>,
    pub done: Box<dyn FnOnce(Result<Seen, StorageError>) + Send>,
}

/// The engine names of pyzor's `-e`/`Engine` setting that we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineName {
    /// Our embedded default.
    Sqlite,
    Redis,
    Mysql,
    /// Python pyzord's default; read-only, through `migrate`.
    Gdbm,
}

impl EngineName {
    /// Parses a pyzor engine name.
    pub fn parse(name: &str) -> Result<Self, StorageError> {
        match name {
            "sqlite" => Ok(Self::Sqlite),
            "redis" => Ok(Self::Redis),
            "mysql" => Ok(Self::Mysql),
            "gdbm" => Ok(Self::Gdbm),
            other => Err(StorageError::UnknownEngine(other.to_owned())),
        }
    }

    /// Whether the DSN is a file name, made absolute against the homedir
    /// as pyzord does for engines with `absolute_source`.
    pub fn dsn_is_file(self) -> bool {
        matches!(self, Self::Sqlite | Self::Gdbm)
    }

    /// The DSN as it may be shown in a log line or an error: a file name
    /// as it is, a server's DSN with its password hidden.
    pub fn shown_dsn(self, dsn: &str) -> String {
        match self {
            Self::Sqlite | Self::Gdbm => dsn.to_owned(),
            Self::Redis => redis::redacted(dsn),
            Self::Mysql => redacted_dsn(dsn),
        }
    }
}

/// Where the password is in pyzor's Redis (`host,port,password,db`) and
/// MySQL (`host,user,password,db,table`) DSNs.
const DSN_PASSWORD_FIELD: usize = 2;

/// A Redis or MySQL DSN with its password, when it has one, replaced by
/// `***`, for log lines and errors.
pub fn redacted_dsn(dsn: &str) -> String {
    let mut fields: Vec<&str> = dsn.split(',').collect();
    if let Some(password) = fields.get_mut(DSN_PASSWORD_FIELD)
        && !password.is_empty()
    {
        *password = "***";
    }
    fields.join(",")
}

/// How hard the embedded engine works to keep an acknowledged report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit reaches the disk before its reports are acknowledged
    /// (SQLite `synchronous=FULL`): one fsync per group commit.
    Disk,
    /// Every commit reaches the operating system before its reports are
    /// acknowledged: a crash or SIGKILL of pyzord loses nothing, a power
    /// cut may lose the last commits (SQLite `synchronous=NORMAL` in WAL
    /// mode, never corrupt). The default: Python pyzord's gdbm engine only
    /// syncs once a minute, so this is already stronger than what an
    /// operator has.
    #[default]
    Process,
}

/// Settings for opening an engine beyond its DSN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// The CleanupAge that engines expiring records by themselves apply.
    pub max_age_secs: Option<u64>,
    pub durability: Durability,
    /// Redis: how many replicas must confirm a report (`WAIT`) before it
    /// is acknowledged; 0 for none.
    pub redis_wait: u32,
}

/// Opens an engine on a DSN in pyzor's format for that engine. `max_age_secs`
/// is the CleanupAge that engines expiring records by themselves apply.
pub async fn open(
    engine: EngineName,
    dsn: &str,
    max_age_secs: Option<u64>,
) -> Result<Box<dyn Storage>, StorageError> {
    let options = OpenOptions {
        max_age_secs,
        ..OpenOptions::default()
    };
    open_with(engine, dsn, &options).await
}

/// [`open`] with every setting.
pub async fn open_with(
    engine: EngineName,
    dsn: &str,
    options: &OpenOptions,
) -> Result<Box<dyn Storage>, StorageError> {
    match engine {
        EngineName::Sqlite => Ok(Box::new(sqlite::SqliteStorage::open_with(
            Path::new(dsn),
            options.durability,
        )?)),
        EngineName::Redis => Ok(Box::new(
            redis::RedisStorage::open(dsn, options.max_age_secs, options.redis_wait).await?,
        )),
        EngineName::Mysql => Ok(Box::new(mysql::MysqlStorage::open(dsn).await?)),
        EngineName::Gdbm => Ok(Box::new(gdbm::GdbmStorage::open(Path::new(dsn))?)),
    }
}

/// The longest a call to a networked engine (Redis, MySQL) may take before
/// it fails, so that a dead or stuck database server turns into pyzord's
/// "Database temporarily unavailable" answer well inside the 5 s a pyzor
/// client waits (pyzor's `Client.timeout`), never into silence.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one call to a networked engine within [`BACKEND_TIMEOUT`].
pub async fn bounded<T, E>(
    engine: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, StorageError>
where
    StorageError: From<E>,
{
    match tokio::time::timeout(BACKEND_TIMEOUT, call).await {
        Ok(result) => result.map_err(StorageError::from),
        Err(_) => Err(StorageError::Timeout {
            engine,
            timeout_ms: BACKEND_TIMEOUT.as_millis() as u64,
        }),
    }
}

/// The current time in Unix seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// What can go wrong in a storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unknown database engine \"{0}\"")]
    UnknownEngine(String),
    #[error("invalid DSN \"{dsn}\": {why}")]
    InvalidDsn { dsn: String, why: &'static str },
    #[error("sqlite database failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("redis failed")]
    Redis(#[from] ::redis::RedisError),
    #[error("mysql failed")]
    Mysql(#[from] mysql_async::Error),
    #[error("gdbm file failed: {0}")]
    Gdbm(String),
    #[error("invalid record for digest \"{digest}\": {why}")]
    InvalidRecord { digest: String, why: String },
    #[error("the {0} engine is read-only here")]
    ReadOnly(&'static str),
    #[error("sqlite transaction failed")]
    Commit(#[source] std::sync::Arc<rusqlite::Error>),
    #[error("the database file \"{}\" was removed or replaced", .0.display())]
    FileGone(std::path::PathBuf),
    #[error("the filesystem of \"{}\" is read-only", .0.display())]
    ReadOnlyFilesystem(std::path::PathBuf),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("the commit queue is full ({capacity} digests)")]
    QueueFull { capacity: usize },
    #[error("cannot read the TLS file \"{}\"", path.display())]
    TlsFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "only {confirmed} of the {wanted} replicas asked for confirmed the write within {timeout_ms} ms"
    )]
    NotReplicated {
        wanted: u32,
        confirmed: u32,
        timeout_ms: u64,
    },
    #[error("the {engine} server did not answer within {timeout_ms} ms")]
    Timeout {
        engine: &'static str,
        timeout_ms: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_sets_entered_once_and_updated_each_time() {
        let mut record = Record::default();
        record.count_report(10);
        record.count_report(20);
        assert_eq!(
            record,
            Record {
                report_count: 2,
                report_entered: Some(10),
                report_updated: Some(20),
                ..Record::default()
            }
        );
    }

    #[test]
    fn passwords_are_hidden_in_shown_dsns() {
        assert_eq!(
            EngineName::Mysql.shown_dsn("db:3306,pyzor,s3cret,pyzor,public"),
            "db:3306,pyzor,***,pyzor,public"
        );
        assert_eq!(EngineName::Redis.shown_dsn(",,,0"), ",,,0");
        assert_eq!(EngineName::Redis.shown_dsn("h,1,pw"), "h,1,***");
        assert_eq!(
            EngineName::Redis.shown_dsn("redis+cluster://u:pw@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
        assert_eq!(EngineName::Sqlite.shown_dsn("/a,b,c"), "/a,b,c");
    }

    #[test]
    fn engine_names_are_pyzors() {
        assert_eq!(EngineName::parse("redis").ok(), Some(EngineName::Redis));
        assert!(matches!(
            EngineName::parse("redis_v0"),
            Err(StorageError::UnknownEngine(name)) if name == "redis_v0"
        ));
    }
}
