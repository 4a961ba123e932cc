//! Who may do what: pyzord.passwd (accounts) and pyzord.access (the ACL),
//! read as pyzor 1.1.2's `load_passwd_file` and `load_access_file` read
//! them. Lenient like pyzor, but every skipped line is a warning.
//!
//! pyzor's quirks kept on purpose: ACL lines apply top to bottom, a later
//! line overriding an earlier one; names and operations in the access file
//! are lower-cased while passwd names keep their case; `all` users means the
//! passwd accounts only (not `anonymous`); a missing access file allows
//! check, report, ping, pong and info to `anonymous`.
//!
//! Both files are read as Python reads a file in text mode: lines end at
//! `\n`, `\r\n` or `\r` (and nowhere else), and blanks are what
//! `str.strip()` and `str.split()` take for blanks, U+001C..U+001F among
//! them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::python;

/// pyzor's `anonymous_user`.
pub const ANONYMOUS: &str = "anonymous";

/// The operations `all` stands for in an access file.
const ALL_OPERATIONS: [&str; 6] = ["check", "report", "ping", "pong", "info", "whitelist"];

/// The ACL used when there is no access file.
const DEFAULT_ANONYMOUS_OPERATIONS: [&str; 5] = ["check", "report", "ping", "pong", "info"];

/// Accounts and their permissions, replaced as a whole on reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// User name → key (the hex string after `:` in pyzord.passwd).
    pub accounts: HashMap<String, String>,
    /// User name → the operations it may request.
    pub acl: HashMap<String, HashSet<String>>,
}

