//! pyzord against Python pyzord 1.1.2: the same datagrams and the same
//! Python `pyzor` commands sent to both get the same answers; our Redis and
//! MySQL engines share data with Python pyzord's; `migrate` imports a
//! Python pyzord gdbm file.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha1::{Digest as _, Sha1};

use crate::server_util::{
    Mariadb, OurServer, PythonPyzord, RedisServer, TempDir, ask, reference_pyzor,
    reference_server_python, temp_dir,
};
use pyzor_milter::storage::EngineName;

const WAIT: Duration = Duration::from_secs(3);
pub(crate) const USER: &str = "alice";
pub(crate) const KEY: &str = "0123456789ABCDEF";
const PASSWD: &str = "alice : 0123456789ABCDEF\n# a comment\nbroken line\n";
const ACCESS: &str = "check report ping pong info : anonymous : allow\n\
                      all : alice : allow\n\
                      report : alice : deny\n\
                      nonsense line\n\
                      frobnicate : anonymous : allow\n";

/// A homedir with the accounts and ACL both servers use.
fn homedir_with_access() -> TempDir {
    let dir = temp_dir();
    std::fs::write(dir.path().join("pyzord.passwd"), PASSWD).expect("passwd");
    std::fs::write(dir.path().join("pyzord.access"), ACCESS).expect("access");
    dir
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// Signs a request as pyzor's client does (`account.sign_msg`).
pub(crate) fn signed(body: &str, user: &str, key: &str, time: i64) -> Vec<u8> {
    let text = format!("{body}User: {user}\nTime: {time}");
    let hashed_key = hex::encode(Sha1::digest(format!("{user}:{}", key.to_lowercase())));
    let mut outer = Sha1::new();
    outer.update(Sha1::digest(text.as_bytes()));
    outer.update(format!(":{time}:{hashed_key}").as_bytes());
    let sig = hex::encode(outer.finalize());
    format!("{text}\nSig: {sig}\n\n").into_bytes()
}

/// Replaces the values of the time fields, which may differ by the second
/// the two servers wrote them in.
pub(crate) fn mask_times(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .map(|line| match line.split_once(": ") {
            Some((name, value))
                if ["Entered", "Updated", "WL-Entered", "WL-Updated"].contains(&name)
                    && value != "0" =>
            {
                format!("{name}: <time>")
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn requests() -> Vec<Vec<u8>> {
    let digest = |c: char| c.to_string().repeat(40);
    let mut requests: Vec<Vec<u8>> = [
        "Op: ping\nThread: 1\nPV: 2.1\n\n".to_owned(),
        format!(
            "Op: check\nOp-Digest: {}\nThread: 2\nPV: 2.1\n\n",
            digest('a')
        ),
        format!(
            "Op: report\nOp-Digest: {}\nOp-Digest: {}\nThread: 3\nPV: 2.1\n\n",
            digest('a'),
            digest('b')
        ),
        format!(
            "Op: check\nOp-Digest: {}\nOp-Digest: {}\nThread: 4\nPV: 2.1\n\n",
            digest('b'),
            digest('a')
        ),
        format!(
            "Op: info\nOp-Digest: {}\nThread: 5\nPV: 2.1\n\n",
            digest('a')
        ),
        format!(
            "Op: info\nOp-Digest: {}\nThread: 6\nPV: 2.1\n\n",
            digest('f')
        ),
        "Op: pong\nOp-Digest: x\nThread: 7\nPV: 2.1\n\n".to_owned(),
        "Op: whitelist\nOp-Digest: x\nThread: 8\nPV: 2.1\n\n".to_owned(),
        "Op: frobnicate\nThread: 9\nPV: 2.1\n\n".to_owned(),
        "Op: nosuchop\nThread: 10\nPV: 2.1\n\n".to_owned(),
        "Op: check\nThread: 11\n\n".to_owned(),
        "Op: check\nThread: 12\nPV: 3.0\n\n".to_owned(),
        "Op: check\nThread: 13\nPV: abc\n\n".to_owned(),
        "Op: check\nThread: 14\nPV: inf\n\n".to_owned(),
        "Op: check\nThread: 15\nPV: nan\n\n".to_owned(),
        format!(
            "Op: check\r\nOp-Digest: {}\r\nThread: 16\r\nPV: 2.1\r\n\r\n",
            digest('a')
        ),
        "Op: check\nThread: 17\nPV: 2.1\n\n".to_owned(),
        "Op: ping\n\n\nThread: 18\nPV: 2.1\n\n".to_owned(),
        "Op: ping\nThread: 19\n 20\nPV: 2.1\n\n".to_owned(),
        "Thread: 21\n".to_owned(),
        "garbage".to_owned(),
        String::new(),
        "User: mallory\nOp: check\nThread: 22\nPV: 2.1\nTime: 1\nSig: x\n\n".to_owned(),
        "User: alice\nOp: check\nThread: 23\nPV: 2.1\nTime: soon\nSig: x\n\n".to_owned(),
        "User: alice\nOp: check\nThread: 24\nPV: 2.1\nSig: x\n\n".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    let body = |op: &str, thread: u32| {
        format!(
            "Op: {op}\nOp-Digest: {}\nThread: {thread}\nPV: 2.1\n",
            digest('c')
        )
    };
    requests.push(signed(&body("whitelist", 30), USER, KEY, now()));
    requests.push(signed(&body("report", 31), USER, KEY, now()));
    requests.push(signed(&body("check", 32), USER, KEY, now() - 1000));
    requests.push(signed(&body("check", 33), USER, "ffff", now()));
    requests.push(signed(&body("info", 34), USER, KEY, now()));
    requests.push(b"Op: check\xff\nThread: 40\nPV: 2.1\n\n".to_vec());
    requests.push(b"Op: ping\nThread: 4\xff1\nPV: 2.1\n\n".to_vec());
    requests.push(b"Op: check\nThread: 42\nPV: 2.\xff1\n\n".to_vec());
    requests.push(b"Op: check\nOp-Digest: \xff\nThread: 43\nPV: 2.1\n\n".to_vec());
    requests.push(b"User: b\xffb\nOp: check\nThread: 44\nPV: 2.1\n\n".to_vec());
    requests.push(vec![b'x'; 9000]);
    // As many digests as fit in the 8,192 bytes read.
    let mut many = String::from("Op: report\nThread: 45\nPV: 2.1\n");
    for index in 0..150 {
        many.push_str(&format!("Op-Digest: {index:040}\n"));
    }
    requests.push(many.into_bytes());
    requests.push(format!("Op: check\nOp-Digest: {:040}\nThread: 46\nPV: 2.1\n\n", 7).into_bytes());
    requests
}

/// Python pyzord and ours on SQLite, each in a homedir with the accounts
/// and ACL above (first, so that they outlive the servers).
fn both_servers() -> ([TempDir; 2], PythonPyzord, OurServer) {
    let python_home = homedir_with_access();
    let our_home = homedir_with_access();
    let python = PythonPyzord::start(python_home.path(), &[], &[]);
    let dsn = our_home.path().join("pyzord.sqlite");
    let ours = OurServer::start(
        EngineName::Sqlite,
        &dsn.display().to_string(),
        our_home.path(),
    );
    ([python_home, our_home], python, ours)
}

#[test]
fn raw_datagrams_get_python_pyzords_answers() {
    let (_homes, python, ours) = both_servers();
    for request in requests() {
        let expected = ask(python.address, &request, WAIT)
            .filter(|answer| we_answer(&request, answer))
            .map(|answer| mask_times(&answer));
        let actual = ask(ours.address, &request, WAIT).map(|answer| mask_times(&answer));
        assert_eq!(
            actual,
            expected,
            "request {:?}",
            String::from_utf8_lossy(&request)
        );
    }
}

/// Whether ours sends Python pyzord's `answer` to `request`: not to a
/// datagram without Op or PV, nor to a Thread that is not 1 to 5 digits,
/// nor an answer larger than 1.5 times the request (server_reflection.rs).
pub(crate) fn we_answer(request: &[u8], answer: &[u8]) -> bool {
    use pyzor_milter::server::message::{MAX_DATAGRAM, Message};
    use pyzor_milter::server::reflection;
    let read = request.len().min(MAX_DATAGRAM);
    reflection::screen(&Message::parse(request)).is_ok()
        && reflection::within_bound(read, answer.len())
}

/// Sends every request at once from one socket and returns the answers by
/// Thread (masked times), once all came or `WAIT` passed.
fn burst(server: SocketAddr, requests: &[Vec<u8>]) -> std::collections::BTreeMap<u64, String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    for request in requests {
        socket.send_to(request, server).expect("send");
    }
    let mut answers = std::collections::BTreeMap::new();
    let deadline = std::time::Instant::now() + WAIT;
    let mut buffer = [0u8; 8192];
    while answers.len() < requests.len() && std::time::Instant::now() < deadline {
        let Ok(length) = socket.recv(&mut buffer) else {
            continue;
        };
        let answer = mask_times(&buffer[..length]);
        let thread = answer
            .lines()
            .find_map(|line| line.strip_prefix("Thread: "))
            .and_then(|thread| thread.parse().ok())
            .expect("a Thread");
        answers.insert(thread, answer);
    }
    answers
}

#[test]
fn bursts_of_reads_and_writes_get_python_pyzords_answers() {
    // Requests that arrive together are taken in one batch: the reads are
    // answered from one snapshot, the writes share one commit. Every
    // answer must still be Python pyzord's, request by request.
    let (_homes, python, ours) = both_servers();
    let digests: Vec<String> = (0..6).map(|n| format!("{:040x}", 0xabc0 + n)).collect();
    // With User, as every request of pyzor's client: info's answer to a
    // shorter request would be larger than ours sends.
    let request = |op: &str, digest: &str, thread: usize| {
        format!("Op: {op}\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\nUser: anonymous\n\n")
            .into_bytes()
    };
    // Digest n is reported n times, in one burst.
    let reports: Vec<Vec<u8>> = digests
        .iter()
        .enumerate()
        .flat_map(|(n, digest)| (0..n).map(move |_| digest))
        .enumerate()
        .map(|(thread, digest)| request("report", digest, 1000 + thread))
        .collect();
    let expected = burst(python.address, &reports);
    assert_eq!(
        expected.len(),
        reports.len(),
        "Python answered every report"
    );
    assert_eq!(burst(ours.address, &reports), expected);
    // Then every digest checked and asked for info, 48 reads in one burst.
    let reads: Vec<Vec<u8>> = (0..4)
        .flat_map(|round| {
            digests.iter().enumerate().flat_map(move |(n, digest)| {
                let thread = 2000 + round * 100 + n * 2;
                [
                    request("check", digest, thread),
                    request("info", digest, thread + 1),
                ]
            })
        })
        .collect();
    let expected = burst(python.address, &reads);
    assert_eq!(expected.len(), reads.len(), "Python answered every read");
    assert_eq!(burst(ours.address, &reads), expected);
}

/// Runs Python's `pyzor` client against one server and returns its stdout
/// (with the server's address replaced) and exit code.
pub(crate) fn pyzor_client(
    server: SocketAddr,
    accounts: &str,
    args: &[&str],
    stdin: &[u8],
) -> (String, i32) {
    use std::io::Write;
    let home = temp_dir();
    std::fs::write(home.path().join("servers"), format!("{server}\n")).expect("servers");
    let accounts = accounts.replace("PORT", &server.port().to_string());
    std::fs::write(home.path().join("accounts"), accounts).expect("accounts");
    let mut child = Command::new(reference_pyzor())
        .arg("--homedir")
        .arg(home.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run Python pyzor");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let output = child.wait_with_output().expect("pyzor finished");
    let stdout = String::from_utf8_lossy(&output.stdout).replace(&server.to_string(), "SERVER");
    let stdout = stdout
        .lines()
        .map(|line| match line.split_once(": ") {
            Some((name, value))
                if name.trim_start().contains("Entered")
                    || name.trim_start().contains("Updated") =>
            {
                if value.ends_with("1970") {
                    line.to_owned()
                } else {
                    format!("{name}: <time>")
                }
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (stdout, output.status.code().unwrap_or(-1))
}

#[test]
fn python_pyzor_client_sees_the_same_server() {
    let (_homes, python, ours) = both_servers();
    let message = b"From: a@example.com\nSubject: offer\n\nBuy cheap things at our shop today, \
                    the best prices on the whole internet for everyone.\n";
    let good = format!("127.0.0.1 : PORT : {USER} : salt,{KEY}\n");
    let wrong_key = format!("127.0.0.1 : PORT : {USER} : salt,ffff\n");
    let unknown = "127.0.0.1 : PORT : mallory : salt,abcd\n".to_owned();
    let steps: Vec<(&str, Vec<&str>)> = vec![
        ("", vec!["ping"]),
        ("", vec!["pong"]),
        ("", vec!["check"]),
        ("", vec!["report"]),
        ("", vec!["check"]),
        ("", vec!["whitelist"]),
        ("good", vec!["whitelist"]),
        ("good", vec!["report"]),
        ("good", vec!["check"]),
        ("good", vec!["info"]),
        ("", vec!["info"]),
        ("wrong", vec!["check"]),
        ("unknown", vec!["check"]),
        ("", vec!["-r", "0", "check"]),
    ];
    for (account, args) in steps {
        let accounts = match account {
            "good" => good.as_str(),
            "wrong" => wrong_key.as_str(),
            "unknown" => unknown.as_str(),
            _ => "",
        };
        let expected = pyzor_client(python.address, accounts, &args, message);
        let actual = pyzor_client(ours.address, accounts, &args, message);
        assert_eq!(actual, expected, "pyzor {args:?} as {account:?}");
    }
}

#[test]
fn redis_is_shared_with_python_pyzord() {
    let dir = temp_dir();
    let redis = RedisServer::start(dir.path());
    let dsn = format!("127.0.0.1,{},,0", redis.port);
    let python_home = homedir_with_access();
    let our_home = homedir_with_access();
    let python = PythonPyzord::start(python_home.path(), &["-e", "redis", "--dsn", &dsn], &[]);
    let ours = OurServer::start(EngineName::Redis, &dsn, our_home.path());
    let digest = "d".repeat(40);
    let report = format!("Op: report\nOp-Digest: {digest}\nThread: 1\nPV: 2.1\n\n");
    let check = format!("Op: info\nOp-Digest: {digest}\nThread: 2\nPV: 2.1\nUser: anonymous\n\n");
    let key = format!("pyzord.digest_v1.{digest}");
    let ttl = || -> i64 {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port)).expect("redis url");
        let mut connection = client.get_connection().expect("connect to redis");
        redis::cmd("TTL")
            .arg(&key)
            .query(&mut connection)
            .expect("TTL")
    };
    // Each engine sets pyzor's EXPIRE of CleanupAge (four months) at a write.
    let four_months = 60 * 60 * 24 * 30 * 4;
    assert!(ask(ours.address, report.as_bytes(), WAIT).is_some());
    assert!((four_months - 5..=four_months).contains(&ttl()));
    assert!(ask(python.address, report.as_bytes(), WAIT).is_some());
    assert!((four_months - 5..=four_months).contains(&ttl()));
    let from_python = ask(python.address, check.as_bytes(), WAIT).expect("python answers");
    let from_ours = ask(ours.address, check.as_bytes(), WAIT).expect("ours answers");
    assert!(
        String::from_utf8_lossy(&from_python).contains("\nCount: 2\n"),
        "{}",
        String::from_utf8_lossy(&from_python)
    );
    assert_eq!(from_ours, from_python);
}

#[test]
fn mariadb_is_shared_with_python_pyzord() {
    let dir = temp_dir();
    let mariadb = Mariadb::start(dir.path());
    let python_dsn = "127.0.0.1,pyzor,secret,pyzor,public";
    let our_dsn = format!("127.0.0.1:{},pyzor,secret,pyzor,public", mariadb.port);
    let python_home = homedir_with_access();
    let our_home = homedir_with_access();
    // Ours first: it creates pyzor's table, which Python pyzord expects.
    let ours = OurServer::start(EngineName::Mysql, &our_dsn, our_home.path());
    let python = PythonPyzord::start(
        python_home.path(),
        &["-e", "mysql", "--dsn", python_dsn],
        &[("MYSQL_TCP_PORT", mariadb.port.to_string())],
    );
    let digest = "e".repeat(40);
    let report = format!("Op: report\nOp-Digest: {digest}\nThread: 1\nPV: 2.1\n\n");
    // As long as a real client's request (its Time and Sig), so that info's
    // answer is within pyzord's bound of 1.5 times the request.
    let info = format!(
        "Op: info\nOp-Digest: {digest}\nThread: 2\nPV: 2.1\nUser: anonymous\nX-Padding: {}\n\n",
        "x".repeat(64)
    );
    let ok = |answer: Option<Vec<u8>>| {
        let text = String::from_utf8_lossy(&answer.expect("an answer")).into_owned();
        assert!(text.starts_with("Code: 200\n"), "{text}");
    };
    ok(ask(python.address, report.as_bytes(), WAIT));
    ok(ask(ours.address, report.as_bytes(), WAIT));
    let from_python = ask(python.address, info.as_bytes(), WAIT).expect("python answers");
    let from_ours = ask(ours.address, info.as_bytes(), WAIT).expect("ours answers");
    assert!(
        String::from_utf8_lossy(&from_python).contains("\nCount: 2\n"),
        "{}",
        String::from_utf8_lossy(&from_python)
    );
    assert_eq!(from_ours, from_python);
}

/// Writes a pyzord gdbm file with Python's own record encoder, plus raw
/// records whose times Python's decoder accepts or refuses at the edges
/// (`strptime`'s formats, `datetime`'s ranges), and returns what Python
/// reads back from it as pyzor-migrate does (refused records skipped): the
/// records as JSON and their count.
fn python_gdbm_fixture(path: &Path) -> (String, usize) {
    let script = r#"
import sys, json, time, datetime, dbm.gnu
from pyzor.engines.gdbm_ import GdbmDBHandle
from pyzor.engines.common import Record
db = dbm.gnu.open(sys.argv[1], "c")
base = datetime.datetime(2024, 3, 10, 1, 30, 15, 123456)
for i in range(2500):
    r = Record(r_count=i, wl_count=i % 3,
               r_entered=base + datetime.timedelta(hours=i) if i % 5 else None,
               r_updated=base + datetime.timedelta(hours=i, seconds=7),
               wl_entered=None if i % 3 == 0 else base,
               wl_updated=None if i % 3 == 0 else base + datetime.timedelta(days=1))
    db["%040x" % (i * 7919)] = GdbmDBHandle.encode_record(r)
db["0" * 39 + "1"] = "5,1700000000,1700000100"
times = ["2024-02-29 00:00:00", "2023-02-29 00:00:00", "2024-13-01 00:00:00",
         "2024-00-10 00:00:00", "12024-01-01 00:00:00", "0000-01-01 00:00:00",
         "0001-01-01 00:00:00", "9999-12-31 23:59:59", "2024-1-2 3:4:5",
         "2024-01- 5 00:00:00", "2024-01- 15 00:00:00", "2024-01-05  \t1:02:03",
         "2024-01-05\x1c1:02:03", "2024-01-0500:00:00", "2024-01-05 24:00:00",
         "2024-01-05 23:60:00", "2024-01-05 23:59:60", "2024-01-05 23:59:61",
         "2024-01-05 00:00:00.", "2024-01-05 00:00:00.5", "2024-01-05 00:00:00.123456",
         "2024-01-05 00:00:00.1234567", "2024-01-05 00:00:00 ", " 2024-01-05 00:00:00",
         "2024-04-31 00:00:00", "2024-1-31 1:2:3.0", "2024-01-05 00:00", "1900-02-29 00:00:00",
         "2000-02-29 00:00:00", "2024-01-32 00:00:00", "2024-01-05 00:00:0"]
for n, t in enumerate(times):
    db["f" * 36 + "%04d" % n] = "1,%d,%s,None,0,None,None" % (n, t)
db.close()
db = dbm.gnu.open(sys.argv[1], "r")
# Version 0 records hold Unix times already.
stamp = lambda d: 0 if d is None else d if isinstance(d, int) else int(time.mktime(d.timetuple()))
out = {}
for key in db.keys():
    try:
        r = GdbmDBHandle.decode_record(db[key])
    except Exception:
        continue
    out[key.decode()] = [r.r_count, r.wl_count, stamp(r.r_entered), stamp(r.r_updated),
                         stamp(r.wl_entered), stamp(r.wl_updated)]
print(len(out))
print(json.dumps(out, sort_keys=True))
"#;
    let output = Command::new(reference_server_python())
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("run the reference Python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (count, records) = stdout.trim().split_once('\n').expect("count and records");
    (records.to_owned(), count.parse().expect("a count"))
}

#[test]
fn migrate_imports_a_python_gdbm_file() {
    let dir = temp_dir();
    let gdbm = dir.path().join("pyzord.db");
    let (expected, count) = python_gdbm_fixture(&gdbm);
    let sqlite = dir.path().join("pyzord.sqlite");
    let output = Command::new(env!("CARGO_BIN_EXE_pyzor-milter"))
        .args(["migrate", "--se", "gdbm", "--sd"])
        .arg(&gdbm)
        .args(["--de", "sqlite", "--dd"])
        .arg(&sqlite)
        .output()
        .expect("run migrate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        format!("Migration complete, {count} records transferred successfully, 0 records failed")
    );
    let connection = rusqlite::Connection::open(&sqlite).expect("open the result");
    let mut statement = connection
        .prepare(
            "SELECT digest, r_count, wl_count, COALESCE(r_entered, 0), COALESCE(r_updated, 0),
             COALESCE(wl_entered, 0), COALESCE(wl_updated, 0) FROM digests ORDER BY digest",
        )
        .expect("query");
    let rows: Vec<String> = statement
        .query_map([], |row| {
            let digest: String = row.get(0)?;
            let values: Vec<i64> = (1..7).map(|i| row.get(i)).collect::<Result<_, _>>()?;
            let values: Vec<String> = values.iter().map(i64::to_string).collect();
            Ok(format!("\"{digest}\": [{}]", values.join(", ")))
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("all rows");
    assert_eq!(format!("{{{}}}", rows.join(", ")), expected);
}

#[test]
fn bad_datagrams_never_stop_the_server_nor_write() {
    let home = homedir_with_access();
    let dsn = home.path().join("pyzord.sqlite");
    let ours = OurServer::start(EngineName::Sqlite, &dsn.display().to_string(), home.path());
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for round in 0..2000 {
        let length = (next() % 600) as usize;
        let mut datagram: Vec<u8> = (0..length).map(|_| next() as u8).collect();
        if round % 2 == 0 {
            // Half look like requests, so the parser goes deeper.
            let mut prefix = b"Op: check\nThread: 1\nPV: 2.1\n".to_vec();
            prefix.truncate((next() % 28) as usize);
            prefix.extend_from_slice(&datagram);
            datagram = prefix;
        }
        socket.send_to(&datagram, ours.address).expect("send");
    }
    // The flood may fill the socket's buffer, so a first ping can be dropped
    // by the kernel; the server must answer one of a few.
    let ping = (0..10)
        .find_map(|_| {
            ask(
                ours.address,
                b"Op: ping\nThread: 9\nPV: 2.1\n\n",
                Duration::from_secs(1),
            )
        })
        .expect("still alive");
    assert_eq!(
        ping,
        b"Code: 200\nDiag: OK\nPV: 2.1\nThread: 9\n\n".to_vec()
    );
    let connection = rusqlite::Connection::open(&dsn).expect("open");
    let count: i64 = connection
        .query_row("SELECT COUNT(*) FROM digests", [], |row| row.get(0))
        .expect("count");
    assert_eq!(count, 0);
}

/// Eight clients reporting `each` new digests one after the other, for
/// `length` at most or until the server stops answering; each returns the
/// digests acknowledged with Code 200.
fn stream_reports(
    address: SocketAddr,
    each: u64,
    length: Duration,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    let deadline = std::time::Instant::now() + length;
    (0..8u64)
        .map(|sender| {
            std::thread::spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                socket
                    .set_read_timeout(Some(Duration::from_millis(300)))
                    .expect("timeout");
                let mut acknowledged = Vec::new();
                let mut buffer = [0u8; 1024];
                for index in 0..each {
                    if std::time::Instant::now() > deadline {
                        break;
                    }
                    let digest = format!("{:020x}{index:020x}", sender + 1);
                    let request =
                        format!("Op: report\nOp-Digest: {digest}\nThread: {index}\nPV: 2.1\n\n");
                    if socket.send_to(request.as_bytes(), address).is_err() {
                        break;
                    }
                    match socket.recv(&mut buffer) {
                        Ok(length) if buffer[..length].starts_with(b"Code: 200\n") => {
                            acknowledged.push(digest)
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect()
}

/// Streams reports, stops our pyzord with `signal` mid-stream, and checks
/// that every report it acknowledged is in the database; returns how the
/// process ended.
fn acknowledged_reports_survive(signal: libc::c_int) -> std::process::ExitStatus {
    use std::collections::HashSet;
    let home = temp_dir();
    let (mut child, address) = crate::server_util::start_child_pyzord(home.path(), &[]);
    let senders = stream_reports(address, u64::MAX, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill only sends a signal to the child we started.
    let sent = unsafe { libc::kill(child.0.id() as libc::pid_t, signal) };
    assert_eq!(sent, 0);
    let status = child.0.wait().expect("exit");
    let acknowledged: HashSet<String> = senders
        .into_iter()
        .flat_map(|sender| sender.join().expect("sender"))
        .collect();
    assert!(
        acknowledged.len() > 100,
        "only {} reports got through",
        acknowledged.len()
    );
    let connection =
        rusqlite::Connection::open(home.path().join("pyzord.sqlite")).expect("open after stop");
    let mut statement = connection
        .prepare("SELECT digest FROM digests WHERE r_count >= 1")
        .expect("query");
    let stored: HashSet<String> = statement
        .query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("all rows");
    let missing = acknowledged.difference(&stored).count();
    assert_eq!(missing, 0, "{missing} acknowledged reports were lost");
    status
}

#[test]
fn every_acknowledged_report_survives_sigkill() {
    acknowledged_reports_survive(libc::SIGKILL);
}

#[test]
fn sigterm_under_reports_commits_what_it_acknowledged_and_exits_0() {
    let status = acknowledged_reports_survive(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_wal_stays_bounded_under_a_stream_of_reports() {
    // SQLite starts its WAL over only after a checkpoint copied all of it;
    // one that runs beside a steady stream of commits never does, and the
    // WAL grew by hundreds of MB in seconds before the checkpoint thread
    // took the writer for the last frames.
    let home = temp_dir();
    let (_child, address) = crate::server_util::start_child_pyzord(home.path(), &[]);
    let acknowledged: usize = stream_reports(address, 8_000, Duration::from_secs(60))
        .into_iter()
        .map(|sender| sender.join().expect("sender").len())
        .sum();
    let wal = std::fs::metadata(home.path().join("pyzord.sqlite-wal"))
        .expect("the WAL file")
        .len();
    eprintln!("{acknowledged} reports, WAL {wal} bytes");
    // Each report writes about one 4 KiB page to the WAL: 250 MB unbounded.
    assert_eq!(acknowledged, 64_000, "every report is acknowledged");
    assert!(wal < 96 << 20, "the WAL grew to {wal} bytes");
}

/// Runs our binary with these arguments and returns (exit code, stdout,
/// stderr).
fn run_ours(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pyzor-milter"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run our binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_gdbm_homedir_is_refused_with_the_migrate_command() {
    let home = temp_dir();
    std::fs::write(home.path().join("config"), "[server]\nEngine = gdbm\n").expect("config");
    let homedir = home.path().display().to_string();
    let (code, _, stderr) = run_ours(&["pyzord", "--homedir", &homedir, "-p", "0"]);
    assert_eq!(code, 1, "{stderr}");
    let expected = format!(
        "pyzor-milter migrate --se gdbm --sd {homedir}/pyzord.db --de sqlite --dd {homedir}/pyzord.sqlite"
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!home.path().join("pyzord.sqlite").exists());
}

#[test]
fn migrate_between_our_engines_keeps_every_record() {
    let dir = temp_dir();
    let redis = RedisServer::start(dir.path());
    let source = dir.path().join("source.sqlite");
    let copy = dir.path().join("copy.sqlite");
    {
        let connection = rusqlite::Connection::open(&source).expect("create");
        connection
            .execute_batch(
                "CREATE TABLE digests (digest CHAR(40) NOT NULL PRIMARY KEY, r_count INTEGER,
                 wl_count INTEGER, r_entered INTEGER, wl_entered INTEGER, r_updated INTEGER,
                 wl_updated INTEGER) WITHOUT ROWID",
            )
            .expect("schema");
        for index in 0..2345i64 {
            connection
                .execute(
                    "INSERT INTO digests VALUES (?1, ?2, ?3, ?4, NULL, ?5, NULL)",
                    rusqlite::params![
                        format!("{index:040x}"),
                        index,
                        index % 2,
                        1_600_000_000 + index,
                        1_700_000_000 + index
                    ],
                )
                .expect("insert");
        }
    }
    let redis_dsn = format!("127.0.0.1,{},,3", redis.port);
    let source_dsn = source.display().to_string();
    let copy_dsn = copy.display().to_string();
    let (code, stdout, stderr) = run_ours(&[
        "migrate",
        "--se",
        "sqlite",
        "--sd",
        &source_dsn,
        "--de",
        "redis",
        "--dd",
        &redis_dsn,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "Migration complete, 2345 records transferred successfully, 0 records failed"
    );
    let (code, stdout, stderr) = run_ours(&[
        "migrate", "--se", "redis", "--sd", &redis_dsn, "--de", "sqlite", "--dd", &copy_dsn,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("2345 records transferred successfully"),
        "{stdout}"
    );
    type Row = (String, i64, i64, Option<i64>, Option<i64>, Option<i64>);
    let dump = |path: &Path| -> Vec<Row> {
        let connection = rusqlite::Connection::open(path).expect("open");
        let mut statement = connection
            .prepare(
                "SELECT digest, r_count, wl_count, r_entered, r_updated, wl_updated
                 FROM digests ORDER BY digest",
            )
            .expect("query");
        statement
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("all")
    };
    assert_eq!(dump(&copy), dump(&source));
    let (code, stdout, _) = run_ours(&["migrate", "--se", "sqlite", "--sd", &source_dsn]);
    assert_eq!(
        (code, stdout.as_str()),
        (1, "options --se/--sd/--de/--dd are required\n")
    );
    let (code, stdout, _) = run_ours(&[
        "migrate", "--se", "bdb", "--sd", "x", "--de", "sqlite", "--dd", "y",
    ]);
    assert_eq!(
        (code, stdout.as_str()),
        (1, "Unsupported source engine: bdb\n")
    );
}

#[test]
fn ipv6_and_sigterm() {
    let home = temp_dir();
    let host = std::net::Ipv6Addr::LOCALHOST.into();
    let (mut child, _) = crate::server_util::start_child_pyzord_on(host, home.path(), &[]);
    // SAFETY: kill only sends a signal to the child we started.
    let sent = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = child.0.wait().expect("exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigusr1_reloads_the_access_files() {
    let home = temp_dir();
    let (child, address) = crate::server_util::start_child_pyzord(home.path(), &[]);
    let whitelist = b"Op: whitelist\nOp-Digest: 0123456789abcdef0123456789abcdef01234567\nThread: 7\nPV: 2.1\n\n";
    let code = |answer: Option<Vec<u8>>| answer.map(|bytes| bytes[..9].to_vec());
    assert_eq!(
        code(ask(address, whitelist, WAIT)),
        Some(b"Code: 403".to_vec())
    );
    std::fs::write(
        home.path().join("pyzord.access"),
        "all : anonymous : allow\n",
    )
    .expect("acl");
    // SAFETY: kill only sends a signal to the child we started.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGUSR1) },
        0
    );
    crate::server_util::wait_for("the reload", Duration::from_secs(10), || {
        code(ask(address, whitelist, WAIT)) == Some(b"Code: 200".to_vec())
    });
}
