//! The rspamd listener: a real rspamd (Debian's package) asks it through
//! its `external_services` pyzor scanner, our pyzord answers; and hostile
//! peers against the listener in process.

pub mod util;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyzor_milter::protocol::Op;

use crate::milter::util::{Group, free_tcp_port, message_file, spam, tell, wait_for_port};
use crate::server_util::start_child_pyzord;
use crate::util::{our_binary, temp_dir};
use util::{Listener, Rspamd, SCANNER_TIMEOUT_SECS, pyzor_symbol};

/// The digest of a message without usable text.
const EMPTY_DIGEST: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

/// A message whose every line is too short for the digest.
const NO_TEXT: &[u8] =
    b"From: a@example.org\r\nTo: b@example.net\r\nSubject: short\r\n\r\nhi\r\nbye\r\n";

#[test]
fn rspamd_gets_the_pyzor_symbol_for_what_is_listed_and_only_that() {
    let dir = temp_dir();
    let home = dir.path().join("pyzord");
    std::fs::create_dir(&home).expect("homedir");
    std::fs::write(home.join("pyzord.access"), "all : anonymous : allow\n").expect("access");
    let usage = home.join("usage.log");
    let usage_arg = usage.to_str().expect("utf-8");
    let (pyzord, server) = start_child_pyzord(&home, &["--usage-log-file", usage_arg]);

    // The listener alone (no milter), as the binary runs it.
    let port = free_tcp_port();
    let config = dir.path().join("milter.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"\"\nrspamd_socket = \"inet:127.0.0.1:{port}\"\n\
             servers = [\"{server}\"]\ntimeout_ms = 1000\n"
        ),
    )
    .expect("milter config");
    let log = dir.path().join("milter.log");
    let _milter = Group::spawn(
        Command::new(our_binary())
            .arg("milter")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log")),
    );
    let our_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for_port(port, "the rspamd listener", our_log);
    let rspamd = Rspamd::start(&dir.path().join("rspamd"), ([127, 0, 0, 1], port).into());

    // Seeds of at most 9 characters: the digest drops longer words.
    let (_, listed) = message_file(dir.path(), "listed", &spam("rsl1"));
    let (_, whitelisted) = message_file(dir.path(), "whitelisted", &spam("rsw2"));
    let (_, unreported) = message_file(dir.path(), "unreported", &spam("rsu3"));
    let (_, empty) = message_file(dir.path(), "empty", NO_TEXT);
    assert!(listed != whitelisted && listed != unreported && whitelisted != unreported);
    assert_eq!(
        empty, EMPTY_DIGEST,
        "Python's digest of the message without text"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        tell(server, Op::Report, &listed, 3).await;
        tell(server, Op::Report, &whitelisted, 3).await;
        tell(server, Op::Whitelist, &whitelisted, 1).await;
    });

    let (output, _) = rspamd.symbols(&spam("rsl1"));
    let symbol = pyzor_symbol(&output);
    assert!(
        symbol
            .as_ref()
            .is_some_and(|(weight, options)| *weight > 0.0 && options == "bl_3_wl_0"),
        "listed: {symbol:?}\n{output}\n{}",
        our_log()
    );
    for (what, message) in [
        ("unreported", spam("rsu3")),
        ("whitelisted", spam("rsw2")),
        ("without text", NO_TEXT.to_vec()),
    ] {
        let (output, _) = rspamd.symbols(&message);
        assert_eq!(pyzor_symbol(&output), None, "{what}:\n{output}");
    }
    let lines = our_log();
    assert!(
        lines.contains(&format!("verdict=listed digest={listed}")),
        "{lines}"
    );
    assert!(
        lines.contains(&format!("verdict=whitelisted digest={whitelisted}")),
        "{lines}"
    );
    assert!(lines.contains("verdict=clean "), "{lines}");
    assert!(
        lines.contains(&format!(
            "verdict=skipped reason=empty-digest digest={EMPTY_DIGEST}"
        )),
        "{lines}"
    );
    let requests = std::fs::read_to_string(&usage).expect("pyzord's usage log");
    assert!(
        requests.contains(&format!("check,['{listed}'],200")),
        "{requests}"
    );
    assert!(
        !requests.contains(EMPTY_DIGEST),
        "the empty digest was asked:\n{requests}"
    );
    assert!(
        rspamd
            .log_text()
            .contains("error parsing response: pyzor-milter"),
        "rspamd logs why a message was not checked:\n{}",
        rspamd.log_text()
    );

    // The Pyzor server down: rspamd gets our answer, not its own timeout.
    drop(pyzord);
    let (output, took) = rspamd.symbols(&spam("rsd4"));
    assert_eq!(pyzor_symbol(&output), None, "server down:\n{output}");
    assert!(
        !output.contains("PYZOR_FAIL"),
        "rspamd timed out:\n{output}"
    );
    assert!(
        took < Duration::from_secs(SCANNER_TIMEOUT_SECS),
        "rspamd waited {took:?} for an answer"
    );
    let lines = our_log();
    assert!(lines.contains("verdict=error "), "{lines}");
}

