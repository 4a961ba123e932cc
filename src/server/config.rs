//! pyzord's configuration: Python pyzord's defaults, then the `[server]`
//! section of `<homedir>/config` (read leniently, as ConfigParser reads it,
//! with a warning for each line skipped), then the command line. File names
//! are made absolute against the homedir as pyzord's `expand_homefiles`.
//!
//! Keys of ours (metrics, SQLite durability, rate limiting, the replay
//! cache) live in the same `[server]` section: Python pyzord's
//! `load_configuration` reads the file with ConfigParser and only ever asks
//! for its own keys, so the homedir stays shared with it.
//!
//! One difference on purpose: with no engine named, ours is the embedded
//! SQLite file `pyzord.sqlite`, not gdbm's `pyzord.db`; a homedir that
//! names gdbm (or holds an unnamed `pyzord.db`) is refused with the exact
//! `migrate` command, never served from a new empty database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::limits::{self, RateLimit};
use super::replay;
use crate::storage::sqlite::DEFAULT_FILE_NAME;
use crate::storage::{Durability, EngineName};

/// pyzord's defaults (`load_configuration` in Python's `pyzord`).
pub use crate::protocol::DEFAULT_PORT;
/// pyzord listens on every IPv4 address by default.
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0";
/// pyzord's CleanupAge: `60 * 60 * 24 * 30 * 4`, about four months.
pub const DEFAULT_CLEANUP_AGE_SECS: u64 = 60 * 60 * 24 * 30 * 4;
/// pyzord's gdbm file, which ours does not open.
pub const GDBM_FILE_NAME: &str = "pyzord.db";
const DEFAULT_PASSWD_FILE: &str = "pyzord.passwd";
const DEFAULT_ACCESS_FILE: &str = "pyzord.access";
const DEFAULT_PID_FILE: &str = "pyzord.pid";
/// How often the request counters are logged (ours; 0 turns it off).
pub const DEFAULT_METRICS_LOG_INTERVAL_SECS: u64 = 300;

/// Without `RateLimitBurst`, a source may send this many seconds' worth of
/// its rate at once (ours: a client's retry doubles a burst).
pub const DEFAULT_RATE_LIMIT_BURST_SECS: f64 = 2.0;

/// The most signed requests `ReplayCacheSize` may ask for: about 100 bytes
/// each, some 200 MB when full (6,990 signed requests a second sustained
/// over pyzor's 300-second window). Past it pyzord refuses to start.
pub const MAX_REPLAY_CACHE_SIZE: usize = 1 << 21;

/// The most replicas `RedisWait` may ask for: more than a Redis master
/// serves in practice, and a typo such as 1000 is refused.
pub const MAX_REDIS_WAIT: usize = 64;

/// Settings Python pyzord has that a tokio server does not need; accepted,
/// and logged as not needed.
pub const IGNORED_SETTINGS: [&str; 8] = [
    "threads",
    "maxthreads",
    "processes",
    "maxprocesses",
    "dbconnections",
    "prefork",
    "gevent",
    "sentrydsn",
];

/// The validated server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub homedir: PathBuf,
    pub listen_address: String,
    pub port: u16,
    pub engine: EngineName,
    /// The engine's DSN; a file name is absolute.
    pub dsn: String,
    pub cleanup_age_secs: u64,
    pub passwd_file: PathBuf,
    pub access_file: PathBuf,
    pub log_file: Option<PathBuf>,
    pub usage_log_file: Option<PathBuf>,
    pub pid_file: PathBuf,
    pub forward_client_homedir: Option<PathBuf>,
    /// Ours: where to serve the metrics over HTTP (`MetricsAddress`).
    pub metrics_address: Option<String>,
    /// Ours: how often to log the counters (`MetricsLogInterval`).
    pub metrics_log_interval_secs: u64,
    /// Ours: `SqliteSynchronous = NORMAL` (the default) or `FULL`.
    pub durability: Durability,
    /// Ours: per-source rate limiting (`RateLimit`, `RateLimitBurst`,
    /// `RateLimitSources`), off unless `RateLimit` is above 0.
    pub rate_limit: Option<RateLimit>,
    /// Ours: how many signed requests the replay cache holds
    /// (`ReplayCacheSize`).
    pub replay_cache_size: usize,
    /// Ours: how many Redis replicas must confirm a report before it is
    /// acknowledged (`RedisWait`), 0 for none.
    pub redis_wait: u32,
}

