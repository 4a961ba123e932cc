//! pyzord's storage settings and records as read from text: the engine
//! name, the Redis and MySQL DSNs (with MYSQL_TCP_PORT), and a value of
//! Python pyzord's gdbm file as `migrate` reads it. The input holds the
//! DSN, the port variable and the gdbm value separated by NUL bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyzor_milter::storage::{EngineName, gdbm, mysql, redacted_dsn, redis};

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| {
    let parts = common::split_parts(data, 3);
    let dsn = common::text(parts[0]);
    let env_port = std::str::from_utf8(parts[1])
        .ok()
        .filter(|port| !port.is_empty());

    if let Ok(engine) = EngineName::parse(&dsn) {
        assert!(["sqlite", "redis", "mysql", "gdbm"].contains(&dsn.as_str()));
        assert_eq!(
            engine.dsn_is_file(),
            matches!(dsn.as_str(), "sqlite" | "gdbm")
        );
    }
    match redis::parse_dsn(&dsn) {
        Ok(parsed) => {
            if !dsn.contains("://") {
                assert_eq!(dsn.matches(',').count(), 3, "redis DSN {dsn:?}");
            }
            // The DSN as shown, read again, holds no password but `***`.
            if let Some(password) = parsed.password.filter(|password| password != "***") {
                let shown = redis::redacted(&dsn);
                if let Ok(again) = redis::parse_dsn(&shown) {
                    assert_ne!(again.password, Some(password), "{shown:?}");
                }
            }
        }
        Err(error) => assert!(error.to_string().contains(&redis::redacted(&dsn))),
    }
    match mysql::parse_dsn(&dsn, env_port) {
        Ok((_, table)) => {
            assert_eq!(dsn.matches(',').count(), 4, "mysql DSN {dsn:?}");
            assert_eq!(Some(table.as_str()), dsn.rsplit(',').next());
            assert!(!table.is_empty());
            assert!(
                table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c))
            );
        }
        Err(error) => assert!(error.to_string().contains(&redacted_dsn(&dsn))),
    }

    if let Ok(record) = gdbm::decode_record(parts[2]) {
        let text = std::str::from_utf8(parts[2]).expect("a decoded value is UTF-8");
        assert!(matches!(text.split(',').count(), 3 | 7));
        if text.split(',').count() == 3 {
            assert_eq!(record.whitelist_count, 0);
        }
    }
});
