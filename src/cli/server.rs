//! `pyzor-milter pyzord` with Python pyzord's options: argument parsing,
//! logging, signals, detaching and the runtime around `server::run`, the
//! storage engine and the forwarder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Parser;
use tokio::net::UdpSocket;

use pyzor_milter::client::servers::{parse_accounts, parse_servers};
use pyzor_milter::client::{Accounts, Client, ServerAddress};
use pyzor_milter::forwarder;
use pyzor_milter::logging::USAGE_TARGET;
use pyzor_milter::server::{self, Context, config, metrics};
use pyzor_milter::storage::{self, Storage};

/// Listen for and process incoming Pyzor connections.
#[derive(Debug, Parser)]
#[command(name = "pyzord", disable_version_flag = true)]
pub struct PyzordArgs {
    /// 'nice' level
    #[arg(
        short = 'n',
        long = "nice",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub nice: i32,
    /// enable debugging output
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// configuration directory
    #[arg(long = "homedir")]
    pub homedir: Option<PathBuf>,
    /// listen on this IP
    #[arg(short = 'a', long = "address")]
    pub address: Option<String>,
    /// listen on this port
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
    /// select database backend
    #[arg(short = 'e', long = "database-engine")]
    pub engine: Option<String>,
    /// data source name (filename for sqlite, host,port,password,db or a
    /// redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://
    /// URL for Redis, host,user,password,database,table for MySQL)
    #[arg(long = "dsn")]
    pub dsn: Option<String>,
    /// accepted for pyzord compatibility; not needed here
    #[arg(long = "gevent")]
    pub gevent: Option<String>,
    /// accepted for pyzord compatibility; not needed here
    #[arg(long = "threads")]
    pub threads: Option<String>,
    /// accepted for pyzord compatibility; not needed here
    #[arg(long = "max-threads")]
    pub max_threads: Option<i64>,
    /// accepted for pyzord compatibility; not needed here
    #[arg(long = "processes")]
    pub processes: Option<String>,
    /// accepted for pyzord compatibility; not needed here
    #[arg(long = "max-processes")]
    pub max_processes: Option<i64>,
    /// accepted for pyzord compatibility; not needed here
    #[arg(long = "db-connections")]
    pub db_connections: Option<i64>,
    /// accepted for pyzord compatibility; not needed here
    #[arg(long = "pre-fork")]
    pub pre_fork: Option<String>,
    /// name of password file
    #[arg(long = "password-file")]
    pub password_file: Option<String>,
    /// name of ACL file
    #[arg(long = "access-file")]
    pub access_file: Option<String>,
    /// time before digests expire (in seconds)
    #[arg(long = "cleanup-age")]
    pub cleanup_age: Option<String>,
    /// name of the log file
    #[arg(long = "log-file")]
    pub log_file: Option<String>,
    /// name of the usage log file
    #[arg(long = "usage-log-file")]
    pub usage_log_file: Option<String>,
    /// save the pid in this file after the server is daemonized
    #[arg(long = "pid-file")]
    pub pid_file: Option<String>,
    /// a pyzor client configuration directory to forward received digests
    /// to remote pyzor servers
    #[arg(long = "forward-client-homedir")]
    pub forward_client_homedir: Option<String>,
    /// daemonizes the server and redirects any output to the specified file
    #[arg(long = "detach")]
    pub detach: Option<PathBuf>,
    /// serve metrics in the Prometheus text format on this address
    /// (host:port; ours, not pyzord's)
    #[arg(long = "metrics-address")]
    pub metrics_address: Option<String>,
    /// log the request counters every this many seconds, 0 for never
    /// (ours, not pyzord's)
    #[arg(long = "metrics-log-interval")]
    pub metrics_log_interval: Option<u64>,
    /// NORMAL (default): acknowledge a report once committed and handed to
    /// the operating system; FULL: once fsynced to disk (ours, not pyzord's)
    #[arg(long = "sqlite-synchronous")]
    pub sqlite_synchronous: Option<String>,
    /// answer at most this many datagrams per second from one source (an
    /// IPv4 address, or an IPv6 /64) and drop the rest unanswered; 0 (the
    /// default) for no limit (ours, not pyzord's)
    #[arg(long = "rate-limit", value_name = "PER_SECOND")]
    pub rate_limit: Option<f64>,
    /// how many datagrams a source may send at once; default two seconds'
    /// worth of --rate-limit (ours, not pyzord's)
    #[arg(long = "rate-limit-burst", value_name = "DATAGRAMS")]
    pub rate_limit_burst: Option<f64>,
    /// how many sources the rate limiter remembers, those at rest
    /// forgotten first; default 65536, at most 1048576 (ours, not pyzord's)
    #[arg(long = "rate-limit-sources", value_name = "SOURCES")]
    pub rate_limit_sources: Option<u64>,
    /// how many signed requests are remembered to refuse their replay
    /// within pyzor's 300-second window; default 262144, at most 2097152
    /// (ours, not pyzord's)
    #[arg(long = "replay-cache-size", value_name = "REQUESTS")]
    pub replay_cache_size: Option<u64>,
    /// acknowledge a report only once this many Redis replicas confirm
    /// they have it (WAIT); 0 (the default) for once the master has it
    /// (ours, not pyzord's)
    #[arg(long = "redis-wait", value_name = "REPLICAS")]
    pub redis_wait: Option<u32>,
    /// print version and exit
    #[arg(short = 'V', long = "version")]
    pub version: bool,
}

