//! `pyzor-milter migrate`: pyzor-migrate's options and messages, copying
//! every record from one engine to another in pages, with a progress bar.
//! The source may be a Python pyzord gdbm file.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use pyzor_milter::storage::{self, EngineName};

/// This scripts allows migrating pyzor records between different engine
/// types.
#[derive(Debug, Parser)]
#[command(name = "pyzor-migrate")]
pub struct Args {
    /// select source database backend
    #[arg(long = "se", alias = "source-engine")]
    pub source_engine: Option<String>,
    /// data source DSN
    #[arg(long = "sd", alias = "source-dsn")]
    pub source_dsn: Option<String>,
    /// select destination database backend
    #[arg(long = "de", alias = "destination-engine")]
    pub destination_engine: Option<String>,
    /// destination DSN
    #[arg(long = "dd", alias = "destination-dsn")]
    pub destination_dsn: Option<String>,
    /// delete old records (not supported: the source is left as it is)
    #[arg(long = "delete")]
    pub delete: bool,
}

/// Records copied per batch.
const MIGRATE_BATCH: usize = 1000;

/// Runs pyzor-migrate: exit 1 with pyzor-migrate's messages on bad options.
pub fn run(args: Args) -> ExitCode {
    let (Some(se), Some(sd), Some(de), Some(dd)) = (
        args.source_engine.as_deref(),
        args.source_dsn.as_deref(),
        args.destination_engine.as_deref(),
        args.destination_dsn.as_deref(),
    ) else {
        println!("options --se/--sd/--de/--dd are required");
        return ExitCode::from(1);
    };
    let Ok(source) = EngineName::parse(se) else {
        println!("Unsupported source engine: {se}");
        return ExitCode::from(1);
    };
    let destination = match EngineName::parse(de) {
        Ok(EngineName::Gdbm) | Err(_) => {
            println!("Unsupported destination engine: {de}");
            return ExitCode::from(1);
        }
        Ok(engine) => engine,
    };
    if args.delete {
        eprintln!("migrate: --delete is not supported; the source is left as it is");
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("migrate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(migrate(source, sd, destination, dd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("migrate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(
    source: EngineName,
    sd: &str,
    destination: EngineName,
    dd: &str,
) -> anyhow::Result<()> {
    let from = storage::open(source, sd, None)
        .await
        .with_context(|| format!("cannot open the source \"{}\"", source.shown_dsn(sd)))?;
    let to = storage::open(destination, dd, None)
        .await
        .with_context(|| {
            format!(
                "cannot open the destination \"{}\"",
                destination.shown_dsn(dd)
            )
        })?;
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} records transferred ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let (mut ok_count, mut fail_count) = (0u64, 0u64);
    let mut cursor = None;
    loop {
        let (page, next) = from.scan(cursor, MIGRATE_BATCH).await?;
        if !page.is_empty() {
            match to.put_many(&page).await {
                Ok(()) => ok_count += page.len() as u64,
                Err(error) => {
                    fail_count += page.len() as u64;
                    let error = pyzor_milter::logging::Chain(&error);
                    progress.println(format!("{} records failed: {error}", page.len()));
                }
            }
            progress.set_position(ok_count);
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    progress.finish_and_clear();
    println!(
        "Migration complete, {ok_count} records transferred successfully, {fail_count} records failed"
    );
    Ok(())
}
