//! pyzord under abuse: per-source rate limiting, the replay cache for
//! signed requests, the bounds on datagram size and Op-Digest count, no
//! answer larger than Python pyzord's, and a flat RSS under a flood of
//! hostile datagrams. Python pyzord 1.1.2 runs beside ours and answers the
//! same datagrams; what we do differently on purpose is asserted against
//! its answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::{KEY, USER, now, pyzor_client, signed};
use crate::server_util::{
    ChildGuard, OurServer, PythonPyzord, TempDir, ask, free_address, free_port, metric_sums,
    spawn_pyzord, temp_dir, wait_for,
};
use crate::util::pseudo_random_bytes;
use pyzor_milter::server::Context;
use pyzor_milter::server::access::{Access, default_acl};
use pyzor_milter::server::handler::{self, MAX_DIGESTS_PER_REQUEST};
use pyzor_milter::server::message::Message;
use pyzor_milter::server::reflection;
use pyzor_milter::storage::{self, EngineName};

const WAIT: Duration = Duration::from_secs(3);
const PASSWD: &str = "alice : 0123456789ABCDEF\n";
const ACCESS: &str = "all : alice : allow\ncheck report ping pong info : anonymous : allow\n";
/// Readiness pings come from their own source, outside every budget.
const READY_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
const PING: &[u8] = b"Op: ping\nThread: 1024\nPV: 2.1\n\n";

/// A homedir with alice's account, and `config` when given.
pub(crate) fn homedir(config: Option<&str>) -> TempDir {
    let dir = temp_dir();
    std::fs::write(dir.path().join("pyzord.passwd"), PASSWD).expect("passwd");
    std::fs::write(dir.path().join("pyzord.access"), ACCESS).expect("access");
    if let Some(config) = config {
        std::fs::write(dir.path().join("config"), config).expect("config");
    }
    dir
}

fn our_server(home: &TempDir) -> OurServer {
    let dsn = home.path().join("pyzord.sqlite").display().to_string();
    OurServer::start(EngineName::Sqlite, &dsn, home.path())
}

/// A socket on `source` (any 127/8 address is loopback on Linux).
fn socket_on(source: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind((source, 0)).expect("bind a loopback source")
}

/// Sends every datagram from one socket on `source`, then counts the
/// answers that come back.
fn burst(source: Ipv4Addr, server: SocketAddr, datagrams: &[Vec<u8>]) -> usize {
    let socket = socket_on(source);
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    for datagram in datagrams {
        socket.send_to(datagram, server).expect("send");
    }
    let mut buffer = vec![0u8; 65_536];
    std::iter::from_fn(|| socket.recv_from(&mut buffer).ok()).count()
}

fn pings(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| format!("Op: ping\nThread: {}\nPV: 2.1\n\n", 2000 + index).into_bytes())
        .collect()
}

/// Our binary as `pyzor-milter pyzord`, with metrics over HTTP and a log
/// file, killed when dropped.
pub(crate) struct OurPyzord {
    pub(crate) address: SocketAddr,
    metrics: SocketAddr,
    log: PathBuf,
    child: ChildGuard,
}

impl OurPyzord {
    pub(crate) fn start(home: &Path) -> Self {
        Self::start_with(home, &[])
    }

    /// As [`OurPyzord::start`], with `extra` arguments.
    pub(crate) fn start_with(home: &Path, extra: &[&str]) -> Self {
        let address = free_address(Ipv4Addr::LOCALHOST.into());
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port(false))
            .parse()
            .expect("address");
        let log = home.join("ours.log");
        let log_arg = log.to_str().expect("a UTF-8 path");
        let metrics_arg = metrics.to_string();
        let mut arguments = vec!["--metrics-address", &metrics_arg, "--log-file", log_arg];
        arguments.extend_from_slice(extra);
        let child = spawn_pyzord(address, home, &arguments, Stdio::null());
        wait_for("our pyzord", Duration::from_secs(20), || {
            let socket = socket_on(READY_SOURCE);
            let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = socket.send_to(PING, address);
            socket.recv_from(&mut [0u8; 512]).is_ok()
        });
        Self {
            address,
            metrics,
            log,
            child,
        }
    }

    /// The sums of the metric lines that start with each prefix.
    fn metrics<const N: usize>(&self, prefixes: [&str; N]) -> [u64; N] {
        metric_sums(self.metrics, prefixes)
    }

    pub(crate) fn metric(&self, prefix: &str) -> u64 {
        self.metrics([prefix])[0]
    }

    /// Datagrams read off the socket so far: answered, or dropped.
    pub(crate) fn processed(&self) -> u64 {
        self.metrics([
            "pyzord_requests_total",
            "pyzord_rejected_total{reason=\"rate_limited\"}",
            "pyzord_rejected_total{reason=\"not_a_request\"}",
            "pyzord_rejected_total{reason=\"no_thread\"}",
            "pyzord_rejected_total{reason=\"bad_thread\"}",
            "pyzord_rejected_total{reason=\"answer_too_large\"}",
        ])
        .iter()
        .sum()
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id()))
            .expect("the process status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The log lines that contain `needle`, once the log has settled.
    fn log_lines(&self, needle: &str, at_least: usize) -> Vec<String> {
        let read = || -> Vec<String> {
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains(needle))
                .map(str::to_owned)
                .collect()
        };
        let start = Instant::now();
        while read().len() < at_least && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        read()
    }
}