/// What can be wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read \"{path}\"")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {key} \"{value}\": {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("invalid {key} \"{value}\": not a whole number of {unit} from {min} to {max}")]
    OutOfRange {
        key: &'static str,
        value: String,
        unit: &'static str,
        min: usize,
        max: usize,
    },
    #[error("unknown database engine \"{0}\": ours serves sqlite, redis and mysql")]
    UnknownEngine(String),
    #[error(
        "the gdbm database \"{gdbm}\" is Python pyzord's and is not served here; import it once with\n  \
         pyzor-milter migrate --se gdbm --sd {gdbm} --de sqlite --dd {sqlite}\n\
         then set \"Engine = sqlite\" and \"DigestDB = {sqlite}\" in the [server] section of {config}"
    )]
    GdbmNotServed {
        gdbm: String,
        sqlite: String,
        config: String,
    },
}

/// Reads the `[server]` section of a ConfigParser file: `key = value` or
/// `key: value`, keys case-insensitive, later values replacing earlier ones.
pub fn parse_ini_section(text: &str, section: &str) -> HashMap<String, String> {
    let mut values = HashMap::new();
    let mut current: Option<String> = None;
    let mut last_key: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let (Some(key), Some(name)) = (&last_key, &current)
                && name.eq_ignore_ascii_case(section)
                && let Some(value) = values.get_mut(key)
            {
                let value: &mut String = value;
                value.push('\n');
                value.push_str(trimmed);
            }
            continue;
        }
        if let Some(name) = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            current = Some(name.to_owned());
            last_key = None;
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            tracing::warn!(
                line = number + 1,
                "config line without a value skipped: {line:?}"
            );
            continue;
        };
        let in_section = current.as_deref().is_some_and(|name| name == section);
        if in_section {
            let key = trimmed[..split].trim().to_lowercase();
            values.insert(key.clone(), trimmed[split + 1..].trim().to_owned());
            last_key = Some(key);
        }
    }
    values
}

