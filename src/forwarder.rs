//! Forwarding (pyzord's `--forward-client-homedir`): digests that pyzord
//! received as reports or whitelists are queued and sent on to upstream
//! Pyzor servers with the `client`.
//!
//! Like pyzor's `Forwarder`, the queue is bounded (10,000) and drops what
//! does not fit. Unlike it, digests go out in batches (many `Op-Digest`
//! headers in one request, which pyzord accepts), flushed when a batch is
//! full or after a short delay, so none waits forever; each server's
//! answer is read and a failed batch is retried a few times.
//!
//! This module sits above `server` and `client`, which never import each
//! other: the server only sees the [`Forward`] sink.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::client::Client;
use crate::protocol::Op;
use crate::server::Forward;
use crate::storage::Kind;

/// pyzor's `max_queue_size`.
pub const MAX_QUEUE: usize = 10_000;

/// Digests per forwarded request: about 5 kB of `Op-Digest` lines, well
/// inside pyzord's 8,192-byte datagram.
pub const MAX_BATCH: usize = 100;

/// How long a digest may wait for its batch to fill.
pub const FLUSH_DELAY: Duration = Duration::from_secs(1);

/// How often a batch is tried on one server before it is given up.
pub const ATTEMPTS: u32 = 3;

/// The sink the server queues digests into.
#[derive(Debug, Clone)]
pub struct ForwardQueue {
    sender: mpsc::Sender<(String, Kind)>,
}

impl Forward for ForwardQueue {
    fn queue(&self, digest: &str, kind: Kind) {
        if self.sender.try_send((digest.to_owned(), kind)).is_err() {
            tracing::debug!(digest, "forwarding queue full, digest dropped");
        }
    }
}

/// Starts forwarding to every server of `client`; returns the sink to hand
/// to the server. The task ends when every sink is dropped.
pub fn start(client: Client) -> Arc<ForwardQueue> {
    let (sender, receiver) = mpsc::channel(MAX_QUEUE);
    tokio::spawn(forward_loop(client, receiver));
    Arc::new(ForwardQueue { sender })
}

async fn forward_loop(client: Client, mut receiver: mpsc::Receiver<(String, Kind)>) {
    let mut reports = Vec::new();
    let mut whitelists = Vec::new();
    loop {
        let Some((digest, kind)) = receiver.recv().await else {
            break;
        };
        push(&mut reports, &mut whitelists, digest, kind);
        let deadline = tokio::time::Instant::now() + FLUSH_DELAY;
        while reports.len() < MAX_BATCH && whitelists.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some((digest, kind))) => push(&mut reports, &mut whitelists, digest, kind),
                Ok(None) | Err(_) => break,
            }
        }
        send(&client, Op::Report, std::mem::take(&mut reports)).await;
        send(&client, Op::Whitelist, std::mem::take(&mut whitelists)).await;
    }
}

fn push(reports: &mut Vec<String>, whitelists: &mut Vec<String>, digest: String, kind: Kind) {
    match kind {
        Kind::Report => reports.push(digest),
        Kind::Whitelist => whitelists.push(digest),
    }
}

/// Sends one batch to every server, retrying each a few times.
async fn send(client: &Client, op: Op, digests: Vec<String>) {
    if digests.is_empty() {
        return;
    }
    let servers: Vec<String> = client.servers().map(ToString::to_string).collect();
    for (index, server) in servers.iter().enumerate() {
        for attempt in 1..=ATTEMPTS {
            match client.ask(index, op, digests.clone(), None).await {
                Ok(response) if response.is_ok().unwrap_or(false) => break,
                Ok(response) => {
                    tracing::warn!(
                        server,
                        op = op.as_str(),
                        diag = response.diag(),
                        "forwarding refused"
                    );
                    break;
                }
                Err(error) if attempt < ATTEMPTS => {
                    tracing::debug!(server, attempt, %error, "forwarding failed, retrying");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
                Err(error) => tracing::warn!(
                    server,
                    digests = digests.len(),
                    %error,
                    "forwarding failed, batch given up"
                ),
            }
        }
    }
}
