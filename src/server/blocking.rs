//! pyzord on blocking threads, for an engine in a local file (the embedded
//! SQLite) whose calls run on the caller's thread ([`LocalStorage`]).
//!
//! One thread at a time receives: it holds the receive token while it
//! takes a batch of datagrams ([`datagrams::Batch`]), runs the first half
//! of their handlers ([`handler::begin`]), and answers the reads at once,
//! read from one snapshot of the database and sent in one `sendmmsg`. It hands the batch's reports and whitelists to the
//! engine's group commit: when another thread is committing, that one
//! takes them into its next transaction and this one goes on receiving;
//! when none is, this thread gives the token to a spare thread before it
//! commits, so that reads are served while the commit (and its fsync, with
//! `synchronous=FULL`) runs, and answers each write after COMMIT, together.
//!
//! A signed request must be new to the engine's replay table: a report or
//! whitelist is remembered in the transaction that counts it, and is
//! refused at its commit when it was there; a signed read is looked up in
//! the table before it is answered, and its key joins the next commit.
//!
//! Under reads alone one thread does everything and the spares sleep: no
//! wake-ups between threads, which were a fifth of a check's time when a
//! task on the runtime served each datagram.

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::Context;
use super::datagrams::{self, Batch};
use super::handler::{self, Found, Need, Step};
use super::message::{Message, Response};
use super::reflection;
use crate::storage::{CommitHooks, Kind, LocalStorage, LocalWrite, Seen, SignedRequest};

/// Serves `socket` on this thread until `stop` is set, taking turns with
/// the other threads sharing `receiving`. The socket must be blocking with
/// a read timeout, which is how often `stop` is looked at.
/// `context.storage` must be local ([`crate::storage::Storage::as_local`]).
/// Returns early only with the error of a socket that is gone.
pub fn serve(
    socket: &Arc<UdpSocket>,
    context: &Arc<Context>,
    receiving: &Mutex<()>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let storage = context
        .storage
        .as_local()
        .expect("run serves only a local engine from threads");
    OUTBOX.with(|outbox| *outbox.borrow_mut() = Some(Vec::new()));
    let mut batch = Batch::default();
    // Kept from one batch to the next unless given away before a commit.
    let mut token = None;
    while !stop.load(Ordering::Relaxed) {
        let held = token.take().unwrap_or_else(|| take_turn(receiving));
        token = Some(held);
        match batch.receive(socket) {
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(error) if super::socket_lost(&error) => return Err(error),
            // ICMP errors from earlier sends surface here on some systems.
            Err(error) => {
                tracing::debug!(%error, "receive failed");
                continue;
            }
        }
        let turn = Turn {
            token: RefCell::new(token.take()),
            socket,
        };
        // A bug in a handler must not end the server: the batch is lost,
        // the thread goes on (a task per datagram isolates it the same way).
        let answered = catch_unwind(AssertUnwindSafe(|| {
            answer(&batch, socket, context, storage, &turn);
        }));
        if answered.is_err() {
            tracing::error!("a request handler panicked; its batch is dropped");
            OUTBOX.with(|outbox| outbox.borrow_mut().as_mut().map(Vec::clear));
        }
        token = turn.token.into_inner();
    }
    Ok(())
}

/// Waits for the receive token. A thread that panicked holding it left
/// nothing half-done (the token guards no data).
fn take_turn(receiving: &Mutex<()>) -> MutexGuard<'_, ()> {
    receiving
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A thread's turn at receiving, and what it does around its commits.
struct Turn<'a> {
    token: RefCell<Option<MutexGuard<'a, ()>>>,
    socket: &'a UdpSocket,
}

impl CommitHooks for Turn<'_> {
    /// Gives the receive token away before a commit.
    fn committing(&self) {
        self.token.borrow_mut().take();
    }

    /// Sends the answers of the writes just committed.
    fn told(&self) {
        let answers = OUTBOX.with(|outbox| outbox.borrow_mut().as_mut().map(std::mem::take));
        if let Some(answers) = answers
            && !answers.is_empty()
        {
            datagrams::send_all(self.socket, &answers);
        }
    }
}

