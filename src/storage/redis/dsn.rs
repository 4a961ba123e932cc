//! Redis DSNs: pyzor's `host,port,password,db` (a host with `/` is a Unix
//! socket) and the URLs of the deployments pyzor's own engine cannot reach:
//!
//! - `redis://[user[:password]@]host[:port][/db]`, `rediss://...` for TLS
//!   with the options `ca`, `cert` and `key` (PEM files),
//! - `unix:///path/redis.sock[?db=N&user=U&password=P]`,
//! - `redis+sentinel://[user[:password]@]host:port[,host:port...]/MASTER[/db]`
//!   (`rediss+sentinel://` with TLS to the sentinels and the master),
//! - `redis+cluster://[user[:password]@]host:port[,host:port...]`
//!   (`rediss+cluster://` with TLS).
//!
//! The user and password are the Redis ACL user's (`AUTH user password`);
//! `%XX` escapes allow any byte in them. Parsing reads no file, so that
//! [`redacted`] and the parser can be fuzzed; a password is never part of
//! an error.

use std::path::PathBuf;

use crate::storage::StorageError;

/// pyzor's defaults for empty DSN fields (`redis_.py`).
const DEFAULT_HOST: &str = "localhost";
/// Redis's port.
pub const DEFAULT_PORT: u16 = 6379;
/// Redis Sentinel's port.
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// A parsed Redis DSN.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisDsn {
    pub target: Target,
    /// The ACL user; `None` is Redis's `default` user.
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    /// TLS (`rediss`), with the PEM files given.
    pub tls: Option<TlsFiles>,
}

/// Never shows the password.
impl std::fmt::Debug for RedisDsn {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisDsn")
            .field("target", &self.target)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Where the data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server over TCP.
    Tcp(Node),
    /// One server on its Unix socket.
    Unix(PathBuf),
    /// The master that these sentinels name `master`.
    Sentinel {
        sentinels: Vec<Node>,
        master: String,
    },
    /// A Redis Cluster, its slot map learned from these nodes.
    Cluster(Vec<Node>),
}

/// A host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

/// The PEM files of a TLS connection: the CA that signed the server's
/// certificate (the system's roots without it), and the client's own
/// certificate and key for servers that ask for one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The URL schemes: (scheme, TLS, what they name).
const SCHEMES: [(&str, bool, Kind); 7] = [
    ("redis", false, Kind::Single),
    ("rediss", true, Kind::Single),
    ("unix", false, Kind::Unix),
    ("redis+sentinel", false, Kind::Sentinel),
    ("rediss+sentinel", true, Kind::Sentinel),
    ("redis+cluster", false, Kind::Cluster),
    ("rediss+cluster", true, Kind::Cluster),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Single,
    Unix,
    Sentinel,
    Cluster,
}

/// Parses a Redis DSN in any of the forms above.
pub fn parse_dsn(dsn: &str) -> Result<RedisDsn, StorageError> {
    let invalid = |why| StorageError::InvalidDsn {
        dsn: redacted(dsn),
        why,
    };
    match dsn.split_once("://") {
        Some((scheme, rest)) => parse_url(scheme, rest).map_err(invalid),
        None => parse_pyzor(dsn).map_err(invalid),
    }
}

/// pyzor's `host,port,password,db`.
fn parse_pyzor(dsn: &str) -> Result<RedisDsn, &'static str> {
    let parts: Vec<&str> = dsn.split(',').collect();
    let [host, port, password, db] = parts[..] else {
        return Err("expected host,port,password,db or a redis:// URL");
    };
    let host = if host.is_empty() { DEFAULT_HOST } else { host };
    let port = if port.is_empty() {
        DEFAULT_PORT
    } else {
        port.parse().map_err(|_| "the port is not a number")?
    };
    let target = if host.contains('/') {
        Target::Unix(host.into())
    } else {
        Target::Tcp(Node {
            host: host.to_owned(),
            port,
        })
    };
    Ok(RedisDsn {
        target,
        username: None,
        password: (!password.is_empty()).then(|| password.to_owned()),
        db: parse_db(db)?,
        tls: None,
    })
}

fn parse_db(db: &str) -> Result<i64, &'static str> {
    if db.is_empty() {
        return Ok(0);
    }
    match db.parse() {
        Ok(db) if db >= 0 => Ok(db),
        _ => Err("the database is not a number"),
    }
}

