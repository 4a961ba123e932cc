//! Faults under load: Redis and MariaDB killed and restarted under our
//! pyzord ([`backend`]), every Pyzor server dead or answering garbage under
//! the milter ([`milter`]), the milter's memory per connection against
//! `max_message_size` ([`memory`]), pyzord's memory under floods
//! ([`flood`]), and pyzord's SQLite file on a disk that fills, a
//! filesystem that turns read-only, or removed ([`disk`]). The peers are
//! real processes started, killed and restarted by the tests on 127.0.0.1.

pub(crate) mod backend;
mod disk;
mod flood;
mod memory;
mod milter;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long pyzor's client waits for an answer (`Client.timeout`): a request
/// unanswered after that is a hang as its user sees it.
const CLIENT_WAIT: Duration = Duration::from_secs(5);

/// Sends one datagram from `socket` and waits up to [`CLIENT_WAIT`] for
/// the answer carrying `thread`; returns it and how long it took.
pub(crate) fn exchange(
    socket: &UdpSocket,
    server: SocketAddr,
    request: &[u8],
    thread: u64,
) -> (Option<Vec<u8>>, Duration) {
    let sent = Instant::now();
    socket.send_to(request, server).expect("send");
    let wanted = format!("\nThread: {thread}\n");
    let mut buffer = vec![0u8; 65536];
    loop {
        let left = CLIENT_WAIT.saturating_sub(sent.elapsed());
        if left.is_zero() {
            return (None, sent.elapsed());
        }
        socket.set_read_timeout(Some(left)).expect("timeout");
        match socket.recv_from(&mut buffer) {
            Ok((length, _)) => {
                let answer = &buffer[..length];
                if answer
                    .windows(wanted.len())
                    .any(|window| window == wanted.as_bytes())
                {
                    return (Some(answer.to_vec()), sent.elapsed());
                }
            }
            Err(_) => return (None, sent.elapsed()),
        }
    }
}

/// The Code of an answer, if it has one.
pub(crate) fn code_of(answer: &[u8]) -> Option<u16> {
    std::str::from_utf8(answer)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Code: "))?
        .trim()
        .parse()
        .ok()
}
