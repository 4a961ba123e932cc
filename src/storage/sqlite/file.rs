//! The database file under the engine's connections: opening it with the
//! engine's settings, and noticing when its path no longer names the file
//! the connections hold, which SQLite does not. Removed (or replaced by
//! another file), the file SQLite has open goes on taking commits in WAL
//! mode, and every report acknowledged meanwhile is lost at the next start.
//!
//! So the path is looked at after every commit and by the checkpoint
//! thread. Once it names another file or none, the writes of that commit
//! and every call after it fail ([`StorageError::FileGone`], pyzord's
//! Code 500), the connections to the old file are closed and its WAL and
//! shared-memory files removed from the path (their frames belong to the
//! old file: a new file at the path would have them applied and be
//! corrupted). When a database file is back at the path, the checkpoint
//! thread opens it and the engine serves again.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use super::{BUSY_TIMEOUT_MS, SCHEMA, WAL_SIZE_LIMIT, lock};
use crate::storage::{Durability, StorageError};

/// Which file a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

/// The file at `path` now, `None` when there is none.
fn file_at(path: &Path) -> Option<FileId> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileId {
        device: metadata.dev(),
        inode: metadata.ino(),
    })
}

/// What the readers and the checkpoint thread look at without the
/// writer's lock: whether the file is gone, which opening of it the
/// connections they hold belong to, and the idle read connections.
#[derive(Debug, Default)]
pub(super) struct FileState {
    gone: AtomicBool,
    generation: AtomicU64,
    /// Closed as soon as the file goes, so that nothing holds it (a
    /// filesystem taken read-only by an error is let go only then).
    readers: Mutex<Vec<(u64, Connection)>>,
}

impl FileState {
    pub(super) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Which opening of the file is current; a connection of another one
    /// is closed rather than used.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// An idle read connection of this opening of the file.
    pub(super) fn pooled_reader(&self, generation: u64) -> Option<Connection> {
        let mut pool = lock(&self.readers);
        pool.retain(|(opened, _)| *opened == generation);
        pool.pop().map(|(_, connection)| connection)
    }

    /// Keeps a read connection for later, unless its file went meanwhile.
    pub(super) fn give_back(&self, generation: u64, connection: Connection) {
        let mut pool = lock(&self.readers);
        if generation == self.generation() {
            pool.push((generation, connection));
        }
    }
}

/// Why a commit may not have reached the file at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lost {
    Gone,
    ReadOnly,
}

/// Whether the filesystem holding `path` is mounted read-only now.
fn read_only(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(name) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `name` is a NUL-terminated path and `stats` has room for
    // the structure statvfs fills in.
    let filled = unsafe { libc::statvfs(name.as_ptr(), stats.as_mut_ptr()) } == 0;
    // SAFETY: statvfs returned 0, so it filled `stats` in.
    filled && unsafe { stats.assume_init() }.f_flag & libc::ST_RDONLY != 0
}

/// The writing connection and the files it has open.
pub(super) struct Database {
    /// `None` while the file is gone.
    connection: Option<Connection>,
    path: PathBuf,
    file: Option<FileId>,
    /// The WAL and shared-memory files of the open file, which SQLite
    /// keeps while any connection is open: only these are removed when
    /// the file goes (the path's may be another file's, one remounted).
    companions: [Option<FileId>; 2],
    synchronous: &'static str,
}

/// The suffixes of a database's WAL and shared-memory files.
const COMPANIONS: [&str; 2] = ["-wal", "-shm"];

impl Database {
    /// Opens (or creates) the file with the engine's settings.
    pub(super) fn open(path: &Path, durability: Durability) -> Result<Self, StorageError> {
        let synchronous = match durability {
            Durability::Disk => "FULL",
            Durability::Process => "NORMAL",
        };
        let connection = open_writer(path, synchronous)?;
        Ok(Self {
            connection: Some(connection),
            path: path.to_owned(),
            file: file_at(path),
            companions: companions_at(path),
            synchronous,
        })
    }

