//! The `pyzor` client's homedir files: `config` (read by the command
//! line's ConfigParser, included from src/cli/client/ini.rs since the
//! command line is no library module), `servers` and `accounts`. The input
//! holds the three files separated by NUL bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyzor_milter::client::servers::{self, ServerAddress};

#[path = "common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../../src/cli/client/ini.rs"]
#[allow(dead_code)]
mod ini;

/// The `[client]` keys `pyzor` reads (src/cli/client.rs).
const CLIENT_KEYS: [&str; 8] = [
    "ServersFile",
    "AccountsFile",
    "LocalWhitelist",
    "LogFile",
    "Timeout",
    "Style",
    "ReportThreshold",
    "WhitelistThreshold",
];

fn config(text: &str) {
    let mut config = ini::Ini::default();
    config.add_section("client");
    if config.read(text).is_err() {
        return;
    }
    for key in CLIENT_KEYS {
        if let Ok(value) = config.get("client", key) {
            // A value read back after interpolation can be set again
            // when it holds no `%` (as the client does with file names).
            if !value.contains('%') {
                config
                    .set("client", key, &value)
                    .expect("a value without %");
                assert_eq!(config.get("client", key).as_deref(), Ok(value.as_str()));
            }
        }
    }
}

fn servers_file(text: &str) {
    let Ok((servers, skipped)) = servers::parse_servers(text) else {
        return;
    };
    let lines = pyzor_milter::python::file_lines(text).count();
    assert!(servers.len() + skipped.len() <= lines);
    for skip in &skipped {
        assert!(skip.line >= 1 && skip.line <= lines);
    }
    for server in &servers {
        assert!(!server.host.is_empty(), "{server:?}");
        // A server written back as it is printed (`host:port`, an IPv6
        // literal in brackets) reads as the same server.
        if !server.host.contains(char::is_whitespace) {
            let line = server.to_string();
            let again = servers::parse_servers(&line).expect("a valid line");
            assert_eq!(
                again.0,
                vec![ServerAddress::new(server.host.clone(), server.port)],
                "{line:?}"
            );
        }
    }
}

fn accounts_file(text: &str) {
    let (accounts, skipped) = servers::parse_accounts(text);
    assert!(accounts.len() + skipped.len() <= pyzor_milter::python::file_lines(text).count());
    for ((host, _), account) in &accounts {
        assert!(!host.contains(':'));
        let _ = account.hashed_key();
    }
}

fuzz_target!(|data: &[u8]| {
    let parts = common::split_parts(data, 3);
    // The client refuses a config file that is not UTF-8; the servers and
    // accounts files are read with errors replaced.
    if let Ok(text) = std::str::from_utf8(parts[0]) {
        config(text);
    }
    servers_file(&common::text(parts[1]));
    accounts_file(&common::text(parts[2]));
});
