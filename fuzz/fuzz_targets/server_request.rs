//! pyzord's side of the wire: an arbitrary datagram read as a request and
//! answered by the real handler over a real SQLite database, the answer
//! read back by the client's response parser, never larger than 1.5 times
//! the datagram; and a request built by our client from the same bytes,
//! which the server must read as sent and answer.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use pyzor_milter::protocol::{self, Account, Op, Request, ThreadId};
use pyzor_milter::server::Context;
use pyzor_milter::server::access::{self, Access};
use pyzor_milter::server::message::{MAX_DATAGRAM, Message, Response};
use pyzor_milter::server::{handler, reflection};
use pyzor_milter::storage::Durability;
use pyzor_milter::storage::sqlite::SqliteStorage;
use sha1::Digest as _;

const USER: &str = "fuzzer";
const KEY: &str = "4c5d0b4e1a2f3e6d";
const NAMES: [&str; 8] = [
    "Op",
    "Op-Digest",
    "Op-Spec",
    "Thread",
    "PV",
    "User",
    "Time",
    "Sig",
];
const OPS: [Op; 6] = [
    Op::Ping,
    Op::Pong,
    Op::Check,
    Op::Info,
    Op::Report,
    Op::Whitelist,
];
/// The codes pyzord answers with (pyzor's error taxonomy).
const CODES: [u16; 6] = [200, 400, 401, 403, 500, 501];
const VERSION_NOT_SUPPORTED: u16 = 505;

struct Server {
    runtime: tokio::runtime::Runtime,
    context: Context,
}

/// One database per fuzzing process, in TMPDIR (scripts/fuzz gives each
/// run its own and removes it).
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pyzor-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let storage = SqliteStorage::open_with(&dir.join("pyzord.sqlite"), Durability::Process)
            .expect("SQLite database in the temporary directory");
        let mut acl = access::default_acl();
        acl.insert(
            USER.into(),
            OPS.iter()
                .map(|op| op.as_str().to_owned())
                .collect::<HashSet<_>>(),
        );
        let access = Access {
            accounts: HashMap::from([(USER.to_owned(), KEY.to_owned())]),
            acl,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime");
        Server {
            runtime,
            context: Context::new(Arc::new(storage), access),
        }
    })
}

/// The answer, if any, and the datagram pyzord sends for it to a
/// datagram of `length` bytes: it drops what is not a request (no Op or
/// no PV, no Thread of 1 to 5 digits) and an answer more than 1.5 times
/// larger than the datagram.
fn answer(request: &Message, length: usize) -> Option<(Response, Vec<u8>)> {
    let server = server();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let response = server
        .runtime
        .block_on(handler::handle(request, peer, &server.context));
    let op = request.get("Op").is_some() && request.get("PV").is_some();
    let thread = request.get("Thread").unwrap_or_default();
    let thread_ok = (1..=5).contains(&thread.len()) && thread.iter().all(u8::is_ascii_digit);
    assert_eq!(
        response.is_some(),
        op && thread_ok,
        "answered or dropped wrongly"
    );
    let response = response?;
    let metrics = &server.context.metrics;
    let bytes = reflection::datagram(&response, length.min(MAX_DATAGRAM), metrics)?;
    assert!(
        bytes.len() * 2 <= length * 3,
        "an answer of {} bytes to {length}",
        bytes.len()
    );
    Some((response, bytes))
}

/// The client reads the server's answer back as it was written.
fn check_answer(request: &Message, response: &Response) {
    assert!(
        CODES.contains(&response.code) || response.code == VERSION_NOT_SUPPORTED,
        "code {}",
        response.code
    );
    let bytes = response.to_bytes();
    let thread = request.get("Thread").unwrap_or_default();
    assert_eq!(response.thread, thread, "the Thread is echoed as sent");
    assert!(
        bytes.len() <= MAX_DATAGRAM,
        "answer of {} bytes",
        bytes.len()
    );
    let read = protocol::Response::parse(&bytes);
    assert_eq!(read.code(), Ok(i64::from(response.code)));
    assert_eq!(read.diag(), response.diag);
    assert_eq!(read.get("PV"), Some("2.1"));
    assert_eq!(read.get("Thread").map(str::as_bytes), Some(thread));
    for (name, value) in &response.fields {
        assert_eq!(read.get(name), Some(value.as_str()), "field {name}");
    }
}

