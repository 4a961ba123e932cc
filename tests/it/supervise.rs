//! What a supervisor sees of the daemons: readiness and reloads told to a
//! notify socket as systemd's `Type=notify` units expect (the binary
//! started with `NOTIFY_SOCKET` pointing at a datagram socket the test
//! owns, as systemd would), and a non-zero exit with one clear line when a
//! daemon can no longer serve: a database that cannot be opened, a serving
//! thread whose socket is lost, a milter whose socket file is removed;
//! and daemons out of file descriptors that only pause accepting.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyzor_milter::server::{self, Context};
use pyzor_milter::storage::{self, EngineName, Storage};

use crate::server_util::{ChildGuard, ask, free_port};
use crate::util::{our_binary, temp_dir};

/// How long a daemon may take to start or stop on a loaded 2-core machine.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);

const PING: &[u8] = b"Op: ping\nThread: 11\nPV: 2.1\n\n";

/// The notify socket a test owns, as systemd's `/run/systemd/notify`.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Self { path, socket }
    }

    /// The next notification, its lines; panics when none comes in time.
    fn next(&self, limit: Duration) -> Vec<String> {
        self.socket
            .set_read_timeout(Some(limit))
            .expect("set the timeout");
        let mut buffer = [0u8; 4096];
        let length = self
            .socket
            .recv(&mut buffer)
            .expect("a notification within the limit");
        String::from_utf8_lossy(&buffer[..length])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Nothing more is sent within `wait`.
    fn assert_quiet(&self, wait: Duration) {
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buffer = [0u8; 4096];
        if let Ok(length) = self.socket.recv(&mut buffer) {
            panic!(
                "unexpected notification {:?}",
                String::from_utf8_lossy(&buffer[..length])
            );
        }
    }
}

/// Starts our binary with these arguments, telling `notify`, its stderr
/// kept for [`exit_of`].
fn start(arguments: &[&std::ffi::OsStr], notify: &NotifySocket) -> ChildGuard {
    let child = Command::new(our_binary())
        .args(arguments)
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start our binary");
    ChildGuard(child)
}

/// The milter on `socket` (as `--socket` takes it), asking a server that
/// is not there.
fn start_milter(dir: &Path, socket: &str, notify: &NotifySocket) -> ChildGuard {
    let config = dir.join("milter.toml");
    std::fs::write(&config, "servers = [\"127.0.0.1:9\"]\n").expect("config");
    let arguments = [
        "milter",
        "--config",
        config.to_str().expect("utf-8"),
        "--socket",
        socket,
    ];
    start(&arguments.map(std::ffi::OsStr::new), notify)
}

/// Sends `signal` to the child we started.
pub(crate) fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill only sends a signal to our own child.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill");
}

/// Waits for the child to exit; its status and everything it wrote to
/// stderr.
fn exit_of(mut child: ChildGuard) -> (ExitStatus, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.0.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            return (status, stderr);
        }
        assert!(start.elapsed() < LIMIT, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of `stderr` that tracing wrote at ERROR.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains("ERROR"))
        .collect()
}

