//! The indymilter callbacks: thin, each hands its stage's data to the
//! connection's [`Session`] and answers the MTA.
//!
//! Every stage before end of message is negotiated as no-reply where the
//! MTA offers it (each reply is a round trip per message), and the header
//! values are asked for with their leading space (SMFIP_HDR_LEADSPC), so
//! the message is rebuilt byte for byte as the client sent it.

use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::sync::Arc;

use indymilter::{
    Actions, Callbacks, ContextActions, EomContext, MacroStage, NegotiateContext, ProtoOpts,
    SetErrorReply, SocketInfo, Status,
};
use tokio::time::Instant;

use super::Shared;
use super::config::Reply;
use super::session::{Disposition, Failure, Outcome, ServerCheck, Session, Step};
use crate::client::{Answer, ServerError};
use crate::logging::{Chain, Repeats};
use crate::protocol::{OK_CODE, PROTOCOL_VERSION, Response, ThreadId};

/// Messages larger than this are digested off the async worker threads.
const INLINE_DIGEST_LIMIT: usize = 256 * 1024;

/// The stages we never need a reply for: every one before end of message,
/// so a message costs one round trip (the load benchmark's no-op milter
/// negotiates the same set, to compare like with like).
pub const NOREPLY: ProtoOpts = ProtoOpts::NOREPLY_CONNECT
    .union(ProtoOpts::NOREPLY_HELO)
    .union(ProtoOpts::NOREPLY_MAIL)
    .union(ProtoOpts::NOREPLY_RCPT)
    .union(ProtoOpts::NOREPLY_DATA)
    .union(ProtoOpts::NOREPLY_HEADER)
    .union(ProtoOpts::NOREPLY_EOH)
    .union(ProtoOpts::NOREPLY_BODY)
    .union(ProtoOpts::NOREPLY_UNKNOWN);

/// Per-connection data.
pub struct Connection {
    session: Session,
    opts: ProtoOpts,
}

impl Connection {
    /// Continue, or nothing where no reply was negotiated for `stage`.
    fn proceed(&self, stage: ProtoOpts) -> Status {
        if self.opts.contains(stage) {
            Status::Noreply
        } else {
            Status::Continue
        }
    }
}

fn text(value: &CStr) -> String {
    String::from_utf8_lossy(value.to_bytes()).into_owned()
}

pub fn callbacks(shared: Arc<Shared>) -> Callbacks<Connection> {
    let negotiate = Arc::clone(&shared);
    let mail = Arc::clone(&shared);
    let eom = shared;
    Callbacks::new()
        .on_negotiate(move |cx, actions, opts| {
            let config = Arc::clone(&negotiate.current().config);
            Box::pin(async move { on_negotiate(cx, actions, opts, config) })
        })
        .on_connect(|cx, _hostname, socket| {
            Box::pin(async move {
                let Some(connection) = cx.data.as_mut() else {
                    return Status::Continue;
                };
                let ip: Option<IpAddr> = match socket {
                    SocketInfo::Inet(address) => Some(address.ip()),
                    _ => None,
                };
                connection.session.connect(ip);
                if let Some(id) = cx.macros.get(c"i") {
                    connection.session.set_queue_id(&text(id));
                }
                connection.proceed(ProtoOpts::NOREPLY_CONNECT)
            })
        })
        .on_mail(move |cx, args| {
            let config = Arc::clone(&mail.current().config);
            Box::pin(async move {
                let Some(connection) = cx.data.as_mut() else {
                    return Status::Continue;
                };
                let sender = args.first().map(|s| text(s)).unwrap_or_default();
                let auth = cx.macros.get(c"{auth_authen}").map(text);
                connection.session.mail(config, &sender, auth.as_deref());
                if let Some(id) = cx.macros.get(c"i") {
                    connection.session.set_queue_id(&text(id));
                }
                connection.proceed(ProtoOpts::NOREPLY_MAIL)
            })
        })
        .on_rcpt(|cx, args| {
            Box::pin(async move {
                let Some(connection) = cx.data.as_mut() else {
                    return Status::Continue;
                };
                let recipient = args.first().map(|s| text(s)).unwrap_or_default();
                connection.session.rcpt(&recipient);
                connection.proceed(ProtoOpts::NOREPLY_RCPT)
            })
        })
        .on_header(|cx, name, value| {
            Box::pin(async move {
                let Some(connection) = cx.data.as_mut() else {
                    return Status::Continue;
                };
                connection.session.header(name.to_bytes(), value.to_bytes());
                connection.proceed(ProtoOpts::NOREPLY_HEADER)
            })
        })
        .on_eoh(|cx| {
            Box::pin(async move {
                let Some(connection) = cx.data.as_mut() else {
                    return Status::Continue;
                };
                connection.session.end_of_headers();
                connection.proceed(ProtoOpts::NOREPLY_EOH)
            })
        })
        .on_body(|cx, chunk| {
            Box::pin(async move {
                let Some(connection) = cx.data.as_mut() else {
                    return Status::Continue;
                };
                connection.session.body(&chunk);
                connection.proceed(ProtoOpts::NOREPLY_BODY)
            })
        })
        .on_eom(move |cx| {
            let shared = Arc::clone(&eom);
            Box::pin(async move { on_eom(cx, shared).await })
        })
        .on_abort(|cx| {
            Box::pin(async move {
                if let Some(connection) = cx.data.as_mut() {
                    connection.session.reset();
                }
                Status::Continue
            })
        })
}

