//! The rspamd listener: serves the `pyzor` scanner of rspamd's
//! `external_services` module (`lualib/lua_scanners/pyzor.lua`) with the
//! milter's servers, thresholds, cache, digest memo and limits.
//!
//! rspamd connects, writes the raw message and shuts its side down; the
//! answer is one line in `pyzor check`'s format, `HOST:PORT\t(200,
//! 'OK')\tCOUNT\tWL_COUNT\n`, written at once, then the connection is
//! closed. rspamd scores `default_score * (Count - WL) / (Count + WL)` and
//! adds its symbol only when that is above 0, so the line carries our
//! verdict ([`answer_line`]): a listed message the counts of the server
//! with the highest Count, a clean or whitelisted one Count 0 and a
//! WL-Count of at least 1 (with both at 0 rspamd divides 0 by 0 and its
//! callback fails). A message not asked about or without any server's
//! answer gets a line whose second field is not `(200, 'OK')`: rspamd logs
//! it whole ("error parsing response: ...") and adds no symbol.
//!
//! Bounded: connections (`max_connections`, the rest wait in the listen
//! backlog), bytes kept per message (`max_message_size`; the rest is read
//! and dropped), and the time to receive a message
//! (`rspamd_read_timeout_ms`; a slow or silent peer is dropped without an
//! answer).

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indymilter::Listener;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::verdict::{self, Outcome, SkipReason, Verdict};
use super::{MilterListener, Runtime, Shared};
use crate::digest;

/// What the answer line names instead of a server when no server was
/// asked.
const SELF_NAME: &str = "pyzor-milter";

/// Messages larger than this are digested off the async worker threads.
const INLINE_DIGEST_LIMIT: usize = 256 * 1024;

/// Serves `listener` until `shutdown` completes, then lets the connections
/// in progress finish (each is bounded by the read timeout and the Pyzor
/// deadline). A listener that fails for good ends it with the error.
pub async fn serve(
    mut listener: MilterListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(shared.current().config.max_connections));
    let mut connections = JoinSet::new();
    let sequence = AtomicU64::new(0);
    tokio::pin!(shutdown);
    let result = loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break Ok(()),
            permit = Arc::clone(&limit).acquire_owned() => {
                permit.expect("the semaphore is never closed")
            }
        };
        let stream = tokio::select! {
            () = &mut shutdown => break Ok(()),
            accepted = std::future::poll_fn(|cx| listener.poll_accept(cx)) => match accepted {
                Ok(stream) => stream,
                Err(error) => break Err(error),
            },
        };
        let runtime = shared.current();
        let label = format!("rspamd#{}", sequence.fetch_add(1, Ordering::Relaxed) + 1);
        connections.spawn(async move {
            serve_connection(stream, runtime, label).await;
            drop(permit);
        });
    };
    while connections.join_next().await.is_some() {}
    result
}

/// One rspamd request: the message in, one line out.
async fn serve_connection<S>(mut stream: S, runtime: Arc<Runtime>, label: String)
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let started = Instant::now();
    let config = &runtime.config;
    let received = tokio::time::timeout(
        config.rspamd_read_timeout,
        read_message(&mut stream, config.max_message_size),
    )
    .await;
    let text = match received {
        Ok(Ok(text)) => text,
        Ok(Err(error)) => {
            tracing::debug!("{label}: dropped: cannot read the message: {error}");
            return;
        }
        Err(_) => {
            tracing::info!(
                "{label}: dropped: no whole message within {} ms",
                config.rspamd_read_timeout.as_millis()
            );
            return;
        }
    };
    let outcome = match text {
        None => verdict::skipped(SkipReason::Oversize, None),
        Some(text) => check(&runtime, &text, &label).await,
    };
    let line = answer_line(&outcome);
    if let Err(error) = stream.write_all(line.as_bytes()).await {
        tracing::debug!("{label}: cannot answer: {error}");
    }
    let _ = stream.shutdown().await;
    tracing::info!(
        "{label}: {} answer={:?} elapsed_ms={:.1}",
        outcome.describe(),
        line.trim_end(),
        started.elapsed().as_secs_f64() * 1000.0
    );
}

/// Reads to end of file. `None` when the message is over `limit` bytes:
/// the rest is read and dropped, so that memory stays bounded and rspamd's
/// writes are not refused.
async fn read_message<R: AsyncRead + Unpin>(
    stream: &mut R,
    limit: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut text = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    let mut oversize = false;
    loop {
        let length = stream.read(&mut chunk).await?;
        if length == 0 {
            return Ok((!oversize).then_some(text));
        }
        if !oversize && text.len() + length > limit {
            oversize = true;
            text = Vec::new();
        }
        if !oversize {
            text.extend_from_slice(&chunk[..length]);
        }
    }
}

