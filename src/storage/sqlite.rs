//! The embedded default engine: one SQLite file in WAL mode holding the
//! `digests` table of pyzor's MySQL schema (times as Unix seconds), and
//! the `replay` table of the signed requests served within pyzor's time
//! window, so that a replay is refused after a restart too.
//!
//! Writes are group-committed on the only writing connection, by whichever
//! caller finds no commit under way (the committer): it takes every write
//! waiting in the queue, applies them in one transaction, tells each
//! caller only after COMMIT returned (so a report acknowledged with Code
//! 200 survives a crash), and goes on while writes keep arriving; callers
//! that find a commit under way queue their write for it. The committer is
//! the caller's own thread: a pyzord serving thread ([`LocalStorage`]) or
//! the task that asked ([`Storage::increment`]), which saves the hand-offs
//! to and from a writer thread (a third of a report's time); bulk loads
//! and cleanup go through a blocking thread, so a long one keeps the
//! reports queued, never a runtime thread blocked. Reads use their own
//! connections and, thanks to WAL, never wait for the writer. A thread of
//! its own copies the WAL back into the database file ([`checkpoint`])
//! and follows the file when it is removed or replaced ([`file`]).
//!
//! A signed report or whitelist remembers its request in the transaction
//! that counts it: it is counted only if its key was not there, so an
//! acknowledged report is never counted again, crash or not, and the key
//! costs no commit of its own. A signed read (check, info, ping) is
//! answered before its key is committed: it is looked up in the table
//! first ([`LocalStorage::remembered`]) and its key joins the next commit
//! without its answer waiting (a replayed read changes nothing, so a
//! crash that loses the last keys of reads costs nothing, and reads never
//! wait for a commit). Each transaction that remembers requests deletes
//! twice as many expired ones at most, so the table keeps up with what
//! comes in and no commit does much more than its own writes.
//!
//! The queue is bounded ([`MAX_PENDING_DIGESTS`]): past it, a report or
//! whitelist is refused at once with [`StorageError::QueueFull`] (pyzord
//! answers it with Code 500) instead of waiting, so that a flood of
//! reports neither grows memory without end nor stops the reads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::logging::Repeats;
use checkpoint::checkpoint_loop;
use file::{Database, FileState};

use super::{
    CommitHooks, Durability, Kind, LocalStorage, LocalWrite, Page, Record, RequestKey, Seen,
    SignedRequest, Storage, StorageError, StorageFuture, WriteQueue, now_secs,
};

mod checkpoint;
mod file;

/// The file our default engine uses in the homedir. It differs from
/// pyzord's `pyzord.db` (gdbm) so that neither opens the other's file.
pub const DEFAULT_FILE_NAME: &str = "pyzord.sqlite";

/// How many queued writes one transaction takes at most.
const MAX_WRITES_PER_COMMIT: usize = 4096;

/// How many reported or whitelisted digests may wait for their commit; a
/// report or whitelist that would go past it is refused
/// ([`StorageError::QueueFull`]). About one second of commits here (27 µs
/// a report, see the README's benchmarks) and a few tens of MB with the
/// answers waiting beside them; bulk loads and cleanups are never refused.
pub const MAX_PENDING_DIGESTS: usize = 32_768;