const RATE_LIMIT_CONFIG: &str = "[server]\nRateLimit = 5\nRateLimitBurst = 10\n";

#[test]
fn rate_limit_drops_the_excess_of_each_source_and_logs_it_once() {
    // Python pyzord reads the same config: the keys are ours, ignored there.
    let python_home = homedir(Some(RATE_LIMIT_CONFIG));
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    assert_eq!(
        burst(a, python.address, &pings(30)),
        30,
        "Python has no limit"
    );

    let home = homedir(Some(RATE_LIMIT_CONFIG));
    let ours = OurPyzord::start(home.path());
    let mut sent = 0;
    let mut answered = 0;
    let mut send = |source, count| {
        let got = burst(source, ours.address, &pings(count));
        sent += count;
        answered += got;
        got
    };
    let emptied = Instant::now();
    let first = send(a, 30);
    assert!((10..=11).contains(&first), "burst of 10: {first} answered");
    assert_eq!(send(b, 10), 10, "another source has its own bucket");
    // 5 tokens a second since a's bucket was emptied, 10 at most.
    let tokens = (emptied.elapsed().as_secs_f64() * 5.0).min(10.0);
    let refilled = send(a, 10);
    assert!(
        (refilled as f64 - tokens).abs() <= 1.0,
        "{tokens:.1} tokens, {refilled} answered"
    );
    assert!(refilled < 10, "a is limited still");
    let second = send(b, 30);
    assert!(second < 30, "b over its limit too: {second} answered");

    let dropped = ours.metric("pyzord_rejected_total{reason=\"rate_limited\"}");
    assert_eq!(dropped as usize, sent - answered);
    let lines = ours.log_lines("over its rate limit", 2);
    assert_eq!(lines.len(), 2, "one line per source: {lines:#?}");
    assert!(lines[0].contains("source=127.0.0.2"), "{}", lines[0]);
    assert!(lines[1].contains("source=127.0.0.3"), "{}", lines[1]);
}

/// Python's 401 answer to a bad signature, with the replay's Diag.
fn replay_answer(python: SocketAddr, body: &str) -> Vec<u8> {
    let mut forged = signed(body, USER, KEY, now());
    let sig = forged.len() - 42;
    forged[sig..sig + 40].copy_from_slice(&[b'0'; 40]);
    let answer = ask(python, &forged, WAIT).expect("Python answers a bad signature");
    String::from_utf8(answer)
        .expect("ASCII")
        .replace("Invalid signature.", "Signature already used.")
        .into_bytes()
}

