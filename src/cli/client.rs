//! `pyzor-milter pyzor`: Python pyzor 1.1.2's `pyzor` command line, with
//! its options, commands, stdout and exit codes.

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use pyzor_milter::{digest, mbox};

/// Read data from stdin and execute the requested command (one of 'check',
/// 'report', 'ping', 'pong', 'digest', 'predigest', 'genkey',
/// 'local_whitelist', 'local_unwhitelist').
#[derive(Debug, Parser)]
#[command(name = "pyzor", disable_version_flag = true)]
pub struct Args {
    /// 'nice' level
    #[arg(short = 'n', long = "nice", default_value_t = 0, allow_negative_numbers = true)]
    pub nice: i32,
    /// enable debugging output
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// configuration directory
    #[arg(long = "homedir")]
    pub homedir: Option<PathBuf>,
    /// input style: 'msg' (individual RFC5321 message), 'mbox' (mbox file of
    /// messages), 'digests' (Pyzor digests, one per line).
    #[arg(short = 's', long = "style")]
    pub style: Option<String>,
    /// name of log file
    #[arg(long = "log-file")]
    pub log_file: Option<String>,
    /// name of servers file
    #[arg(long = "servers-file")]
    pub servers_file: Option<String>,
    /// name of accounts file
    #[arg(long = "accounts-file")]
    pub accounts_file: Option<String>,
    /// name of the local whitelist file
    #[arg(long = "local-whitelist")]
    pub local_whitelist: Option<String>,
    /// timeout (in seconds)
    #[arg(short = 't', long = "timeout", allow_negative_numbers = true)]
    pub timeout: Option<i64>,
    /// threshold for number of reports
    #[arg(short = 'r', long = "report-threshold", allow_negative_numbers = true)]
    pub report_threshold: Option<i64>,
    /// threshold for number of whitelist
    #[arg(short = 'w', long = "whitelist-threshold", allow_negative_numbers = true)]
    pub whitelist_threshold: Option<i64>,
    /// print version and exit
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// commands to run, in order
    pub commands: Vec<String>,
}

/// The version Python's `pyzor -V` reports; we speak the same protocol.
pub const PYZOR_VERSION: &str = "1.1.2";

pub fn run(args: Args) -> ExitCode {
    let style = args.style.clone().unwrap_or_else(|| "msg".to_owned());
    let mut ok = true;
    for command in &args.commands {
        let result = match command.as_str() {
            "digest" => digest_command(&style),
            "predigest" => predigest_command(),
            other => {
                eprintln!("Unknown command: {other}");
                Ok(true)
            }
        };
        match result {
            Ok(true) => {}
            Ok(false) => ok = false,
            Err(error) => {
                eprintln!("pyzor: {error:#}");
                return ExitCode::FAILURE;
            }
        }
        if !ok {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn read_stdin() -> io::Result<Vec<u8>> {
    let mut input = Vec::new();
    io::stdin().lock().read_to_end(&mut input)?;
    Ok(input)
}

/// `pyzor digest`: one digest per message of the input.
fn digest_command(style: &str) -> anyhow::Result<bool> {
    let input = read_stdin()?;
    let mut out = BufWriter::new(io::stdout().lock());
    match style {
        "msg" => writeln!(out, "{}", digest::digest(&input))?,
        "mbox" => {
            for entry in mbox::split(&input) {
                if !entry.from_line_is_ascii() {
                    out.flush()?;
                    anyhow::bail!("mbox \"From \" line is not ascii");
                }
                writeln!(out, "{}", digest::digest(entry.message))?;
            }
        }
        "digests" => {
            for line in String::from_utf8_lossy(&input).lines() {
                let line = line.trim();
                if !line.is_empty() {
                    writeln!(out, "{line}")?;
                }
            }
        }
        other => anyhow::bail!("unknown input style \"{other}\""),
    }
    out.flush()?;
    Ok(true)
}

/// `pyzor predigest`: the normalised lines that enter the digest; always
/// reads one message, whatever the style.
fn predigest_command() -> anyhow::Result<bool> {
    let input = read_stdin()?;
    let mut out = BufWriter::new(io::stdout().lock());
    for line in digest::predigest_lines(&input) {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(true)
}
