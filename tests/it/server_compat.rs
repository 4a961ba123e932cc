//! Python pyzord 1.1.2 and ours side by side where they once read the same
//! bytes differently: header blocks (the email feedparser's rules), the
//! signed text (`msg.as_string().strip()`), Time values of any size, and
//! the pyzord.passwd and pyzord.access files (text mode, `str.split()`).
//! Requests that are no requests (no PV, no Op, no good Thread) are left
//! out: pyzord does not answer them on purpose.

use std::process::Command;
use std::time::Duration;

use pyzor_milter::protocol::{Account, Op, Request, Response, ThreadId};
use pyzor_milter::storage::EngineName;
use serde_json::{Value, json};

use crate::server::now;
use crate::server_util::{
    OurServer, PythonPyzord, TempDir, ask, reference_server_python, temp_dir,
};
use crate::util::run;

const WAIT: Duration = Duration::from_secs(3);
const ALICE_KEY: &str = "0123456789ABCDEF";
const BOB_KEY: &str = "FEDCBA9876543210";
const DIGEST: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

/// Both servers, each in its own homedir holding these files.
struct Both {
    python: PythonPyzord,
    ours: OurServer,
    _homes: [TempDir; 2],
}

impl Both {
    fn start(passwd: &str, access: &str) -> Both {
        let homes = [temp_dir(), temp_dir()];
        for home in &homes {
            std::fs::write(home.path().join("pyzord.passwd"), passwd).expect("passwd");
            std::fs::write(home.path().join("pyzord.access"), access).expect("access");
        }
        let python = PythonPyzord::start(homes[0].path(), &[], &[]);
        let dsn = homes[1].path().join("pyzord.sqlite");
        let ours = OurServer::start(
            EngineName::Sqlite,
            &dsn.display().to_string(),
            homes[1].path(),
        );
        Both {
            python,
            ours,
            _homes: homes,
        }
    }

    /// Asks both; `None` where both answered alike, else the difference.
    /// Python's answer counts only where ours sends one at all: not to a
    /// datagram that is not a request, nor one larger than the bound
    /// (server_reflection.rs).
    fn differ(&self, datagram: &[u8]) -> Option<String> {
        let theirs = ask(self.python.address, datagram, WAIT)
            .filter(|answer| crate::server::we_answer(datagram, answer))
            .map(|answer| head(&answer));
        let ours = ask(self.ours.address, datagram, WAIT).map(|answer| head(&answer));
        (ours != theirs).then(|| {
            format!(
                "{:?}: ours {ours:?}, Python {theirs:?}",
                String::from_utf8_lossy(datagram)
            )
        })
    }
}

/// The Code, Diag and Thread of an answer.
fn head(answer: &[u8]) -> [String; 3] {
    let response = Response::parse(answer);
    ["Code", "Diag", "Thread"].map(|field| response.get(field).unwrap_or("<none>").to_owned())
}

/// Python's reading of each datagram: whether it is a request, and the
/// signature Python pyzord would accept for alice (tests/ref/pyzord_sign.py).
fn python_view(datagrams: &[Vec<u8>]) -> Vec<(bool, Option<String>)> {
    let job = json!({
        "key": ALICE_KEY,
        "datagrams": datagrams.iter().map(hex::encode).collect::<Vec<_>>(),
    });
    let script = crate::util::manifest_dir().join("tests/ref/pyzord_sign.py");
    let output = run(
        Command::new(reference_server_python()).arg(script),
        job.to_string().as_bytes(),
    );
    assert!(
        output.status.success(),
        "pyzord_sign.py failed: {}",
        output.stderr_text()
    );
    let answers: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    answers
        .iter()
        .map(|answer| {
            let request = answer["request"].as_bool().expect("request flag");
            (request, answer["sig"].as_str().map(str::to_owned))
        })
        .collect()
}

/// Puts the signature in place of the `Sig: SIG` line (a wrong one where
/// Python cannot sign, so that both must refuse).
fn with_sig(datagram: &[u8], sig: Option<&str>) -> Vec<u8> {
    let sig = sig.unwrap_or("0000000000000000000000000000000000000000");
    let text = datagram.to_vec();
    match text.windows(8).position(|window| window == b"Sig: SIG") {
        Some(at) => [&text[..at + 5], sig.as_bytes(), &text[at + 8..]].concat(),
        None => text,
    }
}

