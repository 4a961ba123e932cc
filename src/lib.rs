//! pyzor-milter: the Pyzor collaborative spam-detection network for mail
//! servers, as one library behind one binary.
//!
//! Map of the modules, leaves first:
//!
//! - [`python`]: the parts of CPython 3.11's semantics pyzor depends on
//!   (`int()`, `str.isspace()`, `strip`, `split`, `splitlines`, text-mode
//!   file lines, `repr()`), for every other module. No I/O.
//! - [`digest`]: message bytes in, Pyzor digest out, exactly as Python pyzor
//!   1.1.2 computes it on CPython 3.11 (its MIME walk, charsets, HTML
//!   stripping and line normalisation). No I/O, no logging.
//! - [`mbox`]: splitting an mbox file into messages as Python's
//!   `mailbox.mbox` does.
//! - [`protocol`]: Pyzor 2.1 datagrams to and from requests and responses,
//!   and request signing. No I/O.
//! - [`client`]: asking Pyzor servers over UDP, all at once.
//! - [`storage`]: pyzord's digest databases behind one trait (SQLite,
//!   Redis, MySQL) and the reader of Python pyzord's gdbm file.
//! - [`server`]: pyzord, the UDP server answering as Python pyzord does.
//! - [`milter`]: the milter for Postfix and Sendmail, asking pyzord
//!   through [`client`].
//! - [`logging`]: an error line with its causes, and the limiter that
//!   folds repeated errors into one line with a count.
//! - [`forwarder`]: pyzord's forwarding of reports and whitelists to
//!   upstream servers, through `client`.
//!
//! The command line (`src/cli`, used by `main.rs` alone) sits on top.

pub mod client;
pub mod digest;
pub mod forwarder;
pub mod logging;
pub mod mbox;
pub mod milter;
pub mod protocol;
pub mod python;
pub mod server;
pub mod storage;

#[cfg(test)]
mod test_support;