fn on_negotiate(
    cx: &mut NegotiateContext<Connection>,
    mta_actions: Actions,
    mta_opts: ProtoOpts,
    config: Arc<super::Config>,
) -> Status {
    let wanted = Actions::ADD_HEADER
        | Actions::CHANGE_HEADER
        | Actions::QUARANTINE
        | Actions::REQUEST_MACROS;
    cx.requested_actions = wanted & mta_actions;
    let opts = cx.requested_opts | (mta_opts & (NOREPLY | ProtoOpts::LEADING_SPACE));
    cx.requested_opts = opts;
    if mta_actions.contains(Actions::REQUEST_MACROS) {
        let macros = [
            (MacroStage::Connect, c"i"),
            (MacroStage::Mail, c"i {auth_authen} {mail_addr}"),
            (MacroStage::Rcpt, c"i {rcpt_addr}"),
            (MacroStage::Eoh, c"i"),
            (MacroStage::Eom, c"i"),
        ];
        for (stage, names) in macros {
            cx.requested_macros.insert(stage, names.to_owned());
        }
    }
    let mut session = Session::new(config);
    session.leading_space = opts.contains(ProtoOpts::LEADING_SPACE);
    cx.data = Some(Connection { session, opts });
    Status::Continue
}

async fn on_eom(cx: &mut EomContext<Connection>, shared: Arc<Shared>) -> Status {
    let Some(connection) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let session = &mut connection.session;
    if let Some(id) = cx.macros.get(c"i") {
        session.set_queue_id(&text(id));
    }
    let runtime = shared.current();
    let step = if session.message_len() > INLINE_DIGEST_LIMIT
        && tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
    {
        tokio::task::block_in_place(|| session.end_of_message(&runtime.memo))
    } else {
        session.end_of_message(&runtime.memo)
    };
    let outcome = match step {
        Step::Done(outcome) => outcome,
        Step::Check(digest) => {
            let checks = match runtime.cache.get(&digest) {
                Some(checks) => checks,
                None => {
                    let deadline = Instant::now() + session.config().timeout;
                    let answers = runtime.client.check(&digest.to_hex(), deadline).await;
                    let checks: Vec<ServerCheck> = answers
                        .into_iter()
                        .map(|answer| server_check(answer, session.queue_id(), &runtime.repeats))
                        .collect();
                    runtime.cache.put(digest, &checks);
                    checks
                }
            };
            session.decide(digest, checks)
        }
    };
    let status = apply(cx, &outcome).await;
    if let Some(connection) = cx.data.as_mut() {
        let session = &mut connection.session;
        tracing::info!("{}: {}", session.queue_id(), session.summary(&outcome));
        session.reset();
    }
    status
}

/// Removes spoofed headers, adds ours and answers as decided.
async fn apply(cx: &mut EomContext<Connection>, outcome: &Outcome) -> Status {
    let Some(connection) = cx.data.as_ref() else {
        return Status::Continue;
    };
    let session = &connection.session;
    let queue_id = session.queue_id().to_owned();
    let name = session.config().header.clone();
    let spoofed = session.spoofed_headers();
    let space = if session.leading_space { " " } else { "" };
    let header = outcome
        .header
        .as_ref()
        .map(|value| format!("{space}{value}"));
    if matches!(
        outcome.disposition,
        Disposition::Accept | Disposition::Quarantine(_)
    ) {
        // Highest index first: removing one renumbers those after it.
        for index in (1..=spoofed).rev() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            if let Err(error) = cx
                .actions
                .change_header(name.as_str(), index, None::<CString>)
                .await
            {
                tracing::warn!("{queue_id}: cannot remove header {name}: {error}");
            }
        }
        if let Some(value) = header
            && let Err(error) = cx.actions.add_header(name.as_str(), value).await
        {
            tracing::warn!("{queue_id}: cannot add header {name}: {error}");
        }
    }
    match &outcome.disposition {
        Disposition::Accept => Status::Accept,
        Disposition::Reject(reply) => {
            set_reply(cx, reply, &queue_id);
            Status::Reject
        }
        Disposition::Tempfail(reply) => {
            set_reply(cx, reply, &queue_id);
            Status::Tempfail
        }
        Disposition::Discard => Status::Discard,
        Disposition::Quarantine(reason) => {
            if let Err(error) = cx.actions.quarantine(reason.as_str()).await {
                tracing::warn!("{queue_id}: cannot quarantine: {error}");
            }
            Status::Accept
        }
    }
}

fn set_reply(cx: &mut EomContext<Connection>, reply: &Reply, queue_id: &str) {
    let text = if reply.text.is_empty() {
        None
    } else {
        Some(reply.text.as_str())
    };
    if let Err(error) = cx
        .reply
        .set_error_reply(&reply.code, reply.enhanced.as_deref(), text)
    {
        tracing::warn!("{queue_id}: cannot set the SMTP reply: {error}");
    }
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

/// The counts of an answer that may make a verdict: Code 200, our protocol
/// version and our Thread (the client lets a Thread below 1024 through, as
/// Python does for a server's error answers, but it is not an answer to
/// our request). Anything else from a server is an error, never a verdict.
fn usable_counts(response: &Response) -> Result<(i64, i64), String> {
    match response.code() {
        Ok(OK_CODE) => {}
        Ok(code) => return Err(format!("code {code}")),
        Err(error) => return Err(error.to_string()),
    }
    if response.get("PV").map(str::trim) != Some(PROTOCOL_VERSION) {
        return Err(format!("protocol version {:?}", response.get("PV")));
    }
    match response.int_field("Thread") {
        Ok(Some(thread)) if thread >= i64::from(ThreadId::MIN_OK) => {}
        _ => return Err(format!("thread {:?}", response.get("Thread"))),
    }
    response.counts().map_err(|error| error.to_string())
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
}
