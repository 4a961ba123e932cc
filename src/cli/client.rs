//! `pyzor-milter pyzor`: Python pyzor 1.1.2's `pyzor` command line, with
//! its options, homedir files, commands, stdout and exit codes.
//!
//! Start-up follows Python's `load_configuration` and `main` step by step
//! (umask, `-V`, help, nice, homedir, config, files, logging, servers,
//! accounts, timeout), because each step decides what a broken setup
//! prints. Where Python dies with a traceback we print one line
//! `pyzor: ...` to stderr and exit 1, as the traceback does.

mod commands;
mod ini;
mod local;
mod log;
mod python;

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;

use pyzor_milter::client::servers::{self, Accounts, ServerAddress};
use pyzor_milter::python as py;
use pyzor_milter::{digest, mbox};

use self::ini::Ini;

/// The version Python's `pyzor -V` reports; we speak the same protocol.
pub const PYZOR_VERSION: &str = "1.1.2";

/// The config file section pyzor reads.
const SECTION: &str = "client";

/// Python's defaults for the `[client]` section (`load_configuration`).
const DEFAULTS: [(&str, &str); 8] = [
    ("ServersFile", "servers"),
    ("AccountsFile", "accounts"),
    ("LocalWhitelist", "whitelist"),
    ("LogFile", ""),
    ("Timeout", "5"),
    ("Style", "msg"),
    ("ReportThreshold", "0"),
    ("WhitelistThreshold", "0"),
];

/// The config keys that name files in the homedir (`expand_homefiles`).
const HOME_FILES: [&str; 4] = ["LogFile", "ServersFile", "AccountsFile", "LocalWhitelist"];

#[derive(Debug, Parser)]
#[command(
    name = "pyzor",
    about = "Read data from stdin and execute the requested command (one of 'check', 'report', \
             'ping', 'pong', 'digest', 'predigest', 'genkey', 'local_whitelist', \
             'local_unwhitelist').",
    disable_version_flag = true,
    disable_help_flag = true,
    infer_long_args = true,
    args_override_self = true
)]
pub struct Args {
    #[arg(short = 'h', long = "help", help = "show this help message and exit")]
    pub help: bool,
    #[arg(
        short = 'n',
        long = "nice",
        value_name = "NICE",
        allow_negative_numbers = true,
        default_value_t = 0,
        help = "'nice' level"
    )]
    pub nice: i32,
    #[arg(short = 'd', long = "debug", help = "enable debugging output")]
    pub debug: bool,
    #[arg(
        long = "homedir",
        value_name = "HOMEDIR",
        help = "configuration directory"
    )]
    pub homedir: Option<PathBuf>,
    #[arg(
        short = 's',
        long = "style",
        value_name = "STYLE",
        help = "input style: 'msg' (individual RFC5321 message), 'mbox' (mbox file of \
                  messages), 'digests' (Pyzor digests, one per line)."
    )]
    pub style: Option<String>,
    #[arg(long = "log-file", value_name = "LOGFILE", help = "name of log file")]
    pub log_file: Option<String>,
    #[arg(
        long = "servers-file",
        value_name = "SERVERSFILE",
        help = "name of servers file"
    )]
    pub servers_file: Option<String>,
    #[arg(
        long = "accounts-file",
        value_name = "ACCOUNTSFILE",
        help = "name of accounts file"
    )]
    pub accounts_file: Option<String>,
    #[arg(
        long = "local-whitelist",
        value_name = "LOCALWHITELIST",
        help = "name of the local whitelist file"
    )]
    pub local_whitelist: Option<String>,
    #[arg(
        short = 't',
        long = "timeout",
        value_name = "TIMEOUT",
        allow_negative_numbers = true,
        help = "timeout (in seconds)"
    )]
    pub timeout: Option<i64>,
    #[arg(
        short = 'r',
        long = "report-threshold",
        value_name = "REPORTTHRESHOLD",
        allow_negative_numbers = true,
        help = "threshold for number of reports"
    )]
    pub report_threshold: Option<i64>,
    #[arg(
        short = 'w',
        long = "whitelist-threshold",
        value_name = "WHITELISTTHRESHOLD",
        allow_negative_numbers = true,
        help = "threshold for number of whitelist"
    )]
    pub whitelist_threshold: Option<i64>,
    #[arg(short = 'V', long = "version", help = "print version and exit")]
    pub version: bool,
    /// commands to run, in order
    pub commands: Vec<String>,
}

