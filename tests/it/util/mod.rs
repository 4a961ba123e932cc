//! Helpers shared by the integration tests: where the Python reference and
//! the corpus are, running processes, and comparing our digests with
//! Python pyzor's.

pub mod package;
pub mod reference;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// What to tell someone whose machine lacks the references.
const SETUP_HINT: &str = "run scripts/test once, which installs Python pyzor 1.1.2 and the \
     SpamAssassin corpus under .cache and exports PYZOR_REF_PYTHON, PYZOR_REF_PYZOR, \
     PYZOR_REF_PYZORD and PYZOR_CORPUS";

/// The crate's root directory.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path from the environment variable `var`, or else `default` (relative
/// to the crate root, where scripts/test puts it) if that exists.
fn reference_path(var: &str, default: &str) -> PathBuf {
    if let Some(value) = std::env::var_os(var) {
        let path = PathBuf::from(value);
        assert!(
            path.exists(),
            "{var} is \"{}\", which does not exist: {SETUP_HINT}",
            path.display()
        );
        return path;
    }
    let path = manifest_dir().join(default);
    assert!(
        path.exists(),
        "{var} is not set and {default} does not exist: {SETUP_HINT}"
    );
    path
}

/// The Python interpreter of the reference client venv (pyzor 1.1.2 on
/// CPython 3.11).
pub fn reference_python() -> PathBuf {
    reference_path("PYZOR_REF_PYTHON", ".cache/ref-client/bin/python")
}

/// Python pyzor 1.1.2's `pyzor` script.
pub fn reference_pyzor() -> PathBuf {
    reference_path("PYZOR_REF_PYZOR", ".cache/ref-client/bin/pyzor")
}

/// Python pyzor 1.1.2's `pyzord` script (a venv of Debian's python3 with
/// gdbm, redis and MySQLdb).
pub fn reference_pyzord() -> PathBuf {
    reference_path("PYZOR_REF_PYZORD", ".cache/ref-server/bin/pyzord")
}

/// The Python of the pyzord venv (it has `dbm.gnu`).
pub fn reference_server_python() -> PathBuf {
    reference_pyzord().with_file_name("python3")
}

/// The SpamAssassin corpus's data directory (`package/data`).
pub fn corpus_dir() -> PathBuf {
    reference_path("PYZOR_CORPUS", ".cache/corpus/package/data")
}

/// Every raw message of the corpus (`*/*.txt`), sorted.
pub fn corpus_files() -> Vec<PathBuf> {
    let dir = corpus_dir();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the corpus directory is readable") {
        let sub = entry.expect("the corpus directory is readable").path();
        if !sub.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&sub).expect("a corpus folder is readable") {
            let file = file.expect("a corpus folder is readable").path();
            if file.extension() == Some(OsStr::new("txt")) {
                files.push(file);
            }
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no */*.txt under \"{}\": {SETUP_HINT}",
        dir.display()
    );
    files
}

/// The files of a directory, sorted.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the directory is readable")
        .map(|entry| entry.expect("the directory is readable").path())
        .collect();
    files.sort();
    files
}

/// Our binary, as cargo built it for this test run.
pub fn our_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pyzor-milter"))
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pyzor-milter-test-")
        .tempdir()
        .expect("a temporary directory can be made")
}

/// What a finished process left behind.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// The exit code, or a description of the signal that ended it.
    pub fn exit(&self) -> String {
        match self.status.code() {
            Some(code) => code.to_string(),
            None => format!("{}", self.status),
        }
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `command` with `stdin` as its standard input and captures the
/// rest. The locale is fixed to UTF-8 so Python prints the same bytes
/// everywhere.
pub fn run(command: &mut Command, stdin: &[u8]) -> Output {
    command
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    let output = std::thread::scope(|scope| {
        // Write from a thread so a child that prints before it has read
        // everything cannot deadlock us; a child that exits early is fine.
        scope.spawn(move || {
            let _ = input.write_all(stdin);
        });
        child
            .wait_with_output()
            .unwrap_or_else(|error| panic!("cannot wait for {command:?}: {error}"))
    });
    Output {
        status: output.status,
        stdout: output.stdout,
        stderr: output.stderr,
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so that "random" test
/// inputs are the same on every run.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}
