//! Helpers for the pyzord tests: our server in-process on port 0, Python
//! pyzord, redis-server and MariaDB as child processes on free ports in
//! temporary directories, all stopped when dropped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyzor_milter::server::config::DEFAULT_CLEANUP_AGE_SECS;
use pyzor_milter::server::{self, Context};
use pyzor_milter::storage::{self, EngineName, Storage};

const SETUP_HINT: &str = "run scripts/test once (it installs Python pyzord 1.1.2 in \
     .cache/ref-server, redis-server, mariadb-server and python3-mysqldb)";

pub use crate::util::{reference_pyzor, reference_pyzord, reference_server_python, temp_dir};
pub use tempfile::TempDir;

/// A fresh homedir whose pyzord.access lets anonymous users do
/// everything.
pub fn open_homedir() -> TempDir {
    let home = temp_dir();
    std::fs::write(
        home.path().join("pyzord.access"),
        "all : anonymous : allow\n",
    )
    .expect("access");
    home
}

/// A port that was free a moment ago (UDP or TCP as asked).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        socket.local_addr().expect("address").port()
    } else {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        listener.local_addr().expect("address").port()
    }
}

/// Sends one datagram and waits up to `wait` for the answer.
pub fn ask(server: SocketAddr, datagram: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let local = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let socket = UdpSocket::bind(local).expect("bind client");
    socket.set_read_timeout(Some(wait)).expect("timeout");
    socket.send_to(datagram, server).expect("send");
    let mut buffer = vec![0u8; 65536];
    let (length, _) = socket.recv_from(&mut buffer).ok()?;
    Some(buffer[..length].to_vec())
}

/// A child process killed when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `ready` holds, or panics after `limit` naming `what`.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < limit,
            "{what} did not come up: {SETUP_HINT}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A ping every pyzord answers.
pub const PING: &[u8] = b"Op: ping\nThread: 1\nPV: 2.1\n\n";

/// Whether the server at `address` answers a ping.
pub fn answers_ping(address: SocketAddr) -> bool {
    ask(address, PING, Duration::from_millis(200)).is_some()
}

/// A UDP address on `host` whose port was free a moment ago.
pub fn free_address(host: IpAddr) -> SocketAddr {
    let socket = UdpSocket::bind((host, 0)).expect("bind udp");
    socket.local_addr().expect("address")
}

/// Starts our binary as pyzord on `address`, homedir `home`, with `extra`
/// arguments, stdout discarded and stderr to `stderr`; the caller waits
/// until it answers.
pub fn spawn_pyzord(address: SocketAddr, home: &Path, extra: &[&str], stderr: Stdio) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_pyzor-milter"))
        .args(["pyzord", "--homedir"])
        .arg(home)
        .args(["-a", &address.ip().to_string()])
        .args(["-p", &address.port().to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start our pyzord");
    ChildGuard(child)
}

/// Our pyzord as a child process on SQLite in `home` with `extra`
/// arguments, answering.
pub fn start_child_pyzord(home: &Path, extra: &[&str]) -> (ChildGuard, SocketAddr) {
    start_child_pyzord_on(Ipv4Addr::LOCALHOST.into(), home, extra)
}

/// [`start_child_pyzord`] on another host address (`::1`, say).
pub fn start_child_pyzord_on(
    host: IpAddr,
    home: &Path,
    extra: &[&str],
) -> (ChildGuard, SocketAddr) {
    let address = free_address(host);
    let child = spawn_pyzord(address, home, extra, Stdio::null());
    wait_for("our pyzord", Duration::from_secs(20), || {
        answers_ping(address)
    });
    (child, address)
}

/// The sums of the metric lines that start with each prefix, scraped from
/// pyzord's metrics listener at `address`.
pub fn metric_sums<const N: usize>(address: SocketAddr, prefixes: [&str; N]) -> [u64; N] {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).expect("metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("ask");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("metrics text");
    prefixes.map(|prefix| {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    })
}

/// Python pyzord on 127.0.0.1 with its homedir and extra arguments.
pub struct PythonPyzord {
    pub address: SocketAddr,
    _child: ChildGuard,
}

impl PythonPyzord {
    pub fn start(homedir: &Path, extra: &[&str], env: &[(&str, String)]) -> Self {
        let port = free_port(true);
        let log = std::fs::File::create(homedir.join("python-pyzord.log")).expect("log file");
        let mut command = Command::new(reference_pyzord());
        command
            .arg("--homedir")
            .arg(homedir)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = ChildGuard(command.spawn().expect("start Python pyzord"));
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        wait_for("Python pyzord", Duration::from_secs(20), || {
            ask(
                address,
                b"Op: ping\nThread: 1\nPV: 2.1\n\n",
                Duration::from_millis(200),
            )
            .is_some()
        });
        Self {
            address,
            _child: child,
        }
    }

    /// The process id, to signal it.
    pub fn pid(&self) -> u32 {
        self._child.0.id()
    }
}

/// Our server, in-process on its own runtime and port 0.
pub struct OurServer {
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OurServer {
    /// Serves `engine`/`dsn` with the homedir's pyzord.passwd and
    /// pyzord.access.
    pub fn start(engine: EngineName, dsn: &str, homedir: &Path) -> Self {
        Self::start_at(engine, dsn, homedir, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// As [`OurServer::start`], listening on `address`.
    pub fn start_at(engine: EngineName, dsn: &str, homedir: &Path, address: SocketAddr) -> Self {
        let options = storage::OpenOptions {
            max_age_secs: Some(DEFAULT_CLEANUP_AGE_SECS),
            ..storage::OpenOptions::default()
        };
        Self::launch(engine, dsn, homedir, address, options)
    }

    /// As [`OurServer::start`], with the engine's options.
    pub fn start_with(
        engine: EngineName,
        dsn: &str,
        homedir: &Path,
        options: storage::OpenOptions,
    ) -> Self {
        let address = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::launch(engine, dsn, homedir, address, options)
    }

    fn launch(
        engine: EngineName,
        dsn: &str,
        homedir: &Path,
        address: SocketAddr,
        options: storage::OpenOptions,
    ) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let dsn = dsn.to_owned();
        let homedir = homedir.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let storage: Arc<dyn Storage> = storage::open_with(engine, &dsn, &options)
                    .await
                    .expect("open our storage")
                    .into();
                let context = Context::from_files(
                    storage,
                    homedir.join("pyzord.passwd"),
                    homedir.join("pyzord.access"),
                )
                .expect("access files");
                let socket = tokio::net::UdpSocket::bind(address).await.expect("bind");
                ready_tx
                    .send(socket.local_addr().expect("address"))
                    .expect("ready");
                server::run(socket, Arc::new(context), async {
                    let _ = stopped.await;
                })
                .await
                .expect("server ran");
            });
        });
        let address = ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("our server started");
        Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for OurServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// redis-server on a free port with its data in `dir`; [`RedisServer::kill`]
/// and [`RedisServer::restart`] crash it and bring it back on the same port
/// and data.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: ChildGuard,
}