impl Args {
    /// The command-line values that override the config file, by key.
    fn overrides(&self) -> [(&'static str, Option<String>); 8] {
        [
            ("Style", self.style.clone()),
            ("LogFile", self.log_file.clone()),
            ("ServersFile", self.servers_file.clone()),
            ("AccountsFile", self.accounts_file.clone()),
            ("LocalWhitelist", self.local_whitelist.clone()),
            ("Timeout", self.timeout.map(|t| t.to_string())),
            (
                "ReportThreshold",
                self.report_threshold.map(|t| t.to_string()),
            ),
            (
                "WhitelistThreshold",
                self.whitelist_threshold.map(|t| t.to_string()),
            ),
        ]
    }
}

pub fn run(args: Args) -> ExitCode {
    // pyzor's first act: no world or group access to what it creates.
    // SAFETY: umask only swaps the process mask.
    unsafe { libc::umask(0o077) };
    if args.version {
        let program = std::env::args_os()
            .next()
            .unwrap_or_else(|| OsString::from("pyzor"));
        println!("{} {PYZOR_VERSION}", program.to_string_lossy());
        return ExitCode::SUCCESS;
    }
    if args.help || args.commands.is_empty() {
        print!("{}", python::optparse_help());
        return ExitCode::SUCCESS;
    }
    let mut session = match Session::start(&args) {
        Ok(Some(session)) => session,
        Ok(None) => return ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pyzor: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    for command in &args.commands {
        match session.dispatch(command) {
            Ok(true) => {}
            Ok(false) => return ExitCode::FAILURE,
            Err(error) => {
                eprintln!("pyzor: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Everything the commands need, loaded as Python's `main` loads it.
pub struct Session {
    config: Ini,
    servers: Vec<ServerAddress>,
    accounts: Accounts,
    timeout_secs: i64,
    client: Option<(tokio::runtime::Runtime, pyzor_milter::client::Client)>,
}

impl Session {
    /// Python's start-up; `Ok(None)` where Python prints an error and
    /// exits 0 (the homedir cannot be created).
    fn start(args: &Args) -> anyhow::Result<Option<Session>> {
        if args.nice != 0 {
            renice(args.nice)?;
        }
        let homedir = args.homedir.clone().unwrap_or_else(default_homedir);
        if !homedir.exists()
            && let Err(error) = std::fs::create_dir(&homedir)
        {
            println!("ERROR {}.", python::os_error(&error, Some(&homedir)));
            return Ok(None);
        }
        let mut config = Ini::default();
        config.add_section(SECTION);
        for (key, value) in DEFAULTS {
            config.set(SECTION, key, value)?;
        }
        let config_path = homedir.join("config");
        if let Ok(bytes) = std::fs::read(&config_path) {
            // Python's `config.read` skips a file it cannot open, not one it
            // cannot decode or parse.
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow!("config file \"{}\" is not UTF-8", config_path.display()))?;
            config
                .read(&text)
                .with_context(|| format!("config file \"{}\"", config_path.display()))?;
        }
        for (key, value) in args.overrides() {
            if let Some(value) = value {
                config.set(SECTION, key, &value)?;
            }
        }
        for key in HOME_FILES {
            let value = config.get(SECTION, key)?;
            if value.is_empty() {
                continue;
            }
            let path = homedir.join(expand_user(&value));
            config.set(SECTION, key, &path.to_string_lossy())?;
        }
        let log_file = config.get(SECTION, "LogFile")?;
        let log_path = (!log_file.is_empty()).then(|| PathBuf::from(&log_file));
        log::init(log_path.as_deref(), args.debug)
            .with_context(|| format!("cannot open log file \"{log_file}\""))?;
        let servers = load_servers(Path::new(&config.get(SECTION, "ServersFile")?))?;
        let accounts = load_accounts(Path::new(&config.get(SECTION, "AccountsFile")?))?;
        let timeout = config.get(SECTION, "Timeout")?;
        let timeout_secs = py::int(&timeout)
            .map(|timeout| timeout.saturating())
            .map_err(|_| anyhow!("invalid timeout \"{timeout}\": not an integer"))?;
        Ok(Some(Session {
            config,
            servers,
            accounts,
            timeout_secs,
            client: None,
        }))
    }

    /// Runs one command; `Ok(false)` makes pyzor exit 1 at once.
    fn dispatch(&mut self, command: &str) -> anyhow::Result<bool> {
        match command {
            "ping" => self.ping(),
            "pong" => self.pong(),
            "info" => self.info(),
            "check" => self.check(),
            "report" => self.report(pyzor_milter::protocol::Op::Report),
            "whitelist" => self.report(pyzor_milter::protocol::Op::Whitelist),
            "digest" => self.digest(),
            "predigest" => local::predigest(),
            "genkey" => local::genkey(),
            "local_whitelist" => self.local_whitelist(true),
            "local_unwhitelist" => self.local_whitelist(false),
            other => {
                tracing::error!("Unknown command: {other}");
                Ok(true)
            }
        }
    }

    fn setting(&self, key: &str) -> anyhow::Result<String> {
        Ok(self.config.get(SECTION, key)?)
    }

    /// An integer setting, read as Python's `int()` reads it.
    fn int_setting(&self, key: &str) -> anyhow::Result<i64> {
        let value = self.setting(key)?;
        py::int(&value)
            .map(|value| value.saturating())
            .map_err(|_| anyhow!("invalid {key} \"{value}\": not an integer"))
    }

    /// The digests of stdin in the configured style, as Python's input
    /// handlers yield them (`digests` lines stripped, empty ones kept).
    fn input_digests(&self) -> anyhow::Result<Vec<String>> {
        let style = self.setting("Style")?;
        if !matches!(style.as_str(), "msg" | "mbox" | "digests") {
            bail!("unknown input style \"{style}\"");
        }
        let input = read_stdin()?;
        match style.as_str() {
            "msg" => Ok(vec![digest::digest(&input).to_hex()]),
            "mbox" => mbox::split(&input)
                .iter()
                .map(|entry| {
                    if entry.from_line_is_ascii() {
                        Ok(digest::digest(entry.message).to_hex())
                    } else {
                        Err(anyhow!("mbox \"From \" line is not ascii"))
                    }
                })
                .collect(),
            _ => {
                let text = std::str::from_utf8(&input).context("stdin is not UTF-8")?;
                Ok(py::file_lines(text)
                    .map(|line| py::strip(line).to_owned())
                    .collect())
            }
        }
    }
}

/// `$HOME/.pyzor`, or `/etc/pyzor` without a home.
fn default_homedir() -> PathBuf {
    match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        Some(home) => Path::new(&home).join(".pyzor"),
        None => PathBuf::from("/etc/pyzor"),
    }
}

/// `os.nice(increment)`.
fn renice(increment: i32) -> anyhow::Result<()> {
    // SAFETY: nice and errno access have no memory effects; errno is reset
    // first because -1 is also a valid new niceness.
    let failed = unsafe {
        *libc::__errno_location() = 0;
        libc::nice(increment) == -1 && *libc::__errno_location() != 0
    };
    if failed {
        let error = io::Error::last_os_error();
        bail!(
            "cannot change the nice level by {increment}: {}",
            python::os_error(&error, None)
        );
    }
    Ok(())
}

/// `os.path.expanduser`: `~` and `~/...` from `$HOME`, `~user` from the
/// password database; anything else unchanged.
fn expand_user(path: &str) -> PathBuf {
    let Some(rest) = path.strip_prefix('~') else {
        return PathBuf::from(path);
    };
    let (user, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let home = if user.is_empty() {
        std::env::var_os("HOME").map(PathBuf::from)
    } else {
        user_home(user)
    };
    match home {
        Some(home) => {
            let home = home.to_string_lossy().trim_end_matches('/').to_owned();
            let joined = format!("{home}{tail}");
            PathBuf::from(if joined.is_empty() {
                "/".to_owned()
            } else {
                joined
            })
        }
        None => PathBuf::from(path),
    }
}

fn user_home(user: &str) -> Option<PathBuf> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam returns null or a pointer to static storage that we
    // copy from at once; this process is single-threaded at start-up.
    unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        if entry.is_null() || (*entry).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*entry).pw_dir);
        Some(PathBuf::from(dir.to_string_lossy().into_owned()))
    }
}

/// A legacy file's text, or `None` if it does not exist (as Python's
/// `os.path.exists` check); unreadable or non-UTF-8 files are errors.
fn read_legacy_file(path: &Path, what: &str) -> anyhow::Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {what} file \"{}\"", path.display()))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| anyhow!("{what} file \"{}\" is not UTF-8", path.display()))
}

