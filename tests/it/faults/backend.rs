//! Redis and MariaDB frozen (SIGSTOP, then SIGCONT), then SIGKILLed and
//! restarted on the same port and data, while our pyzord takes a stream of
//! reports: every request gets an answer
//! (an error one while the database is down) within a bound, pyzord serves
//! again by itself once the database is back, and every report it
//! acknowledged with Code 200 is in the database, read there directly.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pyzor_milter::storage::{BACKEND_TIMEOUT, EngineName};

use super::{code_of, exchange};
use crate::server_util::{Mariadb, OurServer, RedisServer, open_homedir, temp_dir};

/// Requests sent at once, each by its own sender.
const SENDERS: u64 = 8;
/// The longest an answer may take while the database is dead: the engine's
/// bound on a call, and slack for a busy machine.
const ANSWER_BOUND: Duration = BACKEND_TIMEOUT.saturating_add(Duration::from_secs(2));
/// How soon after the database is back pyzord must serve again.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// How long the database stays dead.
const OUTAGE: Duration = Duration::from_secs(3);

/// One report sent by the stream.
pub(crate) struct Sent {
    pub(crate) digest: String,
    pub(crate) code: Option<u16>,
    pub(crate) latency: Duration,
}

/// Senders reporting a new digest each, one request at a time, until
/// `stop`; each returns what it sent and what came back.
pub(crate) fn report_stream(
    server: SocketAddr,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Sent>>> {
    (0..SENDERS)
        .map(|sender| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
                let mut sent = Vec::new();
                let mut index = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    index += 1;
                    let digest = format!("{:020x}{index:020x}", sender + 1);
                    let thread = 1024 + index % 60_000;
                    let request =
                        format!("Op: report\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\n\n");
                    let (answer, latency) = exchange(&socket, server, request.as_bytes(), thread);
                    sent.push(Sent {
                        digest,
                        code: answer.as_deref().and_then(code_of),
                        latency,
                    });
                }
                sent
            })
        })
        .collect()
}

/// Stops the report stream and returns what it sent, every request
/// answered with Code 200 or 500.
pub(crate) fn stop_stream(
    what: &str,
    stop: &AtomicBool,
    senders: Vec<std::thread::JoinHandle<Vec<Sent>>>,
) -> Vec<Sent> {
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<Sent> = senders
        .into_iter()
        .flat_map(|sender| sender.join().expect("sender"))
        .collect();
    let unanswered = sent.iter().filter(|sent| sent.code.is_none()).count();
    assert_eq!(unanswered, 0, "{what}: requests without an answer");
    let other: Vec<Option<u16>> = sent
        .iter()
        .map(|sent| sent.code)
        .filter(|code| !matches!(code, Some(200 | 500)))
        .collect();
    assert!(other.is_empty(), "{what}: unexpected codes {other:?}");
    sent
}

/// Whether pyzord answers a check with Code 200.
pub(super) fn serves(server: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let request = format!(
        "Op: check\nOp-Digest: {}\nThread: 7\nPV: 2.1\n\n",
        "e".repeat(40)
    );
    let (answer, _) = exchange(&socket, server, request.as_bytes(), 7);
    answer.as_deref().and_then(code_of) == Some(200)
}

/// A database server the test can crash and bring back.
trait Backend {
    fn kill(&mut self);
    fn restart(&mut self);
}

impl Backend for RedisServer {
    fn kill(&mut self) {
        RedisServer::kill(self);
    }
    fn restart(&mut self) {
        RedisServer::restart(self);
    }
}

impl Backend for Mariadb {
    fn kill(&mut self) {
        Mariadb::kill(self);
    }
    fn restart(&mut self) {
        Mariadb::restart(self);
    }
}

/// A database server frozen by SIGSTOP and thawed by SIGCONT: it accepts
/// connections (the kernel does) and answers nothing, the case that only
/// timeouts turn into answers.
struct Frozen(u32);

impl Frozen {
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.0.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name} {}", self.0);
    }
}

impl Backend for Frozen {
    fn kill(&mut self) {
        self.signal("-STOP");
    }
    fn restart(&mut self) {
        self.signal("-CONT");
    }
}