#[test]
fn a_replayed_signed_request_is_refused_and_not_counted() {
    let (python_home, our_home) = (homedir(None), homedir(None));
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let ours = our_server(&our_home);
    let digest = "d".repeat(40);
    let check = format!("Op: check\nOp-Digest: {digest}\nThread: 1200\nPV: 2.1\n\n");
    for (op, thread) in [("report", 1100), ("whitelist", 1101)] {
        let body = format!("Op: {op}\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\n");
        let request = signed(&body, USER, KEY, now());
        let first = ask(python.address, &request, WAIT);
        assert_eq!(ask(ours.address, &request, WAIT), first, "{op}");
        let replayed = ask(ours.address, &request, WAIT);
        assert_eq!(replayed, Some(replay_answer(python.address, &body)), "{op}");
        // Python counted one request; so do we, the replay not.
        let python_counts = ask(python.address, check.as_bytes(), WAIT);
        assert_eq!(ask(ours.address, check.as_bytes(), WAIT), python_counts);
    }

    // Anonymous requests prove nothing: equal ones are all served.
    let anonymous = format!(
        "Op: report\nOp-Digest: {}\nThread: 1300\nPV: 2.1\n\n",
        "e".repeat(40)
    );
    let check = check.replace(&digest, &"e".repeat(40));
    for _ in 0..3 {
        let expected = ask(python.address, anonymous.as_bytes(), WAIT);
        assert_eq!(ask(ours.address, anonymous.as_bytes(), WAIT), expected);
    }
    let python_counts = ask(python.address, check.as_bytes(), WAIT);
    assert_eq!(ask(ours.address, check.as_bytes(), WAIT), python_counts);

    // Python's client, signed as alice: many requests within a second are
    // new requests, not replays.
    let accounts = format!("127.0.0.1 : PORT : {USER} : salt,{KEY}\n");
    let message = b"From: a@example.com\nSubject: x\n\nThe same message, reported and checked.\n";
    for args in [
        ["report"],
        ["report"],
        ["check"],
        ["check"],
        ["whitelist"],
        ["info"],
    ] {
        let expected = pyzor_client(python.address, &accounts, &args, message);
        let actual = pyzor_client(ours.address, &accounts, &args, message);
        assert_eq!(actual, expected, "pyzor {args:?} signed");
    }
}

fn digests_request(op: &str, thread: u32, count: usize) -> Vec<u8> {
    let mut request = format!("Op: {op}\nThread: {thread}\nPV: 2.1\n");
    for index in 0..count {
        request.push_str(&format!("Op-Digest: {index:03}\n"));
    }
    request.push('\n');
    request.into_bytes()
}

#[test]
fn oversize_datagrams_and_too_many_digests() {
    let (python_home, our_home) = (homedir(None), homedir(None));
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let ours = our_server(&our_home);

    // Both read the first 8,192 bytes of a larger datagram.
    let mut oversize = format!(
        "Op: check\nOp-Digest: {}\nThread: 1400\nPV: 2.1\nX: ",
        "f".repeat(40)
    );
    oversize.push_str(&"a".repeat(20_000));
    let expected = ask(python.address, oversize.as_bytes(), WAIT);
    assert!(expected.is_some());
    assert_eq!(ask(ours.address, oversize.as_bytes(), WAIT), expected);
    // Without a Thread, Python answers an empty one; we do not answer.
    let threadless = format!("Op: ping\nPV: 2.1\nX: {}\n\n", "a".repeat(20_000));
    let python_answer = ask(python.address, threadless.as_bytes(), WAIT).expect("Python answers");
    assert!(String::from_utf8_lossy(&python_answer).contains("\nThread: \n"));
    assert_eq!(ask(ours.address, threadless.as_bytes(), WAIT), None);

    // As many real digests as fit in the 8,192 bytes read (fewer than the
    // bound), served as Python serves them.
    let mut at_bound = String::from("Op: report\nThread: 1401\nPV: 2.1\n");
    for index in 0..150 {
        at_bound.push_str(&format!("Op-Digest: {index:040x}\n"));
    }
    at_bound.push('\n');
    let expected = ask(python.address, at_bound.as_bytes(), WAIT);
    assert_eq!(ask(ours.address, at_bound.as_bytes(), WAIT), expected);
    // One more is a bad request, in the shape of Python's bad requests,
    // and writes nothing.
    let over = digests_request("report", 1402, MAX_DIGESTS_PER_REQUEST + 1);
    let no_version = b"Op: report\nOp-Digest: 000\nThread: 1402\n\n";
    let python_bad = ask(python.address, no_version, WAIT).expect("Python answers");
    let python_bad = String::from_utf8(python_bad).expect("ASCII").replace(
        "Protocol Version not specified in request",
        "Too many digests in request",
    );
    let answer = ask(ours.address, &over, WAIT).expect("an answer");
    assert_eq!(String::from_utf8_lossy(&answer), python_bad);
    let check = format!(
        "Op: check\nOp-Digest: {:040x}\nThread: 1403\nPV: 2.1\n\n",
        0
    );
    assert_eq!(
        ask(ours.address, check.as_bytes(), WAIT),
        ask(python.address, check.as_bytes(), WAIT)
    );
    // The largest UDP datagram, thousands of Op-Digest lines: cut to
    // 8,192 bytes, still hundreds more than the bound.
    let largest = digests_request("report", 1404, 5_000);
    let largest = &largest[..65_507];
    let answer = ask(ours.address, largest, WAIT).expect("an answer");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        python_bad.replace("Thread: 1402", "Thread: 1404")
    );
}

