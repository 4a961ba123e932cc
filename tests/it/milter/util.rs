//! Helpers for the milter tests: the milter in process on 127.0.0.1:0, our
//! pyzord in process with digests reported to it, and an MTA played by
//! indymilter-test.

use std::ffi::CString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use indymilter_test::{EomActions, MacroStage, Status, TestConnection};
use pyzor_milter::client::{Accounts, Client, ServerAddress};
use pyzor_milter::milter::{self, config};
use pyzor_milter::protocol::Op;
use pyzor_milter::storage::EngineName;
use tokio::sync::{mpsc, oneshot};

use crate::server_util::OurServer;
use crate::util::our_binary;
use crate::util::reference::python_digests;

/// A service on its own runtime thread, stopped when dropped.
pub struct Running {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub reload: Option<mpsc::Sender<milter::Config>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The milter with this configuration text (no socket key: port 0).
pub fn start_milter(text: &str) -> Running {
    let config = config::parse(text, Path::new("test.toml")).expect("valid test config");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let (reload, reload_rx) = mpsc::channel(1);
    let thread = std::thread::spawn(move || {
        runtime().block_on(async move {
            let socket = config::Socket::Inet {
                host: "127.0.0.1".into(),
                port: 0,
            };
            let listener = milter::bind(&socket, 0o600).await.expect("bind the milter");
            ready_tx
                .send(listener.local_addr().expect("a TCP address"))
                .expect("ready");
            milter::run(listener, config, reload_rx, async {
                let _ = stopped.await;
            })
            .await
            .expect("the milter ran");
        });
    });
    let address = ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the milter started");
    Running {
        address,
        stop: Some(stop),
        thread: Some(thread),
        reload: Some(reload),
    }
}

/// Our pyzord on SQLite in `dir`, anonymous users allowed every op
/// (whitelist too), through its pyzord.access file.
pub fn start_pyzord(dir: &Path) -> OurServer {
    start_pyzord_at(dir, SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// As [`start_pyzord`], listening on `address`.
pub fn start_pyzord_at(dir: &Path, address: SocketAddr) -> OurServer {
    std::fs::write(dir.join("pyzord.access"), "all : anonymous : allow\n")
        .expect("write pyzord.access");
    let database = dir.join("pyzord.sqlite");
    let dsn = database.to_str().expect("utf-8");
    OurServer::start_at(EngineName::Sqlite, dsn, dir, address)
}

/// Sends `op` for `digest` to the server `times` times.
pub async fn tell(server: SocketAddr, op: Op, digest: &str, times: usize) {
    let client = Client::new(
        vec![ServerAddress::new(server.ip().to_string(), server.port())],
        Accounts::new(),
        Duration::from_secs(5),
    );
    for _ in 0..times {
        let answers = client.ask_all(op, &[digest.to_owned()], None).await;
        let response = answers[0].result.as_ref().expect("the server answers");
        assert_eq!(response.code(), Ok(200), "{op} {digest}: {response:?}");
    }
}

/// A message file in `dir` and Python pyzor's digest of it.
pub fn message_file(dir: &Path, name: &str, text: &[u8]) -> (PathBuf, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the message");
    let digest = python_digests(std::slice::from_ref(&path))
        .remove(0)
        .expect("Python pyzor digests the message")
        .digest;
    (path, digest)
}

/// A text message of its own: `seed` makes the body (and digest) distinct.
pub fn spam(seed: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@example.org>\r\nTo: rcpt@example.net\r\nSubject: offer {seed}\r\n\
         Message-ID: <{seed}@example.org>\r\n\r\n\
         Dear friend, this is the offer {seed} of a lifetime for you.\r\n\
         Reply today to claim your prize number {seed} before it expires.\r\n\
         Nothing to pay now, only a small fee later for the transfer.\r\n\
         Best regards from the prize committee of {seed}.\r\n"
    )
    .into_bytes()
}

/// Which MTA's macro habits to play.
#[derive(Clone, Copy, Debug)]
pub enum Mta {
    /// Queue id from DATA on, `{auth_authen}` at MAIL.
    Postfix,
    /// Queue id with MAIL FROM, `{mail_host}` with a final dot.
    Sendmail,
}

/// The MTA side of one message.
pub struct Envelope<'a> {
    pub mta: Mta,
    pub client: &'a str,
    pub auth: Option<&'a str>,
    pub sender: &'a str,
    pub recipients: &'a [&'a str],
}

impl Default for Envelope<'_> {
    fn default() -> Self {
        Envelope {
            mta: Mta::Postfix,
            client: "192.0.2.25",
            auth: None,
            sender: "<sender@example.org>",
            recipients: &["<rcpt@example.net>"],
        }
    }
}

/// Splits a message file into headers (name, value as the MTA passes it:
/// one leading space removed, folds joined by LF) and body.
pub fn split_message(message: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let (head, body) = match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (&message[..at], message[at + 4..].to_vec()),
        None => (message, Vec::new()),
    };
    let head = String::from_utf8_lossy(head);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push('\n');
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    (headers, body)
}

