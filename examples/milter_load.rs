//! A milter-protocol load generator for the milter benchmark
//! (`scripts/bench-milter`), and the no-op milter it is compared with.
//!
//! `milter_load load ADDR CONNECTIONS SECONDS CORPUS_DIR` plays an MTA
//! (Sendmail's habits: protocol 6, the queue id with MAIL FROM) over
//! CONNECTIONS milter connections at once, each sending the corpus's
//! messages (`*/*.txt`, CRLF line ends) one after another for SECONDS, and
//! prints one line: `messages/s p50_ms p99_ms failed verdicts`, where the
//! time of a message runs from MAIL to the final end-of-message reply and
//! the verdicts are the first words of the X-Pyzor headers added.
//!
//! `milter_load pyzord ADDR CONNECTIONS SECONDS` measures the round trip
//! the milter's times are read against: CONNECTIONS clients, each sending
//! pyzord one check request at a time (one digest, as the milter asks for
//! one message) for SECONDS; it prints `requests/s p50_ms p99_ms failed`.
//!
//! `milter_load noop PORT` is an indymilter milter that negotiates the same
//! no-reply stages as ours, is handed the same stages (envelope, headers,
//! body: a milter that registers no callback for a stage tells the MTA to
//! skip it, and would never see the message) and accepts every message
//! without looking at it: the ceiling.
//!
//! The MTA side is `common/mta.rs`, shared with the soak test.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indymilter::{Callbacks, Config, ProtoOpts, Status};

#[path = "common/mta.rs"]
mod mta;
use mta::{Message, Mta, REPLY_TIMEOUT, corpus};

// The stages ours leaves unanswered: the no-op milter negotiates the same
// set, so both cost the same round trips.
use pyzor_milter::milter::callbacks::NOREPLY;

/// What one connection measured.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
    verdicts: BTreeMap<String, u64>,
}