/// The size in bytes a WAL file is cut back to when it starts over.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT_MS: u64 = 5_000;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS digests (
    digest CHAR(40) NOT NULL PRIMARY KEY,
    r_count INTEGER,
    wl_count INTEGER,
    r_entered INTEGER,
    wl_entered INTEGER,
    r_updated INTEGER,
    wl_updated INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replay (
    request BLOB NOT NULL PRIMARY KEY,
    forget_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS replay_forget_at ON replay (forget_at)";

/// Remembers a signed request (the SHA-1 of its user and signature) unless
/// it is there already.
const REMEMBER: &str = "INSERT OR IGNORE INTO replay (request, forget_at) VALUES (?1, ?2)";

const REMEMBERED: &str = "SELECT 1 FROM replay WHERE request = ?1";

/// Deletes up to ?2 signed requests whose time has come.
const FORGET: &str = "DELETE FROM replay WHERE rowid IN
    (SELECT rowid FROM replay WHERE forget_at <= ?1 LIMIT ?2)";

const SELECT_ONE: &str = "SELECT r_count, wl_count, r_entered, r_updated, wl_entered, wl_updated
    FROM digests WHERE digest = ?1";

/// `r_count` stops at i64::MAX as pyzor's stops at `sys.maxsize`.
const REPORT: &str = "INSERT INTO digests (digest, r_count, wl_count, r_entered, r_updated)
    VALUES (?1, 1, 0, ?2, ?2)
    ON CONFLICT(digest) DO UPDATE SET
      r_count = CASE WHEN r_count < 9223372036854775807 THEN r_count + 1 ELSE r_count END,
      r_entered = COALESCE(r_entered, ?2), r_updated = ?2";

const WHITELIST: &str = "INSERT INTO digests (digest, r_count, wl_count, wl_entered, wl_updated)
    VALUES (?1, 0, 1, ?2, ?2)
    ON CONFLICT(digest) DO UPDATE SET
      wl_count = CASE WHEN wl_count < 9223372036854775807 THEN wl_count + 1 ELSE wl_count END,
      wl_entered = COALESCE(wl_entered, ?2), wl_updated = ?2";

const PUT: &str = "INSERT OR REPLACE INTO digests
    (digest, r_count, wl_count, r_entered, r_updated, wl_entered, wl_updated)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const CLEANUP: &str = "DELETE FROM digests
    WHERE MAX(COALESCE(r_updated, 0), COALESCE(wl_updated, 0)) < ?1";

/// One write.
enum Write {
    /// Counts the digests, unless the signed request is remembered
    /// already; with no digests, only remembers the request.
    Increment(Kind, Vec<String>, Option<SignedRequest>),
    Put(Vec<(String, Record)>),
    Cleanup(i64),
}

/// A write waiting for its commit, and who to tell: called once the
/// transaction holding it committed (with how many records a cleanup
/// deleted) or failed, on the thread that committed it.
struct Queued {
    write: Write,
    done: Done,
}

/// Who to tell how a write ended: how it was applied, or the error that
/// failed its transaction.
type Done = Box<dyn FnOnce(Result<Applied, StorageError>) + Send>;

/// How a write ended in a transaction that committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Applied; how many records a cleanup deleted.
    Done(u64),
    /// Its signed request was remembered already: nothing was written.
    Replayed,
}

impl Applied {
    fn seen(self) -> Seen {
        match self {
            Applied::Done(_) => Seen::New,
            Applied::Replayed => Seen::Replayed,
        }
    }
}

/// The writing side: the one writing connection and the writes waiting
/// for the next commit.
struct Writer {
    /// Taken by the committer, and briefly by the checkpoint thread.
    connection: Mutex<Database>,
    /// Whether the file is gone, for the readers and the checkpoint thread.
    file: FileState,
    /// The checkpoint thread's failures to open the file back, folded.
    repeats: Repeats,
    queue: Mutex<Queue>,
    /// The digests of the reports and whitelists queued, for the metrics
    /// (kept with the queue locked).
    pending_digests: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Queued>,
    /// The digests of the reports and whitelists in `pending`.
    digests: usize,
    /// A committer is at work: it will take what is pending.
    committing: bool,
    /// Writes refused in the current episode of a full queue, and when
    /// the last was: one log line when it begins and one when it ends,
    /// not one per write.
    refused: u64,
    last_refused: Option<Instant>,
}

/// How long a full queue must have refused nothing before a write it
/// takes ends the episode (under a steady flood it has room for a moment
/// after every commit, which is not an end worth a log line).
const QUIET_AFTER_FULL: Duration = Duration::from_secs(5);

impl Write {
    /// The digests this write adds to the queue's bound; bulk loads and
    /// cleanups count for none, so they are never refused.
    fn bounded_digests(&self) -> usize {
        match self {
            Write::Increment(_, digests, _) => digests.len().max(1),
            Write::Put(_) | Write::Cleanup(_) => 0,
        }
    }
}

