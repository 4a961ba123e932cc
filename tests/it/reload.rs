//! Reloads under load, through the signals an administrator sends
//! (`systemctl reload`): SIGHUP to the milter and SIGUSR1 to pyzord, many
//! times while clients keep both busy. Nothing is lost or answered wrong
//! (every message gets its verdict, every request its answer, no
//! connection drops), and a broken file keeps the old configuration with
//! one error line naming the file (and the line, for the milter's TOML).

use std::io::BufRead as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use indymilter_test::Status;
use pyzor_milter::protocol::signing::Account;
use pyzor_milter::protocol::{Op, Request, Response, ThreadId};

use crate::milter::util::{Envelope, added_header, message_file, send, spam, start_pyzord, tell};
use crate::server_util::{ChildGuard, free_address, free_port, spawn_pyzord, wait_for};
use crate::supervise::{LIMIT, signal};
use crate::util::{our_binary, temp_dir};

/// Reloads sent while the load runs, one every [`RELOAD_EVERY`].
const RELOADS: usize = 20;
/// Which of them finds a broken file.
const BROKEN_RELOAD: usize = RELOADS / 2;
const RELOAD_EVERY: Duration = Duration::from_millis(100);
/// Clients at once.
const CLIENTS: usize = 6;

/// The lines a child writes to stderr, read as they come so that the
/// pipe never fills and blocks it.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(stderr: ChildStderr) -> Self {
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().expect("lines").push(line);
            }
        });
        lines
    }

    fn matching(&self, text: &str) -> Vec<String> {
        let lines = self.0.lock().expect("lines");
        lines
            .iter()
            .filter(|line| line.contains(text))
            .cloned()
            .collect()
    }

    fn all(&self) -> String {
        self.0.lock().expect("lines").join("\n")
    }
}

/// Replaces `path` as an editor that saves through a new file does, so
/// that a reload never reads half a file.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write the new file");
    std::fs::rename(&next, path).expect("rename it into place");
}

/// Runs `load` on `CLIENTS` threads until the reloads are done: each gets
/// its client number and the stop flag, and returns what it counted.
fn under_load<T: Send + 'static>(
    load: impl Fn(usize, &AtomicBool) -> T + Send + Sync + 'static,
    reloads: impl FnOnce(),
) -> Vec<T> {
    let load = Arc::new(load);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let load = Arc::clone(&load);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || load(client, &stop))
        })
        .collect();
    reloads();
    stop.store(true, Ordering::Relaxed);
    clients
        .into_iter()
        .map(|client| client.join().expect("a client thread"))
        .collect()
}

/// Sends `RELOADS` reload signals; before the broken one, `break_file`
/// breaks the configuration and `broken` waits for its error line, after
/// which `mend` puts a good file back. Between the others `alternate`
/// writes one of two good files.
fn reload_many(
    child: &Child,
    reload_signal: libc::c_int,
    alternate: impl Fn(usize),
    break_file: impl FnOnce(),
    broken: impl FnOnce(),
    mend: impl FnOnce(),
) {
    let mut break_file = Some(break_file);
    let mut broken = Some(broken);
    let mut mend = Some(mend);
    for round in 0..RELOADS {
        if round == BROKEN_RELOAD {
            (break_file.take().expect("once"))();
            signal(child, reload_signal);
            (broken.take().expect("once"))();
            (mend.take().expect("once"))();
        } else {
            alternate(round);
            signal(child, reload_signal);
        }
        std::thread::sleep(RELOAD_EVERY);
    }
}

/// A milter configuration asking `pyzord`; two spellings of the same
/// settings, one with the cache on, so that each reload builds a new
/// client and cache while messages are in flight.
fn milter_config(pyzord: SocketAddr, variant: usize) -> String {
    let cache = if variant.is_multiple_of(2) { 0 } else { 60 };
    format!(
        "servers = [\"{pyzord}\"]\ntrusted_networks = []\ntimeout_ms = 10000\n\
         cache_ttl_secs = {cache}\n# variant {variant}\n"
    )
}