impl PyzordArgs {
    /// The command-line values as ConfigParser keys of `[server]`.
    fn overrides(&self) -> HashMap<String, String> {
        let pairs: [(&str, Option<String>); 17] = [
            ("listenaddress", self.address.clone()),
            ("port", self.port.map(|port| port.to_string())),
            ("engine", self.engine.clone()),
            ("digestdb", self.dsn.clone()),
            ("gevent", self.gevent.clone()),
            ("threads", self.threads.clone()),
            ("maxthreads", self.max_threads.map(|n| n.to_string())),
            ("processes", self.processes.clone()),
            ("maxprocesses", self.max_processes.map(|n| n.to_string())),
            ("dbconnections", self.db_connections.map(|n| n.to_string())),
            ("prefork", self.pre_fork.clone()),
            ("passwdfile", self.password_file.clone()),
            ("accessfile", self.access_file.clone()),
            ("cleanupage", self.cleanup_age.clone()),
            ("logfile", self.log_file.clone()),
            ("usagelogfile", self.usage_log_file.clone()),
            ("pidfile", self.pid_file.clone()),
        ];
        let mut overrides: HashMap<String, String> = pairs
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key.to_owned(), value)))
            .collect();
        if let Some(dir) = &self.forward_client_homedir {
            overrides.insert("forwardclienthomedir".into(), dir.clone());
        }
        if let Some(address) = &self.metrics_address {
            overrides.insert("metricsaddress".into(), address.clone());
        }
        if let Some(value) = &self.sqlite_synchronous {
            overrides.insert("sqlitesynchronous".into(), value.clone());
        }
        if let Some(secs) = self.metrics_log_interval {
            overrides.insert("metricsloginterval".into(), secs.to_string());
        }
        let ours = [
            ("ratelimit", self.rate_limit.map(|n| n.to_string())),
            (
                "ratelimitburst",
                self.rate_limit_burst.map(|n| n.to_string()),
            ),
            (
                "ratelimitsources",
                self.rate_limit_sources.map(|n| n.to_string()),
            ),
            (
                "replaycachesize",
                self.replay_cache_size.map(|n| n.to_string()),
            ),
            ("rediswait", self.redis_wait.map(|n| n.to_string())),
        ];
        for (key, value) in ours {
            if let Some(value) = value {
                overrides.insert(key.into(), value);
            }
        }
        overrides
    }
}

/// pyzord's default homedir: `$HOME/.pyzor`, else `/etc/pyzor`.
fn default_homedir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Path::new(&home).join(".pyzor"),
        _ => PathBuf::from("/etc/pyzor"),
    }
}

/// How many lines a log writer's queue holds: 160 kB of pyzord's lines, at
/// most a few MB of usage lines (one holds a request's digests, up to a
/// datagram's 8,192 bytes). A line that finds it full waits for room, and
/// so does the request that logs it:
/// a log on a slow disk or pipe slows pyzord down, as Python pyzord's
/// synchronous writes do, instead of growing its memory.
const MAX_LOG_LINES: usize = 1024;

/// How long the exit waits for the log writers to write what is queued.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A log destination written by its own thread, so that a request waits
/// for a `write` system call only when [`MAX_LOG_LINES`] are queued: each
/// event is formatted into a buffer and handed over; the thread writes in
/// bursts and flushes when idle.
#[derive(Clone)]
struct BackgroundWriter {
    lines: std::sync::mpsc::SyncSender<LogMessage>,
    stats: Arc<metrics::QueueStats>,
}