    /// The writing connection, or why there is none.
    pub(super) fn connection(&self) -> Result<&Connection, StorageError> {
        self.connection.as_ref().ok_or_else(|| self.gone_error())
    }

    /// The error of every call while the file is gone.
    pub(super) fn gone_error(&self) -> StorageError {
        self.error(Lost::Gone)
    }

    /// The error of a commit that may be lost.
    pub(super) fn error(&self, lost: Lost) -> StorageError {
        match lost {
            Lost::Gone => StorageError::FileGone(self.path.clone()),
            Lost::ReadOnly => StorageError::ReadOnlyFilesystem(self.path.clone()),
        }
    }

    /// Why the commit that just returned may not be on disk in the file
    /// at the path, if it may not: the path names another file or none
    /// (which closes this one), or the filesystem turned read-only, as
    /// ext4 does on an error with `errors=remount-ro` (its fsync then
    /// returns success without writing).
    pub(super) fn lost_commit(&mut self, state: &FileState) -> Option<Lost> {
        if !self.still_at_path(state) {
            Some(Lost::Gone)
        } else if read_only(&self.path) {
            Some(Lost::ReadOnly)
        } else {
            None
        }
    }

    /// A connection for the checkpoint thread, with the writer's
    /// durability.
    pub(super) fn open_checkpointer(&self) -> rusqlite::Result<Connection> {
        let connection = Connection::open(&self.path)?;
        connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        connection.pragma_update(None, "synchronous", self.synchronous)?;
        Ok(connection)
    }

    /// Whether the path still names the file the connection has open;
    /// when it does not, closes it ([`Database::close`]).
    pub(super) fn still_at_path(&mut self, state: &FileState) -> bool {
        if self.connection.is_none() {
            return false;
        }
        if file_at(&self.path) == self.file {
            return true;
        }
        self.close(state);
        false
    }

    /// The file is gone: closes the writing connection, tells the readers
    /// and the checkpoint thread to drop theirs, and removes the old
    /// file's WAL and shared memory from the path.
    fn close(&mut self, state: &FileState) {
        self.connection = None;
        state.gone.store(true, Ordering::Release);
        {
            let mut pool = lock(&state.readers);
            state.generation.fetch_add(1, Ordering::AcqRel);
            pool.clear();
        }
        self.remove_stale_files();
        tracing::error!(
            "the database file \"{}\" was removed or replaced while open; every request \
             needing the database is answered with an error until a database file is back \
             at that path",
            self.path.display()
        );
    }

    /// Removes the old file's WAL and shared-memory files from the path
    /// (SQLite leaves them when it closes a file that moved), unless the
    /// path's are other files.
    fn remove_stale_files(&self) {
        for (suffix, opened) in COMPANIONS.iter().zip(self.companions) {
            let name = companion(&self.path, suffix);
            if opened.is_none() || file_at(&name) != opened {
                continue;
            }
            match std::fs::remove_file(&name) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(
                    "cannot remove \"{}\" of the removed database: {error}",
                    name.display()
                ),
            }
        }
    }

    /// Opens the file back at the path, if there is one; `Ok(false)` while
    /// there is none. Called by the checkpoint thread once its own
    /// connection to the old file is closed.
    pub(super) fn reopen(&mut self, state: &FileState) -> Result<bool, StorageError> {
        let Some(file) = file_at(&self.path) else {
            return Ok(false);
        };
        let connection = open_writer(&self.path, self.synchronous)?;
        self.connection = Some(connection);
        self.file = Some(file);
        self.companions = companions_at(&self.path);
        state.generation.fetch_add(1, Ordering::AcqRel);
        state.gone.store(false, Ordering::Release);
        tracing::warn!(
            "the database file \"{}\" is back; serving again",
            self.path.display()
        );
        Ok(true)
    }
}

/// The name of a database's WAL or shared-memory file.
fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.to_owned().into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// The WAL and shared-memory files at a database's path now.
fn companions_at(path: &Path) -> [Option<FileId>; 2] {
    COMPANIONS.map(|suffix| file_at(&companion(path, suffix)))
}

