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

use super::Shared;
use super::config::Reply;
use super::session::{Session, Step};
use super::verdict::{self, Disposition, Outcome};

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
            let checks = verdict::ask(&runtime, digest, session.queue_id()).await;
            verdict::decide(session.config(), digest, checks)
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
