//! The soak test (`scripts/soak`): pyzord on Redis and the milter under
//! mixed load and faults for a number of minutes, then a tally.
//!
//! `soak BINARY CORPUS_DIR WORK_DIR MINUTES` starts redis-server (append-only
//! file, fsync at every write), `BINARY pyzord` on it and `BINARY milter`
//! asking that pyzord, all on 127.0.0.1 with their files in WORK_DIR. For
//! MINUTES it runs UDP clients reporting new digests and checking others,
//! and milter connections sending the corpus's messages, while every
//! [`FAULT_INTERVAL`] it injects a fault, in turn: Redis SIGKILLed and
//! started again, pyzord the same, or a DNS outage. The milter knows pyzord
//! by a name ([`PYZORD_NAME`]) that only its own /etc/hosts gives, in a
//! mount namespace (`common/names.rs`); an outage removes the name, reloads
//! the milter halfway (so that its new client has no address to keep) and
//! brings the name back, then measures how long the milter takes to check
//! messages again. pyzord forwards reports to two upstreams: one dead (a
//! socket that never answers) and one alive (another pyzord, on SQLite).
//! At the end it checks every report that was acknowledged with Code 200
//! against pyzord once more and prints requests served, errors by kind,
//! acknowledged reports lost (exit status 1 unless 0), how many of them
//! reached the live upstream, and the resident memory of pyzord and the
//! milter at the start and the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

#[path = "common/mta.rs"]
mod mta;
#[path = "common/names.rs"]
mod names;
#[path = "common/udp.rs"]
mod udp;

/// How often a fault is injected.
const FAULT_INTERVAL: Duration = Duration::from_secs(15);
/// How long a killed process stays dead.
const OUTAGE: Duration = Duration::from_secs(2);
/// How long a client waits for pyzord (pyzor's `Client.timeout`).
const CLIENT_WAIT: Duration = Duration::from_secs(5);
/// The name the milter asks pyzord by; `.test` is reserved (RFC 2606).
const PYZORD_NAME: &str = "pyzord.soak.test";
/// The milter's `resolve_refresh_secs`: short, so that an outage also
/// makes a refresh fail while the last address is kept.
const REFRESH_SECS: u64 = 5;
/// A DNS outage: the name is gone this long before the milter is
/// reloaded (a refresh fails meanwhile), and this long after.
const DNS_BEFORE_RELOAD: Duration = Duration::from_secs(REFRESH_SECS + 1);
const DNS_AFTER_RELOAD: Duration = Duration::from_secs(3);
/// UDP clients of each kind, and milter connections.
const REPORTERS: u64 = 4;
const CHECKERS: u64 = 4;
const MILTER_CONNECTIONS: usize = 8;

/// What was served and what failed, by kind.
#[derive(Default)]
struct Tally {
    served: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

type Shared<T> = Arc<Mutex<T>>;

fn count(map: &mut BTreeMap<String, u64>, key: String) {
    *map.entry(key).or_default() += 1;
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn spawn(command: &mut Command, log: &Path) -> std::io::Result<Process> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Ok(Process(command.stdout(Stdio::null()).stderr(log).spawn()?))
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// VmRSS in MB.
    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()));
        let kilobytes = status.ok().and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        });
        kilobytes.unwrap_or(0.0) / 1024.0
    }
}

/// Where the processes under test run and how to start each.
struct Setup {
    binary: PathBuf,
    work: PathBuf,
    redis_port: u16,
    pyzord: SocketAddr,
    milter_port: u16,
    /// pyzord's forwarding client homedir: a dead upstream, then a live one.
    forward: PathBuf,
}