/// Asserts the reload and stop notifications, in order, then the exit.
fn reload_then_stop(child: ChildGuard, notify: &NotifySocket, reload_signal: libc::c_int) {
    signal(&child.0, reload_signal);
    let reloading = notify.next(LIMIT);
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    assert!(reloading[1].starts_with("MONOTONIC_USEC="), "{reloading:?}");
    assert_eq!(notify.next(LIMIT), ["READY=1"]);
    signal(&child.0, libc::SIGTERM);
    assert_eq!(notify.next(LIMIT), ["STOPPING=1"]);
    let (status, stderr) = exit_of(child);
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn pyzord_tells_systemd_it_is_ready_once_it_answers() {
    let home = temp_dir();
    let notify = NotifySocket::bind(home.path());
    let port = free_port(true);
    let port_text = port.to_string();
    let arguments = ["pyzord", "-a", "127.0.0.1", "-p", &port_text, "--homedir"];
    let mut arguments = arguments.map(std::ffi::OsStr::new).to_vec();
    arguments.push(home.path().as_os_str());
    let child = start(&arguments, &notify);
    assert_eq!(notify.next(LIMIT), ["READY=1"]);
    // Ready means the database is open and the port answers now.
    assert!(home.path().join("pyzord.sqlite").exists());
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let answer = ask(address, PING, LIMIT).expect("pyzord answers once ready");
    assert!(answer.starts_with(b"Code: 200"), "{answer:?}");
    notify.assert_quiet(Duration::from_millis(300));
    reload_then_stop(child, &notify, libc::SIGUSR1);
}

#[test]
fn the_milter_tells_systemd_it_is_ready_once_it_listens() {
    let dir = temp_dir();
    let notify = NotifySocket::bind(dir.path());
    let port = free_port(false);
    let child = start_milter(dir.path(), &format!("inet:127.0.0.1:{port}"), &notify);
    assert_eq!(notify.next(LIMIT), ["READY=1"]);
    // Ready means an MTA connecting now is accepted, not refused.
    TcpStream::connect(("127.0.0.1", port)).expect("the milter listens once ready");
    notify.assert_quiet(Duration::from_millis(300));
    reload_then_stop(child, &notify, libc::SIGHUP);
}

#[test]
fn pyzord_exits_non_zero_when_its_database_cannot_be_opened() {
    let home = temp_dir();
    let notify = NotifySocket::bind(home.path());
    let dsn = home.path().join("missing").join("pyzord.sqlite");
    let log = home.path().join("pyzord.log");
    let port = free_port(true).to_string();
    let arguments = ["pyzord", "-a", "127.0.0.1", "-p", &port, "--homedir"];
    let mut arguments = arguments.map(std::ffi::OsStr::new).to_vec();
    arguments.extend([home.path().as_os_str(), "--dsn".as_ref(), dsn.as_os_str()]);
    arguments.extend(["--log-file".as_ref(), log.as_os_str()]);
    let (status, stderr) = exit_of(start(&arguments, &notify));
    assert_eq!(status.code(), Some(1), "{stderr}");
    // One line, on stderr (the journal) and in the log file alike.
    let expected = format!(
        " ERROR pyzor_milter::cli::server: cannot open the Sqlite database \"{}\": ",
        dsn.display()
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(&expected), "{stderr}");
    let log = std::fs::read_to_string(&log).expect("the log file");
    // The same line but for its time stamp, each layer taking its own.
    let untimed = |line: &str| line.split_once(' ').map(|(_, rest)| rest.to_owned());
    let logged: Vec<_> = error_lines(&log).into_iter().map(untimed).collect();
    assert_eq!(logged, [untimed(lines[0])], "{log}");
    // Never ready.
    notify.assert_quiet(Duration::from_millis(100));
}

#[test]
fn a_serving_thread_whose_socket_is_lost_ends_run_with_an_error() {
    let dir = temp_dir();
    let dsn = dir.path().join("pyzord.sqlite");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = runtime.block_on(async {
        let storage: Arc<dyn Storage> =
            storage::open(EngineName::Sqlite, dsn.to_str().expect("utf-8"), None)
                .await
                .expect("open SQLite")
                .into();
        let context = Context::from_files(
            storage,
            dir.path().join("pyzord.passwd"),
            dir.path().join("pyzord.access"),
        )
        .expect("the default access");
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = socket.local_addr().expect("address");
        let descriptor = socket.as_raw_fd();
        let serving = tokio::spawn(server::run(
            socket,
            Arc::new(context),
            std::future::pending(),
        ));
        let answered = tokio::task::spawn_blocking(move || ask(address, PING, LIMIT))
            .await
            .expect("ask");
        assert!(answered.is_some(), "pyzord answers before");
        // The socket's descriptor now names /dev/null, as when a socket is
        // closed under a server: every serving thread's next receive fails.
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        // SAFETY: dup2 atomically replaces the descriptor the server owns;
        // it stays open (on /dev/null) until the server closes it.
        assert!(unsafe { libc::dup2(null.as_raw_fd(), descriptor) } >= 0);
        tokio::time::timeout(LIMIT, serving)
            .await
            .expect("run ends")
            .expect("run does not panic")
    });
    let error = outcome.expect_err("run ends with an error");
    assert_eq!(error.to_string(), "the socket cannot receive any more");
    let inner = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<server::ServeError>())
        .expect("a ServeError");
    let server::ServeError::SocketLost(cause) = inner else {
        panic!("{inner:?}");
    };
    assert_eq!(cause.raw_os_error(), Some(libc::ENOTSOCK));
}

#[test]
fn the_milter_exits_non_zero_when_its_socket_file_is_removed() {
    let dir = temp_dir();
    let notify = NotifySocket::bind(dir.path());
    let path = dir.path().join("milter.sock");
    let child = start_milter(dir.path(), &format!("unix:{}", path.display()), &notify);
    assert_eq!(notify.next(LIMIT), ["READY=1"]);
    std::os::unix::net::UnixStream::connect(&path).expect("the milter listens");
    std::fs::remove_file(&path).expect("remove the socket file");
    let (status, stderr) = exit_of(child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let expected = format!(
        "the milter stopped: the socket \"{}\" was removed or replaced",
        path.display()
    );
    assert!(errors[0].ends_with(&expected), "{stderr}");
}

/// Lowers a child's limit of open files so that only a few more
/// descriptors fit: new ones take the lowest free numbers, and none may
/// reach the limit.
fn leave_few_descriptors(pid: u32) {
    let highest_low = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's descriptors")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&fd| fd < 64)
        .max()
        .expect("some descriptors");
    let limit = libc::rlimit {
        rlim_cur: highest_low + 4,
        rlim_max: 1024,
    };
    // SAFETY: prlimit only changes the limits of our own child.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn the_milter_pauses_accepting_when_out_of_descriptors_and_goes_on() {
    let dir = temp_dir();
    let notify = NotifySocket::bind(dir.path());
    let port = free_port(false);
    let milter: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut child = start_milter(dir.path(), &format!("inet:{milter}"), &notify);
    assert_eq!(notify.next(LIMIT), ["READY=1"]);
    let stderr = child.0.stderr.take().expect("stderr");
    let lines = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    leave_few_descriptors(child.0.id());
    // More connections than descriptors left: the accepts past them fail
    // with EMFILE, again and again while the connections stay open.
    let held: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(milter).expect("the kernel completes the handshake"))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "the milter must not exit when out of descriptors"
    );
    drop(held);
    // Descriptors free again: a message goes through.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let message = crate::milter::util::spam("descriptors");
    let envelope = crate::milter::util::Envelope::default();
    let (actions, _) = runtime
        .block_on(async {
            let sent = crate::milter::util::send(milter, &envelope, &message);
            tokio::time::timeout(LIMIT, sent).await
        })
        .expect("the milter answers again");
    let header = crate::milter::util::added_header(&actions).expect("a header");
    assert!(header.starts_with("error; digest="), "{header}");
    signal(&child.0, libc::SIGTERM);
    assert_eq!(child.0.wait().expect("exit").code(), Some(0));
    let stderr = lines.join().expect("stderr");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("cannot accept a connection"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning for the shortage: {stderr}");
    assert!(
        warnings[0].ends_with("pausing accepting for 100 ms: Too many open files (os error 24)"),
        "{stderr}"
    );
}

