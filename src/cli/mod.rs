//! The command line: one binary with the personalities `pyzor`, `pyzord`,
//! `milter` and `migrate`. Started through a link named `pyzor` or `pyzord`,
//! the binary acts as that subcommand, so it stands in for Python's scripts
//! where they are called by name (SpamAssassin, procmail, cron).
//!
//! Only `main.rs` uses this module; it is the one place where errors are
//! boxed and turned into exit codes.

mod client;
mod generate;
mod migrate;
mod milter;
mod notify;
mod server;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pyzor for mail servers: a milter, a drop-in `pyzor` client and a drop-in
/// `pyzord` server in one binary.
#[derive(Debug, Parser)]
#[command(name = "pyzor-milter", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The Pyzor client, a drop-in for Python pyzor's `pyzor` command
    Pyzor(client::Args),
    /// The Pyzor server, a drop-in for Python pyzor's `pyzord`
    Pyzord(Box<server::PyzordArgs>),
    /// The milter for Postfix and Sendmail
    Milter(milter::Args),
    /// Copy a Pyzor database from one engine to another
    Migrate(migrate::Args),
}

/// Names the binary may be started by that select a personality.
const PERSONALITY_LINKS: [&str; 2] = ["pyzor", "pyzord"];

/// Runs the binary with its full argument list (program name first).
pub fn main(mut args: Vec<OsString>) -> ExitCode {
    if let Some(program) = args.first() {
        let name = Path::new(program)
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_owned();
        if PERSONALITY_LINKS.contains(&name.as_str()) {
            args.insert(1, OsString::from(name));
        }
    }
    if args.get(1).is_some_and(|word| word == generate::COMMAND) {
        return generate::main(&args[2..]);
    }
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Pyzor(args) => client::run(args),
        Command::Pyzord(args) => server::run_pyzord(*args),
        Command::Migrate(args) => migrate::run(args),
        Command::Milter(args) => milter::run(args),
    }
}