enum LogMessage {
    Line(Vec<u8>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Every background log writer, flushed before the process exits.
static LOG_WRITERS: std::sync::Mutex<Vec<BackgroundWriter>> = std::sync::Mutex::new(Vec::new());

impl BackgroundWriter {
    /// A writer of `out`, named `sink` in the metrics.
    fn start(mut out: Box<dyn std::io::Write + Send>, sink: &str) -> Self {
        let (lines, queue) = std::sync::mpsc::sync_channel::<LogMessage>(MAX_LOG_LINES);
        let stats = metrics::QueueStats::new("log", &[("sink", sink)], MAX_LOG_LINES);
        let written = Arc::clone(&stats);
        let _ = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                while let Ok(message) = queue.recv() {
                    let mut next = Some(message);
                    while let Some(message) = next.take() {
                        match message {
                            LogMessage::Line(line) => {
                                written.moved(0, 1);
                                let _ = out.write_all(&line);
                            }
                            LogMessage::Flush(done) => {
                                let _ = out.flush();
                                let _ = done.send(());
                            }
                        }
                        next = queue.try_recv().ok();
                    }
                    let _ = out.flush();
                }
            });
        let writer = Self { lines, stats };
        if let Ok(mut all) = LOG_WRITERS.lock() {
            all.push(writer.clone());
        }
        writer
    }
}

fn log_writers() -> Vec<BackgroundWriter> {
    LOG_WRITERS
        .lock()
        .map(|all| all.clone())
        .unwrap_or_default()
}

/// Waits until every log line so far is written, or [`FLUSH_WAIT`] for
/// each writer (a sink that takes nothing must not hold the exit).
fn flush_logs() {
    for writer in log_writers() {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        let mut flush = LogMessage::Flush(done);
        loop {
            match writer.lines.try_send(flush) {
                Ok(()) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    let _ = wait.recv_timeout(left);
                    break;
                }
                Err(std::sync::mpsc::TrySendError::Full(message))
                    if std::time::Instant::now() < deadline =>
                {
                    flush = message;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(_) => break,
            }
        }
    }
}

/// One event's bytes, handed to the writer thread when dropped.
struct LogLine {
    buffer: Vec<u8>,
    writer: BackgroundWriter,
}

impl std::io::Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.writer.stats.moved(1, 0);
            let line = LogMessage::Line(std::mem::take(&mut self.buffer));
            if self.writer.lines.send(line).is_err() {
                self.writer.stats.moved(0, 1);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BackgroundWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            buffer: Vec::with_capacity(160),
            writer: self.clone(),
        }
    }
}

fn log_writer(path: Option<&Path>, sink: &str) -> anyhow::Result<BackgroundWriter> {
    let out: Box<dyn std::io::Write + Send> = match path {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file \"{}\"", path.display()))?;
            Box::new(std::io::BufWriter::new(file))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stderr())),
    };
    Ok(BackgroundWriter::start(out, sink))
}

/// Installs the log subscribers as pyzord's `setup_logging` does: stderr
/// shows errors only (everything with `-d`); LogFile gets pyzord's lines
/// from INFO up, UsageLogFile the usage lines (target [`USAGE_TARGET`]). With
/// no file and no `-d`, the usage lines go nowhere, as in pyzord. RUST_LOG,
/// when set, replaces the stderr level.
fn init_logging(
    debug: bool,
    log_file: Option<&Path>,
    usage_log_file: Option<&Path>,
) -> anyhow::Result<()> {
    use tracing::Level;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let stderr_level = if debug { "debug" } else { "error" };
    let file_level = if debug { Level::DEBUG } else { Level::INFO };
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(log_writer(None, "stderr")?)
        .with_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(stderr_level)),
        );
    let file = match log_file {
        Some(path) => Some(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(log_writer(Some(path), "log")?)
                .with_filter(
                    Targets::new()
                        .with_default(file_level)
                        .with_target(USAGE_TARGET, LevelFilter::OFF),
                ),
        ),
        None => None,
    };
    let usage = match usage_log_file {
        Some(path) => Some(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(log_writer(Some(path), "usage")?)
                .with_filter(Targets::new().with_target(USAGE_TARGET, file_level)),
        ),
        None => None,
    };
    // RUST_LOG may show the usage lines on stderr: they are made then.
    let usage_shown = usage.is_some() || debug || std::env::var_os("RUST_LOG").is_some();
    pyzor_milter::logging::set_usage_log(usage_shown);
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .with(usage)
        .try_init();
    Ok(())
}

