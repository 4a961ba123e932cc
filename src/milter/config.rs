//! The milter's configuration: a strict TOML file (unknown keys, duplicate
//! keys and bad values are errors naming `path:line`) turned into one
//! validated [`Config`] with every default applied here.
//!
//! Values that need checking (sockets, server addresses, networks, SMTP
//! replies) are parsed while the file is deserialised, so that an error
//! carries the position of the offending value.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::client::{DEFAULT_REFRESH_SECS, ServerAddress, servers::DEFAULT_SERVER};

/// Where the milter looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pyzor-milter/pyzor-milter.toml";
/// Loopback, next to pyzor's 24441; Postfix and Sendmail must be told it.
pub const DEFAULT_SOCKET: &str = "inet:127.0.0.1:24440";
/// Debian's rspamd 3.4 `external_services` pyzor scanner's `default_port`.
pub const RSPAMD_DEFAULT_PORT: u16 = 5953;
/// rspamd's pyzor scanner gives up after 15 s (its `timeout`): the message
/// must be in well before that, leaving room for the Pyzor deadline.
pub const DEFAULT_RSPAMD_READ_TIMEOUT_MS: u64 = 10_000;
/// Owner and group may connect: Postfix's smtpd runs as `postfix`, which is
/// put in the milter's group.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Deadline for all servers together. Below pyzor's 5 s per server, since
/// the SMTP client waits while we ask.
pub const DEFAULT_TIMEOUT_MS: u64 = 3000;
/// Postfix's default `message_size_limit`: no larger message reaches us
/// from a stock Postfix.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10_240_000;
/// pyzor check's `--r-count` default: listed when a count exceeds it.
pub const DEFAULT_REPORT_THRESHOLD: i64 = 0;
/// pyzor check's `--wl-count` default: whitelisted when a WL-Count exceeds it.
pub const DEFAULT_WHITELIST_THRESHOLD: i64 = 0;
/// A spam wave of one message costs one query per server per minute.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 60;
/// About 10 MB of cache, and as many digests in the memo, at most.
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 100_000;
/// Postfix's default `default_process_limit` is 100 smtpd processes; leave
/// room for `non_smtpd_milters`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// RFC 3463 5.7.1, "delivery not authorized, message refused".
pub const DEFAULT_REJECT_REPLY: &str = "550 5.7.1 Message rejected as spam by Pyzor";
/// RFC 3463 4.7.1, the transient form of the above.
pub const DEFAULT_TEMPFAIL_REPLY: &str = "451 4.7.1 Message deferred by Pyzor, try again later";
/// The reason shown in `postqueue -p` and Sendmail's `mailq -qQ`.
pub const DEFAULT_QUARANTINE_REASON: &str = "listed by Pyzor";
/// The header SpamAssassin's Pyzor plugin readers look for is ours alone.
pub const DEFAULT_HEADER: &str = "X-Pyzor";
/// Loopback: mail submitted on the host itself (cron, local scripts).
pub const DEFAULT_TRUSTED_NETWORKS: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read \"{path}\"")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// What to do with a listed message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Accept with the header saying `listed`.
    #[default]
    Tag,
    Reject,
    Tempfail,
    Quarantine,
    Discard,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Tag => "tag",
            Action::Reject => "reject",
            Action::Tempfail => "tempfail",
            Action::Quarantine => "quarantine",
            Action::Discard => "discard",
        }
    }
}

/// What to do when no server answered in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail open: accept, with the header saying `error`.
    #[default]
    Accept,
    Tempfail,
}

/// Where the milter listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Socket {
    /// `inet:HOST:PORT` or `inet6:HOST:PORT` (also `inet:PORT@HOST`, as
    /// Sendmail writes it).
    Inet { host: String, port: u16 },
    /// `unix:PATH` (or `local:PATH`).
    Unix(PathBuf),
}

impl std::str::FromStr for Socket {
    type Err = String;

