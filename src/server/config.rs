//! pyzord's configuration: Python pyzord's defaults, then the `[server]`
//! section of `<homedir>/config` (read leniently, as ConfigParser reads it,
//! with a warning for each line skipped), then the command line. File names
//! are made absolute against the homedir as pyzord's `expand_homefiles`.
//!
//! One difference on purpose: with no engine named, ours is the embedded
//! SQLite file `pyzord.sqlite`, not gdbm's `pyzord.db`; a homedir that
//! names gdbm (or holds an unnamed `pyzord.db`) is refused with the exact
//! `migrate` command, never served from a new empty database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::storage::sqlite::DEFAULT_FILE_NAME;
use crate::storage::{Durability, EngineName};

/// pyzord's defaults (`load_configuration` in Python's `pyzord`).
pub const DEFAULT_PORT: u16 = 24441;
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    })
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