impl RedisServer {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// With more redis-server arguments (`--appendonly yes`), which come
    /// after and override the defaults here.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let port = free_port(false);
        let extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
        let child = Self::spawn(dir, port, &extra);
        Self {
            port,
            dir: dir.to_owned(),
            extra,
            child,
        }
    }

    fn spawn(dir: &Path, port: u16, extra: &[String]) -> ChildGuard {
        let child = redis_command(dir, port)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start redis-server ({error}): {SETUP_HINT}"));
        let guard = ChildGuard(child);
        wait_for("redis-server", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        guard
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.dir, self.port, &self.extra);
    }

    /// The process id, for signals such as SIGSTOP.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// redis-server on 127.0.0.1:`port` with its data in `dir`, without
/// snapshots; more arguments may follow.
pub fn redis_command(dir: &Path, port: u16) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", ""])
        .arg("--dir")
        .arg(dir);
    command
}

/// The database and the TCP user the MariaDB tests use.
const CREATE_USER: &str = "CREATE DATABASE IF NOT EXISTS pyzor; \
     CREATE USER IF NOT EXISTS 'pyzor'@'%' IDENTIFIED BY 'secret'; \
     GRANT ALL ON pyzor.* TO 'pyzor'@'%'";

/// MariaDB on a free port with a fresh data directory in `dir`, with the
/// database `pyzor` and the user `pyzor` (password `secret`) over TCP;
/// [`Mariadb::kill`] and [`Mariadb::restart`] crash it and bring it back on
/// the same port and data.
pub struct Mariadb {
    pub port: u16,
    dir: PathBuf,
    child: ChildGuard,
}

impl Mariadb {
    pub fn start(dir: &Path) -> Self {
        let status = Command::new("mariadb-install-db")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--user=root", "--auth-root-authentication-method=normal"])
            .args(["--skip-test-db", "--skip-name-resolve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|error| {
                panic!("cannot run mariadb-install-db ({error}): {SETUP_HINT}")
            });
        assert!(status.success(), "mariadb-install-db failed: {SETUP_HINT}");
        let port = free_port(false);
        let child = Self::spawn(dir, port);
        Self {
            port,
            dir: dir.to_owned(),
            child,
        }
    }

    fn spawn(dir: &Path, port: u16) -> ChildGuard {
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .args([
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
            ])
            .arg(format!("--port={port}"))
            .args(["--skip-log-bin", "--innodb-buffer-pool-size=16M"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("mariadb.log"))
                    .expect("log"),
            )
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start mariadbd ({error}): {SETUP_HINT}"));
        let guard = ChildGuard(child);
        let socket = dir.join("mysqld.sock");
        wait_for("mariadbd", Duration::from_secs(60), || {
            Command::new("mariadb")
                .arg(format!("--socket={}", socket.display()))
                .args(["-uroot", "-e", CREATE_USER])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
        guard
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// Starts it again on the same port and data directory (InnoDB
    /// recovers what was committed).
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.dir, self.port);
    }

    /// The process id, for signals such as SIGSTOP.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}