fn raw_datagram(data: &[u8]) {
    let request = Message::parse(data);
    for name in NAMES {
        let all = request.get_all(name);
        assert_eq!(request.get(name), all.as_ref().map(|values| values[0]));
        assert_eq!(request.get(name), request.get(&name.to_ascii_lowercase()));
        if let Some(values) = all {
            for value in values {
                assert!(!value.starts_with(b" ") && !value.starts_with(b"\t"));
                assert!(!value.ends_with(b"\n") && !value.ends_with(b"\r"));
            }
        }
    }
    if let Ok(text) = request.signed_text() {
        assert!(!text.starts_with(b" "));
    }
    if let Some((response, _)) = answer(&request, data.len()) {
        check_answer(&request, &response);
    }
}

/// Our client's request for the first byte's op and the lines after it as
/// digests, signed for the server's account: the server must read every
/// digest as sent, accept the signature and serve it.
fn client_request(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let op = OPS[usize::from(first) % OPS.len()];
    let text = String::from_utf8_lossy(rest);
    // A digest line is sent as is: one with a line end or leading blank
    // cannot be a header value (Python's client sends it broken too).
    let digests: Vec<String> = text
        .split('\n')
        .filter(|line| !line.is_empty())
        .take(32)
        .filter(|line| !line.contains('\r') && !line.starts_with([' ', '\t']))
        .map(|line| {
            // Half the time each line's SHA-1, as a real client sends.
            if first & 0x80 == 0 {
                return line.to_owned();
            }
            let hash = sha1::Sha1::digest(line.as_bytes());
            hash.iter().map(|byte| format!("{byte:02x}")).collect()
        })
        .collect();
    // A new Thread for every request: the same signed datagram sent twice
    // is a replay, which the server refuses.
    static SENT: AtomicU64 = AtomicU64::new(0);
    let thread = ThreadId::from_random(SENT.fetch_add(1, Ordering::Relaxed));
    let account = Account {
        username: USER.into(),
        salt: String::new(),
        key: KEY.into(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let datagram = Request::new(op, digests.clone(), thread).encode(&account, now as i64);
    if datagram.len() > MAX_DATAGRAM {
        return;
    }
    let request = Message::parse(&datagram);
    assert_eq!(request.get("Op"), Some(op.as_str().as_bytes()));
    let thread_text = thread.to_string();
    assert_eq!(request.get("Thread"), Some(thread_text.as_bytes()));
    assert_eq!(request.get("User"), Some(USER.as_bytes()));
    let read: Vec<&[u8]> = request.get_all("Op-Digest").unwrap_or_default();
    let sent: Vec<&[u8]> = digests.iter().map(|digest| digest.as_bytes()).collect();
    assert_eq!(read, sent, "digests read back differ");

    // Every request of a client is answered: signed, it is longer than
    // any answer. A client sends digests of printable ASCII (hex); other
    // bytes (control characters, non-ASCII) are read and signed as Python
    // reads and signs them, which is not what this client sends.
    let printable = |digest: &String| digest.bytes().all(|byte| byte.is_ascii_graphic());
    if !digests.iter().all(printable) {
        let _ = answer(&request, datagram.len());
        return;
    }
    let (response, _) = answer(&request, datagram.len()).expect("an answer to a client");
    check_answer(&request, &response);
    // pyzord answers 500 for a non-ASCII digest it uses (Python's email
    // package makes a Header object of it) and 400 for one that is not 40
    // hex digits: check and info use the first digest only, report and
    // whitelist all. Everything else is served.
    let is_digest =
        |digest: &String| digest.len() == 40 && digest.bytes().all(|byte| byte.is_ascii_hexdigit());
    let served = match op {
        Op::Check | Op::Info => digests.first().is_none_or(is_digest),
        Op::Report | Op::Whitelist => digests.iter().all(is_digest),
        Op::Ping | Op::Pong => true,
    };
    if served {
        assert_eq!(
            (response.code, response.diag.as_str()),
            (200, "OK"),
            "{digests:?}"
        );
        let read = protocol::Response::parse(&response.to_bytes());
        assert!(read.answers(thread));
        assert_eq!(read.verify(), Ok(()));
        if matches!(op, Op::Check | Op::Pong) && !digests.is_empty() {
            let (count, wl_count) = read.counts().expect("counts in a check answer");
            assert!(!count.is_negative() && !wl_count.is_negative());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    raw_datagram(data);
    client_request(data);
});
