//! The milter with every Pyzor server dead or answering garbage, under
//! concurrent connections: mail keeps flowing (fail open, or tempfail when
//! `on_error = "tempfail"`) within the configured deadline, and a garbage
//! answer is an error, never a verdict.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indymilter_test::Status;

use crate::client_util::FakeServer;
use crate::milter::util::{Envelope, added_header, message_file, send, spam, start_milter};
use crate::util::temp_dir;

/// Milter connections at once, as in the milter benchmark.
const CONNECTIONS: usize = 16;
/// Messages each connection sends.
const MESSAGES: usize = 3;
/// The milter's deadline for all servers together.
const TIMEOUT_MS: u64 = 1000;
/// What a message may take beyond the deadline: the milter protocol round
/// trips and digesting on a busy two-core machine.
const SLACK: Duration = Duration::from_millis(1500);

/// A milter config with these servers, the cache off (every message asks).
fn config(servers: &[SocketAddr], extra: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "servers = [{}]\ntrusted_networks = []\ntimeout_ms = {TIMEOUT_MS}\ncache_ttl_secs = 0\n{extra}\n",
        servers.join(", ")
    )
}

/// A UDP port nothing listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address")
}

/// Sends `MESSAGES` distinct messages over each of `CONNECTIONS` milter
/// sessions at once; returns each message's status, header and time.
async fn load(milter: SocketAddr, seed: &str) -> Vec<(Status, Option<String>, Duration)> {
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|connection| {
            let seed = seed.to_owned();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for message in 0..MESSAGES {
                    let text = spam(&format!("{seed}-{connection}-{message}"));
                    let started = Instant::now();
                    let (actions, status) = send(milter, &Envelope::default(), &text).await;
                    results.push((status, added_header(&actions), started.elapsed()));
                }
                results
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a connection task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_dead_fails_open_within_the_deadline() {
    let closed = closed_port();
    // Bound and never read: requests vanish as into a firewall's drop.
    let black_hole = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let hole = black_hole.local_addr().expect("address");
    let deadline = Duration::from_millis(TIMEOUT_MS);

    let milter = start_milter(&config(&[closed, hole], ""));
    let results = load(milter.address, "dead").await;
    assert_eq!(results.len(), CONNECTIONS * MESSAGES);
    for (status, header, elapsed) in &results {
        assert_eq!(*status, Status::Accept);
        let header = header.as_deref().expect("an X-Pyzor header");
        assert!(
            header.starts_with("error; digest=")
                && header.ends_with(&format!("; {closed}=timeout; {hole}=timeout")),
            "{header}"
        );
        assert!(*elapsed < deadline + SLACK, "a message took {elapsed:?}");
    }
    let slowest = results.iter().map(|r| r.2).max().unwrap_or_default();
    eprintln!(
        "servers dead: {} messages accepted, slowest {slowest:?}",
        results.len()
    );

    let tempfail = start_milter(&config(&[closed, hole], "on_error = \"tempfail\""));
    for (status, _, elapsed) in load(tempfail.address, "dead-tempfail").await {
        assert!(matches!(status, Status::Tempfail { .. }), "{status:?}");
        assert!(elapsed < deadline + SLACK, "a message took {elapsed:?}");
    }
}

/// How a fake pyzord answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// A proper answer with Count 5, so that the harness is shown to make
    /// verdicts from real answers.
    Valid,
    RandomBytes,
    /// Well formed, but for another request (a Thread in the valid range).
    WrongThread,
    /// Counts under a Thread below 1024, which marks a server's error.
    ErrorThread,
    WrongVersion,
    MissingCount,
    /// Counts on an error answer.
    ErrorCode,
}

fn answer_to(request: &str, answer: Answer, noise: &mut u64) -> Vec<u8> {
    let thread: u32 = request
        .lines()
        .find_map(|line| line.strip_prefix("Thread: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let fields = |code: u16, pv: &str, thread: u32, counts: &str| {
        format!("Code: {code}\nDiag: OK\nPV: {pv}\nThread: {thread}\n{counts}\n").into_bytes()
    };
    match answer {
        Answer::Valid => fields(200, "2.1", thread, "Count: 5\nWL-Count: 0\n"),
        Answer::RandomBytes => (0..200)
            .map(|_| {
                *noise ^= *noise << 13;
                *noise ^= *noise >> 7;
                *noise ^= *noise << 17;
                *noise as u8
            })
            .collect(),
        Answer::WrongThread => {
            let other = if thread == 65535 { 1024 } else { thread + 1 };
            fields(200, "2.1", other, "Count: 5\nWL-Count: 0\n")
        }
        Answer::ErrorThread => fields(200, "2.1", 5, "Count: 5\nWL-Count: 0\n"),
        Answer::WrongVersion => fields(200, "9.9", thread, "Count: 5\nWL-Count: 0\n"),
        Answer::MissingCount => fields(200, "2.1", thread, "WL-Count: 0\n"),
        Answer::ErrorCode => fields(500, "2.1", thread, "Count: 5\nWL-Count: 0\n"),
    }
}

/// A fake pyzord answering every request as `answer` says, until dropped.
fn fake_server(answer: Answer) -> FakeServer {
    let noise = Mutex::new(0x9e37_79b9_7f4a_7c15u64);
    FakeServer::start(move |request| {
        let mut noise = noise.lock().expect("not poisoned");
        Some(answer_to(request, answer, &mut noise))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_are_errors_not_verdicts() {
    let dir = temp_dir();
    let message = spam("garbage");
    let (_, digest) = message_file(dir.path(), "m.eml", &message);
    let deadline = Duration::from_millis(TIMEOUT_MS);
    for answer in [
        Answer::Valid,
        Answer::RandomBytes,
        Answer::WrongThread,
        Answer::ErrorThread,
        Answer::WrongVersion,
        Answer::MissingCount,
        Answer::ErrorCode,
    ] {
        let server = fake_server(answer);
        let address = server.address;
        let milter = start_milter(&config(&[address], "action = \"reject\""));
        let started = Instant::now();
        let (actions, status) = send(milter.address, &Envelope::default(), &message).await;
        let elapsed = started.elapsed();
        assert!(elapsed < deadline + SLACK, "{answer:?}: {elapsed:?}");
        if let Answer::Valid = answer {
            assert!(matches!(status, Status::Reject { .. }), "{status:?}");
            continue;
        }
        assert_eq!(status, Status::Accept, "{answer:?}");
        let expected = format!("error; digest={digest}; {address}=");
        let header = added_header(&actions).expect("an X-Pyzor header");
        assert!(
            header.starts_with(&expected) && !header.ends_with("5/0"),
            "{answer:?}: {header}"
        );

        let tempfail = start_milter(&config(&[address], "on_error = \"tempfail\""));
        let (_, status) = send(tempfail.address, &Envelope::default(), &message).await;
        assert!(
            matches!(status, Status::Tempfail { .. }),
            "{answer:?}: {status:?}"
        );
    }
}