    fn from_str(text: &str) -> Result<Socket, String> {
        let invalid = |why: &str| format!("invalid socket \"{text}\": {why}");
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected inet:HOST:PORT, inet6:HOST:PORT or unix:PATH"))?;
        match kind {
            "unix" | "local" if !rest.is_empty() => Ok(Socket::Unix(PathBuf::from(rest))),
            "unix" | "local" => Err(invalid("missing path")),
            "inet" | "inet6" => {
                let (host, port) = if let Some((port, host)) = rest.split_once('@') {
                    (host, port)
                } else {
                    rest.rsplit_once(':')
                        .ok_or_else(|| invalid("missing port"))?
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() {
                    return Err(invalid("missing host"));
                }
                // A host name, an IPv4 or an IPv6 address (with its zone).
                let host_char = |c: char| c.is_ascii_alphanumeric() || ".-_:%".contains(c);
                if !host.chars().all(host_char) {
                    return Err(invalid("bad host"));
                }
                let port = port.parse().map_err(|_| invalid("bad port"))?;
                Ok(Socket::Inet {
                    host: host.to_owned(),
                    port,
                })
            }
            _ => Err(invalid("unknown kind, expected inet, inet6 or unix")),
        }
    }
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socket::Inet { host, port } if host.contains(':') => write!(f, "inet6:[{host}]:{port}"),
            Socket::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            Socket::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// An IP network in CIDR notation; a bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    pub address: IpAddr,
    pub prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            IpAddr::V4(_) => ip,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                self.prefix,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: u128, ip: u128, prefix: u8, bits: u8) -> bool {
    let shift = u32::from(bits - prefix);
    shift >= 128 || (net >> shift) == (ip >> shift)
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Network, String> {
        let invalid = |why: &str| format!("invalid network \"{text}\": {why}");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid("bad address"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|&prefix| prefix <= bits)
                .ok_or_else(|| invalid("bad prefix length"))?,
            None => bits,
        };
        Ok(Network { address, prefix })
    }
}

/// An SMTP reply: code, optional enhanced status code, text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: String,
    pub enhanced: Option<String>,
    pub text: String,
}

impl Reply {
    fn parse(text: &str, class: char) -> Result<Reply, String> {
        let invalid = |why: &str| format!("invalid reply \"{text}\": {why}");
        let mut words = text.splitn(2, ' ');
        let code = words.next().unwrap_or_default();
        let rest = words.next().unwrap_or_default();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) || !code.starts_with(class)
        {
            return Err(invalid(&format!("the code must be {class}XX")));
        }
        let (enhanced, text_part) = match rest.split_once(' ') {
            Some((first, tail)) if is_enhanced(first) => (Some(first), tail),
            _ if is_enhanced(rest) => (Some(rest), ""),
            _ => (None, rest),
        };
        if let Some(enhanced) = enhanced
            && !enhanced.starts_with(class)
        {
            return Err(invalid("the enhanced code's class differs from the code's"));
        }
        if text_part.contains(['\r', '\n', '\0']) {
            return Err(invalid("line breaks are not allowed"));
        }
        Ok(Reply {
            code: code.to_owned(),
            enhanced: enhanced.map(str::to_owned),
            text: text_part.to_owned(),
        })
    }
}

fn is_enhanced(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty() && part.len() <= 3 && part.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The configuration in force, defaults applied and values checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The milter's socket; `None` (`socket = ""`) runs no milter.
    pub socket: Option<Socket>,
    pub socket_mode: u32,
    /// The rspamd listener's socket; `None` (unset): off.
    pub rspamd_socket: Option<Socket>,
    pub rspamd_read_timeout: Duration,
    pub servers: Vec<ServerAddress>,
    pub accounts_file: Option<PathBuf>,
    pub timeout: Duration,
    pub resolve_refresh: Duration,
    pub action: Action,
    pub reject_threshold: Option<i64>,
    pub report_threshold: i64,
    pub whitelist_threshold: i64,
    pub min_count: i64,
    pub whitelist_factor: Option<f64>,
    pub check_empty_digest: bool,
    pub on_error: OnError,
    pub reject_reply: Reply,
    pub tempfail_reply: Reply,
    pub quarantine_reason: String,
    pub header: String,
    pub max_message_size: usize,
    pub skip_authenticated: bool,
    pub trusted_networks: Vec<Network>,
    pub skip_sender_domains: Vec<String>,
    pub skip_recipient_domains: Vec<String>,
    pub cache_ttl: Duration,
    pub cache_max_entries: usize,
    pub max_connections: usize,
    pub dry_run: bool,
}

impl Default for Config {
    fn default() -> Config {
        File::default().validate().expect("the defaults are valid")
    }
}

