//! `pyzor-milter pyzor digest` and `predigest` against Python pyzor
//! 1.1.2's `pyzor` script: same stdout, same exit code.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{
    Output, corpus_files, our_binary, reference_pyzor, reference_pyzord, run, temp_dir,
};

/// The `From ` line put before corpus messages that lack one.
const MBOX_FROM_LINE: &[u8] = b"From pyzor-test@example.com Mon Jan  1 00:00:00 2024\n";

/// Python's `pyzor` with a private home directory (it creates one).
fn python_pyzor(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    run(
        Command::new(reference_pyzor())
            .env("HOME", home)
            .arg("--homedir")
            .arg(home.join(".pyzor"))
            .args(args),
        stdin,
    )
}

/// Our binary as `pyzor-milter pyzor ARGS`.
fn our_pyzor(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    run(
        Command::new(our_binary())
            .env("HOME", home)
            .arg("pyzor")
            .arg("--homedir")
            .arg(home.join(".pyzor"))
            .args(args),
        stdin,
    )
}

fn assert_same(what: &str, python: &Output, ours: &Output) {
    assert_eq!(
        (ours.exit(), ours.stdout_text()),
        (python.exit(), python.stdout_text()),
        "{what}: ours (left) differs from Python pyzor (right); Python's stderr: {}; ours: {}",
        python.stderr_text(),
        ours.stderr_text()
    );
}

/// The corpus as one mbox, every message after a `From ` line.
fn corpus_mbox() -> Vec<u8> {
    let mut mbox = Vec::new();
    for file in corpus_files() {
        let message = std::fs::read(&file).expect("corpus files are readable");
        if !message.starts_with(b"From ") {
            mbox.extend_from_slice(MBOX_FROM_LINE);
        }
        mbox.extend_from_slice(&message);
        if !message.ends_with(b"\n") {
            mbox.push(b'\n');
        }
        mbox.push(b'\n');
    }
    mbox
}

#[test]
fn mbox_digest_of_corpus_matches_python() {
    let home = temp_dir();
    let mbox = corpus_mbox();
    let args = ["-s", "mbox", "digest"];
    let python = python_pyzor(home.path(), &args, &mbox);
    let ours = our_pyzor(home.path(), &args, &mbox);
    assert!(
        python.status.success(),
        "Python pyzor -s mbox digest failed: {}",
        python.stderr_text()
    );
    if ours.stdout != python.stdout {
        let python_lines: Vec<&str> = std::str::from_utf8(&python.stdout)
            .unwrap_or("")
            .lines()
            .collect();
        let our_text = ours.stdout_text();
        let our_lines: Vec<&str> = our_text.lines().collect();
        let differing = python_lines
            .iter()
            .zip(&our_lines)
            .filter(|(p, o)| p != o)
            .count();
        panic!(
            "pyzor -s mbox digest: {} lines from Python, {} from us, {} of the common ones differ \
             (exit: Python {}, ours {}; our stderr: {})",
            python_lines.len(),
            our_lines.len(),
            differing,
            python.exit(),
            ours.exit(),
            ours.stderr_text()
        );
    }
    assert_same("pyzor -s mbox digest", &python, &ours);
}

/// A few corpus messages of different kinds: the first and last of each
/// folder.
fn sample_messages() -> Vec<PathBuf> {
    let files = corpus_files();
    let mut sample = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let folder = file.parent();
        let first = index == 0 || files[index - 1].parent() != folder;
        let last = files.get(index + 1).map(|next| next.parent()) != Some(folder);
        if first || last {
            sample.push(file.clone());
        }
    }
    sample
}

#[test]
fn digest_and_predigest_of_single_messages_match_python() {
    let home = temp_dir();
    let mut messages: Vec<(String, Vec<u8>)> = sample_messages()
        .into_iter()
        .map(|file| {
            let bytes = std::fs::read(&file).expect("corpus files are readable");
            (file.display().to_string(), bytes)
        })
        .collect();
    messages.push(("empty input".to_owned(), Vec::new()));
    messages.push((
        "non-ASCII predigest".to_owned(),
        "Content-Type: text/plain; charset=utf-8\n\nZa\u{17c}\u{f3}\u{142}\u{107} g\u{119}\u{15b}l\u{105} ja\u{17a}\u{144} \u{4e2d}\u{6587}\u{6d4b}\u{8bd5}\n"
            .as_bytes()
            .to_vec(),
    ));
    for (name, message) in &messages {
        for command in ["digest", "predigest"] {
            let python = python_pyzor(home.path(), &[command], message);
            let ours = our_pyzor(home.path(), &[command], message);
            assert_same(&format!("pyzor {command} < {name}"), &python, &ours);
        }
    }
}

#[test]
fn binary_started_as_pyzor_acts_as_pyzor() {
    let home = temp_dir();
    let link = home.path().join("pyzor");
    std::os::unix::fs::symlink(our_binary(), &link).expect("a symlink can be made");
    let message = std::fs::read(&sample_messages()[0]).expect("corpus files are readable");
    for args in [&["digest"][..], &["predigest"], &["-s", "mbox", "digest"]] {
        let input = if args.contains(&"mbox") {
            [MBOX_FROM_LINE, &message[..]].concat()
        } else {
            message.clone()
        };
        let python = python_pyzor(home.path(), args, &input);
        let ours = run(
            Command::new(&link)
                .env("HOME", home.path())
                .arg("--homedir")
                .arg(home.path().join(".pyzor"))
                .args(args),
            &input,
        );
        assert_same(
            &format!("pyzor {} through a link named pyzor", args.join(" ")),
            &python,
            &ours,
        );
    }
}

/// `-V` through links named `pyzor` and `pyzord` prints what Python's
/// scripts print (the program path, then pyzor's version), on the same
/// stream, with the same exit code.
#[test]
fn version_through_links_matches_python() {
    let dir = temp_dir();
    for (name, python) in [("pyzor", reference_pyzor()), ("pyzord", reference_pyzord())] {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(our_binary(), &link).expect("a symlink can be made");
        let theirs = run(Command::new(&python).arg("-V"), b"");
        let ours = run(Command::new(&link).arg("-V"), b"");
        let python_path = python.to_string_lossy().into_owned();
        let link_path = link.to_string_lossy().into_owned();
        assert_eq!(ours.exit(), theirs.exit(), "{name} -V exit code");
        assert_eq!(
            ours.stdout_text().replace(&link_path, "PROGRAM"),
            theirs.stdout_text().replace(&python_path, "PROGRAM"),
            "{name} -V stdout"
        );
        assert_eq!(
            ours.stderr_text().replace(&link_path, "PROGRAM"),
            theirs.stderr_text().replace(&python_path, "PROGRAM"),
            "{name} -V stderr"
        );
    }
}
