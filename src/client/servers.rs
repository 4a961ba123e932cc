//! The client's legacy homedir files, read as Python pyzor 1.1.2 reads them:
//! `servers` (one `host:port` a line) and `accounts`
//! (`host : port : username : salt,key`).
//!
//! Pure: text in, values and the list of skipped lines out; the caller
//! logs the skipped lines and names the file.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv6Addr;

use crate::protocol::{Account, DEFAULT_PORT};
use crate::python;

/// The server Python pyzor asks when the servers file names none.
pub const DEFAULT_SERVER: (&str, u16) = ("public.pyzor.org", DEFAULT_PORT);

/// A Pyzor server as the servers file names it. The host is kept as
/// written: pyzor prints it so, and matches accounts by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
}

impl ServerAddress {
    pub fn new(host: impl Into<String>, port: u16) -> ServerAddress {
        ServerAddress {
            host: host.into(),
            port,
        }
    }

    /// `public.pyzor.org:24441`.
    pub fn default_server() -> ServerAddress {
        ServerAddress::new(DEFAULT_SERVER.0, DEFAULT_SERVER.1)
    }
}

impl fmt::Display for ServerAddress {
    /// `host:port` as Python prints it (a host read from a Python line,
    /// colons and all, reads back from its printed line); other hosts with
    /// a colon, our IPv6 literals, in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = format!("{}:{}", self.host, self.port);
        if self.host.contains(':') && !python_server_pattern(&line) {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            f.write_str(&line)
        }
    }
}

/// A line of a legacy file that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// A servers file line that Python pyzor cannot read either: it crashes on
/// it, so we refuse it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServersError {
    #[error("line {line}: invalid port in \"{text}\"")]
    BadPort { line: usize, text: String },
}

/// The servers of a servers file, in file order (duplicates kept, as
/// Python keeps them), and the non-comment lines that were skipped.
///
/// A line counts as Python's `re.match("[^#][a-zA-Z0-9.-]+:[0-9]+", line)`
/// counts it, split at its last colon. In addition, `[ipv6]:port` lines
/// are read (Python skips them).
pub fn parse_servers(text: &str) -> Result<(Vec<ServerAddress>, Vec<SkippedLine>), ServersError> {
    let mut servers = Vec::new();
    let mut skipped = Vec::new();
    for (index, line) in python::file_lines(text).enumerate() {
        let line_number = index + 1;
        let line = python::strip(line);
        if python_server_pattern(line) {
            let bad_port = || ServersError::BadPort {
                line: line_number,
                text: line.to_owned(),
            };
            let (host, port) = line.rsplit_once(':').ok_or_else(bad_port)?;
            let port = python::int(port)
                .ok()
                .and_then(|port| u16::try_from(port.saturating()).ok())
                .ok_or_else(bad_port)?;
            servers.push(ServerAddress::new(host, port));
        } else if let Some(server) = bracketed_server(line) {
            servers.push(server);
        } else if !line.is_empty() && !line.starts_with('#') {
            skipped.push(SkippedLine {
                line: line_number,
                reason: format!("not a \"host:port\" line: \"{line}\""),
            });
        }
    }
    Ok((servers, skipped))
}