/// Builds the configuration from the homedir's config file and the
/// command-line overrides (lower-case ConfigParser keys → values).
pub fn load(
    homedir: &Path,
    overrides: &HashMap<String, String>,
) -> Result<ServerConfig, ConfigError> {
    let config_path = homedir.join("config");
    let mut values = match std::fs::read_to_string(&config_path) {
        Ok(text) => parse_ini_section(&text, "server"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: config_path,
                source,
            });
        }
    };
    values.extend(
        overrides
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    for key in IGNORED_SETTINGS {
        if let Some(value) = values.get(key) {
            tracing::info!("{key} = {value} is not needed by this server and is ignored");
        }
    }
    let get = |key: &str| values.get(key).filter(|value| !value.is_empty()).cloned();
    let home_file = |value: String| -> PathBuf {
        let expanded = expand_user(&value);
        if expanded.is_absolute() {
            expanded
        } else {
            homedir.join(expanded)
        }
    };

    let port = match get("port") {
        None => DEFAULT_PORT,
        Some(port) => port.trim().parse().map_err(|_| ConfigError::Invalid {
            key: "Port",
            value: port,
            why: "not a port number",
        })?,
    };
    let cleanup_age_secs = match get("cleanupage") {
        None => DEFAULT_CLEANUP_AGE_SECS,
        Some(age) => age.trim().parse().map_err(|_| ConfigError::Invalid {
            key: "CleanupAge",
            value: age,
            why: "not a number of seconds",
        })?,
    };
    let metrics_log_interval_secs = match get("metricsloginterval") {
        None => DEFAULT_METRICS_LOG_INTERVAL_SECS,
        Some(secs) => secs.trim().parse().map_err(|_| ConfigError::Invalid {
            key: "MetricsLogInterval",
            value: secs,
            why: "not a number of seconds",
        })?,
    };
    let durability = match get("sqlitesynchronous").map(|value| value.to_ascii_uppercase()) {
        None => Durability::default(),
        Some(value) if value == "FULL" => Durability::Disk,
        Some(value) if value == "NORMAL" => Durability::Process,
        Some(value) => {
            return Err(ConfigError::Invalid {
                key: "SqliteSynchronous",
                value,
                why: "expected FULL or NORMAL",
            });
        }
    };
    let rate_limit = rate_limit(&get)?;
    let replay_cache_size = whole_number(
        get("replaycachesize"),
        ("ReplayCacheSize", "requests"),
        replay::DEFAULT_CAPACITY,
        1..=MAX_REPLAY_CACHE_SIZE,
    )?;
    let redis_wait = whole_number(
        get("rediswait"),
        ("RedisWait", "replicas"),
        0,
        0..=MAX_REDIS_WAIT,
    )?;
    let redis_wait = u32::try_from(redis_wait).expect("at most MAX_REDIS_WAIT");
    let named_engine = get("engine");
    let engine = match named_engine.as_deref() {
        None => EngineName::Sqlite,
        Some(name) => {
            EngineName::parse(name).map_err(|_| ConfigError::UnknownEngine(name.into()))?
        }
    };
    let dsn = match (engine, get("digestdb")) {
        (EngineName::Sqlite, None) => home_file(DEFAULT_FILE_NAME.into()),
        (EngineName::Gdbm, None) => home_file(GDBM_FILE_NAME.into()),
        (_, None) => PathBuf::new(),
        (engine, Some(dsn)) if engine.dsn_is_file() => home_file(dsn),
        (_, Some(dsn)) => PathBuf::from(dsn),
    };
    let sqlite_file = home_file(DEFAULT_FILE_NAME.into());
    let unnamed_gdbm =
        named_engine.is_none() && homedir.join(GDBM_FILE_NAME).exists() && !sqlite_file.exists();
    if redis_wait > 0 && engine != EngineName::Redis {
        return Err(ConfigError::Invalid {
            key: "RedisWait",
            value: redis_wait.to_string(),
            why: "needs Engine = redis",
        });
    }
    if engine == EngineName::Gdbm || unnamed_gdbm {
        let gdbm = if engine == EngineName::Gdbm {
            dsn.display().to_string()
        } else {
            homedir.join(GDBM_FILE_NAME).display().to_string()
        };
        return Err(ConfigError::GdbmNotServed {
            gdbm,
            sqlite: sqlite_file.display().to_string(),
            config: config_path.display().to_string(),
        });
    }
    Ok(ServerConfig {
        homedir: homedir.to_owned(),
        listen_address: get("listenaddress").unwrap_or_else(|| DEFAULT_LISTEN_ADDRESS.into()),
        port,
        engine,
        dsn: dsn.display().to_string(),
        cleanup_age_secs,
        passwd_file: home_file(get("passwdfile").unwrap_or_else(|| DEFAULT_PASSWD_FILE.into())),
        access_file: home_file(get("accessfile").unwrap_or_else(|| DEFAULT_ACCESS_FILE.into())),
        log_file: get("logfile").map(home_file),
        usage_log_file: get("usagelogfile").map(home_file),
        pid_file: home_file(get("pidfile").unwrap_or_else(|| DEFAULT_PID_FILE.into())),
        forward_client_homedir: get("forwardclienthomedir").map(|dir| expand_user(&dir)),
        metrics_address: get("metricsaddress"),
        metrics_log_interval_secs,
        durability,
        rate_limit,
        replay_cache_size,
        redis_wait,
    })
}

/// A whole number within `range`, or `default` when the key is not set;
/// `key` is its name and `unit` what it counts.
fn whole_number(
    value: Option<String>,
    (key, unit): (&'static str, &'static str),
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.trim().parse::<usize>() {
        Ok(number) if range.contains(&number) => Ok(number),
        _ => Err(ConfigError::OutOfRange {
            key,
            value: text,
            unit,
            min: *range.start(),
            max: *range.end(),
        }),
    }
}

/// A finite number above 0.
fn positive(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|value| value.is_finite() && *value > 0.0)
}