fn parse_url(scheme: &str, rest: &str) -> Result<RedisDsn, &'static str> {
    let Some(&(_, tls, kind)) = SCHEMES.iter().find(|(name, ..)| *name == scheme) else {
        return Err("unknown scheme (redis, rediss, unix, redis+sentinel, redis+cluster)");
    };
    let mut dsn = RedisDsn {
        target: Target::Unix(PathBuf::new()),
        username: None,
        password: None,
        db: 0,
        tls: tls.then(TlsFiles::default),
    };
    let (path, query) = if kind == Kind::Unix {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !path.starts_with('/') {
            return Err("a unix:// URL needs an absolute path, unix:///path/redis.sock");
        }
        dsn.target = Target::Unix(decode(path)?.into());
        ("", query)
    } else {
        // The password may hold any character but `@` unescaped: the
        // user information ends at the last `@`.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            dsn.username = Some(decode(user)?).filter(|user| !user.is_empty());
            dsn.password = password.map(decode).transpose()?;
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let default_port = if kind == Kind::Sentinel {
            DEFAULT_SENTINEL_PORT
        } else {
            DEFAULT_PORT
        };
        let nodes = hosts
            .split(',')
            .map(|host| parse_node(host, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        dsn.target = match kind {
            Kind::Single => match <[Node; 1]>::try_from(nodes) {
                Ok([node]) => Target::Tcp(node),
                Err(_) => {
                    return Err("one host only (several are for redis+sentinel or redis+cluster)");
                }
            },
            Kind::Cluster => Target::Cluster(nodes),
            Kind::Sentinel | Kind::Unix => Target::Sentinel {
                sentinels: nodes,
                master: String::new(),
            },
        };
        (path, query)
    };
    apply_path(&mut dsn, kind, path)?;
    for option in query.split('&').filter(|option| !option.is_empty()) {
        apply_option(&mut dsn, kind, option)?;
    }
    if let Some(tls) = &dsn.tls
        && tls.cert.is_some() != tls.key.is_some()
    {
        return Err("the cert and key options go together");
    }
    if matches!(dsn.target, Target::Cluster(_)) && dsn.db != 0 {
        return Err("a Redis Cluster has database 0 only");
    }
    Ok(dsn)
}

/// The path after the hosts: `/db`, or `/MASTER[/db]` for sentinels.
fn apply_path(dsn: &mut RedisDsn, kind: Kind, path: &str) -> Result<(), &'static str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    match (&mut dsn.target, kind) {
        (Target::Sentinel { master, .. }, Kind::Sentinel) => {
            let (name, db) = path.split_once('/').unwrap_or((path, ""));
            if name.is_empty() {
                return Err("the master's name is missing, redis+sentinel://host:port/MASTER");
            }
            *master = decode(name)?;
            dsn.db = parse_db(db)?;
        }
        _ => dsn.db = parse_db(path)?,
    }
    Ok(())
}

/// One `name=value` of the query.
fn apply_option(dsn: &mut RedisDsn, kind: Kind, option: &str) -> Result<(), &'static str> {
    let (name, value) = option.split_once('=').unwrap_or((option, ""));
    let value = decode(value)?;
    match (name, &mut dsn.tls) {
        ("db", _) => dsn.db = parse_db(&value)?,
        ("user", _) if kind == Kind::Unix => dsn.username = Some(value),
        ("password", _) if kind == Kind::Unix => dsn.password = Some(value),
        ("ca", Some(tls)) => tls.ca = Some(value.into()),
        ("cert", Some(tls)) => tls.cert = Some(value.into()),
        ("key", Some(tls)) => tls.key = Some(value.into()),
        ("ca" | "cert" | "key", None) => return Err("TLS options need a rediss:// URL"),
        _ => return Err("unknown option (db, ca, cert, key; user and password for unix://)"),
    }
    Ok(())
}

/// `host`, `host:port` or `[v6]:port`.
fn parse_node(text: &str, default_port: u16) -> Result<Node, &'static str> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, rest) = rest
            .split_once(']')
            .ok_or("an IPv6 address without its ]")?;
        (host, rest.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("a host is missing");
    }
    let port = match port {
        None | Some("") => default_port,
        Some(port) => port.parse().map_err(|_| "the port is not a number")?,
    };
    Ok(Node {
        host: host.to_owned(),
        port,
    })
}

/// Undoes `%XX` escapes.
fn decode(text: &str) -> Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or("a % escape is not %XX")?;
            out.push(hex);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a % escape is not UTF-8")
}

