//! The milter's strict TOML configuration: any text is a `Config` whose
//! values hold what validation promises, or an error naming a line of it.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pyzor_milter::milter::config::{self, ConfigError, Socket};
use pyzor_milter::milter::session::Session;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // The loader reads the file as UTF-8 and refuses anything else.
        return;
    };
    let path = Path::new("fuzz.toml");
    match config::parse(text, path) {
        Ok(config) => {
            assert!(!config.servers.is_empty(), "no server");
            assert!(config.max_connections >= 1);
            assert!(config.socket_mode <= 0o777);
            assert!(
                config
                    .whitelist_factor
                    .is_none_or(|f| f.is_finite() && f >= 0.0)
            );
            assert!(!config.header.is_empty());
            assert!(
                config
                    .header
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b':')
            );
            for reply in [&config.reject_reply, &config.tempfail_reply] {
                assert!(!reply.text.contains(['\r', '\n', '\0']));
                assert_eq!(reply.code.len(), 3);
            }
            assert!(config.reject_reply.code.starts_with('5'));
            assert!(config.tempfail_reply.code.starts_with('4'));
            // The sockets as logged read back as the same sockets.
            assert!(config.socket.is_some() || config.rspamd_socket.is_some());
            for socket in [&config.socket, &config.rspamd_socket]
                .into_iter()
                .flatten()
            {
                let shown = socket.to_string();
                assert_eq!(shown.parse::<Socket>().as_ref(), Ok(socket), "{shown:?}");
            }
            for network in &config.trusted_networks {
                assert!(
                    network.contains(network.address),
                    "{network:?} lacks its address"
                );
            }
            let again = config::parse(text, path).expect("the same text parses twice");
            assert_eq!(again, config);
            let _ = Session::new(Arc::new(config));
        }
        Err(ConfigError::Invalid {
            path: named,
            line,
            message,
        }) => {
            assert_eq!(named, path);
            assert!(
                line >= 1 && line <= text.lines().count() + 1,
                "line {line}: {message}"
            );
            assert!(!message.is_empty());
        }
        Err(other) => panic!("parse gave {other:?}"),
    }
});