#[test]
fn ten_thousand_digests_are_refused_before_any_write() {
    let home = homedir(None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dsn = home.path().join("pyzord.sqlite").display().to_string();
    let storage: Arc<dyn storage::Storage> = runtime
        .block_on(storage::open(EngineName::Sqlite, &dsn, None))
        .expect("storage")
        .into();
    let access = Access {
        acl: default_acl(),
        ..Access::default()
    };
    let context = Context::new(Arc::clone(&storage), access);
    let request = Message::parse(&digests_request("report", 1500, 10_000));
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let response = runtime
        .block_on(handler::handle(&request, peer, &context))
        .expect("an answer");
    assert_eq!(
        (response.code, response.diag.as_str()),
        (400, "Bad request: Too many digests in request")
    );
    let record = runtime.block_on(storage.get("000")).expect("read");
    assert_eq!(record, None);
}

/// Datagrams of every hostile kind, for the answer-size comparison.
pub(crate) fn hostile_datagrams() -> Vec<Vec<u8>> {
    let mut datagrams: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\n".to_vec(),
        b"Op: ping\nPV: 2.1\n\n".to_vec(),
        b"Op: ping\n\n\nThread: 18\nPV: 2.1\n\n".to_vec(),
        b"Thread: 5\n".to_vec(),
        b"Thread: 5\nPV: x\n".to_vec(),
        b"Thread: 5\nPV: 2.1\nOp: nosuchop\n".to_vec(),
        b"Op: ping\nThread: 4\xff1\nPV: 2.1\n\n".to_vec(),
        format!("Op: ping\nThread: {}\nPV: 2.1\n\n", "7".repeat(4_000)).into_bytes(),
        format!("Op: ping\nThread: {}\nPV: 2.1\n\n", "7 ".repeat(2_000)).into_bytes(),
        format!(
            "User: u1\nOp: check\nThread: 6\nPV: 2.1\nTime: {}\nSig: 0\n\n",
            now()
        )
        .into_bytes(),
        format!(
            "User: {USER}\nOp: check\nThread: 6\nPV: 2.1\nTime: {}\nSig: 0\n\n",
            "\x01".repeat(2_000)
        )
        .into_bytes(),
        format!(
            "Op: check\nOp-Digest: {}\nThread: 8\nPV: 2.1\n\n",
            "\x01".repeat(4_000)
        )
        .into_bytes(),
        format!(
            "Op: check\nThread: 9\nPV: 2.1\nX: {}\n\n",
            "a".repeat(20_000)
        )
        .into_bytes(),
        format!("Op: ping\nPV: 2.1\nX: {}\n\n", "a".repeat(20_000)).into_bytes(),
    ];
    for seed in 1..=12u64 {
        datagrams.push(pseudo_random_bytes(seed, (seed as usize * 677) % 8_000));
    }
    datagrams
}

/// Deliberate refusals, answered where Python serves: a replayed signed
/// report and too many digests.
fn refused_datagrams() -> Vec<Vec<u8>> {
    let body = format!(
        "Op: report\nOp-Digest: {}\nThread: 1600\nPV: 2.1\n",
        "9".repeat(40)
    );
    let replayed = signed(&body, USER, KEY, now());
    vec![
        replayed.clone(),
        replayed,
        digests_request("report", 1601, MAX_DIGESTS_PER_REQUEST + 1),
        digests_request("check", 1602, 700),
    ]
}

#[test]
fn no_hostile_datagram_gets_a_larger_answer_than_from_python() {
    let (python_home, our_home) = (homedir(None), homedir(None));
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let ours = our_server(&our_home);
    for datagram in hostile_datagrams() {
        let shown = String::from_utf8_lossy(&datagram[..datagram.len().min(60)]).into_owned();
        let theirs = ask(python.address, &datagram, WAIT);
        let answer = ask(ours.address, &datagram, WAIT);
        let theirs_len = theirs.as_ref().map_or(0, Vec::len);
        let answer_len = answer.as_ref().map_or(0, Vec::len);
        // But a digest that is not one, which Python serves and ours
        // refuses with a 400 within the bound (server_reflection.rs).
        let bad_digest = answer.as_ref().is_some_and(|answer| {
            String::from_utf8_lossy(answer).contains(handler::NOT_A_DIGEST)
                && reflection::within_bound(datagram.len(), answer.len())
        });
        assert!(
            answer_len <= theirs_len || bad_digest,
            "{answer_len} > {theirs_len} bytes for {shown:?}"
        );
        let threadless = theirs
            .as_ref()
            .is_some_and(|theirs| String::from_utf8_lossy(theirs).contains("\nThread: \n"));
        if threadless {
            assert_eq!(answer, None, "an answer without Thread to {shown:?}");
        }
    }
    for datagram in refused_datagrams() {
        let answer = ask(ours.address, &datagram, WAIT).expect("refusals are answered");
        assert!(
            answer.len() < datagram.len(),
            "{} bytes for {}",
            answer.len(),
            datagram.len()
        );
    }
}

