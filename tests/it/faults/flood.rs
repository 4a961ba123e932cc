//! Floods against our pyzord as a child process: valid anonymous reports
//! with new digests sent as fast as the senders can, without waiting for
//! the answers, and 256-digest checks with the usage log on a FIFO that
//! the test drains at 1 MB/s. Its resident memory, sampled from /proc
//! throughout, levels off below a stated bound; it answers a check at the
//! end; and every report it acknowledged with Code 200 is in the database.
//! With the commits held back by another connection's write lock, the
//! commit queue fills: reports past it are answered 500 at once, checks go
//! on being answered, and what was acknowledged is stored.

use std::collections::HashSet;
use std::io::Read as _;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::memory::rss_bytes;
use super::{code_of, exchange};
use crate::server_util::{ChildGuard, free_port, metric_sums, start_child_pyzord, temp_dir};

/// How long each flood lasts.
const FLOOD: Duration = Duration::from_secs(20);
/// Threads sending, each from its own socket.
const SENDERS: u64 = 2;
/// The most resident memory pyzord may reach under a flood of reports:
/// its commit queue (32,768 digests with their answers waiting), SQLite's
/// page caches, the runtime and slack. Unbounded, it passed 800 MB in 60 s.
const MAX_REPORT_FLOOD_RSS: u64 = 160 << 20;
/// The same under checks logged to a slow sink: the log queue (1,024
/// usage lines of 256 digests each, about 12 MB) and slack. Unbounded, it
/// passed 1 GB in 15 s.
const MAX_LOGGED_FLOOD_RSS: u64 = 128 << 20;
/// How much the peak of the flood's second half may pass its first
/// half's: a bounded server has reached its level within seconds.
const LEVEL_SLACK: u64 = 24 << 20;
/// The commit queue's metrics and bound (`sqlite::MAX_PENDING_DIGESTS`).
const COMMIT_DEPTH: &str = "pyzord_queue_depth{queue=\"commit\"}";
const COMMIT_REFUSED: &str = "pyzord_queue_dropped_total{queue=\"commit\",reason=\"full\"}";
const COMMIT_CAPACITY: u64 = 32_768;
/// The usage log's queue and its bound in lines.
const USAGE_DEPTH: &str = "pyzord_queue_depth{queue=\"log\",sink=\"usage\"}";
const LOG_CAPACITY: u64 = 1024;
/// How fast the test drains the usage log FIFO.
const SINK_BYTES_PER_SEC: usize = 1 << 20;

/// Samples a process's RSS, and the depth of one of its queues from its
/// metrics, every 100 ms until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Samples>,
}

/// The peaks of RSS in the first and the second half of a flood, and of a
/// queue's depth.
struct Samples {
    first_half: u64,
    second_half: u64,
    depth: u64,
}

impl Sampler {
    fn start(pid: u32, metrics: SocketAddr, queue: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut rss = Vec::new();
                let mut depth = 0;
                while !stop.load(Ordering::Relaxed) {
                    rss.push(rss_bytes(pid));
                    depth = depth.max(metric_sums(metrics, [queue])[0]);
                    std::thread::sleep(Duration::from_millis(100));
                }
                let half = rss.len() / 2;
                let peak = |part: &[u64]| part.iter().copied().max().unwrap_or(0);
                Samples {
                    first_half: peak(&rss[..half]),
                    second_half: peak(&rss[half..]),
                    depth,
                }
            })
        };
        Self { stop, thread }
    }

    fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

impl Samples {
    /// RSS stayed under `bound` and stopped rising.
    fn assert_level(&self, bound: u64) {
        assert!(self.first_half.max(self.second_half) <= bound);
        assert!(
            self.second_half <= self.first_half + LEVEL_SLACK,
            "RSS still rising"
        );
    }
}

/// Our pyzord in `home` with its metrics on a free port.
fn start_pyzord(home: &Path) -> (ChildGuard, SocketAddr, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port(false))
        .parse()
        .expect("address");
    let (child, server) = start_child_pyzord(home, &["--metrics-address", &metrics.to_string()]);
    (child, server, metrics)
}

/// What one sender saw: datagrams sent, and the answers by code.
#[derive(Default)]
struct Seen {
    sent: u64,
    /// The numbers of the requests answered with Code 200.
    acknowledged: Vec<u64>,
    refused: u64,
}