#[test]
fn the_milter_reloads_under_load_without_losing_a_message() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    // Half the messages are reported (listed), half are not (clean).
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let messages: Vec<(Vec<u8>, String)> = (0..8usize)
        .map(|index| {
            let text = spam(&format!("reload-{index}"));
            let (_, digest) = message_file(dir.path(), &format!("{index}.eml"), &text);
            let header = if index.is_multiple_of(2) {
                runtime.block_on(tell(pyzord.address, Op::Report, &digest, 1));
                format!("listed; digest={digest}; {}=1/0", pyzord.address)
            } else {
                format!("clean; digest={digest}; {}=0/0", pyzord.address)
            };
            (text, header)
        })
        .collect();
    let config = dir.path().join("milter.toml");
    std::fs::write(&config, milter_config(pyzord.address, 0)).expect("config");
    let port = free_port(false);
    let mut child = Command::new(our_binary())
        .args(["milter", "--config"])
        .arg(&config)
        .args(["--socket", &format!("inet:127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the milter");
    let stderr = Lines::collect(child.stderr.take().expect("stderr"));
    let mut child = ChildGuard(child);
    let milter: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    wait_for("the milter", LIMIT, || {
        std::net::TcpStream::connect(milter).is_ok()
    });
    let messages = Arc::new(messages);
    let load_messages = Arc::clone(&messages);
    // Each client sends the messages in turn over new milter connections,
    // as an MTA does; `send` fails the test on a dropped connection.
    let load = move |client: usize, stop: &AtomicBool| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut results = Vec::new();
        let mut next = client;
        while !stop.load(Ordering::Relaxed) {
            let (text, expected) = &load_messages[next % load_messages.len()];
            let (actions, status) = runtime.block_on(send(milter, &Envelope::default(), text));
            results.push((status, added_header(&actions), expected.clone()));
            next += 1;
        }
        results
    };
    let broken_line = "action = \n";
    let reloads = || {
        reload_many(
            &child.0,
            libc::SIGHUP,
            |round| replace(&config, &milter_config(pyzord.address, round + 1)),
            || {
                let good = milter_config(pyzord.address, 0);
                replace(&config, &format!("{good}{broken_line}"));
            },
            || {
                wait_for("the reload error", LIMIT, || {
                    !stderr.matching("cannot reload").is_empty()
                })
            },
            || replace(&config, &milter_config(pyzord.address, 0)),
        )
    };
    let results: Vec<_> = under_load(load, reloads).into_iter().flatten().collect();
    assert!(
        results.len() >= RELOADS,
        "the load ran through the reloads: {} messages",
        results.len()
    );
    eprintln!("{} messages through {RELOADS} reloads", results.len());
    for (status, header, expected) in &results {
        assert_eq!(*status, Status::Accept, "{header:?}");
        assert_eq!(header.as_deref(), Some(expected.as_str()));
    }
    signal(&child.0, libc::SIGTERM);
    let status = child.0.wait().expect("the milter exits");
    assert_eq!(status.code(), Some(0), "{}", stderr.all());
    // The broken file's line is the configuration's last.
    let line = milter_config(pyzord.address, 0).lines().count() + 1;
    let errors = stderr.matching(" ERROR ");
    assert_eq!(errors.len(), 1, "{}", stderr.all());
    let expected = format!(
        "cannot reload the configuration, keeping the old one: {}:{line}: ",
        config.display()
    );
    assert!(errors[0].contains(&expected), "{}", errors[0]);
    assert_eq!(
        stderr.matching("configuration reloaded").len(),
        RELOADS - 1,
        "{}",
        stderr.all()
    );
}

/// pyzord's homedir files: alice may report and check, anonymous may only
/// check; two spellings of the same ACL.
const USER: &str = "alice";
const KEY: &str = "0123456789ABCDEF";
const ACCESS: [&str; 2] = [
    "check ping : anonymous : allow\nreport check : alice : allow\n",
    "# the same, another order\nreport check : alice : allow\ncheck : anonymous : allow\nping : anonymous : allow\n",
];

/// One request to pyzord and its answer; `None` when none came in time.
fn exchange(
    socket: &UdpSocket,
    server: SocketAddr,
    request: &Request,
    account: &Account,
) -> Option<Response> {
    let now = i64::try_from(unix_secs()).expect("a time in range");
    socket
        .send_to(&request.encode(account, now), server)
        .expect("send");
    let mut buffer = [0u8; 8192];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let Ok(length) = socket.recv(&mut buffer) else {
            continue;
        };
        let response = Response::parse(&buffer[..length]);
        if response.answers(request.thread) && response.verify().is_ok() {
            return Some(response);
        }
    }
    None
}

/// What one pyzord client saw: its reports acknowledged, and each answer
/// that was not the one expected.
#[derive(Debug, Default)]
struct Seen {
    acknowledged: i64,
    wrong: Vec<String>,
}