/// The digest (through the memo, keyed by the whole text), then the
/// verdict: skipped for the empty digest unless configured, else the
/// servers' (or the cache's) answers decided as for the milter.
async fn check(runtime: &Runtime, text: &[u8], label: &str) -> Outcome {
    let config = &runtime.config;
    let key: Option<[u8; 32]> = runtime.memo.enabled().then(|| Sha256::digest(text).into());
    let digest = match key.and_then(|key| runtime.memo.get(&key)) {
        Some(digest) => digest,
        None => {
            let digest = if text.len() > INLINE_DIGEST_LIMIT
                && tokio::runtime::Handle::current().runtime_flavor()
                    == tokio::runtime::RuntimeFlavor::MultiThread
            {
                tokio::task::block_in_place(|| digest::digest(text))
            } else {
                digest::digest(text)
            };
            if let Some(key) = key {
                runtime.memo.put(key, digest);
            }
            digest
        }
    };
    if digest.is_empty() && !config.check_empty_digest {
        return verdict::skipped(SkipReason::EmptyDigest, Some(digest));
    }
    let checks = verdict::ask(runtime, digest, label).await;
    verdict::decide(config, digest, checks)
}

/// The one line rspamd parses, in `pyzor check`'s format (see the module
/// documentation for why clean is `0` and at least `1`).
pub fn answer_line(outcome: &Outcome) -> String {
    let answered = || {
        outcome
            .checks
            .iter()
            .filter_map(|check| Some((check.server.as_str(), check.result.clone().ok()?)))
    };
    let ok = |server: &str, count: i64, wl_count: i64| {
        format!("{server}\t(200, 'OK')\t{count}\t{wl_count}\n")
    };
    match outcome.verdict {
        Verdict::Listed => {
            let (server, (count, wl_count)) = answered()
                .max_by_key(|&(_, (count, _))| count)
                .expect("a listed verdict has an answer");
            ok(server, count, wl_count)
        }
        Verdict::Clean | Verdict::Whitelisted => {
            let (server, (_, wl_count)) = answered()
                .max_by_key(|&(_, (_, wl_count))| wl_count)
                .expect("a clean or whitelisted verdict has an answer");
            ok(server, 0, wl_count.max(1))
        }
        Verdict::Error => {
            let mut line = String::new();
            for check in &outcome.checks {
                if let Err(failure) = &check.result {
                    let code = if failure.word == "timeout" { 504 } else { 500 };
                    let _ = write!(line, "{}\t({code}, '{}') ", check.server, failure.reason);
                }
            }
            if line.is_empty() {
                line = format!("{SELF_NAME}\t(500, 'no server configured')");
            }
            format!("{}\n", line.trim_end())
        }
        Verdict::Skipped(reason) => {
            let mut line = format!("{SELF_NAME}\t(0, 'not checked: {}", reason.as_str());
            if let Some(digest) = outcome.digest {
                let _ = write!(line, " {digest}");
            }
            line + "')\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milter::config::Config;
    use crate::milter::verdict::{Failure, ServerCheck};

    fn check(server: &str, result: Result<(i64, i64), Failure>) -> ServerCheck {
        ServerCheck {
            server: server.to_owned(),
            result,
        }
    }

    fn digest() -> digest::Digest {
        digest::digest(b"Subject: x\r\n\r\nThis line is long enough to count.\r\n")
    }

    #[test]
    fn the_answer_carries_the_verdict_in_pyzor_checks_format() {
        let config = Config::default();
        let listed = verdict::decide(
            &config,
            digest(),
            vec![check("a:1", Ok((3, 0))), check("b:2", Ok((7, 0)))],
        );
        assert_eq!(answer_line(&listed), "b:2\t(200, 'OK')\t7\t0\n");
        let clean = verdict::decide(&config, digest(), vec![check("a:1", Ok((0, 0)))]);
        assert_eq!(answer_line(&clean), "a:1\t(200, 'OK')\t0\t1\n");
        let whitelisted = verdict::decide(
            &config,
            digest(),
            vec![
                check("a:1", Ok((100, 4))),
                check("b:2", Err(Failure::timeout())),
            ],
        );
        assert_eq!(answer_line(&whitelisted), "a:1\t(200, 'OK')\t0\t4\n");
        let error = verdict::decide(
            &config,
            digest(),
            vec![
                check("a:1", Err(Failure::timeout())),
                check("b:2", Err(Failure::error("refused"))),
            ],
        );
        assert_eq!(
            answer_line(&error),
            "a:1\t(504, 'timeout') b:2\t(500, 'refused')\n"
        );
        let empty = digest::digest(b"");
        assert_eq!(
            answer_line(&verdict::skipped(SkipReason::EmptyDigest, Some(empty))),
            "pyzor-milter\t(0, 'not checked: empty-digest da39a3ee5e6b4b0d3255bfef95601890afd80709')\n"
        );
        assert_eq!(
            answer_line(&verdict::skipped(SkipReason::Oversize, None)),
            "pyzor-milter\t(0, 'not checked: oversize')\n"
        );
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_read_to_the_end_and_dropped() {
        let (mut writer, mut reader) = tokio::io::duplex(1024);
        let sender = tokio::spawn(async move {
            writer.write_all(&[b'x'; 10_000]).await.expect("write");
        });
        assert_eq!(read_message(&mut reader, 9_999).await.expect("read"), None);
        sender.await.expect("sent");
        let (mut writer, mut reader) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            writer.write_all(&[b'x'; 10_000]).await.expect("write");
        });
        assert_eq!(
            read_message(&mut reader, 10_000).await.expect("read"),
            Some(vec![b'x'; 10_000])
        );
    }
}
