//! pyzord's bounds beyond Python's: every size option has a maximum past
//! which pyzord refuses to start, the largest allowed costs no memory
//! until sources arrive, a source over its rate limit stays limited while
//! fresh sources fill the table, and a digest that is not 40 hex digits is
//! a bad request (Python pyzord stores any text), written nowhere.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::{KEY, USER, now, signed};
use crate::server_abuse::{OurPyzord, homedir};
use crate::server_util::{PythonPyzord, ask, free_port};
use crate::util::our_binary;
use pyzor_milter::server::config::MAX_REPLAY_CACHE_SIZE;
use pyzor_milter::server::handler::NOT_A_DIGEST;
use pyzor_milter::server::limits::MAX_SOURCES;

const WAIT: Duration = Duration::from_secs(3);

/// Runs our pyzord with `args` until it exits (or 10 s); its exit code and
/// stderr.
fn start_failing(args: &[&str]) -> (Option<i32>, String) {
    let home = homedir(None);
    let mut child = Command::new(our_binary())
        .args(["pyzord", "--homedir"])
        .arg(home.path())
        .args(["-a", "127.0.0.1", "-p", &free_port(true).to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start our pyzord");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn sizes_past_their_maximum_stop_pyzord_at_start() {
    let cases = [
        (
            ["--rate-limit", "5", "--rate-limit-sources", "1000000000000"],
            format!(
                "invalid RateLimitSources \"1000000000000\": not a whole number of sources \
                 from 2 to {MAX_SOURCES}"
            ),
        ),
        (
            ["--rate-limit", "0", "--rate-limit-sources", "200000000"],
            format!(
                "invalid RateLimitSources \"200000000\": not a whole number of sources from 2 \
                 to {MAX_SOURCES}"
            ),
        ),
        (
            ["--rate-limit", "5", "--replay-cache-size", "1000000000000"],
            format!(
                "invalid ReplayCacheSize \"1000000000000\": not a whole number of requests \
                 from 1 to {MAX_REPLAY_CACHE_SIZE}"
            ),
        ),
    ];
    for (args, expected) in cases {
        let (code, stderr) = start_failing(&args);
        assert_ne!(code, Some(0), "{args:?} started");
        assert!(code.is_some(), "{args:?} did not exit");
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
    let help = Command::new(our_binary())
        .args(["pyzord", "--help"])
        .output()
        .expect("pyzord --help");
    let help = String::from_utf8_lossy(&help.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for maximum in [MAX_SOURCES, MAX_REPLAY_CACHE_SIZE] {
        assert!(help.contains(&format!("at most {maximum}")), "{help}");
    }
}

#[test]
fn the_largest_sizes_cost_no_memory_at_start() {
    let (default_home, largest_home) = (homedir(None), homedir(None));
    let default = OurPyzord::start_with(default_home.path(), &["--rate-limit", "5"]);
    let sources = MAX_SOURCES.to_string();
    let replays = MAX_REPLAY_CACHE_SIZE.to_string();
    let largest = OurPyzord::start_with(
        largest_home.path(),
        &[
            "--rate-limit",
            "5",
            "--rate-limit-sources",
            &sources,
            "--replay-cache-size",
            &replays,
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (at_default, at_largest) = (default.rss_kib(), largest.rss_kib());
    eprintln!(
        "VmRSS after start: {at_default} kB with the default sizes, {at_largest} kB with \
         {MAX_SOURCES} sources and {MAX_REPLAY_CACHE_SIZE} replays"
    );
    assert!(
        at_largest <= at_default + 4_096,
        "{at_largest} kB against {at_default} kB"
    );
}

/// Pings from `source`; how many were answered.
fn pings_from(source: Ipv4Addr, server: SocketAddr, count: u32) -> usize {
    let socket = UdpSocket::bind((source, 0)).expect("bind a loopback source");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    for index in 0..count {
        let ping = format!("Op: ping\nThread: {}\nPV: 2.1\n\n", 3000 + index);
        socket.send_to(ping.as_bytes(), server).expect("send");
    }
    let mut buffer = [0u8; 512];
    std::iter::from_fn(|| socket.recv_from(&mut buffer).ok()).count()
}

#[test]
fn a_limited_source_stays_limited_while_fresh_sources_arrive() {
    // One datagram per 100 s after a burst of 2, a table of 256 sources.
    let home = homedir(Some(
        "[server]\nRateLimit = 0.01\nRateLimitBurst = 2\nRateLimitSources = 256\n",
    ));
    let ours = OurPyzord::start(home.path());
    let limited = Ipv4Addr::new(127, 3, 0, 1);
    assert_eq!(pings_from(limited, ours.address, 10), 2);
    // Ten times the table's size of fresh sources, each within its limit.
    let fresh = (0..2_560u32).map(|index| Ipv4Addr::from(0x7f04_0000 + index));
    let answered: usize = fresh
        .map(|source| pings_from_quick(source, ours.address))
        .sum();
    assert_eq!(answered, 2_560, "a fresh source was limited");
    let dropped = ours.metric("pyzord_rejected_total{reason=\"rate_limited\"}");
    assert_eq!(
        pings_from(limited, ours.address, 5),
        0,
        "the limit was reset"
    );
    assert_eq!(
        ours.metric("pyzord_rejected_total{reason=\"rate_limited\"}"),
        dropped + 5
    );
}

/// One ping from `source`, answered or not.
fn pings_from_quick(source: Ipv4Addr, server: SocketAddr) -> usize {
    let socket = UdpSocket::bind((source, 0)).expect("bind a loopback source");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    socket
        .send_to(b"Op: ping\nThread: 4000\nPV: 2.1\n\n", server)
        .expect("send");
    usize::from(socket.recv_from(&mut [0u8; 512]).is_ok())
}

#[test]
fn a_digest_that_is_not_40_hex_digits_is_a_bad_request() {
    let (python_home, our_home) = (homedir(None), homedir(None));
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let ours = OurPyzord::start(our_home.path());
    let long = "a".repeat(6_000);
    let digests = ["abc", long.as_str(), &"g".repeat(40), &"a".repeat(41)];
    let mut thread = 1300;
    for op in ["check", "info", "report", "whitelist"] {
        for digest in digests {
            thread += 1;
            let body = format!("Op: {op}\nOp-Digest: {digest}\nThread: {thread}\n");
            let request = signed(&format!("{body}PV: 2.1\n"), USER, KEY, now());
            let theirs = ask(python.address, &request, WAIT).expect("Python answers");
            assert!(theirs.starts_with(b"Code: 200\n"), "Python serves {op}");
            // Python's bad request, as it answers one without PV.
            let unversioned = signed(&body, USER, KEY, now());
            let bad = ask(python.address, &unversioned, WAIT).expect("Python answers");
            let expected = String::from_utf8_lossy(&bad)
                .replace("Protocol Version not specified in request", NOT_A_DIGEST);
            let answer = ask(ours.address, &request, WAIT).expect("an answer");
            assert_eq!(String::from_utf8_lossy(&answer), expected, "{op}");
        }
    }
    // Check and info use the first digest only, as in Python.
    let good = "0".repeat(40);
    let request = format!(
        "Op: check\nOp-Digest: {good}\nOp-Digest: abc\nThread: 1400\nPV: 2.1\nUser: anonymous\n\n"
    );
    let answer = ask(ours.address, request.as_bytes(), WAIT).expect("an answer");
    assert!(answer.starts_with(b"Code: 200\n"));
    let rejected = ours.metric("pyzord_rejected_total{reason=\"bad_digest\"}");
    assert_eq!(rejected, 16);
    let database =
        rusqlite::Connection::open(our_home.path().join("pyzord.sqlite")).expect("our database");
    let stored: i64 = database
        .query_row("SELECT COUNT(*) FROM digests", [], |row| row.get(0))
        .expect("count");
    assert_eq!(stored, 0, "a refused digest was written");
}