/// `re.match("[^#][a-zA-Z0-9.-]+:[0-9]+", line)`: a prefix match.
fn python_server_pattern(line: &str) -> bool {
    let mut chars = line.chars();
    match chars.next() {
        None | Some('#') => return false,
        Some(_) => {}
    }
    let rest = chars.as_str();
    let name_len = rest
        .bytes()
        .take_while(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        .count();
    name_len > 0
        && rest[name_len..]
            .strip_prefix(':')
            .is_some_and(|port| port.starts_with(|c: char| c.is_ascii_digit()))
}

/// `[address]:port`, our extension for IPv6 literals (an optional `%zone`
/// after the address); other text in brackets is a skipped line, as Python
/// skips it.
fn bracketed_server(line: &str) -> Option<ServerAddress> {
    let (host, port) = line.strip_prefix('[')?.split_once("]:")?;
    let (address, zone) = host.split_once('%').unwrap_or((host, "-"));
    let zone_ok = !zone.is_empty()
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if address.parse::<Ipv6Addr>().is_err() || !zone_ok || !port.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(ServerAddress::new(host, port.parse().ok()?))
}

/// Accounts by (host, port) as written in the accounts file.
pub type Accounts = HashMap<(String, u16), Account>;

/// The accounts of an accounts file (`host : port : username : salt,key`),
/// lenient as Python's `load_accounts`: bad lines are skipped.
pub fn parse_accounts(text: &str) -> (Accounts, Vec<SkippedLine>) {
    let mut accounts = Accounts::new();
    let mut skipped = Vec::new();
    for (index, line) in python::file_lines(text).enumerate() {
        let line = python::strip(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_account_line(line) {
            Ok((address, account)) => {
                accounts.insert(address, account);
            }
            Err(reason) => skipped.push(SkippedLine {
                line: index + 1,
                reason,
            }),
        }
    }
    (accounts, skipped)
}

fn parse_account_line(line: &str) -> Result<((String, u16), Account), String> {
    let parts: Vec<&str> = line.split(':').map(python::strip).collect();
    let [host, port, username, keystuff] = parts[..] else {
        return Err("wrong number of parts".to_owned());
    };
    let port = python::int(port)
        .ok()
        .and_then(|port| u16::try_from(port.saturating()).ok())
        .ok_or_else(|| format!("invalid port \"{port}\""))?;
    let Some((salt, key)) = keystuff
        .split_once(',')
        .filter(|(_, key)| !key.contains(','))
    else {
        return Err("the key is not \"salt,key\"".to_owned());
    };
    if salt.is_empty() && key.is_empty() {
        return Err("empty salt and key".to_owned());
    }
    let account = Account {
        username: username.to_owned(),
        salt: salt.to_owned(),
        key: key.to_owned(),
    };
    Ok(((host.to_owned(), port), account))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_as_python_reads_them() {
        let text = "# comment\n127.0.0.1:24441\n  example.com:1 \nmy_host:2\n[::1]:24441\n\nfoo\n";
        let (servers, skipped) = parse_servers(text).expect("valid");
        assert_eq!(
            servers,
            vec![
                ServerAddress::new("127.0.0.1", 24441),
                ServerAddress::new("example.com", 1),
                ServerAddress::new("::1", 24441),
            ]
        );
        assert_eq!(
            skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![4, 7]
        );
        assert_eq!(ServerAddress::new("::1", 24441).to_string(), "[::1]:24441");
    }

    #[test]
    fn servers_line_python_crashes_on_is_an_error() {
        assert_eq!(
            parse_servers("a\nhost:12x\n"),
            Err(ServersError::BadPort {
                line: 2,
                text: "host:12x".to_owned()
            })
        );
    }

    #[test]
    fn only_ipv6_literals_are_read_in_brackets() {
        // fuzz/regressions/client_homedir/bracketed-garbage-host: the
        // servers file of that input.
        let text = String::from_utf8_lossy(
            b"\x0b\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x0b\x0b\x0b\x0b\x0b\
              \x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b pxlme\x08\xff\xff\xff\xff\xff\xff\
              \xff1Mh_ \nyo\x01k:2\n[\x07\xff\xff\xff\xff\xff\xff\xff]]]]]]]]]]]]]]]\
              ]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]:41\nfoo[cer\
              s\nhome .1:240.0.1 : 2e4",
        );
        let (servers, skipped) = parse_servers(&text).expect("no bad port");
        assert_eq!(servers, []);
        assert_eq!(
            skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        let (servers, _) = parse_servers("[fe80::1%eth0]:24441\n[::1%]:1\n[x]:1\n").expect("valid");
        assert_eq!(servers, vec![ServerAddress::new("fe80::1%eth0", 24441)]);
    }

    #[test]
    fn hosts_print_as_read() {
        // fuzz/regressions/client_homedir/bracketed-python-host: the
        // servers file of that input. Python reads host "[8:1]" from it
        // and prints "[8:1]:24441".
        let text =
            "# serverse = %(home)s/servers\nhome = ~/.pyzor\nTimeou\n[8:1]:24441\nfoo\n[cli[";
        let (servers, _) = parse_servers(text).expect("valid");
        assert_eq!(servers, vec![ServerAddress::new("[8:1]", 24441)]);
        assert_eq!(servers[0].to_string(), "[8:1]:24441");
        let (servers, _) = parse_servers("ab:12 junk:3\n[fe80::1%eth0]:5\n").expect("valid");
        let printed: Vec<String> = servers.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["ab:12 junk:3", "[fe80::1%eth0]:5"]);
        for line in printed {
            assert_eq!(parse_servers(&line).expect("valid").0.len(), 1, "{line}");
        }
    }

    #[test]
    fn accounts_skip_bad_lines() {
        let text = "h : 1 : bob : s,k\nh:2:x\nh:x:bob:s,k\nh:3:bob:nokey\nh:4:bob:,\n";
        let (accounts, skipped) = parse_accounts(text);
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[&("h".to_owned(), 1)].key, "k");
        assert_eq!(
            skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
    }
}
