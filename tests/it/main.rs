//! The integration suite: one binary, modules per area, helpers in `util`.
mod server;
mod server_util;