/// Sends each datagram, with Python's signature, to both servers and
/// asserts the same answers; returns how many were compared.
fn assert_same_answers(both: &Both, datagrams: &[Vec<u8>]) -> usize {
    let views = python_view(datagrams);
    let mut compared = 0;
    let mut differences = Vec::new();
    for (datagram, (request, sig)) in datagrams.iter().zip(views) {
        if !request {
            continue;
        }
        let signed = with_sig(datagram, sig.as_deref());
        differences.extend(both.differ(&signed));
        compared += 1;
    }
    assert!(
        differences.is_empty(),
        "{} of {compared} datagrams answered unlike Python pyzord:\n{}",
        differences.len(),
        differences[..differences.len().min(10)].join("\n")
    );
    compared
}

/// The datagrams of the review (findings 3, 4 and 8), signed by alice
/// where they carry `Sig: SIG`.
fn review_datagrams(time: i64) -> Vec<Vec<u8>> {
    let signed = |head: &str, end: &str| {
        format!("{head}User: alice{end}Time: {time}{end}Sig: SIG{end}{end}").into_bytes()
    };
    let mut datagrams = vec![
        format!("Op: check\n:x\n y\nOp-Digest: {DIGEST}\nThread: 1234\nPV: 2.1\n\n").into_bytes(),
        b"Op: ping\nThread: 1234\nFrom x\n 5\nPV: 2.1\n\n".to_vec(),
        signed(
            "Op: ping\r\nThread: 1234\r\nPV: 2.1\r\nX: a\r\n b\r\n",
            "\r\n",
        ),
        signed(
            "Op: ping\r\nThread: 1234\r\nPV: 2.1\r\nX: a \r\n  \r\n",
            "\r\n",
        ),
        [
            &b"Op: ping\nThread: 1234\nPV: 2.1\nX: a\xffb\n"[..],
            &signed("", "\n"),
        ]
        .concat(),
        [
            &b"Op: ping\nThread: 1234\nPV: 2.1\nX: a\xff\x0cb\n"[..],
            &signed("", "\n"),
        ]
        .concat(),
        format!("Op: ping\nThread: 1234\nPV: 2.1\nUser: alice\nTime: {time}\nSig: SIG\nFrom x\n\n")
            .into_bytes(),
        signed("Op: ping\nThread: 1234\nPV: 2.1\nX: a\x0cb\n", "\n"),
        signed("Op: ping\nThread: 1234\nPV: 2.1\nX: a\x1cb\n", "\n"),
        signed("Op: ping\nThread: 1234\nPV: 2.1\nX: a\x1cb: c\n", "\n"),
        signed("Op: ping\nThread: 1234\nPV: 2.1\r\n\r\nbody \u{e9}\r", "\n"),
    ];
    for bad_time in [
        "10000000000000000000000".to_owned(),
        "-10000000000000000000000".to_owned(),
        "9".repeat(400),
        "1".repeat(4301),
        "\x1c5".to_owned(),
        format!("{time}\u{a0}"),
    ] {
        datagrams.push(
            format!("Op: ping\nThread: 1234\nPV: 2.1\nUser: alice\nTime: {bad_time}\nSig: SIG\n\n")
                .into_bytes(),
        );
    }
    datagrams
}

/// Header-like datagrams from a fixed seed: request fields, lines the
/// feedparser skips, continuation lines, separators and non-ASCII bytes in
/// values, three kinds of line end; half of them signed by alice.
fn generated_datagrams(count: usize, time: i64) -> Vec<Vec<u8>> {
    let digest_line = format!("Op-Digest: {DIGEST}");
    let time_line = format!("Time: {time}");
    let pieces: Vec<&[u8]> = vec![
        b"Op: ping",
        b"Op: check",
        b"Op: info",
        digest_line.as_bytes(),
        b"Thread: 1234",
        b"Thread: 4321",
        b"PV: 2.1",
        b":x",
        b"From x",
        b"From ",
        b" 5",
        b"\tcont",
        b" cont: y",
        b"  ",
        b"X-Extra: a b ",
        b"X-Extra: a\x0cz",
        b"X-Extra: a\x1cb",
        b"X-Extra: a\x0b",
        b"X-Extra: \xffv",
        b"X-Extra: v \xfe",
        b"garbage",
        b"",
        b"Op: ping ",
        b"PV:\x1f2.1",
        b"Thread: 12\x0b34",
        b"X-Extra: a\x1db:c",
    ];
    let ends: [&[u8]; 3] = [b"\n", b"\r\n", b"\r"];
    let mut state: u64 = 0x853c_49e6_748f_ea9b;
    let mut next = move |limit: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % limit as u64).expect("below limit")
    };
    (0..count)
        .map(|number| {
            // A field of its own, so that no two signed texts are alike
            // (pyzord refuses a signature it has seen; Python does not).
            let unique = format!("X-N: {number}");
            let mut lines: Vec<&[u8]> =
                vec![b"Op: ping", b"Thread: 1234", b"PV: 2.1", unique.as_bytes()];
            for _ in 0..next(5) {
                let at = next(lines.len() + 1);
                lines.insert(at, pieces[next(pieces.len())]);
            }
            if next(2) == 0 {
                for line in [&b"User: alice"[..], time_line.as_bytes(), b"Sig: SIG"] {
                    let at = next(lines.len() + 1);
                    lines.insert(at, line);
                }
            }
            let end = ends[next(ends.len())];
            let mut datagram = Vec::new();
            for line in lines {
                datagram.extend_from_slice(line);
                datagram.extend_from_slice(if next(8) == 0 { ends[next(3)] } else { end });
            }
            datagram.extend_from_slice(end);
            datagram
        })
        .collect()
}