#[test]
fn pyzord_reloads_under_load_without_a_wrong_answer() {
    let home = temp_dir();
    let passwd = home.path().join("pyzord.passwd");
    let access = home.path().join("pyzord.access");
    std::fs::write(&passwd, format!("{USER} : {KEY}\n")).expect("passwd");
    std::fs::write(&access, ACCESS[0]).expect("access");
    let log = home.path().join("pyzord.log");
    let server = free_address(Ipv4Addr::LOCALHOST.into());
    let log_arg = log.to_str().expect("a UTF-8 path");
    let mut child = spawn_pyzord(
        server,
        home.path(),
        &["--log-file", log_arg],
        Stdio::piped(),
    );
    let stderr = Lines::collect(child.0.stderr.take().expect("stderr"));
    let ping = Request::new(Op::Ping, Vec::new(), ThreadId::from_random(7));
    wait_for("our pyzord", LIMIT, || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
        exchange(&socket, server, &ping, &Account::anonymous()).is_some()
    });
    // Each client reports its own digest as alice, checks it anonymously
    // (the count is exactly its acknowledged reports), and tries to report
    // anonymously (refused by both ACLs; pyzor's default ACL, used when
    // the file is missing, would allow it).
    let load = move |client: usize, stop: &AtomicBool| {
        let alice = Account {
            username: USER.into(),
            salt: String::new(),
            key: KEY.into(),
        };
        let anonymous = Account::anonymous();
        let digest = format!("{client:040x}");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut seen = Seen::default();
        // Thread ids of their own, never repeated within a second (the
        // signature covers the Thread and the Time in seconds), so that no
        // signed report is refused as a replay: before it uses its 9,000
        // ids again, a client waits for the next second.
        let mut thread = 0u16;
        let mut next = |op| {
            thread = (thread + 1) % 9000;
            if thread == 0 {
                let cycle_ended = unix_secs();
                while unix_secs() == cycle_ended {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let id = ThreadId::new(2000 + (client as u16) * 9000 + thread).expect("in range");
            Request::new(op, vec![digest.clone()], id)
        };
        while !stop.load(Ordering::Relaxed) {
            let steps = [
                (next(Op::Report), &alice, 200),
                (next(Op::Check), &anonymous, 200),
                (next(Op::Report), &anonymous, 403),
            ];
            for (request, account, code) in steps {
                let Some(response) = exchange(&socket, server, &request, account) else {
                    seen.wrong.push(format!("{request:?}: no answer"));
                    continue;
                };
                if response.code() != Ok(code) {
                    seen.wrong.push(format!("{request:?}: {response:?}"));
                } else if request.op == Op::Report && code == 200 {
                    seen.acknowledged += 1;
                } else if request.op == Op::Check
                    && response.counts().map(|(count, _)| count.saturating())
                        != Ok(seen.acknowledged)
                {
                    seen.wrong.push(format!("{request:?}: {response:?}"));
                }
            }
        }
        seen
    };
    let reloads = || {
        reload_many(
            &child.0,
            libc::SIGUSR1,
            |round| replace(&access, ACCESS[round % 2]),
            || {
                std::fs::remove_file(&access).expect("remove the access file");
                std::fs::create_dir(&access).expect("a directory in its place");
            },
            || {
                wait_for("the reload error", LIMIT, || {
                    !stderr.matching("cannot reload").is_empty()
                })
            },
            || {
                std::fs::remove_dir(&access).expect("remove the directory");
                std::fs::write(&access, ACCESS[0]).expect("access");
            },
        )
    };
    let seen = under_load(load, reloads);
    let acknowledged: i64 = seen.iter().map(|seen| seen.acknowledged).sum();
    let wrong: Vec<&String> = seen.iter().flat_map(|seen| &seen.wrong).collect();
    eprintln!("{acknowledged} reports acknowledged through {RELOADS} reloads");
    assert!(
        wrong.is_empty(),
        "{} wrong answers: {wrong:#?}",
        wrong.len()
    );
    assert!(
        acknowledged >= RELOADS as i64,
        "the load ran through the reloads: {acknowledged} reports"
    );
    signal(&child.0, libc::SIGTERM);
    let mut child = child;
    let status = child.0.wait().expect("pyzord exits");
    assert_eq!(status.code(), Some(0), "{}", stderr.all());
    let expected = format!(
        "cannot reload the access files, keeping the old ones: cannot read \"{}\": Is a directory (os error 21)",
        access.display()
    );
    let errors = stderr.all();
    assert_eq!(errors.lines().count(), 1, "one line: {errors}");
    assert!(errors.ends_with(&expected), "{errors}");
    let log = std::fs::read_to_string(&log).expect("the log file");
    let reloaded = log
        .lines()
        .filter(|line| line.contains("reloaded the accounts and the ACL"))
        .count();
    assert_eq!(reloaded, RELOADS - 1, "{log}");
}

/// The Unix time in whole seconds, as a request's `Time` carries it.
fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}
