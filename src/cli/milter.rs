//! `pyzor-milter milter`: arguments, logging to stderr (journald), the
//! signals (SIGHUP reloads, SIGTERM and SIGINT stop after the messages in
//! flight) and the exit code around [`pyzor_milter::milter::run`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use pyzor_milter::logging::Chain;
use pyzor_milter::milter::{self, Config, Socket, config};
use tokio::sync::mpsc;

/// The milter for Postfix and Sendmail.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML)
    #[arg(short, long, value_name = "FILE", default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Listen here instead of the configured socket: inet:HOST:PORT,
    /// inet6:HOST:PORT or unix:PATH
    #[arg(short, long, value_name = "SOCKET")]
    socket: Option<Socket>,
    /// Check and log, but accept every message (headers are still added)
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Check the configuration file and exit
    #[arg(long)]
    check_config: bool,
}

/// The file's configuration with the command-line overrides.
fn load(args: &Args) -> Result<Config, config::ConfigError> {
    let mut config =
        if args.config == Path::new(config::DEFAULT_CONFIG_PATH) && !args.config.exists() {
            // No file at the default place: the defaults, so that
            // `pyzor-milter milter --socket ...` works out of the box.
            Config::default()
        } else {
            config::load(&args.config)?
        };
    if let Some(socket) = &args.socket {
        config.socket = Some(socket.clone());
    }
    config.dry_run |= args.dry_run;
    Ok(config)
}

pub fn run(args: Args) -> ExitCode {
    // No colour codes: stderr is journald's or a log file.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let config = match load(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pyzor-milter: {}", Chain(&error));
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{}: OK", args.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pyzor-milter: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let bind = |socket: Option<Socket>| async move {
        match socket {
            Some(socket) => milter::bind(&socket, config.socket_mode)
                .await
                .map(Some)
                .with_context(|| format!("cannot listen on \"{socket}\"")),
            None => Ok(None),
        }
    };
    let listener = bind(config.socket.clone()).await?;
    let rspamd = bind(config.rspamd_socket.clone()).await?;
    let mut hup = signal(SignalKind::hangup()).context("cannot catch SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let (reload_sender, reload) = mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            super::notify::reloading();
            match load(&args) {
                Ok(config) => {
                    if reload_sender.send(config).await.is_err() {
                        break;
                    }
                }
                Err(error) => tracing::error!(
                    "cannot reload the configuration, keeping the old one: {}",
                    Chain(&error)
                ),
            }
            super::notify::reloaded();
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        super::notify::stopping();
        tracing::info!("shutting down after the messages in flight");
    };
    let shown =
        |socket: &Option<Socket>| socket.as_ref().map_or("off".to_owned(), Socket::to_string);
    tracing::info!(
        socket = shown(&config.socket),
        rspamd_socket = shown(&config.rspamd_socket),
        servers = config.servers.len(),
        "milter started"
    );
    super::notify::ready();
    let sockets = [config.socket.clone(), config.rspamd_socket.clone()];
    let result = milter::serve(listener, rspamd, config, reload, shutdown).await;
    // A socket lost to another process's file is not ours to remove; a
    // stale one is removed at the next start.
    if result.is_ok() {
        for socket in sockets {
            if let Some(Socket::Unix(path)) = socket {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    result.context("the milter stopped")
}
