//! The verdict on a message, in one place for the milter and the rspamd
//! listener: which servers' answers count ([`server_check`]), the cache in
//! front of the servers ([`ask`]), and the decision from the counts
//! ([`decide`]): verdict, SMTP disposition and the header text.
//!
//! Pure apart from [`ask`], which goes through the runtime's cache and
//! client; nothing here reads or writes a connection.

use std::fmt::Write as _;

use tokio::time::Instant;

use super::Runtime;
use super::config::{Action, Config, OnError, Reply};
use crate::client::{Answer, ServerError};
use crate::digest::Digest;
use crate::logging::{Chain, Repeats};
use crate::protocol::{OK_CODE, PROTOCOL_VERSION, Response};

/// One server's answer to a check, as the decision and the header use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCheck {
    /// `host:port`.
    pub server: String,
    /// `(Count, WL-Count)`, or why there are none.
    pub result: Result<(i64, i64), Failure>,
}

/// Why a server gave no counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The header's word: `timeout` or `error`.
    pub word: &'static str,
    /// The log line's: `timeout`, `unreachable`, `resolution`,
    /// `code 500`, `bad response`...
    pub reason: String,
}

impl Failure {
    /// No answer within the deadline.
    pub fn timeout() -> Failure {
        Failure {
            word: "timeout",
            reason: "timeout".to_owned(),
        }
    }

    /// Any other failure, for the reason given.
    pub fn error(reason: impl Into<String>) -> Failure {
        Failure {
            word: "error",
            reason: reason.into(),
        }
    }
}

/// Why a message was not checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    Authenticated,
    TrustedNetwork,
    SenderDomain,
    RecipientDomain,
    Oversize,
    /// The digest of a message without usable text, a common source of
    /// false positives, which is not looked up unless configured.
    EmptyDigest,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Authenticated => "authenticated",
            SkipReason::TrustedNetwork => "trusted-network",
            SkipReason::SenderDomain => "sender-domain",
            SkipReason::RecipientDomain => "recipient-domain",
            SkipReason::Oversize => "oversize",
            SkipReason::EmptyDigest => "empty-digest",
        }
    }
}

/// What the servers' counts say about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Listed,
    Clean,
    Whitelisted,
    /// No server answered.
    Error,
    Skipped(SkipReason),
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Listed => "listed",
            Verdict::Clean => "clean",
            Verdict::Whitelisted => "whitelisted",
            Verdict::Error => "error",
            Verdict::Skipped(_) => "skipped",
        }
    }
}

/// What the MTA is told at end of message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    Accept,
    Reject(Reply),
    Tempfail(Reply),
    Discard,
    Quarantine(String),
}

impl Disposition {
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Accept => "accept",
            Disposition::Reject(_) => "reject",
            Disposition::Tempfail(_) => "tempfail",
            Disposition::Discard => "discard",
            Disposition::Quarantine(_) => "quarantine",
        }
    }
}

/// The decision about one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub disposition: Disposition,
    pub digest: Option<Digest>,
    pub checks: Vec<ServerCheck>,
    /// The value of the header to add, if any (without leading space).
    pub header: Option<String>,
}

impl Outcome {
    /// `5/0` per server, as in the header.
    pub fn counts(&self) -> String {
        let parts: Vec<String> = self.checks.iter().map(format_check).collect();
        parts.join(", ")
    }

    /// What a message's log line says of the decision: verdict, the skip
    /// reason, digest, counts and each server's failure.
    pub fn describe(&self) -> String {
        let mut line = format!("verdict={}", self.verdict.as_str());
        if let Verdict::Skipped(reason) = self.verdict {
            let _ = write!(line, " reason={}", reason.as_str());
        }
        if let Some(digest) = self.digest {
            let _ = write!(line, " digest={digest}");
        }
        if !self.checks.is_empty() {
            let _ = write!(line, " counts=\"{}\"", self.counts());
        }
        let failures: Vec<String> = self
            .checks
            .iter()
            .filter_map(|check| {
                let failure = check.result.as_ref().err()?;
                Some(format!("{}={}", check.server, failure.reason))
            })
            .collect();
        if !failures.is_empty() {
            let _ = write!(line, " errors=\"{}\"", failures.join(", "));
        }
        line
    }
}

