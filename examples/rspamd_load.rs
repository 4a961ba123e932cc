//! Load for rspamd's pyzor scanner protocol (`scripts/bench-rspamd`), and
//! the Python recipe it is compared with.
//!
//! `rspamd_load load ADDR CONNECTIONS SECONDS CORPUS_DIR` plays rspamd's
//! `external_services` pyzor scanner over CONNECTIONS connections at once:
//! each connects, writes one corpus message (`*/*.txt`, as stored), shuts
//! its side down and reads the answer to end of file, then the next, for
//! SECONDS. It prints one line: `messages/s p50_ms p99_ms failed answers`,
//! where the time of a message runs from connect to end of file and the
//! answers are counted by their second field (`(200, 'OK')`, an error).
//!
//! `rspamd_load forking PORT PYZOR HOMEDIR` is the recipe rspamd's
//! documentation gives: a socket with `Accept=yes` whose service runs
//! `pyzor --homedir HOMEDIR check` with the connection as its standard
//! input and output, one process per connection, here without systemd.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request may take this long before it counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
    answers: BTreeMap<String, u64>,
}

async fn one(address: &str, message: &[u8]) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(message).await?;
    stream.shutdown().await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

async fn connection(
    address: Arc<str>,
    messages: Arc<Vec<Vec<u8>>>,
    first: usize,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut next = first;
    while Instant::now() < until {
        let message = &messages[next % messages.len()];
        next += 1;
        let started = Instant::now();
        match tokio::time::timeout(ANSWER_TIMEOUT, one(&address, message)).await {
            Ok(Ok(answer)) if answer.ends_with('\n') => {
                tally.latencies.push(started.elapsed());
                let field = answer
                    .split('\t')
                    .nth(1)
                    .unwrap_or("none")
                    .trim()
                    .to_owned();
                *tally.answers.entry(field).or_default() += 1;
            }
            _ => tally.failed += 1,
        }
    }
    tally
}

fn corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut files = Vec::new();
    for sub in std::fs::read_dir(dir)? {
        let sub = sub?.path();
        if sub.is_dir() {
            for file in std::fs::read_dir(&sub)? {
                let file = file?.path();
                if file.extension().is_some_and(|e| e == "txt") {
                    files.push(file);
                }
            }
        }
    }
    files.sort();
    files.iter().map(std::fs::read).collect()
}

fn load(address: &str, connections: usize, seconds: u64, dir: &Path) {
    let messages = Arc::new(corpus(dir).expect("read the corpus"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let address: Arc<str> = address.into();
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|index| {
                let first = index * messages.len() / connections;
                tokio::spawn(connection(
                    Arc::clone(&address),
                    Arc::clone(&messages),
                    first,
                    until,
                ))
            })
            .collect();
        let mut tallies = Vec::new();
        for task in tasks {
            tallies.push(task.await.expect("a load task"));
        }
        tallies
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    for tally in tallies {
        latencies.extend(tally.latencies);
        failed += tally.failed;
        for (answer, count) in tally.answers {
            *answers.entry(answer).or_default() += count;
        }
    }
    latencies.sort();
    let quantile = |q: usize| {
        latencies
            .get(latencies.len().saturating_mul(q) / 100)
            .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    let answers: Vec<String> = answers
        .iter()
        .map(|(answer, count)| format!("{answer}={count}"))
        .collect();
    println!(
        "{:.1} {:.1} {:.1} {failed} {}",
        latencies.len() as f64 / elapsed,
        quantile(50),
        quantile(99),
        answers.join(",").replace(' ', "")
    );
}

/// One `pyzor check` per connection, its standard input and output the
/// connection, as systemd's `Accept=yes` runs it.
fn forking(port: u16, pyzor: &str, homedir: &str) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let Ok(output) = stream.try_clone() else {
            continue;
        };
        let child = Command::new(pyzor)
            .args(["--homedir", homedir, "check"])
            .stdin(Stdio::from(OwnedFd::from(stream)))
            .stdout(Stdio::from(OwnedFd::from(output)))
            .stderr(Stdio::null())
            .spawn();
        match child {
            // Reaped by a thread of its own, so that accepting never waits.
            Ok(mut child) => {
                std::thread::spawn(move || child.wait());
            }
            Err(error) => eprintln!("cannot run {pyzor}: {error}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: rspamd_load load ADDR CONNECTIONS SECONDS CORPUS_DIR | forking PORT PYZOR HOMEDIR";
    match args.get(1).map(String::as_str) {
        Some("load") if args.len() == 6 => load(
            &args[2],
            args[3].parse().expect("CONNECTIONS"),
            args[4].parse().expect("SECONDS"),
            Path::new(&args[5]),
        ),
        Some("forking") if args.len() == 5 => {
            forking(args[2].parse().expect("PORT"), &args[3], &args[4])
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
