//! pyzord's forwarding (`--forward-client-homedir`) to real upstream
//! servers: Python pyzord takes every report and whitelist our pyzord
//! acknowledged, with dead upstreams (one stopped with SIGSTOP, one a
//! closed port) listed before it; at SIGTERM what is queued is flushed to
//! the live one and given up for the dead ones with one log line.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::server_util::{
    PythonPyzord, TempDir, ask, free_port, open_homedir, start_child_pyzord, temp_dir, wait_for,
};

const WAIT: Duration = Duration::from_secs(3);

/// How long forwarded digests may take to reach the live upstream: a
/// batch waits up to 1 s to fill, and a loaded machine is slow.
const ARRIVAL: Duration = Duration::from_secs(15);

/// A forwarding client homedir listing `servers` in this order.
fn client_homedir(servers: &[SocketAddr]) -> TempDir {
    let home = temp_dir();
    let lines: String = servers.iter().map(|server| format!("{server}\n")).collect();
    std::fs::write(home.path().join("servers"), lines).expect("servers");
    home
}

/// Our pyzord forwarding to the servers of `client_home`, logging to
/// `log`.
fn forwarding_pyzord(
    home: &Path,
    client_home: &Path,
    log: &Path,
) -> (crate::server_util::ChildGuard, SocketAddr) {
    let client_home = client_home.display().to_string();
    let log = log.display().to_string();
    start_child_pyzord(
        home,
        &["--forward-client-homedir", &client_home, "--log-file", &log],
    )
}

/// Sends `op` for `digest` and expects Code 200.
fn send(server: SocketAddr, op: &str, digest: &str, thread: u32) {
    let request = format!("Op: {op}\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\n\n");
    let answer = ask(server, request.as_bytes(), WAIT).expect("an answer");
    assert!(answer.starts_with(b"Code: 200\n"), "{answer:?}");
}

/// The Count and WL-Count of `digest` on `server`.
fn counts(server: SocketAddr, digest: &str) -> Option<(u64, u64)> {
    let request = format!("Op: check\nOp-Digest: {digest}\nThread: 5\nPV: 2.1\n\n");
    let answer = ask(server, request.as_bytes(), WAIT)?;
    let text = String::from_utf8(answer).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse().ok())
    };
    Some((field("Count: ")?, field("WL-Count: ")?))
}

#[test]
fn reports_and_whitelists_are_forwarded_to_python_pyzord() {
    let upstream_home = open_homedir();
    let upstream = PythonPyzord::start(upstream_home.path(), &[], &[]);
    let client_home = client_homedir(&[upstream.address]);
    let home = open_homedir();
    let log = home.path().join("pyzord.log");
    let (_child, ours) = forwarding_pyzord(home.path(), client_home.path(), &log);
    let digest = "f".repeat(40);
    for (op, thread) in [("report", 2), ("report", 3), ("whitelist", 4)] {
        send(ours, op, &digest, thread);
    }
    wait_for("forwarded counts", ARRIVAL, || {
        counts(upstream.address, &digest) == Some((2, 1))
    });
}

#[test]
fn a_dead_upstream_holds_up_neither_the_live_one_nor_shutdown() {
    // Dead: Python pyzord stopped with SIGSTOP (requests time out), and a
    // port nobody listens on (requests fail at once).
    let stopped_home = open_homedir();
    let stopped = PythonPyzord::start(stopped_home.path(), &[], &[]);
    // SAFETY: kill only sends a signal to the child that PythonPyzord started.
    assert_eq!(
        unsafe { libc::kill(stopped.pid() as libc::pid_t, libc::SIGSTOP) },
        0
    );
    let closed: SocketAddr = format!("127.0.0.1:{}", free_port(true))
        .parse()
        .expect("address");
    let live_home = open_homedir();
    let live = PythonPyzord::start(live_home.path(), &[], &[]);
    let client_home = client_homedir(&[stopped.address, closed, live.address]);
    let home = open_homedir();
    let log = home.path().join("pyzord.log");
    let (mut child, ours) = forwarding_pyzord(home.path(), client_home.path(), &log);

    // Enough for several batches to each server, sent one after another.
    let digests: Vec<String> = (0..250).map(|n| format!("{n:040x}")).collect();
    let sent = Instant::now();
    for (thread, digest) in (10..).zip(&digests) {
        send(ours, "report", digest, thread);
    }
    wait_for("every report on the live upstream", ARRIVAL, || {
        digests
            .iter()
            .all(|digest| counts(live.address, digest) == Some((1, 0)))
    });
    eprintln!(
        "{} reports reached the live upstream {:?} after the first was sent",
        digests.len(),
        sent.elapsed()
    );

    // Queued at SIGTERM: flushed to the live one, given up for the dead.
    let late: Vec<String> = (0..30).map(|n| format!("{:040x}", 1000 + n)).collect();
    for (thread, digest) in (1000..).zip(&late) {
        send(ours, "whitelist", digest, thread);
    }
    let stopping = Instant::now();
    // SAFETY: kill only sends a signal to the child we started.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.0.wait().expect("exit");
    let took = stopping.elapsed();
    eprintln!("stopped in {took:?}");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(10), "the stop took {took:?}");
    for digest in &late {
        assert_eq!(counts(live.address, digest), Some((0, 1)), "{digest}");
    }
    let text = std::fs::read_to_string(&log).expect("our log");
    let given_up: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("forwarding stopped at shutdown"))
        .collect();
    assert_eq!(given_up.len(), 1, "{text}");
    // At least the late ones, for each dead upstream.
    let count: usize = given_up[0]
        .split("digests=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .expect("a count");
    assert!(count >= 2 * late.len(), "{}", given_up[0]);
    // One line per episode, not per digest or batch.
    let failing = text
        .lines()
        .filter(|line| line.contains("forwarding to this server fails"))
        .count();
    assert!(failing <= 2, "{text}");
}