/// The digest of request `number`: new for every request.
fn digest_of(number: u64) -> String {
    format!("{number:040x}")
}

/// How many requests one socket sends: pyzord echoes a Thread of at most
/// five digits, so the Thread tells apart this many, and a sender takes a
/// new socket after them.
const THREADS_PER_SOCKET: u64 = 100_000;

/// The Thread of request `number`: its place in its sender's sequence (the
/// low 48 bits), counted from its socket's first request.
fn thread_of(number: u64) -> u64 {
    (number & ((1 << 48) - 1)) % THREADS_PER_SOCKET
}

/// `SENDERS` threads sending the datagrams `request(number)` to `server`
/// for `length` as fast as they can, each socket with a thread reading its
/// answers until they stop coming.
fn flood(server: SocketAddr, request: fn(u64) -> Vec<u8>, length: Duration) -> Seen {
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            std::thread::spawn(move || {
                let done = Arc::new(AtomicBool::new(false));
                let mut readers = Vec::new();
                let mut socket = None;
                let start = Instant::now();
                let mut sent = 0;
                while start.elapsed() < length {
                    let number = ((sender + 1) << 48) | sent;
                    if sent % THREADS_PER_SOCKET == 0 {
                        let fresh = UdpSocket::bind("127.0.0.1:0").expect("bind");
                        let answers = fresh.try_clone().expect("clone");
                        let done = Arc::clone(&done);
                        readers.push(std::thread::spawn(move || {
                            read_answers(&answers, &done, number)
                        }));
                        socket = Some(fresh);
                    }
                    let socket = socket.as_ref().expect("bound at the first request");
                    // A full socket buffer drops the datagram, as the
                    // internet would; the sender goes on.
                    let _ = socket.send_to(&request(number), server);
                    sent += 1;
                }
                done.store(true, Ordering::Relaxed);
                let mut seen = Seen::default();
                for reader in readers {
                    let read = reader.join().expect("reader");
                    seen.acknowledged.extend(read.acknowledged);
                    seen.refused += read.refused;
                }
                seen.sent = sent;
                seen
            })
        })
        .collect();
    let mut total = Seen::default();
    for sender in senders {
        let seen = sender.join().expect("sender");
        total.sent += seen.sent;
        total.acknowledged.extend(seen.acknowledged);
        total.refused += seen.refused;
    }
    total
}

/// Reads answers until `done` is set and none came for 3 s; the socket's
/// first request was number `first`.
fn read_answers(socket: &UdpSocket, done: &AtomicBool, first: u64) -> Seen {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut seen = Seen::default();
    let mut buffer = vec![0u8; 65536];
    let mut last = Instant::now();
    loop {
        match socket.recv_from(&mut buffer) {
            Ok((length, _)) => {
                last = Instant::now();
                let answer = &buffer[..length];
                let thread = std::str::from_utf8(answer)
                    .ok()
                    .and_then(|text| text.lines().find_map(|line| line.strip_prefix("Thread: ")))
                    .and_then(|thread| thread.trim().parse::<u64>().ok())
                    .map(|thread| first + thread)
                    .expect("an answer with our Thread");
                match code_of(answer) {
                    Some(200) => seen.acknowledged.push(thread),
                    Some(500) => seen.refused += 1,
                    code => panic!("unexpected answer {code:?}"),
                }
            }
            Err(_) if done.load(Ordering::Relaxed) && last.elapsed() > Duration::from_secs(3) => {
                return seen;
            }
            Err(_) => {}
        }
    }
}

fn report(number: u64) -> Vec<u8> {
    format!(
        "Op: report\nOp-Digest: {}\nThread: {}\nPV: 2.1\n\n",
        digest_of(number),
        thread_of(number)
    )
    .into_bytes()
}

/// A check of 256 digests, the most pyzord takes, short enough for the
/// 8,192 bytes it reads of a datagram: a check uses the first, which is a
/// real one; the others only make the usage line long.
fn check_256(number: u64) -> Vec<u8> {
    let mut request = format!(
        "Op: check\nThread: {}\nPV: 2.1\nOp-Digest: {}\n",
        thread_of(number),
        digest_of(number)
    );
    for index in 1..256 {
        request.push_str(&format!("Op-Digest: {:016x}\n", number ^ index));
    }
    request.push('\n');
    request.into_bytes()
}