/// The processes the faults kill and start again, and those they do not.
struct Services {
    setup: Setup,
    redis: Process,
    pyzord: Process,
    milter: Process,
    /// The live upstream pyzord, and the socket that swallows what is
    /// forwarded to the dead one.
    upstream: (Process, SocketAddr),
    _dead_upstream: std::net::UdpSocket,
    /// The largest RSS of a pyzord process just before it was killed, MB.
    pyzord_rss_before_kill: f64,
    /// How long the milter took to check messages again after each DNS
    /// outage ended.
    dns_heal: Vec<Duration>,
    /// The first of these is sent to see whether the milter checks again.
    messages: Arc<Vec<mta::Message>>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_until(what: &str, mut ready: impl AsyncFnMut() -> bool) -> std::io::Result<()> {
    let start = Instant::now();
    while !ready().await {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(std::io::Error::other(format!("{what} did not come up")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

impl Setup {
    fn start_redis(&self) -> std::io::Result<Process> {
        let (work, port) = (&self.work, self.redis_port);
        let dir = work.join("redis");
        std::fs::create_dir_all(&dir)?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&dir);
        Process::spawn(&mut command, &work.join("redis.log"))
    }

    fn start_pyzord(&self) -> std::io::Result<Process> {
        let mut command = Command::new(&self.binary);
        command
            .arg("pyzord")
            .arg("--homedir")
            .arg(self.work.join("pyzord"))
            .args([
                "-e",
                "redis",
                "--dsn",
                &format!("127.0.0.1,{},,0", self.redis_port),
            ])
            .args(["-a", "127.0.0.1", "-p", &self.pyzord.port().to_string()])
            .arg("--forward-client-homedir")
            .arg(&self.forward);
        Process::spawn(&mut command, &self.work.join("pyzord.log"))
    }

    /// The live upstream: our pyzord on SQLite, never killed.
    async fn start_upstream(&self) -> std::io::Result<(Process, SocketAddr)> {
        let home = self.work.join("upstream");
        std::fs::create_dir_all(&home)?;
        std::fs::write(home.join("pyzord.access"), "all : anonymous : allow\n")?;
        let address: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut command = Command::new(&self.binary);
        command
            .arg("pyzord")
            .arg("--homedir")
            .arg(&home)
            .args(["-e", "sqlite", "--dsn"])
            .arg(home.join("pyzord.sqlite"))
            .args(["-a", "127.0.0.1", "-p", &address.port().to_string()]);
        let process = Process::spawn(&mut command, &self.work.join("upstream.log"))?;
        pyzord_up(address).await?;
        Ok((process, address))
    }

    /// The milter in its mount namespace, asking pyzord by name.
    async fn start_milter(&self) -> std::io::Result<Process> {
        let config = self.work.join("milter.toml");
        std::fs::write(
            &config,
            format!(
                "socket = \"inet:127.0.0.1:{}\"\nservers = [\"{PYZORD_NAME}:{}\"]\n\
                 trusted_networks = []\ntimeout_ms = 2000\ncache_ttl_secs = 0\n\
                 resolve_refresh_secs = {REFRESH_SECS}\n",
                self.milter_port,
                self.pyzord.port()
            ),
        )?;
        let mut command = names::namespace_command(&self.work, &self.binary)?;
        command.arg("milter").arg("--config").arg(&config);
        let process = Process::spawn(&mut command, &self.work.join("milter.log"))?;
        let port = self.milter_port;
        wait_until("the milter", async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await?;
        Ok(process)
    }

    async fn redis_up(&self) -> std::io::Result<()> {
        let port = self.redis_port;
        wait_until("redis-server", async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await
    }

    async fn pyzord_up(&self) -> std::io::Result<()> {
        pyzord_up(self.pyzord).await
    }
}

async fn pyzord_up(address: SocketAddr) -> std::io::Result<()> {
    wait_until("pyzord", async || {
        let request = b"Op: ping\nThread: 1024\nPV: 2.1\n\n";
        ask(address, request, 1024, Duration::from_millis(300))
            .await
            .is_ok()
    })
    .await
}

impl Services {
    async fn start(
        binary: &Path,
        work: &Path,
        messages: Arc<Vec<mta::Message>>,
    ) -> std::io::Result<Services> {
        let home = work.join("pyzord");
        std::fs::create_dir_all(&home)?;
        std::fs::write(home.join("pyzord.access"), "all : anonymous : allow\n")?;
        let forward = work.join("forward");
        std::fs::create_dir_all(&forward)?;
        let setup = Setup {
            binary: binary.to_owned(),
            work: work.to_owned(),
            redis_port: free_port()?,
            pyzord: ([127, 0, 0, 1], free_port()?).into(),
            milter_port: free_port()?,
            forward,
        };
        let dead_upstream = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let upstream = setup.start_upstream().await?;
        std::fs::write(
            setup.forward.join("servers"),
            format!("{}\n{}\n", dead_upstream.local_addr()?, upstream.1),
        )?;
        let redis = setup.start_redis()?;
        setup.redis_up().await?;
        let pyzord = setup.start_pyzord()?;
        setup.pyzord_up().await?;
        names::write_hosts(work, PYZORD_NAME, Some("127.0.0.1"))?;
        let milter = setup.start_milter().await?;
        Ok(Services {
            setup,
            redis,
            pyzord,
            milter,
            upstream,
            _dead_upstream: dead_upstream,
            pyzord_rss_before_kill: 0.0,
            dns_heal: Vec::new(),
            messages,
        })
    }

    /// The name gone, the milter reloaded, the name back: returns how long
    /// the milter took to check a message again.
    async fn dns_outage(&mut self) -> std::io::Result<Duration> {
        let work = &self.setup.work;
        names::write_hosts(work, PYZORD_NAME, None)?;
        tokio::time::sleep(DNS_BEFORE_RELOAD).await;
        // SAFETY: kill only sends SIGHUP to the milter we started (unshare
        // and sh exec it, so it has their pid).
        unsafe { libc::kill(self.milter.0.id() as libc::pid_t, libc::SIGHUP) };
        tokio::time::sleep(DNS_AFTER_RELOAD).await;
        names::write_hosts(work, PYZORD_NAME, Some("127.0.0.1"))?;
        let back = Instant::now();
        let milter = format!("127.0.0.1:{}", self.setup.milter_port);
        let mut probe = 0;
        loop {
            probe += 1;
            let mut connection = mta::Mta::open(&milter).await?;
            let verdict = connection
                .send(&self.messages[0], &format!("P{probe:011}"))
                .await?;
            if verdict.tag.as_deref().is_some_and(|tag| tag != "error") {
                return Ok(back.elapsed());
            }
            if back.elapsed() > Duration::from_secs(60) {
                return Err(std::io::Error::other(
                    "the milter did not check messages again within 60 s of the name's return",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills Redis or pyzord and starts it again, or takes pyzord's name
    /// away for a while (`round` picks).
    async fn fault(&mut self, round: u64) -> std::io::Result<&'static str> {
        match round % 3 {
            0 => {
                self.redis.kill();
                tokio::time::sleep(OUTAGE).await;
                self.redis = self.setup.start_redis()?;
                self.setup.redis_up().await?;
                Ok("redis-server SIGKILLed and restarted")
            }
            1 => {
                self.pyzord_rss_before_kill = self.pyzord_rss_before_kill.max(self.pyzord.rss_mb());
                self.pyzord.kill();
                tokio::time::sleep(OUTAGE).await;
                self.pyzord = self.setup.start_pyzord()?;
                self.setup.pyzord_up().await?;
                Ok("pyzord SIGKILLed and restarted")
            }
            _ => {
                let healed = self.dns_outage().await?;
                self.dns_heal.push(healed);
                Ok("DNS outage (pyzord's name gone, the milter reloaded meanwhile)")
            }
        }
    }
}

/// Sends one request and waits up to `wait` for the answer with `thread`.
async fn ask(
    server: SocketAddr,
    request: &[u8],
    thread: u64,
    wait: Duration,
) -> Result<Vec<u8>, &'static str> {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|_| "cannot bind")?;
    socket
        .send_to(request, server)
        .await
        .map_err(|_| "cannot send")?;
    let mut buffer = vec![0u8; 65536];
    tokio::time::timeout(wait, async {
        loop {
            let (length, _) = socket
                .recv_from(&mut buffer)
                .await
                .map_err(|_| "receive failed")?;
            if udp::thread_of(&buffer[..length]) == Some(thread) {
                return Ok(buffer[..length].to_vec());
            }
        }
    })
    .await
    .map_err(|_| "no answer in 5 s")?
}

/// One UDP client: reports new digests (`report`) or checks digests from a
/// set of 10,000, one request at a time until `until`.
async fn pyzord_client(
    server: SocketAddr,
    client: u64,
    report: bool,
    until: Instant,
    tally: Shared<Tally>,
    acknowledged: Shared<Vec<String>>,
) {
    let op = if report { "report" } else { "check" };
    let mut index = 0u64;
    while Instant::now() < until {
        index += 1;
        let digest = if report {
            format!("{:08x}{client:08x}{index:024x}", std::process::id())
        } else {
            format!(
                "{:040x}",
                index.wrapping_mul(0x9e37_79b9_7f4a_7c15) % 10_000
            )
        };
        let thread = 1024 + index % 60_000;
        let request = format!("Op: {op}\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\n\n");
        let result = ask(server, request.as_bytes(), thread, CLIENT_WAIT).await;
        let code = result.as_deref().map(udp::code_of);
        let mut tally = tally.lock().expect("tally");
        match code {
            Ok(Some(200)) => {
                count(&mut tally.served, format!("pyzord {op}"));
                if report {
                    acknowledged.lock().expect("acknowledged").push(digest);
                }
            }
            Ok(Some(code)) => count(&mut tally.errors, format!("pyzord {op}: Code {code}")),
            Ok(None) => count(
                &mut tally.errors,
                format!("pyzord {op}: answer without Code"),
            ),
            Err(why) => count(&mut tally.errors, format!("pyzord {op}: {why}")),
        }
    }
}

/// One milter connection sending corpus messages until `until`.
async fn milter_client(
    milter: String,
    messages: Arc<Vec<mta::Message>>,
    first: usize,
    until: Instant,
    tally: Shared<Tally>,
) {
    let mut next = first;
    let mut connection = None;
    while Instant::now() < until {
        if connection.is_none() {
            match mta::Mta::open(&milter).await {
                Ok(opened) => connection = Some(opened),
                Err(error) => {
                    count(
                        &mut tally.lock().expect("tally").errors,
                        format!("milter: cannot open a connection: {error}"),
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        let message = &messages[next % messages.len()];
        next += 1;
        let result = open.send(message, &format!("S{first:03}{next:09}")).await;
        let mut tally = tally.lock().expect("tally");
        match result {
            Ok(verdict) => {
                let key = match (verdict.reply, verdict.tag) {
                    (b'a' | b'c', Some(tag)) => format!("milter message, X-Pyzor {tag}"),
                    (reply, _) => format!("milter message, reply {}", reply as char),
                };
                count(&mut tally.served, key);
            }
            Err(error) => {
                count(
                    &mut tally.errors,
                    format!("milter: message failed: {error}"),
                );
                connection = None;
            }
        }
    }
}

/// Checks every acknowledged digest once more: returns how many have no
/// count (lost) and how many got no usable answer after three tries.
async fn recheck(server: SocketAddr, digests: Vec<String>) -> (u64, u64) {
    let digests = Arc::new(digests);
    let workers: Vec<_> = (0..16)
        .map(|worker| {
            let digests = Arc::clone(&digests);
            tokio::spawn(async move {
                let (mut lost, mut unanswered) = (0, 0);
                for (index, digest) in digests.iter().enumerate().skip(worker).step_by(16) {
                    let thread = 1024 + index as u64 % 60_000;
                    let request =
                        format!("Op: check\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\n\n");
                    let mut answer = None;
                    for _ in 0..3 {
                        if let Ok(got) = ask(server, request.as_bytes(), thread, CLIENT_WAIT).await
                            && udp::code_of(&got) == Some(200)
                        {
                            answer = Some(got);
                            break;
                        }
                    }
                    let Some(answer) = answer else {
                        unanswered += 1;
                        continue;
                    };
                    let text = String::from_utf8_lossy(&answer);
                    let reports: i64 = text
                        .lines()
                        .find_map(|line| line.strip_prefix("Count: "))
                        .and_then(|value| value.trim().parse().ok())
                        .unwrap_or(0);
                    if reports < 1 {
                        lost += 1;
                    }
                }
                (lost, unanswered)
            })
        })
        .collect();
    let (mut lost, mut unanswered) = (0, 0);
    for worker in workers {
        let (worker_lost, worker_unanswered) = worker.await.expect("a recheck worker");
        lost += worker_lost;
        unanswered += worker_unanswered;
    }
    (lost, unanswered)
}

fn print_map(title: &str, map: &BTreeMap<String, u64>) {
    println!("{title}:");
    if map.is_empty() {
        println!("  none");
    }
    for (kind, number) in map {
        println!("  {number:>10}  {kind}");
    }
}

async fn soak(binary: &Path, corpus: &Path, work: &Path, minutes: f64) -> std::io::Result<bool> {
    let messages = Arc::new(mta::corpus(corpus)?);
    if messages.is_empty() {
        return Err(std::io::Error::other("no */*.txt in the corpus directory"));
    }
    let mut services = Services::start(binary, work, Arc::clone(&messages)).await?;
    let milter_port = services.setup.milter_port;
    let rss_start = (services.pyzord.rss_mb(), services.milter.rss_mb());

    let started = Instant::now();
    let until = started + Duration::from_secs_f64(minutes * 60.0);
    let tally: Shared<Tally> = Arc::default();
    let acknowledged: Shared<Vec<String>> = Arc::default();
    let mut load = tokio::task::JoinSet::new();
    for client in 0..REPORTERS + CHECKERS {
        let (tally, acknowledged) = (Arc::clone(&tally), Arc::clone(&acknowledged));
        let report = client < REPORTERS;
        load.spawn(pyzord_client(
            services.setup.pyzord,
            client,
            report,
            until,
            tally,
            acknowledged,
        ));
    }
    let stride = messages.len() / MILTER_CONNECTIONS;
    for connection in 0..MILTER_CONNECTIONS {
        let milter = format!("127.0.0.1:{milter_port}");
        let (messages, tally) = (Arc::clone(&messages), Arc::clone(&tally));
        load.spawn(milter_client(
            milter,
            messages,
            connection * stride,
            until,
            tally,
        ));
    }
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut round = 0;
    while Instant::now() + FAULT_INTERVAL < until {
        tokio::time::sleep(FAULT_INTERVAL).await;
        let fault = services.fault(round).await?;
        count(&mut faults, fault.to_owned());
        round += 1;
    }
    while load.join_next().await.is_some() {}
    let rss_end = (services.pyzord.rss_mb(), services.milter.rss_mb());
    let elapsed = started.elapsed().as_secs_f64();

    let digests = std::mem::take(&mut *acknowledged.lock().expect("acknowledged"));
    let acknowledged_count = digests.len();
    let (lost, unanswered) = recheck(services.setup.pyzord, digests.clone()).await;
    let (not_forwarded, upstream_unanswered) = recheck(services.upstream.1, digests).await;

    let tally = tally.lock().expect("tally");
    println!(
        "soak: {:.1} minutes, {} corpus messages",
        elapsed / 60.0,
        messages.len()
    );
    print_map("faults injected", &faults);
    let served: u64 = tally.served.values().sum();
    print_map(
        &format!(
            "requests served: {served} ({:.0}/s)",
            served as f64 / elapsed
        ),
        &tally.served,
    );
    print_map("errors by kind", &tally.errors);
    println!(
        "acknowledged reports: {acknowledged_count}, re-checked: {}, without an answer: \
         {unanswered}, lost: {lost}",
        acknowledged_count as u64 - unanswered
    );
    println!(
        "forwarded to the live upstream (listed after a dead one): {} of the acknowledged \
         reports ({upstream_unanswered} re-checks there without an answer)",
        acknowledged_count as u64 - not_forwarded - upstream_unanswered
    );
    if let (Some(fastest), Some(slowest)) = (
        services.dns_heal.iter().min(),
        services.dns_heal.iter().max(),
    ) {
        println!(
            "DNS outages: the milter checked messages again {fastest:.1?} to {slowest:.1?} \
             after the name came back"
        );
    }
    println!(
        "RSS pyzord: {:.1} MB at start, {:.1} MB at end (the last of its processes; the \
         largest before a kill {:.1} MB)",
        rss_start.0, rss_end.0, services.pyzord_rss_before_kill
    );
    println!(
        "RSS milter: {:.1} MB at start, {:.1} MB at end",
        rss_start.1, rss_end.1
    );
    Ok(lost == 0 && unanswered == 0)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, binary, corpus, work, minutes] = &args[..] else {
        eprintln!("usage: soak BINARY CORPUS_DIR WORK_DIR MINUTES");
        std::process::exit(2);
    };
    let Ok(minutes) = minutes.parse::<f64>() else {
        eprintln!("soak: MINUTES is not a number: \"{minutes}\"");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let kept = runtime.block_on(soak(
        Path::new(binary),
        Path::new(corpus),
        Path::new(work),
        minutes,
    ))?;
    if !kept {
        std::process::exit(1);
    }
    Ok(())
}
