//! pyzord on the Redis deployments beyond one plain server: TLS with and
//! without client certificates, an ACL user and a Unix socket
//! ([`access`]), a master with a replica under three sentinels
//! ([`sentinel`]), and a three-master cluster with three of our pyzord
//! nodes ([`cluster`]). Every peer is Debian's redis-server (and
//! redis-sentinel, redis-cli) started by the test on 127.0.0.1 with its
//! own temporary directory and stopped by it.

mod access;
mod cluster;
mod sentinel;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::server_util::{ChildGuard, ask, free_port, redis_command, wait_for};

const SETUP_HINT: &str = "install redis-server, redis-sentinel, redis-tools and openssl \
     (scripts/test does)";

/// A redis-server (or sentinel) on a free port with its data in `dir`,
/// killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<ChildGuard>,
}

impl Redis {
    /// redis-server on a fresh port with `args` after the defaults (no
    /// snapshots, loopback only); waits until `wait_port` (the TLS port,
    /// when the plain one is off) accepts connections.
    pub fn start(dir: &Path, args: &[String]) -> Self {
        let port = free_port(false);
        Self::start_on(dir, port, port, args)
    }

    /// As [`Redis::start`] on `port`, waiting for `wait_port`.
    pub fn start_on(dir: &Path, port: u16, wait_port: u16, args: &[String]) -> Self {
        std::fs::create_dir_all(dir).expect("redis dir");
        let mut command = redis_command(dir, port);
        command.args(["--logfile", "redis.log"]).args(args);
        Self::spawn(command, port, wait_port)
    }

    /// redis-sentinel on a fresh port watching the master at `master_port`
    /// as `name`, deciding after `down_ms` without answers.
    pub fn sentinel(dir: &Path, name: &str, master_port: u16, down_ms: u64) -> Self {
        std::fs::create_dir_all(dir).expect("sentinel dir");
        let port = free_port(false);
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile sentinel.log\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {name} {down_ms}\n\
                 sentinel failover-timeout {name} 10000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.display()
            ),
        )
        .expect("sentinel.conf");
        let mut command = Command::new("redis-sentinel");
        command.arg(&config);
        Self::spawn(command, port, port)
    }

    fn spawn(mut command: Command, port: u16, wait_port: u16) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?} ({error}): {SETUP_HINT}"));
        let child = ChildGuard(child);
        wait_for("redis", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", wait_port)).is_ok()
        });
        Self {
            port,
            child: Some(child),
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.0.kill();
            let _ = child.0.wait();
        }
    }

    /// A plain connection as the default user, for the test's own reads.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .expect("redis url")
            .get_connection()
            .expect("connect to redis")
    }
}

/// Runs redis-cli with `args`; returns its standard output, failing the
/// test when it fails.
pub fn redis_cli(args: &[String]) -> String {
    let output = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run redis-cli ({error}): {SETUP_HINT}"));
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A report of `digest` to pyzord at `server`: its Code.
pub fn report(server: SocketAddr, digest: &str, thread: u32) -> Option<u16> {
    let request = format!("Op: report\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\n\n");
    code(&ask(server, request.as_bytes(), Duration::from_secs(5))?)
}

/// The Count a check of `digest` at `server` answers.
pub fn count(server: SocketAddr, digest: &str, thread: u32) -> Option<i64> {
    let request = format!("Op: check\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\n\n");
    let answer = ask(server, request.as_bytes(), Duration::from_secs(5))?;
    field(&answer, "Count")
}

fn code(answer: &[u8]) -> Option<u16> {
    field(answer, "Code").and_then(|code| u16::try_from(code).ok())
}

fn field(answer: &[u8], name: &str) -> Option<i64> {
    let prefix = format!("{name}: ");
    std::str::from_utf8(answer)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))?
        .trim()
        .parse()
        .ok()
}

/// The r_count of every digest of `digests` in the Redis `connection`
/// reads, 0 where there is none.
pub fn stored_counts<C: redis::ConnectionLike>(connection: &mut C, digests: &[String]) -> Vec<i64> {
    digests
        .iter()
        .map(|digest| {
            redis::cmd("HGET")
                .arg(format!("pyzord.digest_v1.{digest}"))
                .arg("r_count")
                .query::<Option<i64>>(connection)
                .expect("HGET")
                .unwrap_or(0)
        })
        .collect()
}