/// Runs the report stream against `server`, kills the database
/// mid-stream, brings it back after [`OUTAGE`], and checks the answers;
/// returns the acknowledged digests.
fn outage(engine: &str, server: SocketAddr, backend: &mut impl Backend) -> HashSet<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let senders = report_stream(server, &stop);
    std::thread::sleep(Duration::from_secs(1));
    backend.kill();
    std::thread::sleep(OUTAGE);
    backend.restart();
    let back = Instant::now();
    while !serves(server) {
        assert!(
            back.elapsed() < RECOVERY_BOUND,
            "{engine}: pyzord does not serve {RECOVERY_BOUND:?} after the database came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovery = back.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let sent = stop_stream(engine, &stop, senders);
    let slowest = sent
        .iter()
        .map(|sent| sent.latency)
        .max()
        .unwrap_or_default();
    assert!(
        slowest < ANSWER_BOUND,
        "{engine}: an answer took {slowest:?}"
    );
    let errors = sent.iter().filter(|sent| sent.code == Some(500)).count();
    let acknowledged: HashSet<String> = sent
        .iter()
        .filter(|sent| sent.code == Some(200))
        .map(|sent| sent.digest.clone())
        .collect();
    assert!(errors > 0, "{engine}: no request met the dead database");
    assert!(
        acknowledged.len() > 50,
        "{engine}: only {} reports acknowledged",
        acknowledged.len()
    );
    eprintln!(
        "{engine}: {} reports, {} acknowledged, {errors} error answers, slowest answer \
         {slowest:?}, serving again {recovery:?} after the database",
        sent.len(),
        acknowledged.len()
    );
    acknowledged
}

#[test]
fn redis_frozen_then_killed_and_restarted_under_load() {
    let dir = temp_dir();
    // What an operator who wants every acknowledged write kept runs.
    let mut redis = RedisServer::start_with(
        dir.path(),
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let home = open_homedir();
    let dsn = format!("127.0.0.1,{},,0", redis.port);
    let ours = OurServer::start(EngineName::Redis, &dsn, home.path());
    let mut acknowledged = outage("redis frozen", ours.address, &mut Frozen(redis.pid()));
    acknowledged.extend(outage("redis killed", ours.address, &mut redis));
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port)).expect("redis url");
    let mut connection = client.get_connection().expect("connect to redis");
    let mut pipe = redis::pipe();
    let digests: Vec<&String> = acknowledged.iter().collect();
    for digest in &digests {
        pipe.cmd("HGET")
            .arg(format!("pyzord.digest_v1.{digest}"))
            .arg("r_count");
    }
    let counts: Vec<Option<i64>> = pipe.query(&mut connection).expect("read the counts");
    let lost: Vec<&&String> = digests
        .iter()
        .zip(&counts)
        .filter(|(_, count)| count.unwrap_or(0) < 1)
        .map(|(digest, _)| digest)
        .collect();
    assert!(lost.is_empty(), "{} acknowledged reports lost", lost.len());
}

#[test]
fn mariadb_frozen_then_killed_and_restarted_under_load() {
    let dir = temp_dir();
    let mut mariadb = Mariadb::start(dir.path());
    let home = open_homedir();
    let dsn = format!("127.0.0.1:{},pyzor,secret,pyzor,public", mariadb.port);
    let ours = OurServer::start(EngineName::Mysql, &dsn, home.path());
    let mut acknowledged = outage("mariadb frozen", ours.address, &mut Frozen(mariadb.pid()));
    acknowledged.extend(outage("mariadb killed", ours.address, &mut mariadb));
    let output = Command::new("mariadb")
        .arg(format!(
            "--socket={}",
            dir.path().join("mysqld.sock").display()
        ))
        .args(["-uroot", "--batch", "--skip-column-names", "pyzor", "-e"])
        .arg("SELECT digest FROM public WHERE r_count >= 1")
        .output()
        .expect("run mariadb");
    assert!(output.status.success(), "{output:?}");
    let stored: HashSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let lost = acknowledged.difference(&stored).count();
    assert_eq!(lost, 0, "{lost} acknowledged reports lost");
}