/// The file as written; `None` where a key is absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    socket: Option<String>,
    socket_mode: Option<String>,
    rspamd_socket: Option<String>,
    rspamd_read_timeout_ms: Option<u64>,
    servers: Option<Vec<String>>,
    accounts_file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    resolve_refresh_secs: Option<u64>,
    action: Option<Action>,
    reject_threshold: Option<i64>,
    report_threshold: Option<i64>,
    whitelist_threshold: Option<i64>,
    min_count: Option<i64>,
    whitelist_factor: Option<f64>,
    check_empty_digest: Option<bool>,
    on_error: Option<OnError>,
    reject_reply: Option<String>,
    tempfail_reply: Option<String>,
    quarantine_reason: Option<String>,
    header: Option<String>,
    max_message_size: Option<usize>,
    skip_authenticated: Option<bool>,
    trusted_networks: Option<Vec<String>>,
    skip_sender_domains: Option<Vec<String>>,
    skip_recipient_domains: Option<Vec<String>>,
    cache_ttl_secs: Option<u64>,
    cache_max_entries: Option<usize>,
    max_connections: Option<usize>,
    dry_run: Option<bool>,
}

/// A value that failed validation: which key, and why.
#[derive(Debug)]
struct Bad {
    key: &'static str,
    message: String,
}

fn bad(key: &'static str) -> impl Fn(String) -> Bad {
    move |message| Bad { key, message }
}

impl File {
    fn validate(self) -> Result<Config, Bad> {
        let socket = optional_socket(self.socket.as_deref().unwrap_or(DEFAULT_SOCKET))
            .map_err(bad("socket"))?;
        let rspamd_socket = optional_socket(self.rspamd_socket.as_deref().unwrap_or_default())
            .map_err(bad("rspamd_socket"))?;
        if socket.is_none() && rspamd_socket.is_none() {
            return Err(bad("socket")(
                "nothing to serve: socket is \"\" and rspamd_socket is not set".to_owned(),
            ));
        }
        let rspamd_read_timeout_ms = self
            .rspamd_read_timeout_ms
            .unwrap_or(DEFAULT_RSPAMD_READ_TIMEOUT_MS);
        if rspamd_read_timeout_ms == 0 {
            return Err(bad("rspamd_read_timeout_ms")(
                "invalid read timeout 0: expected at least 1 millisecond".to_owned(),
            ));
        }
        let socket_mode = match &self.socket_mode {
            Some(mode) => u32::from_str_radix(mode, 8)
                .ok()
                .filter(|&mode| mode <= 0o777)
                .ok_or_else(|| Bad {
                    key: "socket_mode",
                    message: format!(
                        "invalid socket mode \"{mode}\": expected octal such as \"0660\""
                    ),
                })?,
            None => DEFAULT_SOCKET_MODE,
        };
        let servers = match self.servers {
            Some(servers) if servers.is_empty() => {
                return Err(bad("servers")("at least one server is needed".to_owned()));
            }
            Some(servers) => servers
                .iter()
                .map(|server| parse_server(server))
                .collect::<Result<_, _>>()
                .map_err(bad("servers"))?,
            None => vec![ServerAddress::new(DEFAULT_SERVER.0, DEFAULT_SERVER.1)],
        };
        let trusted_networks = match self.trusted_networks {
            Some(networks) => networks.iter().map(|n| n.parse()).collect::<Result<_, _>>(),
            None => DEFAULT_TRUSTED_NETWORKS.iter().map(|n| n.parse()).collect(),
        }
        .map_err(bad("trusted_networks"))?;
        if let Some(factor) = self.whitelist_factor
            && !(factor.is_finite() && factor >= 0.0)
        {
            return Err(bad("whitelist_factor")(format!(
                "invalid whitelist factor {factor}: expected a number from 0"
            )));
        }
        let resolve_refresh_secs = self.resolve_refresh_secs.unwrap_or(DEFAULT_REFRESH_SECS);
        if resolve_refresh_secs == 0 {
            return Err(bad("resolve_refresh_secs")(
                "invalid refresh interval 0: expected at least 1 second".to_owned(),
            ));
        }
        let header = self.header.unwrap_or_else(|| DEFAULT_HEADER.to_owned());
        if header.is_empty() || !header.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(bad("header")(format!("invalid header name \"{header}\"")));
        }
        let reject_reply = self.reject_reply.as_deref().unwrap_or(DEFAULT_REJECT_REPLY);
        let tempfail_reply = self
            .tempfail_reply
            .as_deref()
            .unwrap_or(DEFAULT_TEMPFAIL_REPLY);
        let lower = |domains: Option<Vec<String>>| {
            domains
                .unwrap_or_default()
                .into_iter()
                .map(|domain| domain.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        Ok(Config {
            socket,
            socket_mode,
            rspamd_socket,
            rspamd_read_timeout: Duration::from_millis(rspamd_read_timeout_ms),
            servers,
            accounts_file: self.accounts_file,
            timeout: Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            resolve_refresh: Duration::from_secs(resolve_refresh_secs),
            action: self.action.unwrap_or_default(),
            reject_threshold: self.reject_threshold,
            report_threshold: self.report_threshold.unwrap_or(DEFAULT_REPORT_THRESHOLD),
            whitelist_threshold: self
                .whitelist_threshold
                .unwrap_or(DEFAULT_WHITELIST_THRESHOLD),
            min_count: self.min_count.unwrap_or(0),
            whitelist_factor: self.whitelist_factor,
            check_empty_digest: self.check_empty_digest.unwrap_or(false),
            on_error: self.on_error.unwrap_or_default(),
            reject_reply: Reply::parse(reject_reply, '5').map_err(bad("reject_reply"))?,
            tempfail_reply: Reply::parse(tempfail_reply, '4').map_err(bad("tempfail_reply"))?,
            quarantine_reason: self
                .quarantine_reason
                .unwrap_or_else(|| DEFAULT_QUARANTINE_REASON.to_owned()),
            header,
            max_message_size: self.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
            skip_authenticated: self.skip_authenticated.unwrap_or(true),
            trusted_networks,
            skip_sender_domains: lower(self.skip_sender_domains),
            skip_recipient_domains: lower(self.skip_recipient_domains),
            cache_ttl: Duration::from_secs(self.cache_ttl_secs.unwrap_or(DEFAULT_CACHE_TTL_SECS)),
            cache_max_entries: self.cache_max_entries.unwrap_or(DEFAULT_CACHE_MAX_ENTRIES),
            max_connections: self
                .max_connections
                .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                .max(1),
            dry_run: self.dry_run.unwrap_or(false),
        })
    }
}

/// A socket, or `None` for the empty string (that listener is off).
fn optional_socket(text: &str) -> Result<Option<Socket>, String> {
    if text.is_empty() {
        Ok(None)
    } else {
        text.parse().map(Some)
    }
}

/// `host:port`, `[v6]:port` or a bare host (pyzor's port).
fn parse_server(text: &str) -> Result<ServerAddress, String> {
    let invalid = |why: &str| format!("invalid server \"{text}\": {why}");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, rest) = rest
            .split_once(']')
            .ok_or_else(|| invalid("missing \"]\""))?;
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err(invalid("expected \":PORT\" after \"]\"")),
        }
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':').expect("one colon");
        (host, Some(port))
    } else {
        (text, None)
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid("bad host"));
    }
    let port = match port {
        Some(port) => port.parse().map_err(|_| invalid("bad port"))?,
        None => DEFAULT_SERVER.1,
    };
    Ok(ServerAddress::new(host, port))
}