/// The DSN with its password, in any form, replaced by `***`, for log lines
/// and errors.
pub fn redacted(dsn: &str) -> String {
    let Some((scheme, rest)) = dsn.split_once("://") else {
        return super::super::redacted_dsn(dsn);
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) if scheme != "unix" => (Some(userinfo), rest),
        _ => (None, rest),
    };
    let mut shown = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => shown.push_str(&format!("{user}:***@")),
            None => shown.push_str(&format!("{userinfo}@")),
        }
    }
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    shown.push_str(rest);
    if let Some(query) = query {
        let options: Vec<String> = query
            .split('&')
            .map(|option| match option.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => option.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&options.join("&"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> Node {
        Node {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn pyzor_dsn_fields_default_as_in_pyzor() {
        let dsn = parse_dsn(",,,").expect("valid");
        assert_eq!(dsn.target, Target::Tcp(node("localhost", 6379)));
        assert_eq!((dsn.db, dsn.password, dsn.tls), (0, None, None));
        let dsn = parse_dsn("/run/redis.sock,,secret,2").expect("valid");
        assert_eq!(dsn.target, Target::Unix("/run/redis.sock".into()));
        assert_eq!((dsn.db, dsn.password.as_deref()), (2, Some("secret")));
    }

    #[test]
    fn pyzor_dsn_with_three_fields_is_refused() {
        assert!(matches!(
            parse_dsn("localhost,6379,"),
            Err(StorageError::InvalidDsn { .. })
        ));
    }

    #[test]
    fn urls_name_user_password_db_and_tls_files() {
        let dsn = parse_dsn(
            "rediss://pyzord:p%40ss:w@redis.example:6380/3?ca=/etc/ca.pem&cert=/c&key=/k",
        )
        .expect("valid");
        assert_eq!(dsn.target, Target::Tcp(node("redis.example", 6380)));
        assert_eq!(dsn.username.as_deref(), Some("pyzord"));
        assert_eq!(dsn.password.as_deref(), Some("p@ss:w"));
        assert_eq!(dsn.db, 3);
        assert_eq!(
            dsn.tls,
            Some(TlsFiles {
                ca: Some("/etc/ca.pem".into()),
                cert: Some("/c".into()),
                key: Some("/k".into()),
            })
        );
        let dsn = parse_dsn("redis://[::1]").expect("valid");
        assert_eq!(dsn.target, Target::Tcp(node("::1", 6379)));
        let dsn = parse_dsn("unix:///run/redis/redis.sock?db=4&user=u&password=p").expect("valid");
        assert_eq!(dsn.target, Target::Unix("/run/redis/redis.sock".into()));
        assert_eq!(
            (dsn.db, dsn.username.as_deref(), dsn.password.as_deref()),
            (4, Some("u"), Some("p"))
        );
    }

    #[test]
    fn sentinel_and_cluster_urls_list_their_nodes() {
        let dsn = parse_dsn("redis+sentinel://:pw@s1:26380,s2,s3:1/mymaster/2").expect("valid");
        assert_eq!(
            dsn.target,
            Target::Sentinel {
                sentinels: vec![node("s1", 26380), node("s2", 26379), node("s3", 1)],
                master: "mymaster".into(),
            }
        );
        assert_eq!(
            (dsn.username, dsn.password.as_deref(), dsn.db),
            (None, Some("pw"), 2)
        );
        let dsn = parse_dsn("redis+cluster://u:pw@a:7000,b:7001").expect("valid");
        assert_eq!(
            dsn.target,
            Target::Cluster(vec![node("a", 7000), node("b", 7001)])
        );
    }

    #[test]
    fn bad_urls_say_why_without_the_password() {
        let cases = [
            ("redis://u:hunter2@a,b", "one host only"),
            (
                "redis+sentinel://u:hunter2@a",
                "the master's name is missing",
            ),
            ("redis+cluster://u:hunter2@a/1", "database 0 only"),
            (
                "redis://u:hunter2@a?ca=/x",
                "TLS options need a rediss:// URL",
            ),
            (
                "rediss://u:hunter2@a?cert=/x",
                "the cert and key options go together",
            ),
            ("redis://u:hunter2@a:port", "the port is not a number"),
            ("memcache://u:hunter2@a", "unknown scheme"),
            ("unix:///s?password=hunter2&x=1", "unknown option"),
        ];
        for (dsn, why) in cases {
            let error = parse_dsn(dsn).expect_err(dsn).to_string();
            assert!(error.contains(why), "{dsn}: {error}");
            assert!(!error.contains("hunter2"), "{dsn}: {error}");
            assert!(error.contains("***"), "{dsn}: {error}");
        }
    }

    #[test]
    fn redaction_hides_every_password_form() {
        assert_eq!(redacted("h,1,pw,0"), "h,1,***,0");
        assert_eq!(redacted("redis://u:pw@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redacted("redis://u@h"), "redis://u@h");
        assert_eq!(
            redacted("unix:///s?db=1&password=pw"),
            "unix:///s?db=1&password=***"
        );
        assert_eq!(redacted("redis://:p@w@h"), "redis://:***@h");
        assert_eq!(redacted("redis://u:p/a?s@h/1"), "redis://u:***@h/1");
        let dsn = parse_dsn("redis://u:p/a?s@h/1").expect("valid");
        assert_eq!(dsn.password.as_deref(), Some("p/a?s"));
    }
}
