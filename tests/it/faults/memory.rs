//! The milter's memory per connection: a `pyzor-milter milter` process
//! takes many connections at once, each holding a message just under
//! `max_message_size` and then going over it, and clients that hang up
//! mid-message; its resident memory, sampled from /proc throughout, grows
//! by no more than connections × max_message_size and a stated slack, and
//! it serves the next message.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use indymilter_test::{Status, TestConnection};
use tokio::sync::Barrier;

use crate::milter::util::{Envelope, added_header, send, spam, start_pyzord};
use crate::server_util::{ChildGuard, free_port, wait_for};
use crate::util::temp_dir;

/// The milter's limit in this test.
const MAX_MESSAGE_SIZE: usize = 2_000_000;
/// Connections that send a message over the limit to the end.
const SENDERS: usize = 32;
/// Connections that hang up mid-message.
const QUITTERS: usize = 8;
/// The body chunk an MTA sends (MILTER_CHUNK_SIZE).
const CHUNK: usize = 65535;
/// Chunks each connection sends before all wait together: just under the
/// limit, the most a connection holds.
const HELD_CHUNKS: usize = MAX_MESSAGE_SIZE / CHUNK - 1;
/// How long every connection holds its bytes at once.
const HOLD: Duration = Duration::from_millis(500);
/// Rounds of the whole load: memory must not creep from one to the next.
const ROUNDS: usize = 2;
/// Beyond what the connections hold: the runtime's and allocator's own
/// growth under load (buffers, task stacks, arenas of two worker threads).
const SLACK_BYTES: u64 = 32 << 20;

/// The resident set size of a process, in bytes (VmRSS of /proc).
pub(super) fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kilobytes: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kilobytes * 1024
}

/// One connection: headers, HELD_CHUNKS of body, then every connection
/// waits at `barrier` (all hold their bytes at once); a sender then goes
/// over the limit and ends the message, a quitter hangs up.
async fn connection(milter: SocketAddr, chunk: Arc<Vec<u8>>, barrier: Arc<Barrier>, quit: bool) {
    let mut conn = TestConnection::open(milter).await.expect("connect");
    conn.connect("client.example", ([192, 0, 2, 25], 41000))
        .await
        .expect("connect stage");
    conn.mail(["<sender@example.org>"]).await.expect("mail");
    conn.rcpt(["<rcpt@example.net>"]).await.expect("rcpt");
    conn.header("Subject", "a large one").await.expect("header");
    conn.eoh().await.expect("eoh");
    for _ in 0..HELD_CHUNKS {
        conn.body(chunk.to_vec()).await.expect("body");
    }
    barrier.wait().await;
    // Body stages are not answered: give the milter time to read what is
    // still in the socket, so that every connection holds its bytes.
    tokio::time::sleep(HOLD).await;
    if quit {
        return;
    }
    for _ in 0..4 {
        conn.body(chunk.to_vec()).await.expect("body");
    }
    let (actions, status) = conn.eom().await.expect("eom");
    assert_eq!(status, Status::Accept);
    assert_eq!(
        added_header(&actions).as_deref(),
        Some("skipped; reason=oversize")
    );
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_per_connection_stays_within_max_message_size() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let port = free_port(false);
    let config = dir.path().join("milter.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"inet:127.0.0.1:{port}\"\nservers = [\"{}\"]\ntrusted_networks = []\n\
             max_message_size = {MAX_MESSAGE_SIZE}\n",
            pyzord.address
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_pyzor-milter"))
        .arg("milter")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start our milter");
    let mut child = ChildGuard(child);
    let pid = child.0.id();
    wait_for("our milter", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let milter: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let clean = |header: Option<String>| header.is_some_and(|h| h.starts_with("clean; digest="));
    let (actions, _) = send(milter, &Envelope::default(), &spam("warm-up")).await;
    assert!(clean(added_header(&actions)));
    let baseline = rss_bytes(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let line = "Offer of a lifetime, reply today to claim the prize waiting for you!\r\n";
    let chunk = Arc::new(line.repeat(CHUNK / line.len() + 1).as_bytes()[..CHUNK].to_vec());
    for _ in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(SENDERS + QUITTERS));
        let tasks: Vec<_> = (0..SENDERS + QUITTERS)
            .map(|index| {
                let future = connection(
                    milter,
                    Arc::clone(&chunk),
                    Arc::clone(&barrier),
                    index >= SENDERS,
                );
                tokio::spawn(tokio::time::timeout(Duration::from_secs(120), future))
            })
            .collect();
        for task in tasks {
            task.await
                .expect("a connection task")
                .expect("the connection finished in time");
        }
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    let bound = ((SENDERS + QUITTERS) * MAX_MESSAGE_SIZE) as u64 + SLACK_BYTES;
    eprintln!(
        "milter RSS: {} MB at rest, peak growth {} MB with {} connections holding up to \
         {} bytes each (bound {} MB)",
        baseline >> 20,
        growth >> 20,
        SENDERS + QUITTERS,
        HELD_CHUNKS * CHUNK,
        bound >> 20
    );
    assert!(growth <= bound, "grew by {growth} bytes, bound {bound}");
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "the milter died"
    );
    let (actions, status) = send(milter, &Envelope::default(), &spam("after")).await;
    assert_eq!(status, Status::Accept);
    assert!(clean(added_header(&actions)));
}
