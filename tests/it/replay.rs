//! Replays beyond one process: a signed report captured on the wire, as
//! Python's `pyzor` client sent it through a relay, is refused when it is
//! sent again to our pyzord after a restart on the same database, to a
//! second pyzord on the same Redis or MariaDB, and after another account
//! flooded the in-memory cache with future-dated requests. Python pyzord
//! 1.1.2 serves the same datagrams beside ours: its first answer is ours,
//! its count is ours (the replay not counted), and each refusal is its
//! answer to the request with a broken signature, with our Diag.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::server::{now, pyzor_client, signed};
use crate::server_util::{
    ChildGuard, Mariadb, PythonPyzord, RedisServer, TempDir, ask, start_child_pyzord, temp_dir,
    wait_for,
};

const WAIT: Duration = Duration::from_secs(3);
const ALICE: (&str, &str) = ("alice", "0123456789ABCDEF");
const BOB: (&str, &str) = ("bob", "FEDCBA9876543210");
const PASSWD: &str = "alice : 0123456789ABCDEF\nbob : FEDCBA9876543210\n";
const ACCESS: &str = "all : alice : allow\nall : bob : allow\n\
                      check report ping pong info : anonymous : allow\n";
const MESSAGE: &[u8] = b"From: a@example.com\nSubject: replay\n\n\
                         A message reported once, its report captured and sent again.\n";

/// A homedir with alice's and bob's accounts.
fn homedir() -> TempDir {
    let dir = temp_dir();
    std::fs::write(dir.path().join("pyzord.passwd"), PASSWD).expect("passwd");
    std::fs::write(dir.path().join("pyzord.access"), ACCESS).expect("access");
    dir
}

/// Each request relayed, and the answer to it when one came.
type Exchanges = Arc<Mutex<Vec<(Vec<u8>, Option<Vec<u8>>)>>>;