/// Answers one batch: reads at once, writes after their commit.
fn answer(
    batch: &Batch,
    socket: &Arc<UdpSocket>,
    context: &Arc<Context>,
    storage: &dyn LocalStorage,
    turn: &Turn<'_>,
) {
    let received = Instant::now();
    let mut answers = Vec::new();
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for (data, peer) in batch.datagrams() {
        let at = Answered {
            length: data.len(),
            received,
        };
        if let Some(limiter) = &context.limiter
            && !limiter.admit_logged(peer, received, &context.metrics)
        {
            continue;
        }
        let request = Message::parse(data);
        let (prepared, need) = match handler::begin(&request, peer.ip(), context) {
            Step::Answer(None) => continue,
            Step::Answer(Some(response)) => {
                let operation = request.get("Op").unwrap_or_default();
                answers.extend(recorded(context, operation, &response, at).map(|b| (peer, b)));
                continue;
            }
            Step::Query(prepared, need) => (prepared, need),
        };
        let signed = prepared.signed();
        if let Some(request) = signed
            && !matches!(need, Need::Write(..))
        {
            match storage.remembered(&request.key) {
                Ok(false) => writes.push(remember_only(request)),
                Ok(true) => {
                    let operation = prepared.operation();
                    let response = prepared.replayed(context);
                    answers.extend(recorded(context, operation, &response, at).map(|b| (peer, b)));
                    continue;
                }
                Err(error) => {
                    let bytes = finished(prepared, Err(error), context, at);
                    answers.extend(bytes.map(|b| (peer, b)));
                    continue;
                }
            }
        }
        let found = match need {
            Need::Nothing => Ok(Found::Nothing),
            Need::Record(digest) => {
                reads.push((prepared, digest, peer, at));
                continue;
            }
            Need::Write(kind, digests) => {
                let socket = Arc::clone(socket);
                let context = Arc::clone(context);
                // The digests go on to the forwarder, when there is one.
                let forwarded = context.forward.is_some().then(|| digests.clone());
                let done = move |written: Result<Seen, _>| {
                    let found = match written {
                        Ok(Seen::Replayed) => {
                            let operation = prepared.operation();
                            let response = prepared.replayed(&context);
                            let bytes = recorded(&context, operation, &response, at);
                            return deliver(&socket, peer, bytes);
                        }
                        Ok(Seen::New) => {
                            if let Some(digests) = &forwarded {
                                handler::forward(&context, kind, digests);
                            }
                            Ok(Found::Written)
                        }
                        Err(error) => Err(error),
                    };
                    deliver(&socket, peer, finished(prepared, found, &context, at));
                };
                writes.push(LocalWrite {
                    kind,
                    digests,
                    request: signed,
                    done: Box::new(done),
                });
                continue;
            }
        };
        answers.extend(finished(prepared, found, context, at).map(|b| (peer, b)));
    }
    let digests: Vec<&str> = reads
        .iter()
        .map(|(_, digest, ..)| digest.as_str())
        .collect();
    let records = match digests.len() {
        0 | 1 => None,
        _ => storage.get_many(&digests).ok(),
    };
    let mut records = records.map(Vec::into_iter);
    for (prepared, digest, peer, at) in reads {
        // One read, or a batch whose snapshot failed: each on its own.
        let record = match records.as_mut().and_then(Iterator::next) {
            Some(record) => Ok(record),
            None => storage.get_now(&digest),
        };
        let found = record.map(Found::Record);
        answers.extend(finished(prepared, found, context, at).map(|b| (peer, b)));
    }
    datagrams::send_all(socket, &answers);
    if !writes.is_empty() {
        storage.write_all(writes, turn);
    }
}

/// The write that puts a signed read's key in the replay table; its answer
/// went out already.
fn remember_only(request: SignedRequest) -> LocalWrite {
    LocalWrite {
        kind: Kind::Report,
        digests: Vec::new(),
        request: Some(request),
        done: Box::new(|_| {}),
    }
}

/// A request being answered: its size, which bounds its answer's
/// ([`reflection`]), and when it came.
#[derive(Clone, Copy)]
struct Answered {
    length: usize,
    received: Instant,
}

/// The answer to a prepared request, counted in the metrics; `None` when
/// it is larger than the request allows.
fn finished(
    prepared: handler::Prepared,
    found: Result<Found, crate::storage::StorageError>,
    context: &Context,
    at: Answered,
) -> Option<Vec<u8>> {
    let operation = prepared.operation();
    let response = prepared.finish(found, context);
    recorded(context, operation, &response, at)
}

/// A response's datagram, counted in the metrics; `None` when it is
/// larger than the request allows.
fn recorded(
    context: &Context,
    operation: &[u8],
    response: &Response,
    at: Answered,
) -> Option<Vec<u8>> {
    let bytes = reflection::datagram(response, at.length, &context.metrics)?;
    context
        .metrics
        .record(operation, response.code, at.received.elapsed());
    Some(bytes)
}

/// Answers waiting to go out, and where to.
type Answers = Vec<(SocketAddr, Vec<u8>)>;

thread_local! {
    /// The answers to writes this serving thread committed, until they go
    /// out together ([`Turn::told`]). `None` on other threads.
    static OUTBOX: RefCell<Option<Answers>> = const { RefCell::new(None) };
}

/// Sends an answer to a write, if it has one: with the others of its
/// commit when a serving thread committed it, at once on any other thread
/// (one that committed it with a cleanup of its own).
fn deliver(socket: &UdpSocket, peer: SocketAddr, bytes: Option<Vec<u8>>) {
    let Some(bytes) = bytes else {
        return;
    };
    let queued = OUTBOX.with(|outbox| match outbox.borrow_mut().as_mut() {
        Some(answers) => {
            answers.push((peer, bytes));
            None
        }
        None => Some(bytes),
    });
    if let Some(bytes) = queued {
        datagrams::send_all(socket, &[(peer, bytes)]);
    }
}