/// The message the milter rebuilds from what [`send`] passes it: each
/// header as `Name: value` (folds as CRLF, NULs dropped as `send` drops
/// them), a blank line, the body.
pub fn rebuild(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut text = Vec::new();
    for (name, value) in headers {
        let value = value.replace('\0', "").replace('\n', "\r\n");
        text.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    text.extend_from_slice(b"\r\n");
    text.extend_from_slice(body);
    text
}

/// Plays one SMTP session through the milter; returns the end-of-message
/// actions and status.
pub async fn send(
    milter: SocketAddr,
    envelope: &Envelope<'_>,
    message: &[u8],
) -> (EomActions, Status) {
    let mut conn = TestConnection::open(milter)
        .await
        .expect("connect to the milter");
    let ip: std::net::IpAddr = envelope.client.parse().expect("client ip");
    conn.macros(
        MacroStage::Connect,
        [("j", "mx.example.net"), ("{daemon_name}", "mta")],
    )
    .await
    .expect("macros");
    conn.connect("client.example", (ip, 41000))
        .await
        .expect("connect");
    let mut mail_macros: Vec<(&str, &str)> = Vec::new();
    if let Mta::Sendmail = envelope.mta {
        mail_macros.push(("i", "5A1B2c3D000123"));
        mail_macros.push(("{mail_host}", "example.org."));
    }
    if let Some(user) = envelope.auth {
        mail_macros.push(("{auth_authen}", user));
        mail_macros.push(("{auth_type}", "PLAIN"));
    }
    if !mail_macros.is_empty() {
        conn.macros(MacroStage::Mail, mail_macros)
            .await
            .expect("macros");
    }
    conn.mail([envelope.sender]).await.expect("mail");
    for recipient in envelope.recipients {
        conn.rcpt([*recipient]).await.expect("rcpt");
    }
    if let Mta::Postfix = envelope.mta {
        conn.macros(MacroStage::Data, [("i", "4XyZ1234AB")])
            .await
            .expect("macros");
    }
    let (headers, body) = split_message(message);
    for (name, value) in headers {
        let value = CString::new(value.replace('\0', "")).expect("no NUL");
        conn.header(name.as_str(), value).await.expect("header");
    }
    conn.eoh().await.expect("eoh");
    for chunk in body.chunks(65535) {
        conn.body(chunk.to_vec()).await.expect("body");
    }
    if let Mta::Postfix = envelope.mta {
        conn.macros(MacroStage::Eom, [("i", "4XyZ1234AB")])
            .await
            .expect("macros");
    }
    let result = conn.eom().await.expect("eom");
    conn.close().await.expect("close");
    result
}

/// The value of the X-Pyzor header added, if any.
pub fn added_header(actions: &EomActions) -> Option<String> {
    actions.actions.iter().find_map(|action| match action {
        indymilter_test::EomAction::AddHeader { name, value } if name.as_bytes() == b"X-Pyzor" => {
            Some(value.to_string_lossy().trim_start().to_owned())
        }
        _ => None,
    })
}

/// Runs swaks against the MTA on `port` with the message file (wrapped in
/// `timeout` so a stuck MTA cannot hang the test); returns its transcript.
pub fn swaks(port: u16, recipient: &str, wait: Duration, file: &Path) -> String {
    let output = std::process::Command::new("timeout")
        .arg(wait.as_secs().to_string())
        .arg("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args([
            "--helo",
            "client.example.org",
            "--from",
            "sender@example.org",
        ])
        .args(["--to", recipient, "--timeout", &wait.as_secs().to_string()])
        .arg("--data")
        .arg(file)
        .output()
        .expect("swaks is installed (apt-get install swaks; scripts/test does)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The texts of the messages delivered into the Maildir folder `new`,
/// waiting up to `wait` for `count` of them; `log` tells what the MTA said
/// when none come.
pub fn delivered(
    new: &Path,
    count: usize,
    wait: Duration,
    log: impl Fn() -> String,
) -> Vec<String> {
    let started = std::time::Instant::now();
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if files.len() >= count {
            return files
                .iter()
                .map(|f| std::fs::read_to_string(f).expect("read mail"))
                .collect();
        }
        assert!(
            started.elapsed() < wait,
            "no delivery; the MTA's log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// How long a process started here may take to listen.
const LISTEN_WAIT: Duration = Duration::from_secs(30);

/// Waits until something accepts on the port, or panics with `what`.
pub fn wait_for_port(port: u16, what: &str, log: impl Fn() -> String) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < LISTEN_WAIT,
            "{what} does not listen:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child in its own process group, which is killed as a whole (Sendmail
/// forks per connection and per delivery) when dropped.
pub struct Group {
    child: Child,
}

impl Group {
    pub fn spawn(command: &mut Command) -> Group {
        let child = command
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        Group { child }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill only sends a signal to the process group we started.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The milter as our binary, its tracing output in a file.
pub struct Milter {
    _process: Group,
    pub port: u16,
    log: PathBuf,
}

impl Milter {
    pub fn start(dir: &Path, config: &str) -> Milter {
        Milter::start_with(dir, config, Command::new(our_binary()))
    }

    /// The milter run by `command`: our binary, or a command that runs it
    /// (its arguments follow).
    pub fn start_with(dir: &Path, config: &str, mut command: Command) -> Milter {
        let config_path = dir.join("milter.toml");
        std::fs::write(&config_path, config).expect("write the milter config");
        let log = dir.join("milter.log");
        let port = free_tcp_port();
        command
            .arg("milter")
            .arg("--config")
            .arg(&config_path)
            .arg("--socket")
            .arg(format!("inet:127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the milter log"));
        let milter = Milter {
            _process: Group::spawn(&mut command),
            port,
            log,
        };
        wait_for_port(port, "the milter", || milter.log_text());
        milter
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The message lines of the log: what follows the level and target.
    pub fn message_lines(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|line| line.split_once("callbacks: "))
            .map(|(_, message)| message.to_owned())
            .collect()
    }
}