/// A UDP relay to a server that keeps every datagram sent through it, in
/// both directions: the wire an attacker listens on.
struct Relay {
    address: SocketAddr,
    captured: Exchanges,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(server: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        front
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind the relay's back");
        back.connect(server).expect("connect");
        back.set_read_timeout(Some(WAIT)).expect("timeout");
        let address = front.local_addr().expect("address");
        let captured = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (captured, stop) = (Arc::clone(&captured), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((length, client)) = front.recv_from(&mut buffer) else {
                        continue;
                    };
                    let request = buffer[..length].to_vec();
                    back.send(&request).expect("relay the request");
                    let answer = back.recv(&mut buffer).ok().map(|n| buffer[..n].to_vec());
                    if let Some(answer) = &answer {
                        let _ = front.send_to(answer, client);
                    }
                    captured.lock().expect("captured").push((request, answer));
                }
            })
        };
        Self {
            address,
            captured,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reports `message` with Python's client as `account` to `server`
/// through a relay; returns the signed request and our answer to it.
fn captured_report(
    server: SocketAddr,
    (user, key): (&str, &str),
    message: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let relay = Relay::start(server);
    let accounts = format!("127.0.0.1 : PORT : {user} : salt,{key}\n");
    let (stdout, code) = pyzor_client(relay.address, &accounts, &["report"], message);
    assert_eq!(code, 0, "pyzor report: {stdout}");
    let mut captured = relay.captured.lock().expect("captured").clone();
    assert_eq!(captured.len(), 1, "one datagram from pyzor report");
    let (request, answer) = captured.remove(0);
    let text = String::from_utf8_lossy(&request).into_owned();
    assert!(text.contains("Op: report\n") && text.contains(&format!("User: {user}\n")));
    (request, answer.expect("answered"))
}

/// Python pyzord's answer to `request` with its signature broken, with
/// the Diag of a replay: what our pyzord answers a replay.
fn refusal(python: SocketAddr, request: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(request.to_vec()).expect("ASCII request");
    let at = text.find("\nSig: ").expect("a signed request") + "\nSig: ".len();
    let broken = format!("{}{}{}", &text[..at], "0".repeat(40), &text[at + 40..]);
    let answer = ask(python, broken.as_bytes(), WAIT).expect("Python answers a bad signature");
    let answer = String::from_utf8(answer).expect("ASCII answer");
    assert!(answer.contains("Invalid signature."), "{answer}");
    answer
        .replace("Invalid signature.", "Signature already used.")
        .into_bytes()
}

/// An anonymous check of the digest `request` reports.
fn check_of(request: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let digest = text
        .lines()
        .find_map(|line| line.strip_prefix("Op-Digest: "))
        .expect("a digest");
    format!("Op: check\nOp-Digest: {digest}\nThread: 4321\nPV: 2.1\n\n").into_bytes()
}

/// Python pyzord beside ours, with the expected answers to one captured
/// report: the first, the refusal of a replay, and the check after one
/// report counted.
struct Expected {
    first: Vec<u8>,
    refusal: Vec<u8>,
    check: Vec<u8>,
}

fn expected_of(python: &PythonPyzord, request: &[u8]) -> Expected {
    let first = ask(python.address, request, WAIT).expect("Python answers");
    assert!(first.starts_with(b"Code: 200\n"));
    let check = ask(python.address, &check_of(request), WAIT).expect("Python answers");
    assert!(String::from_utf8_lossy(&check).contains("\nCount: 1\n"));
    Expected {
        first,
        refusal: refusal(python.address, request),
        check,
    }
}

/// Sends the captured report again and again to `ours`: every one is
/// refused, none counted.
fn assert_refused(ours: SocketAddr, request: &[u8], expected: &Expected, when: &str) {
    for _ in 0..2 {
        let answer = ask(ours, request, WAIT).map(|answer| lossy(&answer));
        assert_eq!(answer, Some(lossy(&expected.refusal)), "{when}");
    }
    assert_eq!(
        ask(ours, &check_of(request), WAIT),
        Some(expected.check.clone()),
        "{when}: counted once"
    );
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `-e redis --dsn` for our pyzord on `redis`.
fn redis_args(redis: &RedisServer) -> Vec<String> {
    let dsn = format!("127.0.0.1,{},,0", redis.port);
    ["-e".to_owned(), "redis".to_owned(), "--dsn".to_owned(), dsn].to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn a_signed_report_replayed_after_a_restart_is_refused() {
    let redis_dir = temp_dir();
    let redis = RedisServer::start(redis_dir.path());
    for (engine, args) in [("sqlite", Vec::new()), ("redis", redis_args(&redis))] {
        let home = homedir();
        let (child, ours) = start_child_pyzord(home.path(), &strs(&args));
        let (request, first) = captured_report(ours, BOB, MESSAGE);
        let python_home = homedir();
        let python = PythonPyzord::start(python_home.path(), &[], &[]);
        let expected = expected_of(&python, &request);
        assert_eq!(first, expected.first, "{engine}");
        assert_refused(
            ours,
            &request,
            &expected,
            &format!("{engine}, same process"),
        );
        // SIGKILL: whatever was acknowledged must be in the database.
        drop(child);
        let (_child, ours) = start_child_pyzord(home.path(), &strs(&args));
        assert_refused(ours, &request, &expected, &format!("{engine}, restarted"));
    }
}

/// Our pyzord on `home` with `args` and a log file, and the log's path.
fn pyzord_logged(home: &Path, args: &[&str]) -> (ChildGuard, SocketAddr, std::path::PathBuf) {
    let log = home.join("pyzord.log");
    let log_arg = log.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--log-file", &log_arg]);
    let (child, address) = start_child_pyzord(home, &all);
    (child, address, log)
}

#[test]
fn a_report_served_by_one_pyzord_is_refused_by_another_on_the_same_redis() {
    let python_home = homedir();
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let redis_dir = temp_dir();
    let mut redis = RedisServer::start(redis_dir.path());
    let args = redis_args(&redis);
    let (first_home, second_home) = (homedir(), homedir());
    let (_first, node1) = start_child_pyzord(first_home.path(), &strs(&args));
    let (_second, node2, log) = pyzord_logged(second_home.path(), &strs(&args));
    let (request, first) = captured_report(node1, ALICE, MESSAGE);
    let expected = expected_of(&python, &request);
    assert_eq!(first, expected.first);
    assert_refused(node2, &request, &expected, "redis, another pyzord");

    // One key per signed request in a namespace of its own, expiring when
    // the request's Time leaves the window; pyzor's digest keys beside it.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port)).expect("url");
    let mut connection = client.get_connection().expect("connect to redis");
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("pyzord.*")
        .query(&mut connection)
        .expect("KEYS");
    keys.sort();
    assert_eq!(keys.len(), 2, "one digest, one signed request: {keys:?}");
    assert!(keys[0].starts_with("pyzord.digest_v1."), "{keys:?}");
    for key in &keys[1..] {
        let hash = key.strip_prefix("pyzord.replay_v1.").expect("a replay key");
        assert!(hash.len() == 40 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query(&mut connection)
            .expect("TTL");
        assert!((1..=601).contains(&ttl), "TTL {ttl} of {key}");
    }

    // Redis down: a signed request cannot be checked, so it is refused
    // with pyzor's answer for a database failure, and the log says why.
    redis.kill();
    let ping = signed("Op: ping\nThread: 5000\nPV: 2.1\n", ALICE.0, ALICE.1, now());
    let answer = ask(node2, &ping, WAIT).expect("an answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.starts_with("Code: 500\n")
            && answer.contains("Diag: Internal Server Error: Database temporarily unavailable."),
        "{answer}"
    );
    wait_for("the log line", Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains("database operation failed: redis failed"))
    });
}

/// Runs SQL as MariaDB's root over its socket in `dir`.
fn mariadb_root(dir: &Path, sql: &str) {
    let status = Command::new("mariadb")
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .args(["-uroot", "-e", sql])
        .stdout(Stdio::null())
        .status()
        .expect("run mariadb");
    assert!(status.success(), "{sql}");
}

#[test]
fn mariadb_shares_replays_between_pyzords_and_memory_keeps_accounts_apart() {
    let python_home = homedir();
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let dir = temp_dir();
    let mariadb = Mariadb::start(dir.path());
    let dsn = format!("127.0.0.1:{},pyzor,secret,pyzor,public", mariadb.port);
    let args = ["-e", "mysql", "--dsn", &dsn];
    let (first_home, second_home) = (homedir(), homedir());
    let (_first, node1) = start_child_pyzord(first_home.path(), &args);
    let (_second, node2) = start_child_pyzord(second_home.path(), &args);
    let (request, first) = captured_report(node1, BOB, MESSAGE);
    let expected = expected_of(&python, &request);
    assert_eq!(first, expected.first);
    assert_refused(node2, &request, &expected, "mariadb, another pyzord");

    // A user who may use pyzor's table but create no other: that pyzord
    // refuses replays from its own memory, where a flood of future-dated
    // signed pings from alice cannot push out bob's report.
    mariadb_root(
        dir.path(),
        "CREATE USER 'narrow'@'%' IDENTIFIED BY 'secret'; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON pyzor.public TO 'narrow'@'%'",
    );
    let narrow = format!("127.0.0.1:{},narrow,secret,pyzor,public", mariadb.port);
    let home = homedir();
    let args = ["-e", "mysql", "--dsn", &narrow, "--replay-cache-size", "8"];
    let (_narrow, ours, log) = pyzord_logged(home.path(), &args);
    wait_for("the log", Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains("cannot create or read the replay table"))
    });
    let message = b"From: b@example.com\nSubject: narrow\n\nReported once by bob.\n";
    let (request, first) = captured_report(ours, BOB, message);
    let python_home = homedir();
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let expected = expected_of(&python, &request);
    assert_eq!(first, expected.first);
    for index in 0..9 {
        let body = format!("Op: ping\nThread: {}\nPV: 2.1\n", 6000 + index);
        let ping = signed(&body, ALICE.0, ALICE.1, now() + 299);
        let theirs = ask(python.address, &ping, WAIT).expect("Python answers");
        assert!(theirs.starts_with(b"Code: 200\n"));
        assert_eq!(ask(ours, &ping, WAIT), Some(theirs), "ping {index}");
    }
    assert_refused(ours, &request, &expected, "memory only, after a flood");
}
