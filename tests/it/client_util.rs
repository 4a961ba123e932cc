//! Helpers for the `pyzor` client tests: a client homedir, running Python's
//! `pyzor` and ours side by side, servers that never answer or answer
//! badly.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::server_util::PythonPyzord;
use crate::util::{self, Output};

/// A client homedir with its servers file.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub fn new(servers: &[String]) -> Home {
        let home = Home {
            dir: util::temp_dir(),
        };
        home.write("servers", &servers.join("\n"));
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).expect("write a homedir file");
    }

    /// `--homedir HOME` followed by `args`.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let homedir = self.path().to_str().expect("utf-8 temp path");
        [&["--homedir", homedir], args].concat()
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }
}

/// `host:port` of a socket address, as a servers file line.
pub fn line(address: SocketAddr) -> String {
    address.to_string()
}

/// Python's `pyzor` with these arguments (no controlling terminal, so
/// `getpass` reads stdin).
pub fn python(args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new("setsid");
    command.arg(util::reference_pyzor()).args(args);
    util::run(&mut command, stdin)
}

/// Our `pyzor-milter pyzor` with these arguments.
pub fn ours(args: &[&str], stdin: &[u8]) -> Output {
    let mut command = Command::new("setsid");
    command.arg(util::our_binary()).arg("pyzor").args(args);
    util::run(&mut command, stdin)
}

/// Runs both with `--homedir home` and asserts equal exit codes and equal
/// stdout after `mask`; returns (python, ours).
pub fn compare_masked(
    home: &Home,
    args: &[&str],
    stdin: &[u8],
    mask: impl Fn(&str) -> String,
) -> (Output, Output) {
    let full = home.args(args);
    let expected = python(&full, stdin);
    let actual = ours(&full, stdin);
    assert_eq!(
        (mask(&actual.stdout_text()), actual.exit()),
        (mask(&expected.stdout_text()), expected.exit()),
        "pyzor {args:?}: ours (left) differs from Python's (right)\nour stderr: {}\nPython's stderr: {}",
        actual.stderr_text(),
        expected.stderr_text()
    );
    assert!(
        !actual.stderr_text().contains("panicked"),
        "we panicked: {}",
        actual.stderr_text()
    );
    (expected, actual)
}

/// [`compare_masked`] without a mask.
pub fn compare(home: &Home, args: &[&str], stdin: &[u8]) -> (Output, Output) {
    compare_masked(home, args, stdin, str::to_owned)
}

/// Lines sorted: Python prints the answers of several servers in the order
/// they arrive, we in server order.
pub fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.join("\n")
}

/// Python pyzord with its own homedir (gdbm database), stopped on drop.
pub struct Pyzord {
    pub address: SocketAddr,
    _homedir: tempfile::TempDir,
    _server: PythonPyzord,
}

impl Pyzord {
    pub fn start() -> Pyzord {
        Pyzord::with_files(&[])
    }

    /// With files (e.g. `pyzord.passwd`, `pyzord.access`) in its homedir.
    pub fn with_files(files: &[(&str, &str)]) -> Pyzord {
        let homedir = util::temp_dir();
        for (name, text) in files {
            std::fs::write(homedir.path().join(name), text).expect("write a pyzord file");
        }
        let server = PythonPyzord::start(homedir.path(), &[], &[]);
        Pyzord {
            address: server.address,
            _homedir: homedir,
            _server: server,
        }
    }
}

/// A UDP server on 127.0.0.1 that answers each request with what `reply`
/// makes of it (or nothing); stops on drop.
pub struct FakeServer {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(reply: impl Fn(&str) -> Option<Vec<u8>> + Send + 'static) -> FakeServer {
        FakeServer::start_on(([127, 0, 0, 1], 0).into(), reply)
    }

    /// [`FakeServer::start`] on a chosen address.
    pub fn start_on(
        address: SocketAddr,
        reply: impl Fn(&str) -> Option<Vec<u8>> + Send + 'static,
    ) -> FakeServer {
        FakeServer::sending_on(address, move |request| reply(request).into_iter().collect())
    }

    /// A server that answers each request with several datagrams, in order.
    pub fn sending(reply: impl Fn(&str) -> Vec<Vec<u8>> + Send + 'static) -> FakeServer {
        FakeServer::sending_on(([127, 0, 0, 1], 0).into(), reply)
    }

    fn sending_on(
        address: SocketAddr,
        reply: impl Fn(&str) -> Vec<Vec<u8>> + Send + 'static,
    ) -> FakeServer {
        let socket = UdpSocket::bind(address).expect("bind a fake server");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let address = socket.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buffer = vec![0; 65536];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                let request = String::from_utf8_lossy(&buffer[..length]).into_owned();
                for answer in reply(&request) {
                    let _ = socket.send_to(&answer, peer);
                }
            }
        });
        FakeServer {
            address,
            stop,
            thread: Some(thread),
        }
    }

    /// A server that never answers (a bound socket that only reads).
    pub fn silent() -> FakeServer {
        FakeServer::start(|_| None)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `Thread` header of a request.
pub fn thread_of(request: &str) -> String {
    request
        .lines()
        .find_map(|line| line.strip_prefix("Thread: "))
        .unwrap_or("0")
        .to_owned()
}

/// A symlink named `pyzor` to our binary, in `dir`.
pub fn pyzor_link(dir: &Path) -> PathBuf {
    let link = dir.join("pyzor");
    std::os::unix::fs::symlink(util::our_binary(), &link).expect("link pyzor to our binary");
    link
}