#[test]
fn header_blocks_and_signed_text_are_read_as_python_pyzord_reads_them() {
    let both = Both::start(
        &format!("alice : {ALICE_KEY}\n"),
        "all : alice anonymous : allow\n",
    );
    let time = now();
    let mut datagrams = review_datagrams(time);
    let review = datagrams.len();
    datagrams.extend(generated_datagrams(600, time));
    let compared = assert_same_answers(&both, &datagrams);
    assert!(
        compared > 300,
        "only {compared} of {} datagrams were requests",
        datagrams.len()
    );
    // The review's cases were all compared (they are requests to Python).
    let views = python_view(&datagrams[..review]);
    assert!(views.iter().all(|(request, _)| *request));
}

/// The accounts and ACL variants of finding 5 and more: CR line ends,
/// U+001C..U+001F, U+0085, vertical tab, indented `#`.
const ACCESS_VARIANTS: &[(&str, &str)] = &[
    ("", "whitelist : anonymous\r: allow\n"),
    (
        "",
        "check report : anonymous : allow\rreport : anonymous : deny\r",
    ),
    ("", "check\x1fwhitelist : anonymous : allow\n"),
    ("", "whitelist : anonymous : allow\x1c\n"),
    (
        "alice\r: 0123456789ABCDEF\n",
        "all : alice : allow\nping : anonymous : allow\n",
    ),
    (
        "alice : 0123456789ABCDEF\x1f\nbob\x1c: FEDCBA9876543210\r\n",
        "all : all : allow\n",
    ),
    (
        "",
        "ping : anonymous : allow\x0bcheck : anonymous : allow\ninfo : anonymous : allow\n",
    ),
    (
        "",
        "  # x : anonymous : allow\n#check : anonymous : allow\nPING : ANONYMOUS : ALLOW\n",
    ),
    (
        "",
        "check\u{85}report\u{2028}info : anonymous\u{3000}: allow\n",
    ),
    (
        "",
        "whitelist : anonymous : allow\x1d\rcheck : anonymous : allow\r\n\rinfo:anonymous:allow",
    ),
    (
        "bob : FEDCBA9876543210\r\ralice:0123456789ABCDEF",
        "all : alice\x1ebob : allow\n",
    ),
];

/// Every account asking for every operation.
fn permission_requests() -> Vec<(String, Vec<u8>)> {
    let accounts = [
        Account::anonymous(),
        Account {
            username: "alice".into(),
            salt: String::new(),
            key: ALICE_KEY.into(),
        },
        Account {
            username: "bob".into(),
            salt: String::new(),
            key: BOB_KEY.into(),
        },
    ];
    let ops = [
        Op::Ping,
        Op::Pong,
        Op::Check,
        Op::Info,
        Op::Report,
        Op::Whitelist,
    ];
    let thread = ThreadId::new(4321).expect("in range");
    let mut requests = Vec::new();
    for account in &accounts {
        for op in ops {
            let digests = if op == Op::Ping {
                Vec::new()
            } else {
                vec![DIGEST.to_owned()]
            };
            let request = Request::new(op, digests, thread);
            requests.push((
                format!("{} {op}", account.username),
                request.encode(account, now()),
            ));
        }
    }
    requests
}

#[test]
fn accounts_and_acl_files_are_read_as_python_pyzord_reads_them() {
    for (passwd, access) in ACCESS_VARIANTS {
        let both = Both::start(passwd, access);
        let differences: Vec<String> = permission_requests()
            .iter()
            .filter_map(|(what, datagram)| {
                both.differ(datagram).map(|diff| format!("{what}: {diff}"))
            })
            .collect();
        assert!(
            differences.is_empty(),
            "passwd {passwd:?}, access {access:?}:\n{}",
            differences.join("\n")
        );
    }
}
