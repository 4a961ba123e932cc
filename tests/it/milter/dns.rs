//! Name resolution that heals, seen from the milter: our binary runs in a
//! mount namespace of its own where /etc/hosts, resolv.conf and
//! nsswitch.conf are files of the test (`examples/common/names.rs`, shared
//! with the soak test), and no DNS query leaves the machine. The server's
//! name starts unresolvable, then appears, then moves from one of our
//! pyzords (127.0.0.1, which holds reports of the message) to another
//! (127.0.0.2, same port, which holds none); the `pyzor` client run in the
//! same namespace sees what the milter sees.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use pyzor_milter::protocol::Op;

use super::util::{
    Envelope, Milter, added_header, message_file, send, spam, start_pyzord, start_pyzord_at, tell,
};
use crate::util::{our_binary, run, temp_dir};

#[path = "../../../examples/common/names.rs"]
mod names;
use names::{namespace_command, write_hosts};

/// The server's name; `.test` is reserved (RFC 2606), should a query leak.
const NAME: &str = "pyzord.example.test";

/// How long the milter may take to follow a change of the hosts file: the
/// milter retries a failed name after 2 s and refreshes a good one every
/// second here; the rest is slack for a loaded machine.
const FOLLOW: Duration = Duration::from_secs(30);

/// Sends the message until its header starts with `verdict`, for up to
/// [`FOLLOW`]; returns the header and how long it took.
async fn until(
    milter: SocketAddr,
    message: &[u8],
    verdict: &str,
    log: &Milter,
) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let (actions, _) = send(milter, &Envelope::default(), message).await;
        let header = added_header(&actions).expect("an X-Pyzor header");
        if header.starts_with(verdict) {
            return (header, started.elapsed());
        }
        assert!(
            started.elapsed() < FOLLOW,
            "still {header:?} after {FOLLOW:?}, waiting for {verdict:?}; milter log:\n{}",
            log.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `pyzor check` of the message in the same kind of namespace: its output
/// and exit code.
fn pyzor_check(dir: &Path, message: &Path) -> (String, String) {
    let mut command = namespace_command(dir, &our_binary()).expect("write the resolver files");
    command.arg("pyzor").arg("--homedir").arg(dir).arg("check");
    let output = run(
        &mut command,
        &std::fs::read(message).expect("read the message"),
    );
    assert!(output.stderr.is_empty(), "{}", output.stderr_text());
    (output.stdout_text(), output.exit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_milter_follows_a_name_that_appears_and_moves() {
    let dir = temp_dir();
    let first_dir = dir.path().join("first");
    let second_dir = dir.path().join("second");
    for sub in [&first_dir, &second_dir] {
        std::fs::create_dir(sub).expect("mkdir");
    }
    let first = start_pyzord(&first_dir);
    let port = first.address.port();
    let second = start_pyzord_at(&second_dir, SocketAddr::from(([127, 0, 0, 2], port)));
    let (message_path, digest) = message_file(dir.path(), "spam.eml", &spam("dns"));
    let message = std::fs::read(&message_path).expect("read the message");
    tell(first.address, Op::Report, &digest, 1).await;

    write_hosts(dir.path(), NAME, None).expect("write the hosts file");
    std::fs::write(dir.path().join("servers"), format!("{NAME}:{port}\n")).expect("servers");
    let config = format!(
        "servers = [\"{NAME}:{port}\"]\ntrusted_networks = []\ntimeout_ms = 2000\n\
         cache_ttl_secs = 0\nresolve_refresh_secs = 1\n"
    );
    let command = namespace_command(dir.path(), &our_binary()).expect("write the resolver files");
    let milter = Milter::start_with(dir.path(), &config, command);
    let server = format!("{NAME}:{port}");

    let (actions, _) = send(milter.address(), &Envelope::default(), &message).await;
    let header = added_header(&actions).expect("an X-Pyzor header");
    assert_eq!(header, format!("error; digest={digest}; {server}=error"));

    // The name appears at the pyzord holding the report, then moves to the
    // one without: the verdict, the counts and pyzor's exit code follow.
    let steps = [
        ("appeared", "127.0.0.1", "listed", "1\t0", "0"),
        ("moved", "127.0.0.2", "clean", "0\t0", "1"),
    ];
    for (what, address, verdict, counts, exit_code) in steps {
        write_hosts(dir.path(), NAME, Some(address)).expect("write the hosts file");
        let (header, took) = until(milter.address(), &message, verdict, &milter).await;
        let slash = counts.replace('\t', "/");
        assert_eq!(
            header,
            format!("{verdict}; digest={digest}; {server}={slash}")
        );
        let (stdout, exit) = pyzor_check(dir.path(), &message_path);
        let expected = format!("{server}\t(200, 'OK')\t{counts}\n");
        assert_eq!(
            (stdout.as_str(), exit.as_str()),
            (expected.as_str(), exit_code)
        );
        eprintln!("the milter used the name {took:?} after it {what}");
    }

    // Once each: the failure with its cause, the recovery, the move.
    let log = milter.log_text();
    let count = |text: &str| log.lines().filter(|line| line.contains(text)).count();
    let failure = "cannot resolve the server's name";
    assert_eq!(count(failure), 1, "{log}");
    let line = log
        .lines()
        .find(|line| line.contains(failure))
        .expect("counted");
    assert!(
        line.contains(" WARN ") && line.contains("cause=temporary failure in name resolution"),
        "{line}"
    );
    assert_eq!(count("server name resolves again"), 1, "{log}");
    let moved_line = "server moved to a new address";
    assert_eq!(count(moved_line), 1, "{log}");
    assert!(
        log.contains("previous=127.0.0.1:") && log.contains("address=127.0.0.2:"),
        "{log}"
    );
    drop(second);
}