/// What [`Writer::enqueue`] did.
struct Enqueued {
    /// The caller is now the committer.
    committer: bool,
    /// Writes refused because the queue was full, to be told so.
    refused: Vec<Queued>,
    /// The queue filled up (`Some(0)`) or had room again after refusing
    /// this many writes: the one log line of the episode.
    episode: Option<u64>,
}

/// A lock whose holder cannot have left the data half-changed (every
/// critical section here only moves values), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Writer {
    /// Queues `writes`, refusing those past [`MAX_PENDING_DIGESTS`]: they
    /// are told [`StorageError::QueueFull`] before this returns (and then
    /// `hooks` told, so that their answers go out). Returns whether the
    /// caller is now the committer, who must call
    /// [`Writer::commit_pending`].
    fn admit(&self, writes: impl IntoIterator<Item = Queued>, hooks: &dyn CommitHooks) -> bool {
        let enqueued = self.enqueue(writes);
        match enqueued.episode {
            Some(0) => tracing::warn!(
                capacity = MAX_PENDING_DIGESTS,
                "the sqlite commit queue is full: reports and whitelists are answered with \
                 Code 500 until it has room"
            ),
            Some(refused) => {
                tracing::warn!(refused, "the sqlite commit queue has room again")
            }
            None => {}
        }
        if !enqueued.refused.is_empty() {
            for queued in enqueued.refused {
                (queued.done)(Err(StorageError::QueueFull {
                    capacity: MAX_PENDING_DIGESTS,
                }));
            }
            hooks.told();
        }
        enqueued.committer
    }

    fn enqueue(&self, writes: impl IntoIterator<Item = Queued>) -> Enqueued {
        let mut queue = lock(&self.queue);
        let mut refused = Vec::new();
        let mut episode = None;
        for queued in writes {
            let digests = queued.write.bounded_digests();
            if digests > 0 && queue.digests + digests > MAX_PENDING_DIGESTS {
                if queue.refused == 0 {
                    episode = Some(0);
                }
                queue.refused += 1;
                queue.last_refused = Some(Instant::now());
                refused.push(queued);
                continue;
            }
            if queue
                .last_refused
                .is_some_and(|last| last.elapsed() >= QUIET_AFTER_FULL)
            {
                queue.last_refused = None;
                episode = Some(std::mem::take(&mut queue.refused));
            }
            queue.digests += digests;
            queue.pending.push(queued);
        }
        self.pending_digests.store(queue.digests, Ordering::Relaxed);
        let committer = !std::mem::replace(&mut queue.committing, true);
        Enqueued {
            committer,
            refused,
            episode,
        }
    }

    /// Takes every queued write.
    fn take_pending(&self, queue: &mut Queue) -> Vec<Queued> {
        queue.digests = 0;
        self.pending_digests.store(0, Ordering::Relaxed);
        std::mem::take(&mut queue.pending)
    }

    /// The committer's work: commits everything queued, round after round,
    /// until the queue is empty or another caller took the committer's
    /// role. Each round tells its callers after it gave the role up, so
    /// that while this thread answers them (their datagrams take about as
    /// long as the commit), a writer that arrives meanwhile commits the
    /// next round on another thread.
    fn commit_pending(&self, hooks: &dyn CommitHooks) {
        loop {
            let batch = {
                let mut queue = lock(&self.queue);
                if queue.pending.is_empty() {
                    queue.committing = false;
                    return;
                }
                self.take_pending(&mut queue)
            };
            hooks.committing();
            let outcomes = {
                let mut database = lock(&self.connection);
                commit_to_file(&mut database, &self.file, batch)
            };
            lock(&self.queue).committing = false;
            for (done, outcome) in outcomes {
                done(outcome);
            }
            hooks.told();
            // Writes queued while this round committed, and not taken by a
            // committer since, are this thread's again.
            let mut queue = lock(&self.queue);
            if queue.pending.is_empty() || queue.committing {
                return;
            }
            queue.committing = true;
        }
    }
}

/// Makes sure a committer commits, even if its task is dropped while it
/// lets the other writes in.
struct Committer<'a>(&'a Writer);

impl Drop for Committer<'_> {
    fn drop(&mut self) {
        self.0.commit_pending(&());
    }
}