/// The outcome of a message not asked about, and why.
pub fn skipped(reason: SkipReason, digest: Option<Digest>) -> Outcome {
    let mut header = format!("skipped; reason={}", reason.as_str());
    if let Some(digest) = digest {
        let _ = write!(header, "; digest={digest}");
    }
    Outcome {
        verdict: Verdict::Skipped(reason),
        disposition: Disposition::Accept,
        digest,
        checks: Vec::new(),
        header: Some(header),
    }
}

/// The decision from the servers' answers, with pyzor check's
/// semantics: listed when some server's count exceeds the report
/// threshold and no server's WL-Count exceeds the whitelist threshold.
pub fn decide(config: &Config, digest: Digest, checks: Vec<ServerCheck>) -> Outcome {
    let counts: Vec<(i64, i64)> = checks
        .iter()
        .filter_map(|check| check.result.clone().ok())
        .collect();
    let whitelisted = counts.iter().any(|&(count, wl_count)| {
        wl_count > config.whitelist_threshold
            || config.whitelist_factor.is_some_and(|factor| {
                // SpamAssassin's pyzor_whitelist_factor.
                wl_count > 0 && wl_count as f64 >= count as f64 * factor
            })
    });
    let listed = !whitelisted
        && counts
            .iter()
            .any(|&(count, _)| count > config.report_threshold && count >= config.min_count);
    let over_reject = listed
        && config
            .reject_threshold
            .is_some_and(|threshold| counts.iter().any(|&(count, _)| count > threshold));
    let verdict = if counts.is_empty() {
        Verdict::Error
    } else if whitelisted {
        Verdict::Whitelisted
    } else if listed {
        Verdict::Listed
    } else {
        Verdict::Clean
    };
    let mut disposition = match verdict {
        Verdict::Listed if over_reject => Disposition::Reject(config.reject_reply.clone()),
        Verdict::Listed => match config.action {
            Action::Tag => Disposition::Accept,
            Action::Reject => Disposition::Reject(config.reject_reply.clone()),
            Action::Tempfail => Disposition::Tempfail(config.tempfail_reply.clone()),
            Action::Quarantine => Disposition::Quarantine(config.quarantine_reason.clone()),
            Action::Discard => Disposition::Discard,
        },
        Verdict::Error if config.on_error == OnError::Tempfail => {
            Disposition::Tempfail(config.tempfail_reply.clone())
        }
        _ => Disposition::Accept,
    };
    if config.dry_run {
        disposition = Disposition::Accept;
    }
    let header = match disposition {
        Disposition::Accept | Disposition::Quarantine(_) => {
            let mut header = format!("{}; digest={digest}", verdict.as_str());
            for check in &checks {
                let _ = write!(header, "; {}", format_check(check));
            }
            Some(header)
        }
        _ => None,
    };
    Outcome {
        verdict,
        disposition,
        digest: Some(digest),
        checks,
        header,
    }
}

/// What the cache or the servers say about `digest`: the cached checks,
/// or every server asked at once within the configured timeout (failures
/// logged under `label`), then cached.
pub async fn ask(runtime: &Runtime, digest: Digest, label: &str) -> Vec<ServerCheck> {
    if let Some(checks) = runtime.cache.get(&digest) {
        return checks;
    }
    let deadline = Instant::now() + runtime.config.timeout;
    let answers = runtime.client.check(&digest.to_hex(), deadline).await;
    let checks: Vec<ServerCheck> = answers
        .into_iter()
        .map(|answer| server_check(answer, label, &runtime.repeats))
        .collect();
    runtime.cache.put(digest, &checks);
    checks
}

/// One server's answer as the decision needs it. A failure is logged with
/// its cause, once per server and reason within
/// [`crate::logging::REPEAT_WINDOW`] (the next line counts the others).
fn server_check(answer: Answer, queue_id: &str, repeats: &Repeats) -> ServerCheck {
    let server = answer.server.to_string();
    let result = match answer.result {
        Ok(response) => usable_counts(&response).map_err(|why| {
            let reason = match response.code() {
                Ok(code) if code != OK_CODE => format!("code {code}"),
                _ => "bad response".to_owned(),
            };
            let diag = response.get("Diag").unwrap_or_default();
            (
                Failure::error(reason),
                format!("unusable answer: {why} {diag:?}"),
            )
        }),
        Err(error) => Err((failure_of(&error), Chain(&error).to_string())),
    };
    let result = result.map_err(|(failure, detail)| {
        let kind = format!("{server} {}", failure.reason);
        if let Some(repeats) = repeats.admit(&kind, std::time::Instant::now()) {
            tracing::warn!("{queue_id}: {}: {detail}{repeats}", failure.reason);
        }
        failure
    });
    ServerCheck { server, result }
}

