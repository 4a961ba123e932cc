//! Logging of the `pyzor` personality, set up as pyzor's `setup_logging`:
//! stderr shows only what Python shows at CRITICAL (our `error`), or
//! everything with `-d`; `--log-file` gets `info` and up (everything with
//! `-d`), one `2024-01-31 12:00:00,123 (pid) LEVEL message` line each.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use super::python::local_time;

/// Installs the subscriber once; opening the log file is the only failure.
pub fn init(log_file: Option<&Path>, debug: bool) -> io::Result<()> {
    let (stderr_level, file_level) = if debug {
        (LevelFilter::DEBUG, LevelFilter::DEBUG)
    } else {
        (LevelFilter::ERROR, LevelFilter::INFO)
    };
    let file_layer = match log_file {
        Some(path) => {
            let file: File = OpenOptions::new().create(true).append(true).open(path)?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(Mutex::new(file))
                    .event_format(PythonFormat)
                    .with_filter(file_level),
            )
        }
        None => None,
    };
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(io::stderr)
        .event_format(PythonFormat)
        .with_filter(stderr_level);
    // A second install (tests running `run` twice) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Ok(())
}

/// Python logging's `%(asctime)s (%(process)d) %(levelname)s %(message)s`.
struct PythonFormat;

impl<S, N> FormatEvent<S, N> for PythonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seconds = i64::try_from(now.as_secs()).unwrap_or_default();
        if let Some(tm) = local_time(seconds) {
            write!(
                writer,
                "{}-{:02}-{:02} {:02}:{:02}:{:02},{:03} ",
                i64::from(tm.tm_year) + 1900,
                tm.tm_mon + 1,
                tm.tm_mday,
                tm.tm_hour,
                tm.tm_min,
                tm.tm_sec,
                now.subsec_millis()
            )?;
        }
        write!(
            writer,
            "({}) {} ",
            std::process::id(),
            event.metadata().level()
        )?;
        context
            .field_format()
            .format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