/// `pyzor.config.load_servers`.
fn load_servers(path: &Path) -> anyhow::Result<Vec<ServerAddress>> {
    let mut found = Vec::new();
    if let Some(text) = read_legacy_file(path, "servers")? {
        let (servers, skipped) = servers::parse_servers(&text)
            .with_context(|| format!("servers file \"{}\"", path.display()))?;
        for line in skipped {
            tracing::warn!(
                "servers file \"{}\": line {}: {}",
                path.display(),
                line.line,
                line.reason
            );
        }
        found = servers;
    }
    if found.is_empty() {
        tracing::info!("No servers specified, defaulting to public.pyzor.org.");
        found.push(ServerAddress::default_server());
    }
    Ok(found)
}

/// `pyzor.config.load_accounts`.
fn load_accounts(path: &Path) -> anyhow::Result<Accounts> {
    let Some(text) = read_legacy_file(path, "accounts")? else {
        tracing::warn!(
            "No accounts are setup.  All commands will be executed by the anonymous user."
        );
        return Ok(Accounts::new());
    };
    let (accounts, skipped) = servers::parse_accounts(&text);
    for line in skipped {
        tracing::warn!(
            "accounts file \"{}\": line {}: {}",
            path.display(),
            line.line,
            line.reason
        );
    }
    Ok(accounts)
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut input = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("cannot read stdin")?;
    Ok(input)
}
