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
//! no-reply stages as ours and accepts every message: the ceiling.
//!
//! The client is written here rather than with indymilter-test, whose
//! socket has Nagle's algorithm on: with every stage before end of message
//! unanswered, small writes then wait for delayed ACKs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indymilter::{Callbacks, Config, ProtoOpts, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

// The stages ours leaves unanswered: the no-op milter negotiates the same
// set, so both cost the same round trips.
use pyzor_milter::milter::callbacks::NOREPLY;

/// Milter protocol version 6 (Sendmail 8.14 and later, Postfix 2.6 and later).
const VERSION: u32 = 6;
/// Every action (SMFIF_*) an MTA offers.
const ALL_ACTIONS: u32 = 0x1ff;
/// Every protocol option (SMFIP_*) up to SMFIP_HDR_LEADSPC.
const ALL_OPTS: u32 = 0x1f_ffff;
/// How long a reply may take before the connection counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The body chunk size MTAs use (MILTER_CHUNK_SIZE).
const CHUNK: usize = 65535;

/// SMFIP_NO* (the stage is not sent) and SMFIP_NR_* (it is not answered).
struct Stage {
    skip: u32,
    no_reply: u32,
}
const CONNECT: Stage = Stage {
    skip: 0x1,
    no_reply: 0x1000,
};
const HELO: Stage = Stage {
    skip: 0x2,
    no_reply: 0x2000,
};
const MAIL: Stage = Stage {
    skip: 0x4,
    no_reply: 0x4000,
};
const RCPT: Stage = Stage {
    skip: 0x8,
    no_reply: 0x8000,
};
const BODY: Stage = Stage {
    skip: 0x10,
    no_reply: 0x80000,
};
const HEADER: Stage = Stage {
    skip: 0x20,
    no_reply: 0x80,
};
const EOH: Stage = Stage {
    skip: 0x40,
    no_reply: 0x40000,
};
const DATA: Stage = Stage {
    skip: 0x200,
    no_reply: 0x10000,
};
const LEADING_SPACE: u32 = 0x10_0000;

/// One corpus message as an MTA hands it over.
struct Message {
    /// Header name and value, the value with its leading space and with
    /// folded lines joined by LF.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body with CRLF line ends.
    body: Vec<u8>,
}

fn split(raw: &[u8]) -> Message {
    let raw: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\r').collect();
    let (head, body) = match raw.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&raw[..at], &raw[at + 2..]),
        None => (&raw[..], &[][..]),
    };
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line: Vec<u8> = line.iter().copied().filter(|&b| b != 0).collect();
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if let Some((_, value)) = headers.last_mut() {
                value.push(b'\n');
                value.extend_from_slice(&line);
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            headers.push((line[..colon].to_vec(), line[colon + 1..].to_vec()));
        }
    }
    let mut crlf = Vec::with_capacity(body.len() + body.len() / 40);
    for &byte in body {
        if byte == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(byte);
    }
    Message {
        headers,
        body: crlf,
    }
}

fn corpus(dir: &Path) -> std::io::Result<Vec<Message>> {
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
    files
        .iter()
        .map(|f| Ok(split(&std::fs::read(f)?)))
        .collect()
}

/// One milter connection, played as an MTA.
struct Mta {
    stream: BufReader<TcpStream>,
    out: Vec<u8>,
    opts: u32,
}

/// A final end-of-message reply, and the first word of an added X-Pyzor.
struct Verdict {
    reply: u8,
    tag: Option<String>,
}

impl Mta {
    async fn open(address: &str) -> std::io::Result<Mta> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let mut mta = Mta {
            stream: BufReader::new(stream),
            out: Vec::new(),
            opts: 0,
        };
        let mut negotiate = Vec::new();
        for word in [VERSION, ALL_ACTIONS, ALL_OPTS] {
            negotiate.extend_from_slice(&word.to_be_bytes());
        }
        mta.command(b'O', &negotiate);
        let (code, data) = mta.reply().await?;
        if code != b'O' || data.len() < 12 {
            return Err(std::io::Error::other("bad negotiation reply"));
        }
        mta.opts = u32::from_be_bytes(data[8..12].try_into().expect("four bytes"));
        let mut connect = b"client.example.org\x004".to_vec();
        connect.extend_from_slice(&41000u16.to_be_bytes());
        connect.extend_from_slice(b"192.0.2.25\0");
        mta.stage(&CONNECT, b'C', &connect).await?;
        mta.stage(&HELO, b'H', b"client.example.org\0").await?;
        Ok(mta)
    }

    fn command(&mut self, code: u8, data: &[u8]) {
        let length = u32::try_from(data.len() + 1).expect("small command");
        self.out.extend_from_slice(&length.to_be_bytes());
        self.out.push(code);
        self.out.extend_from_slice(data);
    }

    async fn reply(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        if !self.out.is_empty() {
            self.stream.get_mut().write_all(&self.out).await?;
            self.out.clear();
        }
        let read = async {
            let length = self.stream.read_u32().await? as usize;
            let mut data = vec![0; length];
            self.stream.read_exact(&mut data).await?;
            Ok::<_, std::io::Error>(data)
        };
        let mut data = tokio::time::timeout(REPLY_TIMEOUT, read)
            .await
            .map_err(|_| std::io::Error::other("no reply in time"))??;
        if data.is_empty() {
            return Err(std::io::Error::other("empty reply"));
        }
        let code = data.remove(0);
        Ok((code, data))
    }

    /// Sends a stage unless skipped; reads its reply unless no-reply.
    async fn stage(&mut self, stage: &Stage, code: u8, data: &[u8]) -> std::io::Result<()> {
        if self.opts & stage.skip != 0 {
            return Ok(());
        }
        self.command(code, data);
        if self.opts & stage.no_reply == 0 {
            let (reply, _) = self.reply().await?;
            if reply != b'c' {
                return Err(std::io::Error::other(format!("reply {}", reply as char)));
            }
        }
        Ok(())
    }

    async fn send(&mut self, message: &Message, queue_id: &str) -> std::io::Result<Verdict> {
        let mut macros = b"Mi\0".to_vec();
        macros.extend_from_slice(queue_id.as_bytes());
        macros.push(0);
        self.command(b'D', &macros);
        self.stage(&MAIL, b'M', b"<sender@example.org>\0").await?;
        self.stage(&RCPT, b'R', b"<rcpt@example.net>\0").await?;
        self.stage(&DATA, b'T', b"").await?;
        let leading_space = self.opts & LEADING_SPACE != 0;
        for (name, value) in &message.headers {
            let value = match value.strip_prefix(b" ") {
                Some(rest) if !leading_space => rest,
                _ => value,
            };
            let mut data = Vec::with_capacity(name.len() + value.len() + 2);
            data.extend_from_slice(name);
            data.push(0);
            data.extend_from_slice(value);
            data.push(0);
            self.stage(&HEADER, b'L', &data).await?;
        }
        self.stage(&EOH, b'N', b"").await?;
        for chunk in message.body.chunks(CHUNK) {
            self.stage(&BODY, b'B', chunk).await?;
        }
        self.command(b'E', b"");
        let mut tag = None;
        loop {
            let (reply, data) = self.reply().await?;
            match reply {
                b'h' if data.starts_with(b"X-Pyzor\0") => {
                    let value = String::from_utf8_lossy(&data[8..]);
                    tag = value.split(';').next().map(|w| w.trim().to_owned());
                }
                b'a' | b'c' | b'r' | b't' | b'y' | b'd' => {
                    return Ok(Verdict { reply, tag });
                }
                _ => {}
            }
        }
    }
}

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