/// A request and its one line of answer.
fn ask(listener: &Listener, message: &[u8]) -> String {
    let mut stream = TcpStream::connect(listener.address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(message).expect("send");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("the answer");
    answer
}

const SKIPPED_EMPTY: &str =
    "pyzor-milter\t(0, 'not checked: empty-digest da39a3ee5e6b4b0d3255bfef95601890afd80709')\n";

/// No server listens there; the answers that need one are errors.
const HOSTILE_CONFIG: &str = "servers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\n";

#[test]
fn rspamd_listener_drops_a_peer_that_never_ends_and_serves_the_others() {
    let listener = Listener::start(&format!("{HOSTILE_CONFIG}rspamd_read_timeout_ms = 500\n"));
    let mut silent = TcpStream::connect(listener.address).expect("connect");
    silent
        .write_all(b"Subject: never ends\r\n\r\n")
        .expect("send");
    let started = Instant::now();
    assert_eq!(ask(&listener, NO_TEXT), SKIPPED_EMPTY);
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).expect("closed, not reset");
    assert_eq!(rest, b"", "dropped without an answer");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn rspamd_listener_reads_100_mb_without_keeping_it() {
    let listener = Listener::start(HOSTILE_CONFIG);
    let address = listener.address;
    let big = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(address).expect("connect");
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            stream.write_all(&chunk).expect("the listener reads on");
        }
        stream.shutdown(Shutdown::Write).expect("shutdown");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        answer
    });
    assert_eq!(ask(&listener, NO_TEXT), SKIPPED_EMPTY);
    assert_eq!(
        big.join().expect("the big sender"),
        "pyzor-milter\t(0, 'not checked: oversize')\n"
    );
}

#[test]
fn rspamd_listener_serves_1000_connections_at_once_within_its_limit() {
    let listener = Listener::start(&format!("{HOSTILE_CONFIG}max_connections = 16\n"));
    let mut streams: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(listener.address).expect("connect"))
        .collect();
    for stream in &mut streams {
        stream.write_all(NO_TEXT).expect("send");
        stream.shutdown(Shutdown::Write).expect("shutdown");
    }
    for mut stream in streams {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        assert_eq!(answer, SKIPPED_EMPTY);
    }
}

#[test]
fn rspamd_listener_answers_garbage_with_one_line() {
    let listener = Listener::start(HOSTILE_CONFIG);
    for seed in 0..20 {
        let garbage = crate::util::pseudo_random_bytes(seed, 1 + (seed as usize * 7919) % 70_000);
        let answer = ask(&listener, &garbage);
        assert!(
            answer.ends_with('\n') && answer.matches('\n').count() == 1,
            "{answer:?}"
        );
        assert!(
            answer == SKIPPED_EMPTY || answer.starts_with("127.0.0.1:9\t(50"),
            "{answer:?}"
        );
    }
    assert_eq!(ask(&listener, b""), SKIPPED_EMPTY);
}