/// The SQLite engine.
pub struct SqliteStorage {
    path: PathBuf,
    writer: Arc<Writer>,
}

impl SqliteStorage {
    /// Opens or creates the database file and starts its writer thread,
    /// with the default durability.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, Durability::default())
    }

    /// [`SqliteStorage::open`] with a chosen durability.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Self, StorageError> {
        let database = Database::open(path, durability)?;
        let checkpointer = database.open_checkpointer()?;
        let writer = Arc::new(Writer {
            connection: Mutex::new(database),
            file: FileState::default(),
            repeats: Repeats::default(),
            queue: Mutex::default(),
            pending_digests: Arc::default(),
        });
        let token = Arc::downgrade(&writer);
        thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, token))
            .map_err(|_| StorageError::WriterGone)?;
        Ok(Self {
            path: path.to_owned(),
            writer,
        })
    }

    /// A read connection to the file in use, with its generation
    /// ([`FileState::generation`]); none while the file is gone.
    fn reader(&self) -> Result<(u64, Connection), StorageError> {
        let state = &self.writer.file;
        if state.is_gone() {
            return Err(StorageError::FileGone(self.path.clone()));
        }
        let generation = state.generation();
        if let Some(pooled) = state.pooled_reader(generation) {
            return Ok((generation, pooled));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags)?;
        connection.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        Ok((generation, connection))
    }

    fn give_back(&self, generation: u64, connection: Connection) {
        self.writer.file.give_back(generation, connection);
    }

    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let (generation, connection) = self.reader()?;
        let result = query(&connection);
        // A connection whose query failed may be broken; open a new one later.
        if result.is_ok() {
            self.give_back(generation, connection);
        }
        Ok(result?)
    }

    /// A write committed on this task (see the module doc). A committer
    /// first yields once, so that the writes of the requests ready to run
    /// join its transaction.
    async fn write(&self, write: Write) -> Result<Applied, StorageError> {
        let (reply, answer) = oneshot::channel();
        if self.writer.admit([Queued::reply(write, reply)], &()) {
            let committer = Committer(&self.writer);
            tokio::task::yield_now().await;
            drop(committer);
        }
        answer.await.map_err(|_| StorageError::WriterGone)?
    }

    /// A write that may take long, committed on a blocking thread.
    async fn write_blocking(&self, write: Write) -> Result<Applied, StorageError> {
        let (reply, answer) = oneshot::channel();
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || {
            if writer.admit([Queued::reply(write, reply)], &()) {
                writer.commit_pending(&());
            }
        })
        .await
        .map_err(|_| StorageError::WriterGone)?;
        answer.await.map_err(|_| StorageError::WriterGone)?
    }
}

impl Queued {
    /// A write whose outcome goes to a waiting task.
    fn reply(write: Write, reply: oneshot::Sender<Result<Applied, StorageError>>) -> Self {
        Queued {
            write,
            done: Box::new(move |outcome| {
                let _ = reply.send(outcome);
            }),
        }
    }
}

impl LocalStorage for SqliteStorage {
    fn get_now(&self, digest: &str) -> Result<Option<Record>, StorageError> {
        self.read(|connection| {
            connection
                .prepare_cached(SELECT_ONE)?
                .query_row([digest], |row| record_from_row(row, 0))
                .optional()
        })
    }

    fn remembered(&self, key: &RequestKey) -> Result<bool, StorageError> {
        self.read(|connection| {
            let found = connection
                .prepare_cached(REMEMBERED)?
                .query_row([key.as_slice()], |_| Ok(()))
                .optional()?;
            Ok(found.is_some())
        })
    }