/// The writing connection: WAL mode, checkpoints left to the checkpoint
/// thread, the schema created when missing.
fn open_writer(path: &Path, synchronous: &str) -> rusqlite::Result<Connection> {
    let writer = Connection::open(path)?;
    writer.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    writer.pragma_update(None, "journal_mode", "WAL")?;
    writer.pragma_update(None, "synchronous", synchronous)?;
    // Checkpoints run on their own thread so that the writer never waits
    // for the fsyncs a checkpoint makes.
    writer.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Set after the pragma, which replaces the WAL hook.
    writer.wal_hook(Some(super::checkpoint::backstop));
    // The writer keeps SQLite's default page cache (2 MB), which holds
    // the table's interior pages. A larger one costs more than the
    // reads it saves: a page split renumbers pages through a temporary
    // number past the end of the file, and the commit after it then
    // scans the cache's whole hash table (pcache1TruncateUnsafe). With
    // 2 million random digests, reports took 43 µs each with a 64 MB
    // cache against 27 µs with the default one.
    // A WAL grown by a burst goes back to this size when it starts over.
    writer.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    writer.execute_batch(SCHEMA)?;
    Ok(writer)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::super::SqliteStorage;
    use crate::storage::{Kind, LocalStorage, LocalWrite, StorageError};

    /// Reports one digest on this thread; returns how its commit ended.
    fn report(storage: &SqliteStorage, digest: &str) -> Result<(), StorageError> {
        let outcome = Arc::new(Mutex::new(None));
        let told = Arc::clone(&outcome);
        let write = LocalWrite {
            kind: Kind::Report,
            digests: vec![digest.to_owned()],
            request: None,
            done: Box::new(move |result| {
                *told.lock().expect("outcome") = Some(result.map(|_| ()));
            }),
        };
        storage.write_all(vec![write], &());
        let result = outcome.lock().expect("outcome").take();
        result.expect("committed on this thread")
    }

    fn count(storage: &SqliteStorage, digest: &str) -> Option<i64> {
        let record = storage.get_now(digest).expect("read");
        record.map(|record| record.report_count)
    }

    #[test]
    fn a_removed_file_fails_every_call_until_a_file_is_back() {
        let dir = std::env::temp_dir().join(format!("pyzor-sqlite-gone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("pyzord.sqlite");
        let backup = dir.join("backup.sqlite");
        let storage = SqliteStorage::open(&path).expect("open");
        report(&storage, "kept").expect("report");
        let copier = rusqlite::Connection::open(&path).expect("open a copier");
        copier
            .execute("VACUUM INTO ?1", [backup.display().to_string()])
            .expect("backup");
        drop(copier);
        std::fs::remove_file(&path).expect("remove the database");
        let mut after = None;
        let log = crate::logging::captured(|| after = Some(report(&storage, "lost")));
        let gone = |result: Result<_, StorageError>| matches!(result, Err(StorageError::FileGone(ref gone)) if *gone == path);
        assert!(gone(after.expect("ran")), "a report after the removal");
        assert_eq!(
            log,
            format!(
                "ERROR the database file \"{}\" was removed or replaced while open; every \
                 request needing the database is answered with an error until a database \
                 file is back at that path\n",
                path.display()
            )
        );
        assert!(gone(report(&storage, "refused")));
        assert!(gone(storage.get_now("kept").map(|_| ())));
        let wal = dir.join("pyzord.sqlite-wal");
        assert!(!wal.exists(), "the removed file's WAL is left at the path");
        let landing = dir.join("landing.sqlite");
        std::fs::copy(&backup, &landing).expect("copy the backup");
        std::fs::rename(&landing, &path).expect("put the backup in place");
        let back = Instant::now();
        while report(&storage, "after").is_err() {
            assert!(back.elapsed().as_secs() < 10, "not reopened");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(count(&storage, "kept"), Some(1));
        assert_eq!(count(&storage, "after"), Some(1));
        assert_eq!(count(&storage, "lost"), None);
        drop(storage);
        let check = rusqlite::Connection::open(&path).expect("open");
        let integrity: String = check
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("integrity_check");
        assert_eq!(integrity, "ok");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