/// Asks `server` for the counts of `digest`; the whole answer.
fn check(server: SocketAddr, digest: &str) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let request = format!("Op: check\nOp-Digest: {digest}\nThread: 9\nPV: 2.1\n\n");
    let (answer, _) = exchange(&socket, server, request.as_bytes(), 9);
    answer.expect("pyzord answers a check after the flood")
}

/// Stops pyzord with SIGTERM and waits for it.
fn stop(mut child: ChildGuard) {
    // SAFETY: kill only sends a signal to the child we started.
    let sent = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = child.0.wait().expect("exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_flood_of_reports_levels_off_and_loses_no_acknowledged_one() {
    let home = temp_dir();
    // Every commit waits for its fsync, so that the commits fall behind
    // the datagrams and the queue fills.
    std::fs::write(
        home.path().join("config"),
        "[server]\nSqliteSynchronous = FULL\n",
    )
    .expect("config");
    let (child, server, metrics) = start_pyzord(home.path());
    let sampler = Sampler::start(child.0.id(), metrics, COMMIT_DEPTH);
    let seen = flood(server, report, FLOOD);
    let samples = sampler.stop();
    let refused = metric_sums(metrics, [COMMIT_REFUSED])[0];
    eprintln!(
        "report flood: {} sent, {} acknowledged, {} refused (500; {refused} counted), commit \
         queue up to {} digests, RSS peak {} MB in the first half, {} MB in the second (bound \
         {} MB)",
        seen.sent,
        seen.acknowledged.len(),
        seen.refused,
        samples.depth,
        samples.first_half >> 20,
        samples.second_half >> 20,
        MAX_REPORT_FLOOD_RSS >> 20
    );
    samples.assert_level(MAX_REPORT_FLOOD_RSS);
    assert!(samples.depth <= COMMIT_CAPACITY);
    assert!(refused >= seen.refused, "refusals not counted");
    assert!(!seen.acknowledged.is_empty(), "no report acknowledged");
    let last = digest_of(*seen.acknowledged.last().expect("one"));
    let answer = check(server, &last);
    assert!(answer.starts_with(b"Code: 200\n"), "{answer:?}");
    assert!(answer.ends_with(b"Count: 1\nWL-Count: 0\n\n"), "{answer:?}");
    stop(child);
    let stored = stored_digests(&home.path().join("pyzord.sqlite"));
    let lost = seen
        .acknowledged
        .iter()
        .filter(|number| !stored.contains(&digest_of(**number)))
        .count();
    eprintln!(
        "{} digests stored, {lost} acknowledged ones missing",
        stored.len()
    );
    assert_eq!(lost, 0, "acknowledged reports missing from the database");
}

/// How long the test holds SQLite's write lock: within the 5 s pyzord's
/// commits wait for a lock (`BUSY_TIMEOUT_MS`).
const LOCK_HELD: Duration = Duration::from_secs(4);

#[test]
fn a_full_commit_queue_answers_500_and_checks_go_on() {
    let home = temp_dir();
    let (child, server, metrics) = start_pyzord(home.path());
    // Another process's write transaction (a backup, an sqlite3 shell)
    // holds the commits back while the reports pour in.
    let database = home.path().join("pyzord.sqlite");
    let holder = rusqlite::Connection::open(&database).expect("open the database");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let flooding = std::thread::spawn(move || flood(server, report, LOCK_HELD * 2));
    let start = Instant::now();
    let mut checks = 0;
    let mut resent = 0;
    while start.elapsed() < LOCK_HELD {
        let (answer, sends) = check_resending(server, checks);
        assert_eq!(code_of(&answer), Some(200));
        checks += 1;
        resent += sends - 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let full = metric_sums(metrics, [COMMIT_DEPTH])[0];
    holder.execute_batch("ROLLBACK").expect("let the lock go");
    let seen = flooding.join().expect("flood");
    let refused = metric_sums(metrics, [COMMIT_REFUSED])[0];
    eprintln!(
        "locked database: {} reports sent, {} acknowledged, {} answered 500 ({refused} refused \
         by the full queue, {full} digests queued at the end of the lock), {checks} checks \
         answered meanwhile ({resent} sent again after the kernel dropped them)",
        seen.sent,
        seen.acknowledged.len(),
        seen.refused,
    );
    assert!(refused > 0, "the commit queue never filled");
    assert!(full <= COMMIT_CAPACITY);
    assert!(seen.refused > 0, "no report was answered 500");
    stop(child);
    let stored = stored_digests(&database);
    assert!(
        seen.acknowledged
            .iter()
            .all(|number| stored.contains(&digest_of(*number))),
        "acknowledged reports missing from the database"
    );
}

/// A check sent again every 250 ms until answered, for 5 s at most (the
/// flood overflows pyzord's socket buffer, where the kernel drops any
/// datagram, a check as well as a report); the answer and how many sends
/// it took.
fn check_resending(server: SocketAddr, thread: u64) -> (Vec<u8>, u32) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(250)))
        .expect("timeout");
    let request = format!(
        "Op: check\nOp-Digest: {}\nThread: {thread}\nPV: 2.1\n\n",
        digest_of(1)
    );
    let mut buffer = vec![0u8; 65536];
    for sends in 1..=20 {
        socket.send_to(request.as_bytes(), server).expect("send");
        if let Ok((length, _)) = socket.recv_from(&mut buffer) {
            return (buffer[..length].to_vec(), sends);
        }
    }
    panic!("a check unanswered for 5 s while the commits wait");
}

