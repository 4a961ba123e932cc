//! What the daemons' error lines share: an error written with every cause
//! in its `source()` chain ([`Chain`]), a limiter that turns a burst of
//! like errors into one line and a count ([`Repeats`]), and whether
//! pyzord's usage log is written anywhere ([`usage_log`]).
//!
//! Installing the subscribers stays in `cli`; this module only shapes
//! lines. Nothing here ever formats a key or a password: callers hand it
//! errors whose texts carry none.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The log target of pyzord's usage lines, one per request (pyzor's
/// `pyzord-usage` logger, written to its UsageLogFile).
pub const USAGE_TARGET: &str = "pyzord-usage";

/// Whether pyzord's usage lines are written anywhere, as the daemon's log
/// set-up said ([`set_usage_log`]); `USAGE_UNSET` until then.
static USAGE_LOG: AtomicU8 = AtomicU8::new(USAGE_UNSET);
const USAGE_UNSET: u8 = 0;
const USAGE_OFF: u8 = 1;
const USAGE_ON: u8 = 2;

/// Says whether the usage lines ([`USAGE_TARGET`]) go anywhere: the
/// daemon's log set-up calls it once.
pub fn set_usage_log(on: bool) {
    let value = if on { USAGE_ON } else { USAGE_OFF };
    USAGE_LOG.store(value, Ordering::Relaxed);
}

/// Whether a request's usage line is worth making. Set once by the
/// daemon, rather than asked of tracing for each request: with per-layer
/// filters, a `tracing::enabled!` query that no event follows leaves the
/// thread's filter state behind, and the next event on that thread (a
/// database failure's error line) is dropped by every layer that refused
/// the query (tokio-rs/tracing#2519). Unset (the library used without the
/// daemon's set-up), tracing is asked.
pub fn usage_log() -> bool {
    match USAGE_LOG.load(Ordering::Relaxed) {
        USAGE_ON => true,
        USAGE_OFF => false,
        _ => tracing::enabled!(target: USAGE_TARGET, tracing::Level::INFO),
    }
}

/// An error and its causes, `what failed: why: why`, for a log line.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(out, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// How long like errors are counted before the next one is logged: the
/// first is logged at once, those within this window after it only as a
/// count on the next line logged.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// The most kinds of error a [`Repeats`] remembers; past it, the kinds
/// whose window ended are forgotten.
const MAX_KINDS: usize = 1024;

/// Rate limits log lines by kind (a server, an engine): at most one line
/// per kind and [`REPEAT_WINDOW`], which says how many were left out.
#[derive(Debug, Default)]
pub struct Repeats {
    kinds: Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    logged: Instant,
    left_out: u64,
}

/// What [`Repeats::admit`] lets through: the line is logged, and says how
/// many like it were left out since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub left_out: u64,
    pub over_secs: u64,
}

impl fmt::Display for Admitted {
    /// Nothing, or ` (N more like this in the last M s)`.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.left_out > 0 {
            write!(
                out,
                " ({} more like this in the last {} s)",
                self.left_out, self.over_secs
            )?;
        }
        Ok(())
    }
}

impl Repeats {
    /// Whether a line of this kind is logged now (`Some`, with the count
    /// to append) or only counted (`None`).
    pub fn admit(&self, kind: &str, now: Instant) -> Option<Admitted> {
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(window) = kinds.get_mut(kind) {
            let since = now.saturating_duration_since(window.logged);
            if since < REPEAT_WINDOW {
                window.left_out += 1;
                return None;
            }
            let admitted = Admitted {
                left_out: window.left_out,
                over_secs: since.as_secs(),
            };
            *window = Window {
                logged: now,
                left_out: 0,
            };
            return Some(admitted);
        }
        if kinds.len() >= MAX_KINDS {
            kinds.retain(|_, window| now.saturating_duration_since(window.logged) < REPEAT_WINDOW);
        }
        if kinds.len() < MAX_KINDS {
            let window = Window {
                logged: now,
                left_out: 0,
            };
            kinds.insert(kind.to_owned(), window);
        }
        Some(Admitted {
            left_out: 0,
            over_secs: 0,
        })
    }
}

/// Runs `body` with its log lines (every level, no time stamps or
/// colours) captured, and returns them: for tests asserting exact lines.
#[cfg(test)]
pub fn captured(body: impl FnOnce()) -> String {
    use std::sync::Arc;
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut lines = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            lines.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::with_default(subscriber, body);
    let bytes = lines
        .0
        .lock()
        .map(|bytes| bytes.clone())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot commit")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_writes_every_cause() {
        let error = Outer(std::io::Error::other("disk full"));
        assert_eq!(Chain(&error).to_string(), "cannot commit: disk full");
    }

    #[test]
    fn repeats_log_the_first_then_one_line_with_the_count() {
        let repeats = Repeats::default();
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let first = repeats.admit("db", at(0)).expect("the first is logged");
        assert_eq!(first.to_string(), "");
        assert_eq!(repeats.admit("db", at(10)), None);
        assert_eq!(repeats.admit("db", at(9_000)), None);
        assert!(repeats.admit("other", at(9_000)).is_some());
        let next = repeats.admit("db", at(12_500)).expect("the window ended");
        assert_eq!(next.to_string(), " (2 more like this in the last 12 s)");
        assert_eq!(repeats.admit("db", at(12_600)), None);
    }
}