/// Runs pyzord until SIGTERM or SIGINT.
pub fn run_pyzord(args: PyzordArgs) -> ExitCode {
    if args.version {
        // As pyzord: the program path and the pyzor version we speak, on
        // stderr.
        let program = std::env::args_os()
            .next()
            .unwrap_or_else(|| std::ffi::OsString::from("pyzord"));
        eprintln!(
            "{} {}",
            program.to_string_lossy(),
            super::client::PYZOR_VERSION
        );
        return ExitCode::SUCCESS;
    }
    match pyzord(args) {
        Ok(()) => ExitCode::SUCCESS,
        // Once logging is installed, the one line goes where the others
        // go (stderr, and the LogFile an administrator reads).
        Err(error) if tracing::dispatcher::has_been_set() => {
            tracing::error!("{error:#}");
            flush_logs();
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("pyzord: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn pyzord(args: PyzordArgs) -> anyhow::Result<()> {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    if args.nice != 0 {
        // SAFETY: nice only changes this process's priority.
        unsafe { libc::nice(args.nice) };
    }
    let homedir = args.homedir.clone().unwrap_or_else(default_homedir);
    if !homedir.exists() {
        std::fs::create_dir_all(&homedir)
            .with_context(|| format!("cannot create the homedir \"{}\"", homedir.display()))?;
    }
    // Absolute, so that the files stay found after `--detach` changes to /.
    let homedir = std::fs::canonicalize(&homedir).unwrap_or(homedir);
    let config = config::load(&homedir, &args.overrides())?;
    if let Some(output) = &args.detach {
        detach(output, &config.pid_file)?;
    }
    init_logging(
        args.debug,
        config.log_file.as_deref(),
        config.usage_log_file.as_deref(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let pid_file = args.detach.is_some().then(|| config.pid_file.clone());
    let outcome = runtime.block_on(serve(config));
    // pyzord removes its pid file when it stops after `--detach`.
    if let Some(pid_file) = pid_file
        && let Err(error) = std::fs::remove_file(&pid_file)
    {
        tracing::warn!(file = %pid_file.display(), %error, "unable to remove the pid file");
    }
    flush_logs();
    outcome
}

async fn serve(config: config::ServerConfig) -> anyhow::Result<()> {
    let cleanup = (config.cleanup_age_secs > 0).then_some(config.cleanup_age_secs);
    let options = storage::OpenOptions {
        max_age_secs: cleanup,
        durability: config.durability,
        redis_wait: config.redis_wait,
    };
    let storage: Arc<dyn Storage> = storage::open_with(config.engine, &config.dsn, &options)
        .await
        .with_context(|| {
            format!(
                "cannot open the {:?} database \"{}\"",
                config.engine,
                config.engine.shown_dsn(&config.dsn)
            )
        })?
        .into();
    let mut context = Context::from_files(
        Arc::clone(&storage),
        config.passwd_file.clone(),
        config.access_file.clone(),
    )?;
    let forwarder = match &config.forward_client_homedir {
        Some(dir) => {
            let forwarder = forwarder::Forwarder::start(&forward_client(dir)?, &context.metrics);
            context.forward = Some(forwarder.sink());
            Some(forwarder)
        }
        None => None,
    };
    context.limiter = config.rate_limit.map(server::limits::RateLimiter::new);
    if let Some(limit) = config.rate_limit {
        tracing::info!(
            per_second = limit.per_second,
            burst = limit.burst,
            sources = limit.max_sources,
            "rate limiting each source"
        );
    }
    context.replay = server::replay::ReplayCache::new(config.replay_cache_size);
    for writer in log_writers() {
        context.metrics.add_queue(writer.stats);
    }
    let context = Arc::new(context);
    let address = format!("{}:{}", config.listen_address, config.port);
    let address = if config.listen_address.contains(':') {
        format!("[{}]:{}", config.listen_address, config.port)
    } else {
        address
    };
    let socket = UdpSocket::bind(&address)
        .await
        .with_context(|| format!("cannot listen on \"{address}\""))?;
    tracing::info!(address, engine = ?config.engine, "starting pyzord server");
    if let Some(age) = cleanup {
        spawn_cleanup(Arc::clone(&storage), age);
    }
    spawn_reload(Arc::clone(&context))?;
    if let Some(address) = &config.metrics_address {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot serve metrics on \"{address}\""))?;
        tokio::spawn(metrics::serve_http(listener, Arc::clone(&context.metrics)));
    }
    if config.metrics_log_interval_secs > 0 {
        let period = std::time::Duration::from_secs(config.metrics_log_interval_secs);
        tokio::spawn(metrics::log_every(Arc::clone(&context.metrics), period));
    }
    super::notify::ready();
    let served = server::run(socket, context, shutdown_signal()?).await;
    // What was acknowledged and queued for upstream goes out either way.
    if let Some(forwarder) = forwarder {
        forwarder.finish(forwarder::SHUTDOWN_FLUSH).await;
    }
    served.context("stopped serving")?;
    tracing::info!("server shutdown");
    Ok(())
}

/// The client that forwards to the servers of a pyzor client homedir: its
/// `config` ([client] ServersFile, AccountsFile, Timeout, with pyzord's
/// `initialize_forwarding` defaults), servers and accounts files.
fn forward_client(dir: &Path) -> anyhow::Result<Client> {
    let settings = match std::fs::read_to_string(dir.join("config")) {
        Ok(text) => config::parse_ini_section(&text, "client"),
        Err(_) => HashMap::new(),
    };
    let file = |key: &str, default: &str| {
        let name = settings.get(key).map_or(default, String::as_str);
        dir.join(name)
    };
    let timeout: u64 = match settings.get("timeout") {
        Some(secs) => secs
            .trim()
            .parse()
            .with_context(|| format!("invalid forwarding Timeout \"{secs}\""))?,
        None => FORWARD_TIMEOUT_SECS,
    };
    let servers_path = file("serversfile", "servers");
    let mut servers = match std::fs::read_to_string(&servers_path) {
        Ok(text) => {
            let (servers, skipped) = parse_servers(&text)
                .with_context(|| format!("invalid servers file \"{}\"", servers_path.display()))?;
            for line in skipped {
                tracing::warn!(file = %servers_path.display(), "skipped servers line: {line:?}");
            }
            servers
        }
        Err(_) => Vec::new(),
    };
    if servers.is_empty() {
        servers.push(ServerAddress::default_server());
    }
    let accounts = match std::fs::read_to_string(file("accountsfile", "accounts")) {
        Ok(text) => parse_accounts(&text).0,
        Err(_) => Accounts::default(),
    };
    tracing::info!(servers = servers.len(), "forwarding reports and whitelists");
    Ok(Client::new(
        servers,
        accounts,
        std::time::Duration::from_secs(timeout),
    ))
}

/// pyzord's forwarding client Timeout default, in seconds.
const FORWARD_TIMEOUT_SECS: u64 = 5;

/// pyzor's engines reorganise once a day.
const CLEANUP_PERIOD_SECS: u64 = 24 * 60 * 60;

fn spawn_cleanup(storage: Arc<dyn Storage>, max_age_secs: u64) {
    tokio::spawn(async move {
        let mut interval =
            tokio::time::interval(std::time::Duration::from_secs(CLEANUP_PERIOD_SECS));
        loop {
            interval.tick().await;
            match storage.cleanup(max_age_secs).await {
                Ok(removed) => tracing::debug!(removed, "expired records removed"),
                Err(error) => {
                    let error = pyzor_milter::logging::Chain(&error);
                    tracing::warn!("unable to reorganise: {error}");
                }
            }
        }
    });
}

fn spawn_reload(context: Arc<Context>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut usr1 = signal(SignalKind::user_defined1()).context("cannot catch SIGUSR1")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot catch SIGHUP")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = usr1.recv() => {}
                _ = hup.recv() => {}
            }
            tracing::info!("reloading configuration");
            super::notify::reloading();
            context.reload();
            super::notify::reloaded();
        }
    });
    Ok(())
}

fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
        super::notify::stopping();
    })
}

/// pyzord's `detach`: two forks, a new session, output to `output`, and
/// the pid written to the pid file. Runs before any thread is started.
fn detach(output: &Path, pid_file: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)
        .with_context(|| format!("cannot open \"{}\"", output.display()))?;
    let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
    // SAFETY: no other thread exists yet, so forking is sound; the parents
    // exit at once without running destructors.
    unsafe {
        for round in 0..2 {
            match libc::fork() {
                -1 => bail!("fork #{} failed", round + 1),
                0 => {}
                _ => libc::_exit(0),
            }
            if round == 0 {
                libc::setsid();
            }
        }
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    std::env::set_current_dir("/").context("cannot change to /")?;
    std::fs::write(pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write the pid file \"{}\"", pid_file.display()))?;
    Ok(())
}
