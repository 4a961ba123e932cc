//! The integration suite: one binary, modules per area, helpers in `util`.
//!
//! Expectations come from Python pyzor 1.1.2 run in the same test run
//! (`scripts/test` installs it and exports where it is).

mod cli_digest;
mod client;
mod client_util;
mod counts;
mod digest;
mod digest_fuzz;
mod faults;
mod forwarding;
mod milter;
mod packaging;
mod python;
mod redis_modes;
mod reload;
mod replay;
mod rspamd;
mod server;
mod server_abuse;
mod server_bounds;
mod server_compat;
mod server_reflection;
mod server_util;
mod spamassassin;
mod supervise;
mod systemd;
mod util;