/// A file of accounts or ACL that exists but cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read \"{}\"", path.display())]
pub struct AccessError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A file's text; `None` when it does not exist (pyzor's default applies).
/// Lines it skips are logged within a span naming the file.
fn read_text(path: &Path) -> Result<Option<String>, AccessError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AccessError {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Access {
    /// Reads both files; a missing file has pyzor's default meaning.
    pub fn load(passwd: &Path, access: &Path) -> Result<Self, AccessError> {
        let accounts = match read_text(passwd)? {
            Some(text) => {
                let _file = tracing::warn_span!("passwd", file = %passwd.display()).entered();
                parse_passwd(&text)
            }
            None => {
                tracing::info!(
                    "accounts file does not exist - only the anonymous user will be available"
                );
                HashMap::new()
            }
        };
        let acl = match read_text(access)? {
            Some(text) => {
                let _file = tracing::warn_span!("access", file = %access.display()).entered();
                parse_access(&text, &accounts)
            }
            None => {
                tracing::info!(
                    "using default ACL: the anonymous user may use the check, report, ping and info commands"
                );
                default_acl()
            }
        };
        Ok(Self { accounts, acl })
    }

    /// Whether `user` may request `operation`.
    pub fn allows(&self, user: &str, operation: &str) -> bool {
        self.acl
            .get(user)
            .is_some_and(|operations| operations.contains(operation))
    }
}

/// The ACL when there is no access file.
pub fn default_acl() -> HashMap<String, HashSet<String>> {
    let operations = DEFAULT_ANONYMOUS_OPERATIONS.iter().map(|op| op.to_string());
    HashMap::from([(ANONYMOUS.to_owned(), operations.collect())])
}

/// Skips what pyzor skips: blank lines and lines whose first character is
/// `#` (an indented `#` is not a comment to pyzor).
fn is_skipped(line: &str) -> bool {
    python::strip(line).is_empty() || line.starts_with('#')
}

/// `user : key` lines. A skipped line is logged by number and what is
/// wrong with it (the caller's span names the file), never by its text,
/// which may hold a key.
pub fn parse_passwd(text: &str) -> HashMap<String, String> {
    let mut accounts = HashMap::new();
    for (number, line) in python::file_lines(text).enumerate() {
        if is_skipped(line) {
            continue;
        }
        let parts: Vec<&str> = line.split(':').collect();
        let [user, key] = parts[..] else {
            tracing::warn!(
                "line {}: invalid accounts line skipped: expected \"user : key\", found {} fields",
                number + 1,
                parts.len()
            );
            continue;
        };
        accounts.insert(
            python::strip(user).to_owned(),
            python::strip(key).to_owned(),
        );
    }
    accounts
}

/// `operations : users : allow|deny` lines, applied in order.
pub fn parse_access(
    text: &str,
    accounts: &HashMap<String, String>,
) -> HashMap<String, HashSet<String>> {
    let mut acl: HashMap<String, HashSet<String>> = HashMap::new();
    for (number, line) in python::file_lines(text).enumerate() {
        if is_skipped(line) {
            continue;
        }
        let parts: Vec<String> = line
            .split(':')
            .map(|part| python::strip(&part.to_lowercase()).to_owned())
            .collect();
        let [operations, users, allowed] = &parts[..] else {
            tracing::warn!(line = number + 1, "invalid ACL line skipped: {line:?}");
            continue;
        };
        let allowed = match allowed.as_str() {
            "allow" => true,
            "deny" => false,
            _ => {
                tracing::warn!(line = number + 1, "invalid ACL line skipped: {line:?}");
                continue;
            }
        };
        let operations: Vec<String> = if operations == "all" {
            ALL_OPERATIONS.iter().map(|op| op.to_string()).collect()
        } else {
            python::split(operations).map(str::to_owned).collect()
        };
        let users: Vec<String> = if users == "all" {
            accounts.keys().cloned().collect()
        } else {
            python::split(users).map(str::to_owned).collect()
        };
        for user in users {
            let granted = acl.entry(user).or_default();
            for operation in &operations {
                if allowed {
                    granted.insert(operation.clone());
                } else {
                    granted.remove(operation);
                }
            }
        }
    }
    acl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ops: &[&str]) -> HashSet<String> {
        ops.iter().map(|op| op.to_string()).collect()
    }

    #[test]
    fn later_lines_override_earlier_ones() {
        let accounts = parse_passwd("alice : 0123\n# comment\nbad line\n");
        let acl = parse_access(
            "all : all : allow\ncheck report : alice : deny\nCHECK : anonymous : Allow\n",
            &accounts,
        );
        assert_eq!(acl["alice"], set(&["ping", "pong", "info", "whitelist"]));
        assert_eq!(acl["anonymous"], set(&["check"]));
        assert_eq!(accounts, HashMap::from([("alice".into(), "0123".into())]));
    }

    #[test]
    fn all_users_means_the_accounts_not_anonymous() {
        let accounts = parse_passwd("bob:1\n");
        let acl = parse_access("all : all : allow\n", &accounts);
        assert!(!acl.contains_key("anonymous"));
        assert!(acl["bob"].contains("whitelist"));
    }

    #[test]
    fn a_skipped_accounts_line_is_logged_without_its_key() {
        let dir = std::env::temp_dir().join(format!("pyzor-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let passwd = dir.join("pyzord.passwd");
        std::fs::write(&passwd, "alice : 0123\nbob 5ecret\ncarol : 5ecret : x\n").expect("passwd");
        let mut loaded = None;
        let log = crate::logging::captured(|| {
            loaded = Some(Access::load(&passwd, &dir.join("pyzord.access")));
        });
        let _ = std::fs::remove_dir_all(&dir);
        let accounts = loaded.expect("ran").expect("loaded").accounts;
        assert_eq!(accounts.len(), 1);
        let file = passwd.display();
        let skipped = |line, fields| {
            format!(
                " WARN passwd{{file={file}}}: line {line}: invalid accounts line skipped: \
                 expected \"user : key\", found {fields} fields\n"
            )
        };
        let lines: Vec<&str> = log.split_inclusive('\n').collect();
        assert_eq!(lines[..2], [skipped(2, 1), skipped(3, 3)]);
        assert!(!log.contains("5ecret"), "{log}");
    }
}