/// Every digest in the SQLite database.
fn stored_digests(path: &Path) -> HashSet<String> {
    let connection = rusqlite::Connection::open(path).expect("open the database");
    let mut statement = connection
        .prepare("SELECT digest FROM digests")
        .expect("select");
    statement
        .query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("digests")
}

/// A FIFO at `path` opened for reading (so that pyzord's open for writing
/// does not wait), drained at [`SINK_BYTES_PER_SEC`] by a thread until
/// `stop`; the thread returns how many bytes it read.
fn slow_sink(path: &Path, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .expect("open the FIFO");
    std::thread::spawn(move || {
        let tick = Duration::from_millis(50);
        let mut buffer = vec![0u8; SINK_BYTES_PER_SEC / 20];
        let mut total = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut want = buffer.len();
            while want > 0 {
                match fifo.read(&mut buffer[..want]) {
                    Ok(0) => break,
                    Ok(length) => {
                        want -= length;
                        total += length as u64;
                    }
                    Err(_) => break,
                }
            }
            std::thread::sleep(tick);
        }
        total
    })
}

#[test]
fn checks_logged_to_a_slow_sink_level_off() {
    let home = temp_dir();
    let usage = home.path().join("usage.fifo");
    let stop_sink = Arc::new(AtomicBool::new(false));
    let sink = slow_sink(&usage, Arc::clone(&stop_sink));
    std::fs::write(
        home.path().join("config"),
        format!("[server]\nUsageLogFile = {}\n", usage.display()),
    )
    .expect("config");
    let (child, server, metrics) = start_pyzord(home.path());
    let sampler = Sampler::start(child.0.id(), metrics, USAGE_DEPTH);
    let seen = flood(server, check_256, FLOOD);
    let samples = sampler.stop();
    let answer = check(server, &digest_of(1));
    stop_sink.store(true, Ordering::Relaxed);
    eprintln!(
        "logged check flood: {} sent, {} answered, usage log queue up to {} lines, RSS peak {} \
         MB in the first half, {} MB in the second (bound {} MB)",
        seen.sent,
        seen.acknowledged.len(),
        samples.depth,
        samples.first_half >> 20,
        samples.second_half >> 20,
        MAX_LOGGED_FLOOD_RSS >> 20
    );
    assert!(answer.starts_with(b"Code: 200\n"), "{answer:?}");
    samples.assert_level(MAX_LOGGED_FLOOD_RSS);
    // Lines queued, and one waiting for room on each serving thread.
    assert!(samples.depth <= LOG_CAPACITY + 8);
    let drained = sink.join().expect("sink");
    eprintln!("{drained} bytes of usage log drained");
    assert!(drained > 0, "nothing reached the usage log");
    drop(child);
}