async fn connection(
    address: String,
    messages: Arc<Vec<Message>>,
    first: usize,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut next = first;
    let mut mta = None;
    while Instant::now() < until {
        if mta.is_none() {
            match Mta::open(&address).await {
                Ok(opened) => mta = Some(opened),
                Err(_) => {
                    tally.failed += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(open) = mta.as_mut() else { continue };
        let message = &messages[next % messages.len()];
        let queue_id = format!("Q{first:04}{next:09}");
        next += 1;
        let started = Instant::now();
        match open.send(message, &queue_id).await {
            Ok(verdict) => {
                tally.latencies.push(started.elapsed());
                let key = match (verdict.reply, verdict.tag) {
                    (b'a' | b'c', Some(tag)) => tag,
                    (b'a' | b'c', None) => "accepted".to_owned(),
                    (reply, _) => format!("reply-{}", reply as char),
                };
                *tally.verdicts.entry(key).or_default() += 1;
            }
            Err(_) => {
                tally.failed += 1;
                mta = None;
            }
        }
    }
    tally
}

async fn load(address: &str, connections: usize, seconds: f64, dir: &Path) -> std::io::Result<()> {
    let messages = Arc::new(corpus(dir)?);
    if messages.is_empty() {
        return Err(std::io::Error::other("no */*.txt in the corpus directory"));
    }
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let stride = messages.len() / connections.max(1);
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let messages = Arc::clone(&messages);
            tokio::spawn(connection(address.to_owned(), messages, i * stride, until))
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.map_err(std::io::Error::other)?;
        total.latencies.extend(tally.latencies);
        total.failed += tally.failed;
        for (verdict, count) in tally.verdicts {
            *total.verdicts.entry(verdict).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies.sort();
    let verdicts: Vec<String> = total
        .verdicts
        .iter()
        .map(|(verdict, count)| format!("{verdict}={count}"))
        .collect();
    println!(
        "{:.0} {:.3} {:.3} {} {}",
        total.latencies.len() as f64 / elapsed,
        percentile(&total.latencies, 50),
        percentile(&total.latencies, 99),
        total.failed,
        verdicts.join(",")
    );
    Ok(())
}

/// One pyzord client: check requests one after another, as one milter
/// connection asks for one message after another. Returns the round trips
/// and the count of requests unanswered within REPLY_TIMEOUT.
async fn checker(address: String, first: u64, until: Instant) -> std::io::Result<Tally> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(&address).await?;
    let mut tally = Tally::default();
    let mut buffer = [0u8; 8192];
    let mut thread = first;
    while Instant::now() < until {
        thread += 1;
        let digest = format!("{:040x}", thread.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let request = format!("Op: check\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\n\n");
        let started = Instant::now();
        socket.send(request.as_bytes()).await?;
        let wanted = format!("Thread: {thread}\n");
        let answered = tokio::time::timeout(REPLY_TIMEOUT, async {
            loop {
                let length = socket.recv(&mut buffer).await?;
                let answer = &buffer[..length];
                if answer.windows(wanted.len()).any(|w| w == wanted.as_bytes()) {
                    return Ok::<_, std::io::Error>(());
                }
            }
        })
        .await;
        match answered {
            Ok(Ok(())) => tally.latencies.push(started.elapsed()),
            _ => tally.failed += 1,
        }
    }
    Ok(tally)
}

/// The pyzord round trip the milter's figures are read against: CONNECTIONS
/// clients checking one digest at a time for SECONDS; prints
/// `requests/s p50_ms p99_ms failed`.
async fn round_trip(address: &str, connections: usize, seconds: f64) -> std::io::Result<()> {
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections as u64)
        .map(|i| tokio::spawn(checker(address.to_owned(), i << 40, until)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.map_err(std::io::Error::other)??;
        total.latencies.extend(tally.latencies);
        total.failed += tally.failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies.sort();
    println!(
        "{:.0} {:.3} {:.3} {}",
        total.latencies.len() as f64 / elapsed,
        percentile(&total.latencies, 50),
        percentile(&total.latencies, 99),
        total.failed
    );
    Ok(())
}

/// The `p`th percentile of sorted durations, in milliseconds.
fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted
        .get(sorted.len().saturating_mul(p) / 100)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn noop(port: u16) -> std::io::Result<()> {
    let socket = pyzor_milter::milter::Socket::Inet {
        host: "127.0.0.1".into(),
        port,
    };
    // Our listener, so that the sockets are the same (TCP_NODELAY).
    let listener = pyzor_milter::milter::bind(&socket, 0o600).await?;
    let callbacks: Callbacks<()> = Callbacks::new()
        .on_negotiate(|cx, _actions, opts| {
            Box::pin(async move {
                cx.requested_opts |= opts & (NOREPLY | ProtoOpts::LEADING_SPACE);
                Status::Continue
            })
        })
        .on_connect(|_, _, _| Box::pin(async { Status::Noreply }))
        .on_mail(|_, _| Box::pin(async { Status::Noreply }))
        .on_rcpt(|_, _| Box::pin(async { Status::Noreply }))
        .on_header(|_, _, _| Box::pin(async { Status::Noreply }))
        .on_eoh(|_| Box::pin(async { Status::Noreply }))
        .on_body(|_, _| Box::pin(async { Status::Noreply }))
        .on_eom(|_| Box::pin(async { Status::Accept }));
    let config = Config {
        max_connections: 1024,
        ..Default::default()
    };
    indymilter::run(listener, callbacks, config, std::future::pending::<()>()).await
}

fn usage() -> ! {
    eprintln!(
        "usage: milter_load load ADDR CONNECTIONS SECONDS CORPUS_DIR | \
         milter_load pyzord ADDR CONNECTIONS SECONDS | milter_load noop PORT"
    );
    std::process::exit(2);
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new()?;
    match args.get(1).map(String::as_str) {
        Some("load") if args.len() == 6 => {
            let connections = args[3].parse().unwrap_or_else(|_| usage());
            let seconds = args[4].parse().unwrap_or_else(|_| usage());
            runtime.block_on(load(&args[2], connections, seconds, Path::new(&args[5])))
        }
        Some("pyzord") if args.len() == 5 => {
            let connections = args[3].parse().unwrap_or_else(|_| usage());
            let seconds = args[4].parse().unwrap_or_else(|_| usage());
            runtime.block_on(round_trip(&args[2], connections, seconds))
        }
        Some("noop") if args.len() == 3 => {
            let port = args[2].parse().unwrap_or_else(|_| usage());
            runtime.block_on(noop(port))
        }
        _ => usage(),
    }
}
