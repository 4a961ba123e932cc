//! Helpers for the rspamd tests: a real rspamd (Debian's package) in the
//! foreground with a private configuration, and our rspamd listener in
//! process on 127.0.0.1:0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyzor_milter::milter::{self, config};
use tokio::sync::oneshot;

use crate::milter::util::{Group, free_tcp_port};

/// Where rspamd's compiled Hyperscan databases (its TLD list alone takes
/// half a minute or more to compile on a busy machine) are kept between
/// runs; their names are hashes of what they hold, and a missing one is
/// compiled again.
const HYPERSCAN_CACHE: &str = "/var/cache/pyzor-milter-tests/rspamd-hyperscan";

/// How long rspamd may take to listen: the first start compiles its
/// Hyperscan databases.
const RSPAMD_START: Duration = Duration::from_secs(240);

/// rspamd's own timeout for the pyzor scanner in these tests, in seconds.
pub const SCANNER_TIMEOUT_SECS: u64 = 10;

/// rspamd running as `_rspamd` from `dir`, its pyzor scanner configured by
/// the shipped contrib file pointed at `listener`; killed when dropped.
pub struct Rspamd {
    _process: Group,
    pub port: u16,
    dir: PathBuf,
}

impl Rspamd {
    pub fn start(dir: &Path, listener: SocketAddr) -> Rspamd {
        let local = dir.join("local.d");
        let private = ["db", "run", "log"].map(|name| dir.join(name));
        std::fs::create_dir_all(&local).expect("local.d");
        for path in &private {
            std::fs::create_dir_all(path).expect("rspamd's directories");
        }
        copy_files(Path::new(HYPERSCAN_CACHE), &private[0]);
        chown_rspamd(dir);
        let port = free_tcp_port();
        let write = |name: &str, text: String| {
            std::fs::write(local.join(name), text).expect("write rspamd config")
        };
        write(
            "worker-normal.inc",
            format!("bind_socket = \"127.0.0.1:{port}\";\ncount = 1;\n"),
        );
        for name in ["worker-controller.inc", "worker-proxy.inc"] {
            write(
                name,
                format!("bind_socket = \"127.0.0.1:{}\";\n", free_tcp_port()),
            );
        }
        write("worker-fuzzy.inc", "count = -1;\n".to_owned());
        write(
            "logging.inc",
            "type = \"console\";\nlevel = \"info\";\n".to_owned(),
        );
        write("redis.conf", "enabled = false;\n".to_owned());
        // No DNS query leaves the machine: a closed port on loopback.
        write(
            "options.inc",
            format!(
                "dns {{ nameserver = [\"127.0.0.1:{}\"]; }}\n",
                free_tcp_port()
            ),
        );
        let contrib = crate::util::manifest_dir().join("contrib/rspamd-external_services.conf");
        let shipped = std::fs::read_to_string(&contrib).expect("the contrib file");
        let configured = shipped
            .replace("127.0.0.1:5953", &listener.to_string())
            .replace(
                "timeout = 5.0;",
                &format!("timeout = {SCANNER_TIMEOUT_SECS}.0;"),
            );
        assert_ne!(shipped, configured, "the contrib file names 127.0.0.1:5953");
        write("external_services.conf", configured);
        let log = dir.join("rspamd.log");
        let mut command = Command::new("rspamd");
        command
            .args([
                "-f",
                "-u",
                "_rspamd",
                "-g",
                "_rspamd",
                "-c",
                "/etc/rspamd/rspamd.conf",
            ])
            .arg("--var")
            .arg(format!("LOCAL_CONFDIR={}", dir.display()))
            .arg("--var")
            .arg(format!("DBDIR={}", private[0].display()))
            .arg("--var")
            .arg(format!("RUNDIR={}", private[1].display()))
            .arg("--var")
            .arg(format!("LOGDIR={}", private[2].display()))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("rspamd log"))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("rspamd log"),
            ));
        let rspamd = Rspamd {
            _process: Group::spawn(&mut command),
            port,
            dir: dir.to_owned(),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < RSPAMD_START,
                "rspamd does not listen (apt-get install rspamd):\n{}",
                rspamd.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if std::fs::create_dir_all(HYPERSCAN_CACHE).is_ok() {
            copy_files(&private[0], Path::new(HYPERSCAN_CACHE));
        }
        rspamd
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("rspamd.log")).unwrap_or_default()
    }

    /// `rspamc symbols` for `message`: its output, and how long it took.
    pub fn symbols(&self, message: &[u8]) -> (String, Duration) {
        let started = Instant::now();
        let output = crate::util::run(
            Command::new("rspamc")
                .arg("-h")
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("symbols"),
            message,
        );
        assert_eq!(output.exit(), "0", "{}", output.stderr_text());
        (output.stdout_text(), started.elapsed())
    }
}

/// The Hyperscan files (`*.hs*`) of `from` copied into `to`, where missing.
fn copy_files(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let target = to.join(&name);
        if name.to_string_lossy().contains(".hs") && !target.exists() {
            let _ = std::fs::copy(entry.path(), target);
        }
    }
}

/// rspamd drops to `_rspamd`, which must read its configuration and write
/// its directories.
fn chown_rspamd(dir: &Path) {
    let output = crate::util::run(
        Command::new("chown")
            .args(["-R", "_rspamd:_rspamd"])
            .arg(dir),
        b"",
    );
    assert_eq!(output.exit(), "0", "{}", output.stderr_text());
}

/// The `PYZOR` line of `rspamc symbols` output: `(weight, options)`.
pub fn pyzor_symbol(output: &str) -> Option<(f64, String)> {
    let line = output
        .lines()
        .find(|line| line.trim_start().starts_with("Symbol: PYZOR "))?;
    let (_, rest) = line.split_once('(')?;
    let (weight, rest) = rest.split_once(')')?;
    let options = rest.trim().trim_start_matches('[').trim_end_matches(']');
    Some((weight.parse().ok()?, options.to_owned()))
}

/// Our rspamd listener alone, in process on its own runtime, with this
/// configuration text (its sockets replaced by 127.0.0.1:0).
pub struct Listener {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    pub fn start(text: &str) -> Listener {
        let text = format!("socket = \"\"\nrspamd_socket = \"inet:127.0.0.1:1\"\n{text}");
        let config = config::parse(&text, Path::new("test.toml")).expect("valid test config");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let socket = config::Socket::Inet {
                    host: "127.0.0.1".into(),
                    port: 0,
                };
                let listener = milter::bind(&socket, 0o600).await.expect("bind");
                ready_tx
                    .send(listener.local_addr().expect("a TCP address"))
                    .expect("ready");
                let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
                milter::serve(None, Some(listener), config, reload_rx, async {
                    let _ = stopped.await;
                })
                .await
                .expect("the listener ran");
            });
        });
        let address = ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the listener started");
        Listener {
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
