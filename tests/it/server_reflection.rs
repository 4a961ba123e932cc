//! pyzord is no reflector: no datagram gets back more than 1.5 times its
//! own size, a datagram that is not a request gets nothing, and Python's
//! `pyzor` client still gets every answer Python pyzord gives it. Python
//! pyzord answers the same table, for the figures printed beside ours.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::server::{KEY, USER, pyzor_client};
use crate::server_abuse::{OurPyzord, homedir, hostile_datagrams};
use crate::server_util::{PythonPyzord, RedisServer, temp_dir};
use crate::util::corpus_files;

/// The datagrams of the security review: 8 bytes that got 111 back, and
/// the same Thread with a User, which also told that alice exists.
const REVIEWED: [&[u8]; 3] = [b"Thread:\xff", b"Thread:1", b"Thread:1\nUser:alice"];

/// How many random short datagrams the table holds.
const RANDOM_DATAGRAMS: u64 = 10_000;

/// How many datagrams go out at once, each from its own socket (well
/// within the server's socket buffer).
const CHUNK: usize = 100;

/// The pieces the random datagrams are made of: header-like text,
/// digits, non-ASCII bytes and line ends.
const PIECES: [&[u8]; 30] = [
    b"Thread:",
    b"Thread: ",
    b"PV:",
    b"PV: 2.1",
    b"PV: 2",
    b"Op:",
    b"Op: ping",
    b"Op: pong",
    b"Op: check",
    b"Op: info",
    b"Op: report",
    b"Op: whitelist",
    b"Op-Digest: ",
    b"User:",
    b"User: alice",
    b"User: anonymous",
    b"Time: ",
    b"Sig: ",
    b"1",
    b"1024",
    b"65535",
    b"123456",
    b"0",
    b"\xff",
    b"\xc3\xa9",
    b"\n",
    b"\n",
    b"\r\n",
    b" ",
    b":",
];

/// A deterministic generator (xorshift64*).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// A datagram of 0 to 64 bytes, mostly pieces of headers, sometimes a
/// random byte; half of them begin as a request (Op and PV).
fn random_datagram(random: &mut Random) -> Vec<u8> {
    let length = random.below(65);
    let mut datagram = Vec::with_capacity(length + 16);
    if random.below(2) == 0 {
        let ops = ["ping", "pong", "check", "info", "report", "whitelist", "x"];
        let op = ops[random.below(ops.len())];
        let thread = random.below(100_000);
        let mut lines = [
            format!("Op:{op}\n"),
            "PV:2\n".to_owned(),
            format!("Thread:{thread}\n"),
        ];
        lines.swap(0, random.below(3));
        datagram.extend(lines.concat().into_bytes());
    }
    while datagram.len() < length {
        if random.below(8) == 0 {
            datagram.push(random.next() as u8);
        } else {
            datagram.extend_from_slice(PIECES[random.below(PIECES.len())]);
        }
    }
    datagram.truncate(length);
    datagram
}

/// The review's datagrams, the abuse suite's hostile ones and the random
/// short ones.
fn table() -> Vec<Vec<u8>> {
    let mut table: Vec<Vec<u8>> = REVIEWED.iter().map(|datagram| datagram.to_vec()).collect();
    table.extend(hostile_datagrams());
    let mut random = Random(0x5eed_1234_abcd_0001);
    table.extend((0..RANDOM_DATAGRAMS).map(|_| random_datagram(&mut random)));
    table
}

/// Sends each datagram from its own socket, `CHUNK` at a time, and
/// returns the answers each socket got. `settled` says when the server has
/// read `n` datagrams; without it each chunk waits a fixed time.
fn answers(
    server: SocketAddr,
    table: &[Vec<u8>],
    settled: Option<&dyn Fn(u64) -> bool>,
) -> Vec<Vec<Vec<u8>>> {
    let mut all = Vec::with_capacity(table.len());
    let mut sent = 0u64;
    for chunk in table.chunks(CHUNK) {
        let sockets: Vec<UdpSocket> = chunk
            .iter()
            .map(|datagram| {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
                socket.send_to(datagram, server).expect("send");
                socket
            })
            .collect();
        sent += chunk.len() as u64;
        let start = Instant::now();
        match settled {
            Some(settled) => {
                while !settled(sent) && start.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                // The answers written after the count was taken.
                std::thread::sleep(Duration::from_millis(20));
            }
            None => std::thread::sleep(Duration::from_millis(300)),
        }
        for socket in sockets {
            socket.set_nonblocking(true).expect("non-blocking");
            let mut buffer = vec![0u8; 65_536];
            let got = std::iter::from_fn(|| {
                let (length, _) = socket.recv_from(&mut buffer).ok()?;
                Some(buffer[..length].to_vec())
            })
            .collect();
            all.push(got);
        }
    }
    all
}