/// Reads and checks the configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Checks the text of a configuration file; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |offset: usize, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(text, offset),
        message,
    };
    let file: File = toml::from_str(text).map_err(|error| {
        let offset = error.span().map(|span| span.start).unwrap_or_default();
        invalid(offset, error.message().trim_end().to_owned())
    })?;
    file.validate()
        .map_err(|Bad { key, message }| invalid(key_offset(text, key), message))
}

/// Line number (from 1) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Where `key` is set in the file (a strict file sets it once), or the end.
fn key_offset(text: &str, key: &str) -> usize {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return offset;
        }
        offset += line.len();
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Config, String> {
        parse(text, Path::new("m.toml")).map_err(|error| error.to_string())
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = parse_text("").expect("valid");
        assert_eq!(config, Config::default());
        assert_eq!(
            config.socket,
            Some(Socket::Inet {
                host: "127.0.0.1".into(),
                port: 24440
            })
        );
        assert_eq!(config.rspamd_socket, None);
        assert_eq!(
            config.servers,
            vec![ServerAddress::new("public.pyzor.org", 24441)]
        );
        assert_eq!(config.action, Action::Tag);
        assert_eq!(config.resolve_refresh, Duration::from_secs(300));
        let config = parse_text("resolve_refresh_secs = 2").expect("valid");
        assert_eq!(config.resolve_refresh, Duration::from_secs(2));
        assert_eq!(config.reject_reply.code, "550");
        assert_eq!(config.reject_reply.enhanced.as_deref(), Some("5.7.1"));
    }

    #[test]
    fn sample_config_lists_the_defaults() {
        let sample = include_str!("../../contrib/pyzor-milter.toml");
        assert_eq!(parse_text(sample), Ok(Config::default()));
    }

    #[test]
    fn unknown_key_names_the_line() {
        let error = parse_text("action = \"reject\"\n\nsokcet = \"unix:/x\"\n").unwrap_err();
        assert!(
            error.starts_with("m.toml:3: unknown field `sokcet`"),
            "{error}"
        );
    }

    #[test]
    fn duplicate_key_names_the_line() {
        let error = parse_text("action = \"reject\"\naction = \"tag\"\n").unwrap_err();
        assert!(error.starts_with("m.toml:2: "), "{error}");
    }

    #[test]
    fn bad_values_name_the_line() {
        let error = parse_text("servers = [\"a:1\"]\naction = \"bounce\"\n").unwrap_err();
        assert!(
            error.starts_with("m.toml:2: unknown variant `bounce`"),
            "{error}"
        );
        // Found by the milter_config fuzz target: this host printed as a
        // socket that no longer parsed.
        let error = parse_text("socket = \"inet:2@04@044[:[>:1]\"\n").unwrap_err();
        assert_eq!(
            error,
            "m.toml:1: invalid socket \"inet:2@04@044[:[>:1]\": bad host"
        );
        let error = parse_text("\nsocket = \"inet:foo\"\n").unwrap_err();
        assert_eq!(error, "m.toml:2: invalid socket \"inet:foo\": missing port");
        let error = parse_text("x = 1\n").unwrap_err();
        assert!(error.starts_with("m.toml:1: unknown field `x`"), "{error}");
        let error = parse_text("\n\ntrusted_networks = [\"10.0.0.0/33\"]").unwrap_err();
        assert_eq!(
            error,
            "m.toml:3: invalid network \"10.0.0.0/33\": bad prefix length"
        );
        let error = parse_text("\nresolve_refresh_secs = 0\n").unwrap_err();
        assert_eq!(
            error,
            "m.toml:2: invalid refresh interval 0: expected at least 1 second"
        );
        let error = parse_text("reject_reply = \"450 4.7.1 no\"").unwrap_err();
        assert_eq!(
            error,
            "m.toml:1: invalid reply \"450 4.7.1 no\": the code must be 5XX"
        );
    }

    #[test]
    fn sockets() {
        assert_eq!(
            "inet:2525@127.0.0.1".parse(),
            Ok(Socket::Inet {
                host: "127.0.0.1".into(),
                port: 2525
            })
        );
        assert_eq!(
            "inet6:[::1]:2525".parse(),
            Ok(Socket::Inet {
                host: "::1".into(),
                port: 2525
            })
        );
        assert_eq!(
            "unix:/run/m.sock".parse(),
            Ok(Socket::Unix(PathBuf::from("/run/m.sock")))
        );
        assert!("tcp:1".parse::<Socket>().is_err());
    }

    #[test]
    fn the_rspamd_listener_alone_or_beside_the_milter() {
        let config =
            parse_text("socket = \"\"\nrspamd_socket = \"inet:127.0.0.1:5953\"\n").expect("valid");
        assert_eq!(config.socket, None);
        assert_eq!(
            config.rspamd_socket,
            Some(Socket::Inet {
                host: "127.0.0.1".into(),
                port: RSPAMD_DEFAULT_PORT
            })
        );
        let config = parse_text("rspamd_socket = \"unix:/run/p/rspamd.sock\"").expect("valid");
        assert!(config.socket.is_some());
        assert_eq!(
            config.rspamd_socket,
            Some(Socket::Unix(PathBuf::from("/run/p/rspamd.sock")))
        );
        assert_eq!(
            parse_text("\nsocket = \"\"\n"),
            Err("m.toml:2: nothing to serve: socket is \"\" and rspamd_socket is not set".into())
        );
        assert_eq!(
            parse_text("rspamd_socket = \"tcp:5953\""),
            Err(
                "m.toml:1: invalid socket \"tcp:5953\": unknown kind, expected inet, inet6 or unix"
                    .into()
            )
        );
        assert_eq!(
            parse_text("rspamd_read_timeout_ms = 0"),
            Err("m.toml:1: invalid read timeout 0: expected at least 1 millisecond".into())
        );
    }

    #[test]
    fn networks() {
        let net: Network = "10.1.0.0/16".parse().expect("valid");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let all: Network = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let host: Network = "::1".parse().expect("valid");
        assert!(host.contains("::1".parse().expect("ip")));
        assert!(!host.contains("::2".parse().expect("ip")));
    }

    #[test]
    fn servers() {
        assert_eq!(parse_server("h:1"), Ok(ServerAddress::new("h", 1)));
        assert_eq!(parse_server("[::1]:5"), Ok(ServerAddress::new("::1", 5)));
        assert_eq!(parse_server("h"), Ok(ServerAddress::new("h", 24441)));
        assert!(parse_server("h:x").is_err());
    }
}
