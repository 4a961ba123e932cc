//! The `pyzor-milter` binary: picks the personality (from the subcommand,
//! or from the name it was started by: `pyzor`, `pyzord`), parses the
//! arguments and maps the outcome to an exit code. Everything else lives in
//! the library and in `cli`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main(std::env::args_os().collect())
}