/// The largest answer-to-request ratio over the table, and the datagram
/// that got it.
fn largest_ratio(table: &[Vec<u8>], answers: &[Vec<Vec<u8>>]) -> (f64, String) {
    let mut largest = (0.0, String::new());
    for (datagram, got) in table.iter().zip(answers) {
        for answer in got {
            if datagram.is_empty() {
                // Python answers an empty datagram; is_request sees to ours.
                continue;
            }
            let ratio = answer.len() as f64 / datagram.len() as f64;
            if ratio > largest.0 {
                let shown = &datagram[..datagram.len().min(60)];
                largest = (ratio, format!("{:?}", String::from_utf8_lossy(shown)));
            }
        }
    }
    largest
}

/// Whether a datagram names an operation and a protocol version, as every
/// request of a pyzor client does (read as the server reads headers).
fn is_request(datagram: &[u8]) -> bool {
    let message = pyzor_milter::server::message::Message::parse(datagram);
    message.get("Op").is_some() && message.get("PV").is_some()
}

/// Runs the table against one of our servers and checks the bound.
/// `bounded` says the table must reach both rules (counted in the metrics).
fn check_table(name: &str, ours: &OurPyzord, table: &[Vec<u8>], bounded: bool) -> f64 {
    let before = ours.processed();
    let settled = |sent: u64| ours.processed() >= before + sent;
    let got = answers(ours.address, table, Some(&settled));
    let (ratio, datagram) = largest_ratio(table, &got);
    let dropped = ours.metric("pyzord_rejected_total{reason=\"answer_too_large\"}");
    let not_requests = ours.metric("pyzord_rejected_total{reason=\"not_a_request\"}");
    eprintln!(
        "ours ({name}): largest answer/request ratio {ratio:.3} (for {datagram}) over {} \
         datagrams; {not_requests} not requests, {dropped} answers too large dropped",
        table.len()
    );
    for (datagram, got) in table.iter().zip(&got) {
        assert!(got.len() <= 1, "{} answers to one datagram", got.len());
        if !is_request(datagram) {
            assert!(
                got.is_empty(),
                "answered {:?}",
                String::from_utf8_lossy(datagram)
            );
        }
    }
    assert!(ratio <= 1.5, "ratio {ratio} for {datagram}");
    assert!(
        !bounded || (not_requests > 0 && dropped > 0),
        "the table reached no bound"
    );
    ratio
}

/// Python's `pyzor` client, with real digests, gets the same output from
/// ours as from Python pyzord, anonymous and signed.
fn real_clients_are_served(ours: &OurPyzord, python: &PythonPyzord) {
    let signed = format!("127.0.0.1 : PORT : {USER} : salt,{KEY}\n");
    let steps: [(&str, &str); 9] = [
        ("", "ping"),
        ("", "check"),
        ("", "report"),
        ("", "info"),
        (&signed, "whitelist"),
        (&signed, "report"),
        (&signed, "check"),
        (&signed, "info"),
        (&signed, "pong"),
    ];
    let files = corpus_files();
    for file in files.iter().step_by(files.len() / 3).take(3) {
        let message = std::fs::read(file).expect("a corpus message");
        for (accounts, op) in steps {
            let expected = pyzor_client(python.address, accounts, &[op], &message);
            let actual = pyzor_client(ours.address, accounts, &[op], &message);
            assert_eq!(actual, expected, "pyzor {op} of {}", file.display());
            assert!(actual.0.contains("(200, 'OK')"), "pyzor {op}: {actual:?}");
        }
    }
    assert_eq!(
        ours.metric("pyzord_rejected_total{reason=\"answer_too_large\"}"),
        0,
        "an answer to Python's client was dropped"
    );
}

#[test]
fn no_answer_is_larger_than_one_and_a_half_times_its_request() {
    let (python_home, sqlite_home, redis_home) = (homedir(None), homedir(None), homedir(None));
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let ours = OurPyzord::start(sqlite_home.path());
    real_clients_are_served(&ours, &python);

    let table = table();
    // Python pyzord answers the review's datagrams and the hostile ones.
    let reviewed = &table[..REVIEWED.len() + hostile_datagrams().len()];
    let theirs = answers(python.address, reviewed, None);
    let (their_ratio, their_datagram) = largest_ratio(reviewed, &theirs);
    let ours_reviewed = check_table("SQLite, the review's part", &ours, reviewed, false);
    eprintln!(
        "Python pyzord: largest ratio {their_ratio:.3} (for {their_datagram}) over the same \
         {} datagrams; ours {ours_reviewed:.3}",
        reviewed.len()
    );
    assert!(
        their_ratio > 10.0,
        "Python pyzord's reflection was not seen"
    );
    check_table("SQLite", &ours, &table, true);

    // A networked engine is served by tasks rather than threads.
    let redis_dir = temp_dir();
    let redis = RedisServer::start(redis_dir.path());
    let dsn = format!("127.0.0.1,{},,0", redis.port);
    let ours = OurPyzord::start_with(redis_home.path(), &["-e", "redis", "--dsn", &dsn]);
    check_table("Redis", &ours, &table, true);
}