/// Whether a process has exited: no such process, or a zombie that its
/// new parent (init, after the double fork) has not reaped yet.
fn gone(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
fn pyzord_detaches_as_python_pyzord_does() {
    let home = temp_dir();
    let output = home.path().join("pyzord.out");
    let pid_file = home.path().join("pyzord.pid");
    let port = free_port(true);
    // The command returns once the daemon is on its own.
    let status = Command::new(our_binary())
        .args(["pyzord", "--homedir"])
        .arg(home.path())
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--detach"])
        .arg(&output)
        .arg("--pid-file")
        .arg(&pid_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run our pyzord");
    assert_eq!(status.code(), Some(0));
    crate::server_util::wait_for("the pid file", LIMIT, || {
        std::fs::read_to_string(&pid_file).is_ok_and(|text| text.ends_with('\n'))
    });
    let pid: libc::pid_t = std::fs::read_to_string(&pid_file)
        .expect("the pid file")
        .trim()
        .parse()
        .expect("a pid");
    // Stopped when the test ends, however it ends.
    struct Daemon(libc::pid_t);
    impl Drop for Daemon {
        fn drop(&mut self) {
            // SAFETY: kill only signals the daemon this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let daemon = Daemon(pid);
    // The pid file is written before the port is bound: ask until it is.
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    crate::server_util::wait_for("the daemon to answer", LIMIT, || {
        ask(address, PING, Duration::from_millis(200))
            .is_some_and(|answer| answer.starts_with(b"Code: 200"))
    });
    // SAFETY: kill only signals the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // It removes its pid file as it stops, and is gone.
    crate::server_util::wait_for("the daemon to stop", LIMIT, || {
        !pid_file.exists() && gone(pid)
    });
    // Gone: nothing left to stop (its pid may be another's by now).
    std::mem::forget(daemon);
}

#[test]
fn pyzord_metrics_pause_accepting_when_out_of_descriptors_and_go_on() {
    let home = temp_dir();
    let notify = NotifySocket::bind(home.path());
    let log = home.path().join("pyzord.log");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port(false))
        .parse()
        .expect("address");
    let port = free_port(true).to_string();
    let metrics_text = metrics.to_string();
    let arguments = [
        "pyzord",
        "-a",
        "127.0.0.1",
        "-p",
        &port,
        "--metrics-address",
    ];
    let mut arguments = arguments.map(std::ffi::OsStr::new).to_vec();
    arguments.extend([
        metrics_text.as_ref(),
        "--homedir".as_ref(),
        home.path().as_os_str(),
    ]);
    arguments.extend(["--log-file".as_ref(), log.as_os_str()]);
    let child = start(&arguments, &notify);
    assert_eq!(notify.next(LIMIT), ["READY=1"]);
    leave_few_descriptors(child.0.id());
    // Connections that send nothing hold their descriptors for the
    // request's 5-second read: the accepts past the limit fail.
    let held: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(metrics).expect("the kernel completes the handshake"))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    drop(held);
    let scraped = (|| {
        let mut stream = TcpStream::connect(metrics).ok()?;
        stream.set_read_timeout(Some(LIMIT)).ok()?;
        std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    })()
    .expect("the metrics are served again");
    assert!(scraped.starts_with("HTTP/1.0 200 OK"), "{scraped}");
    signal(&child.0, libc::SIGTERM);
    let (status, stderr) = exit_of(child);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let log = std::fs::read_to_string(&log).expect("the log file");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("cannot accept a metrics connection"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning for the shortage: {log}");
    assert!(
        warnings[0].ends_with("Too many open files (os error 24)"),
        "{log}"
    );
}