/// The log's word for why a server did not answer.
fn failure_of(error: &ServerError) -> Failure {
    let network = |source: &std::io::Error| match source.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused",
        std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => {
            "unreachable"
        }
        _ => "network error",
    };
    match error {
        ServerError::Timeout { .. } => Failure::timeout(),
        ServerError::Resolve { .. } => Failure::error("resolution"),
        ServerError::Send { source, .. } | ServerError::Receive { source, .. } => {
            Failure::error(network(source))
        }
        ServerError::Response { .. } => Failure::error("bad response"),
    }
}

/// The counts of an answer that may make a verdict: Code 200 and our
/// protocol version (the client takes only an answer that carries our
/// request's Thread). Anything else from a server is an error, never a
/// verdict.
fn usable_counts(response: &Response) -> Result<(i64, i64), String> {
    match response.code() {
        Ok(OK_CODE) => {}
        Ok(code) => return Err(format!("code {code}")),
        Err(error) => return Err(error.to_string()),
    }
    if response.get("PV").map(str::trim) != Some(PROTOCOL_VERSION) {
        return Err(format!("protocol version {:?}", response.get("PV")));
    }
    let (count, whitelist_count) = response.counts().map_err(|error| error.to_string())?;
    // Python takes a negative count as it comes; here it is malformed, or a
    // negative Count with `whitelist_factor` would whitelist anything.
    let stored = |count: crate::python::Int| {
        if count.is_negative() {
            Err(format!("negative count {count}"))
        } else {
            Ok(count.saturating())
        }
    };
    Ok((stored(count)?, stored(whitelist_count)?))
}

/// `host:port=COUNT/WL_COUNT`, or `host:port=timeout` or `=error`.
fn format_check(check: &ServerCheck) -> String {
    match &check.result {
        Ok((count, wl_count)) => format!("{}={count}/{wl_count}", check.server),
        Err(failure) => format!("{}={}", check.server, failure.word),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Accounts, Client, ServerAddress};

    /// A server nothing listens on, through the real client: the check
    /// names the reason, and the warning comes once per window.
    #[tokio::test]
    async fn a_dead_server_is_named_with_its_reason_once_per_window() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .expect("a free port")
            .port();
        let server = ServerAddress::new("127.0.0.1", port);
        let timeout = std::time::Duration::from_millis(300);
        let client = Client::new(vec![server], Accounts::new(), timeout);
        let repeats = Repeats::default();
        let mut logged = Vec::new();
        for _ in 0..2 {
            let deadline = Instant::now() + timeout;
            let answers = client.check(&"0".repeat(40), deadline).await;
            let answer = answers.into_iter().next().expect("one answer");
            let mut check = None;
            let log = crate::logging::captured(|| {
                check = Some(server_check(answer, "QUEUEID", &repeats));
            });
            let expected = ServerCheck {
                server: format!("127.0.0.1:{port}"),
                result: Err(Failure::timeout()),
            };
            assert_eq!(check, Some(expected));
            logged.push(log);
        }
        // The client says how long it waited (what was left of the deadline).
        let first =
            format!(" WARN QUEUEID: timeout: server \"127.0.0.1:{port}\" did not answer within ");
        assert!(logged[0].starts_with(&first), "{}", logged[0]);
        assert!(
            logged[0].ends_with(" s\n") && logged[0].lines().count() == 1,
            "{}",
            logged[0]
        );
        assert_eq!(
            logged[1], "",
            "a repeat within the window is counted, not logged"
        );
    }

    #[test]
    fn counts_of_any_size_saturate_and_negative_ones_are_malformed() {
        let answer = |counts: &str| {
            Response::parse(
                format!("Code: 200\nDiag: OK\nPV: 2.1\nThread: 4321\n{counts}\n").as_bytes(),
            )
        };
        assert_eq!(
            usable_counts(&answer("Count: 99999999999999999999\nWL-Count: 0")),
            Ok((i64::MAX, 0))
        );
        assert_eq!(
            usable_counts(&answer("Count: 3\nWL-Count: -1")),
            Err("negative count -1".to_owned())
        );
        assert_eq!(
            usable_counts(&answer("Count: -99999999999999999999\nWL-Count: 1")),
            Err("negative count -99999999999999999999".to_owned())
        );
    }
}
