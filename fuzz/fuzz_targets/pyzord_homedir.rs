//! pyzord's homedir files: `config` (its `[server]` section),
//! `pyzord.passwd` and `pyzord.access`, read from a real homedir as the
//! server reads them at start and on SIGUSR1. The input holds the three
//! files separated by NUL bytes.
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pyzor_milter::server::access::{self, Access};
use pyzor_milter::server::config::{self, ConfigError};

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

/// One homedir per fuzzing process, in TMPDIR.
fn homedir() -> &'static PathBuf {
    static HOMEDIR: OnceLock<PathBuf> = OnceLock::new();
    HOMEDIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pyzord-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary homedir");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let parts = common::split_parts(data, 3);
    let (config_file, passwd_file, access_file) = (parts[0], parts[1], parts[2]);

    let section = config::parse_ini_section(&common::text(config_file), "server");
    for (key, value) in &section {
        assert_eq!(*key, key.to_lowercase(), "keys are lower case");
        assert!(!key.contains(['=', ':']), "separator in key {key:?}");
        // ConfigParser right-strips a value; an empty first line before a
        // continuation stays as a leading line end.
        assert_eq!(
            value.trim_end(),
            value.as_str(),
            "value {value:?} not stripped"
        );
    }

    let home = homedir();
    let write = |name: &str, bytes: &[u8]| {
        let path = home.join(name);
        std::fs::write(&path, bytes).expect("write into the homedir");
        path
    };
    write("config", config_file);
    match config::load(home, &HashMap::new()) {
        Ok(server) => {
            assert!(server.passwd_file.is_absolute() || !home.is_absolute());
            assert_eq!(server.homedir, *home);
        }
        Err(ConfigError::Read { .. }) => assert!(std::str::from_utf8(config_file).is_err()),
        Err(error) => assert!(!error.to_string().is_empty()),
    }

    let passwd = write("pyzord.passwd", passwd_file);
    let access_path = write("pyzord.access", access_file);
    let loaded = Access::load(&passwd, &access_path).expect("the files were just written");
    let accounts = access::parse_passwd(&common::text(passwd_file));
    let acl = access::parse_access(&common::text(access_file), &accounts);
    assert_eq!(
        loaded,
        Access {
            accounts: accounts.clone(),
            acl: acl.clone()
        }
    );
    for (user, key) in &accounts {
        assert!(
            !user.contains(':') && !key.contains(':'),
            "{user:?}:{key:?}"
        );
        assert_eq!(user.trim(), user.as_str());
    }
    for (user, operations) in &acl {
        for operation in operations {
            assert!(loaded.allows(user, operation));
            assert_eq!(*operation, operation.to_lowercase());
        }
    }
});