/// `RateLimit` (datagrams per second per source, 0 for none),
/// `RateLimitBurst` and `RateLimitSources`.
fn rate_limit(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<RateLimit>, ConfigError> {
    // Checked even when no limit is on, so that a wrong value is never
    // silently kept for the day the limit is turned on.
    let max_sources = whole_number(
        get("ratelimitsources"),
        ("RateLimitSources", "sources"),
        limits::DEFAULT_MAX_SOURCES,
        2..=limits::MAX_SOURCES,
    )?;
    let per_second = match get("ratelimit") {
        None => return Ok(None),
        Some(rate) if rate.trim().parse::<f64>() == Ok(0.0) => return Ok(None),
        Some(rate) => positive(&rate).ok_or(ConfigError::Invalid {
            key: "RateLimit",
            value: rate,
            why: "not a number of datagrams per second",
        })?,
    };
    let burst = match get("ratelimitburst") {
        None => (per_second * DEFAULT_RATE_LIMIT_BURST_SECS).ceil().max(1.0),
        Some(burst) => {
            positive(&burst)
                .filter(|burst| *burst >= 1.0)
                .ok_or(ConfigError::Invalid {
                    key: "RateLimitBurst",
                    value: burst,
                    why: "not a number of datagrams, at least 1",
                })?
        }
    };
    Ok(Some(RateLimit {
        per_second,
        burst,
        max_sources,
    }))
}

/// `os.path.expanduser` for a leading `~/`.
fn expand_user(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_server_section_counts_and_keys_ignore_case() {
        let values = parse_ini_section(
            "[client]\nPort = 1\n[server]\nPORT = 2\nEngine: redis\n# x\n",
            "server",
        );
        assert_eq!(values.get("port").map(String::as_str), Some("2"));
        assert_eq!(values.get("engine").map(String::as_str), Some("redis"));
    }

    #[test]
    fn gdbm_homedir_is_refused_with_the_migrate_command() {
        let dir = std::env::temp_dir().join(format!("pyzord-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("config"), "[server]\nEngine = gdbm\n").expect("write");
        let error = load(&dir, &HashMap::new()).expect_err("gdbm refused");
        let text = error.to_string();
        assert!(
            text.contains("pyzor-milter migrate --se gdbm --sd "),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_are_pyzords() {
        let dir = std::env::temp_dir().join(format!("pyzord-defaults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = load(&dir, &HashMap::new()).expect("valid");
        assert_eq!(
            (
                config.port,
                config.listen_address.as_str(),
                config.cleanup_age_secs
            ),
            (24441, "0.0.0.0", 10_368_000)
        );
        assert_eq!(config.dsn, dir.join("pyzord.sqlite").display().to_string());
        assert_eq!(config.rate_limit, None);
        assert_eq!(config.replay_cache_size, 262_144);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rate_limit_keys_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("pyzord-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("config"), "[server]\nRateLimit = 2.5\n").expect("write");
        let config = load(&dir, &HashMap::new()).expect("valid");
        assert_eq!(
            config.rate_limit,
            Some(RateLimit {
                per_second: 2.5,
                burst: 5.0,
                max_sources: 65_536
            })
        );
        let overrides = HashMap::from([
            ("ratelimitburst".to_owned(), "1".to_owned()),
            ("ratelimitsources".to_owned(), "100".to_owned()),
        ]);
        let config = load(&dir, &overrides).expect("valid");
        assert_eq!(
            config
                .rate_limit
                .map(|limit| (limit.burst, limit.max_sources)),
            Some((1.0, 100))
        );
        let zero = HashMap::from([("ratelimit".to_owned(), "0".to_owned())]);
        assert_eq!(load(&dir, &zero).expect("valid").rate_limit, None);
        let bad = HashMap::from([("ratelimitburst".to_owned(), "0.5".to_owned())]);
        let error = load(&dir, &bad).expect_err("burst below 1");
        assert_eq!(
            error.to_string(),
            "invalid RateLimitBurst \"0.5\": not a number of datagrams, at least 1"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_past_their_maximum_are_refused() {
        let dir = std::env::temp_dir().join(format!("pyzord-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let refused = |key: &str, value: &str| {
            let overrides = HashMap::from([(key.to_owned(), value.to_owned())]);
            load(&dir, &overrides).expect_err("too large").to_string()
        };
        assert_eq!(
            refused("ratelimitsources", "1000000000000"),
            "invalid RateLimitSources \"1000000000000\": not a whole number of sources from 2 \
             to 1048576"
        );
        assert_eq!(
            refused("replaycachesize", "1048576000"),
            "invalid ReplayCacheSize \"1048576000\": not a whole number of requests from 1 to \
             2097152"
        );
        assert_eq!(
            refused("ratelimitsources", "99999999999999999999999"),
            "invalid RateLimitSources \"99999999999999999999999\": not a whole number of \
             sources from 2 to 1048576"
        );
        let largest = HashMap::from([
            ("ratelimit".to_owned(), "5".to_owned()),
            (
                "ratelimitsources".to_owned(),
                limits::MAX_SOURCES.to_string(),
            ),
            (
                "replaycachesize".to_owned(),
                MAX_REPLAY_CACHE_SIZE.to_string(),
            ),
        ]);
        let config = load(&dir, &largest).expect("the largest sizes are valid");
        assert_eq!(config.replay_cache_size, MAX_REPLAY_CACHE_SIZE);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