    fn get_many(&self, digests: &[&str]) -> Result<Vec<Option<Record>>, StorageError> {
        self.read(|connection| {
            connection.prepare_cached("BEGIN")?.execute([])?;
            let records = (|| {
                let mut statement = connection.prepare_cached(SELECT_ONE)?;
                digests
                    .iter()
                    .map(|digest| {
                        statement
                            .query_row([digest], |row| record_from_row(row, 0))
                            .optional()
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })();
            let ended = connection.prepare_cached("COMMIT")?.execute([]);
            let records = records?;
            ended?;
            Ok(records)
        })
    }

    fn write_all(&self, writes: Vec<LocalWrite>, hooks: &dyn CommitHooks) {
        let queued = writes.into_iter().map(|write| Queued {
            write: Write::Increment(write.kind, write.digests, write.request),
            done: Box::new(move |outcome| (write.done)(outcome.map(Applied::seen))),
        });
        if self.writer.admit(queued, hooks) {
            self.writer.commit_pending(hooks);
        }
    }
}

fn record_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Record> {
    Ok(Record {
        report_count: row.get::<_, Option<i64>>(first)?.unwrap_or(0),
        whitelist_count: row.get::<_, Option<i64>>(first + 1)?.unwrap_or(0),
        report_entered: row.get(first + 2)?,
        report_updated: row.get(first + 3)?,
        whitelist_entered: row.get(first + 4)?,
        whitelist_updated: row.get(first + 5)?,
    })
}

impl Storage for SqliteStorage {
    fn get<'a>(&'a self, digest: &'a str) -> StorageFuture<'a, Option<Record>> {
        Box::pin(async move { self.get_now(digest) })
    }

    fn increment<'a>(&'a self, kind: Kind, digests: &'a [String]) -> StorageFuture<'a, ()> {
        let write = Write::Increment(kind, digests.to_vec(), None);
        Box::pin(async move { self.write(write).await.map(|_| ()) })
    }

    fn remember(&self, request: SignedRequest) -> Option<StorageFuture<'_, Seen>> {
        let write = Write::Increment(Kind::Report, Vec::new(), Some(request));
        Some(Box::pin(async move {
            self.write(write).await.map(Applied::seen)
        }))
    }

    fn put_many<'a>(&'a self, records: &'a [(String, Record)]) -> StorageFuture<'a, ()> {
        let write = Write::Put(records.to_vec());
        Box::pin(async move { self.write_blocking(write).await.map(|_| ()) })
    }

    fn scan<'a>(&'a self, after: Option<String>, limit: usize) -> StorageFuture<'a, Page> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self.read(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT digest, r_count, wl_count, r_entered, r_updated, wl_entered,
                     wl_updated FROM digests WHERE digest > ?1 ORDER BY digest LIMIT ?2",
                )?;
                let rows = statement
                    .query_map(params![after.unwrap_or_default(), limit], |row| {
                        Ok((row.get::<_, String>(0)?, record_from_row(row, 1)?))
                    })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })?;
            let next = match rows.last() {
                Some((digest, _)) if rows.len() as i64 == limit => Some(digest.clone()),
                _ => None,
            };
            Ok((rows, next))
        })
    }

    fn cleanup(&self, max_age_secs: u64) -> StorageFuture<'_, u64> {
        let breakpoint = now_secs().saturating_sub(i64::try_from(max_age_secs).unwrap_or(0));
        Box::pin(async move {
            match self.write_blocking(Write::Cleanup(breakpoint)).await? {
                Applied::Done(deleted) => Ok(deleted),
                Applied::Replayed => Ok(0),
            }
        })
    }

    fn as_local(&self) -> Option<&dyn LocalStorage> {
        Some(self)
    }

    fn write_queue(&self) -> Option<WriteQueue> {
        Some(WriteQueue {
            digests: Arc::clone(&self.writer.pending_digests),
            capacity: MAX_PENDING_DIGESTS,
        })
    }
}

/// Commits a batch into the file at the path: none while the file is
/// gone, and a commit that may not be there fails as well: one that went
/// into a file no longer at the path (lost at the next start) or onto a
/// filesystem turned read-only (whose fsync then returns without writing).
fn commit_to_file(database: &mut Database, state: &FileState, batch: Vec<Queued>) -> Told {
    let Ok(connection) = database.connection() else {
        let failed = batch.into_iter();
        return failed
            .map(|queued| (queued.done, Err(database.gone_error())))
            .collect();
    };
    let mut told = commit_batch(connection, batch);
    if let Some(lost) = database.lost_commit(state) {
        for (_, outcome) in &mut told {
            if outcome.is_ok() {
                *outcome = Err(database.error(lost));
            }
        }
    }
    told
}

