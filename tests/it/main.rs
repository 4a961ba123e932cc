//! The integration suite: one binary, modules per area, helpers in `util`.
