//! The thread that copies the WAL back into the database file, and that
//! follows the file when it is removed or replaced: it notices that the
//! file went, drops its own connection to it, and opens the one back at
//! the path ([`super::file`] says why and how). It owns its own connection
//! and the pace of the checkpoints. It must not commit or touch the commit
//! queue, and it takes the writing connection only for a moment (to look
//! at the file or open it back, and for the last few frames of a
//! checkpoint), never while it sleeps.

use std::sync::Weak;
use std::thread;

use std::ffi::c_int;

use rusqlite::Connection;
use rusqlite::hooks::{CheckpointMode, Wal};

use super::{Writer, lock};
use crate::logging::Chain;

/// At most how many frames the checkpoint copies with the writer held:
/// until the reports committed meanwhile are this few, it copies them
/// beside the writer again (at most [`MAX_CHECKPOINT_PASSES`] times).
const HELD_CHECKPOINT_FRAMES: i64 = 256;

/// How many checkpoint passes run beside the writer before the held one.
const MAX_CHECKPOINT_PASSES: usize = 8;

/// How often the WAL is copied back into the database file.
const CHECKPOINT_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// How many frames the WAL may hold after a commit before the writer
/// copies them back itself ([`backstop`]): 64 MiB of 4 KiB pages, the
/// size a WAL that started over is cut back to. The checkpoint thread
/// keeps the WAL far below this, unless it gets no CPU for a while on a
/// loaded machine, when a stream of new reports grows the WAL by about
/// 100 MB a second.
const BACKSTOP_FRAMES: c_int = 16_384;

/// The writing connection's WAL hook, called after each commit with the
/// frames the WAL now holds: past [`BACKSTOP_FRAMES`] the writer copies
/// the WAL back itself (PASSIVE, as the checkpoint thread's bulk pass),
/// so that the WAL stays bounded however late the checkpoint thread is,
/// at the cost of that one commit's caller waiting for the copy.
pub(super) fn backstop(wal: &Wal, frames: c_int) -> rusqlite::Result<()> {
    if frames > BACKSTOP_FRAMES {
        // Busy when the checkpoint thread is copying at this moment: then
        // it does the work. The commit happened either way, so the hook
        // never reports an error (SQLite would fail the COMMIT with it).
        if let Err(error) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
            tracing::debug!(%error, frames, "writer's wal checkpoint failed");
        }
    }
    Ok(())
}

/// Copies the WAL into the database file in the background until the
/// storage is dropped.
///
/// A checkpoint that runs while reports commit never catches up with the
/// end of the WAL, and SQLite starts the WAL over only after a checkpoint
/// copied all of it: under a steady stream of reports it would grow without
/// end (1.3 GB in 8 s here), each commit extending the file. So the bulk is
/// copied beside the writer (PASSIVE: it blocks neither the writer nor the
/// readers), then the few frames committed meanwhile with the writer held,
/// which lets the next commit start the WAL over. Readers never wait.
pub(super) fn checkpoint_loop(connection: Connection, writer: Weak<Writer>) {
    let mut connection = Some(connection);
    let mut generation = 0;
    loop {
        thread::sleep(CHECKPOINT_PERIOD);
        let Some(writer) = writer.upgrade() else {
            break;
        };
        if !follow_file(&writer, &mut connection, &mut generation) {
            continue;
        }
        let Some(connection) = &connection else {
            continue;
        };
        if let Err(error) = checkpoint_wal(connection, &writer) {
            tracing::debug!(%error, "wal checkpoint failed");
        }
    }
    if let Some(connection) = connection {
        let _ = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
}

/// The checkpoint thread's look at the file ([`super::file`]): notices
/// that it went, drops its own connection to it, and opens the one back at
/// the path. Returns whether there is a file to checkpoint.
fn follow_file(writer: &Writer, connection: &mut Option<Connection>, generation: &mut u64) -> bool {
    let mut database = lock(&writer.connection);
    let present = database.still_at_path(&writer.file);
    if *generation != writer.file.generation() {
        // Its connection is to a file that went.
        *connection = None;
    }
    if !present {
        match database.reopen(&writer.file) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(error) => {
                let kind = "reopen";
                if let Some(repeats) = writer.repeats.admit(kind, std::time::Instant::now()) {
                    tracing::error!(
                        "cannot open the database file back: {}{repeats}",
                        Chain(&error)
                    );
                }
                return false;
            }
        }
    }
    if connection.is_none() {
        *generation = writer.file.generation();
        *connection = database.open_checkpointer().ok();
    }
    connection.is_some()
}

/// One round of checkpoints (see [`checkpoint_loop`]).
fn checkpoint_wal(connection: &Connection, writer: &Writer) -> rusqlite::Result<()> {
    let checkpoint = || {
        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })
    };
    // A checkpoint copies the WAL as far as it was when it began; the
    // reports committed since then are copied with the writer held.
    let (mut log, _) = checkpoint()?;
    for _ in 0..MAX_CHECKPOINT_PASSES {
        let (next, _) = checkpoint()?;
        let appended = next - log;
        log = next;
        if appended <= HELD_CHECKPOINT_FRAMES {
            break;
        }
    }
    if log > 0 {
        let _held = lock(&writer.connection);
        checkpoint()?;
    }
    Ok(())
}