/// Who to tell what, once a transaction ended.
type Told = Vec<(Done, Result<Applied, StorageError>)>;

/// Applies a batch in transactions of at most [`MAX_WRITES_PER_COMMIT`]
/// writes; returns each caller's outcome, for after the commit: how many
/// records a cleanup deleted, or the error that failed its transaction.
fn commit_batch(connection: &Connection, mut batch: Vec<Queued>) -> Told {
    let mut told = Vec::with_capacity(batch.len());
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(MAX_WRITES_PER_COMMIT));
        let now = now_secs();
        let outcome = in_transaction(connection, |connection| {
            let applied = batch
                .iter()
                .map(|queued| apply(connection, &queued.write, now))
                .collect::<rusqlite::Result<Vec<Applied>>>()?;
            forget_expired(connection, &batch, now)?;
            Ok(applied)
        });
        match outcome {
            Ok(applied) => {
                for (queued, applied) in batch.into_iter().zip(applied) {
                    told.push((queued.done, Ok(applied)));
                }
            }
            Err(error) => {
                // Each caller logs it (pyzord through its limiter).
                let error = Arc::new(error);
                for queued in batch {
                    told.push((queued.done, Err(StorageError::Commit(Arc::clone(&error)))));
                }
            }
        }
        batch = rest;
    }
    told
}

/// Runs `body` in a transaction, committed if it succeeded and rolled
/// back if it or the commit failed. Its statements are prepared once
/// (rusqlite's `Transaction` parses BEGIN and COMMIT anew every time).
fn in_transaction<T>(
    connection: &Connection,
    body: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    connection.prepare_cached("BEGIN")?.execute([])?;
    let result = body(connection).and_then(|value| {
        connection.prepare_cached("COMMIT")?.execute([])?;
        Ok(value)
    });
    if result.is_err() && !connection.is_autocommit() {
        let rolled_back = connection
            .prepare_cached("ROLLBACK")
            .and_then(|mut statement| statement.execute([]));
        if let Err(error) = rolled_back {
            tracing::error!(%error, "sqlite rollback failed");
        }
    }
    result
}

/// Deletes expired signed requests, twice as many at most as the batch
/// remembers: the table keeps up, and a commit stays short.
fn forget_expired(connection: &Connection, batch: &[Queued], now: i64) -> rusqlite::Result<()> {
    let remembered = batch
        .iter()
        .filter(|queued| matches!(queued.write, Write::Increment(_, _, Some(_))))
        .count();
    if remembered > 0 {
        let limit = i64::try_from(remembered * 2).unwrap_or(i64::MAX);
        connection
            .prepare_cached(FORGET)?
            .execute(params![now, limit])?;
    }
    Ok(())
}

fn apply(connection: &Connection, write: &Write, now: i64) -> rusqlite::Result<Applied> {
    match write {
        Write::Increment(kind, digests, request) => {
            if let Some(request) = request {
                let added = connection
                    .prepare_cached(REMEMBER)?
                    .execute(params![request.key.as_slice(), request.forget_at])?;
                if added == 0 {
                    return Ok(Applied::Replayed);
                }
            }
            let sql = match kind {
                Kind::Report => REPORT,
                Kind::Whitelist => WHITELIST,
            };
            let mut statement = connection.prepare_cached(sql)?;
            for digest in digests {
                statement.execute(params![digest, now])?;
            }
            Ok(Applied::Done(0))
        }
        Write::Put(records) => {
            let mut statement = connection.prepare_cached(PUT)?;
            for (digest, record) in records {
                statement.execute(params![
                    digest,
                    record.report_count,
                    record.whitelist_count,
                    record.report_entered,
                    record.report_updated,
                    record.whitelist_entered,
                    record.whitelist_updated,
                ])?;
            }
            Ok(Applied::Done(0))
        }
        Write::Cleanup(breakpoint) => Ok(Applied::Done(
            connection.execute(CLEANUP, [breakpoint])? as u64
        )),
    }
}

#[cfg(test)]
mod tests;