/// One datagram of the flood: garbage, no Thread, forged users and
/// signatures, a replayed signed report, lookups, too many digests.
fn flood_datagram(index: u64, replayed: &[u8]) -> Vec<u8> {
    let random = pseudo_random_bytes(index, 20);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let thread = 1024 + index % 60_000;
    match index % 7 {
        0 => pseudo_random_bytes(index, 1 + (index as usize * 131) % 1_400),
        1 => format!("Op: check\nPV: 2.1\nX-{index}: y\n\n").into_bytes(),
        2 => format!(
            "Op: report\nOp-Digest: {}\nThread: {thread}\nPV: 2.1\nUser: u{index}\nTime: {}\nSig: {}\n\n",
            hex(&random),
            now(),
            hex(&random)
        )
        .into_bytes(),
        3 => format!(
            "Op: report\nOp-Digest: {}\nThread: {thread}\nPV: 2.1\nUser: {USER}\nTime: {}\nSig: {}\n\n",
            hex(&random),
            now(),
            hex(&random)
        )
        .into_bytes(),
        4 => replayed.to_vec(),
        5 => format!("Op: check\nOp-Digest: {}\nThread: {thread}\nPV: 2.1\n\n", hex(&random))
            .into_bytes(),
        _ => digests_request("report", thread as u32, 300),
    }
}

/// Sends the flood from each source of `sources` (127.1.0.0 onwards), and
/// says how long it took.
fn flood(ours: &OurPyzord, replayed: &[u8], sources: Range<u32>, sent: &mut u64) -> Duration {
    let start = Instant::now();
    for source in sources {
        // Every 128th source sends past its burst; the others a few.
        let count = if source % 128 == 0 { 600 } else { 20 };
        let socket = socket_on(Ipv4Addr::from(0x7f01_0000 + source));
        for _ in 0..count {
            let _ = socket.send_to(&flood_datagram(*sent, replayed), ours.address);
            *sent += 1;
            if (*sent).is_multiple_of(64) {
                // Wait for the server to drain its socket, so that it reads
                // the flood rather than the kernel dropping it.
                let paced = Instant::now();
                let mut last = ours.processed();
                while last < *sent && paced.elapsed() < Duration::from_millis(100) {
                    std::thread::sleep(Duration::from_millis(1));
                    let now = ours.processed();
                    if now == last {
                        break;
                    }
                    last = now;
                }
            }
        }
    }
    start.elapsed()
}

#[test]
fn rss_stays_flat_under_a_flood_of_hostile_datagrams() {
    let home = homedir(Some(
        "[server]\nRateLimit = 200\nRateLimitBurst = 400\nRateLimitSources = 2048\n",
    ));
    let ours = OurPyzord::start(home.path());
    let replayed = signed(
        &format!(
            "Op: report\nOp-Digest: {}\nThread: 1700\nPV: 2.1\n",
            "8".repeat(40)
        ),
        USER,
        KEY,
        now(),
    );
    let mut sent = 0u64;
    flood(&ours, &replayed, 0..2_048, &mut sent);
    std::thread::sleep(Duration::from_millis(500));
    let before = ours.rss_kib();
    let sent_before = sent;
    let elapsed = flood(&ours, &replayed, 2_048..10_240, &mut sent);
    std::thread::sleep(Duration::from_millis(500));
    let after = ours.rss_kib();
    let processed = ours.processed();
    let limited = ours.metric("pyzord_rejected_total{reason=\"rate_limited\"}");
    eprintln!(
        "flood: {} datagrams in {:.1} s after a warm-up of {sent_before}; {processed} of {sent} \
         read by the server, {limited} rate-limited; VmRSS {before} kB before, {after} kB after",
        sent - sent_before,
        elapsed.as_secs_f64(),
    );
    assert!(
        processed * 10 >= sent * 9,
        "the flood did not reach the server"
    );
    assert!(limited > 0, "no source was limited");
    assert!(
        after <= before + 4_096,
        "RSS grew from {before} kB to {after} kB"
    );
    assert!(ask(ours.address, PING, WAIT).is_some(), "still serving");
}
