//! Differential digests: Python pyzor 1.1.2 (tests/ref/digest_ref.py, one
//! process for a whole batch) beside ours, and the report of where they
//! differ.

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{manifest_dir, reference_python, run};

/// How many mismatches are shown in full before the count.
const MISMATCHES_SHOWN: usize = 5;

/// Longest predigest line shown in a mismatch report, in characters.
const LINE_SHOWN_CHARS: usize = 300;

/// A digest, the predigest lines that made it, and every normalised line
/// that counted before the selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub digest: String,
    pub predigest: Vec<String>,
    pub lines: Vec<String>,
}

/// Python's answer for one file: the digest, or the exception it raised.
pub type PythonResult = Result<Digested, String>;

/// Runs Python pyzor's `DataDigester` over each file, in one process.
pub fn python_digests(files: &[PathBuf]) -> Vec<PythonResult> {
    let script = manifest_dir().join("tests/ref/digest_ref.py");
    let mut list = String::new();
    for file in files {
        let path = file.to_str().expect("test file paths are UTF-8");
        assert!(!path.contains('\n'), "test file paths have no line breaks");
        list.push_str(path);
        list.push('\n');
    }
    let output = run(
        Command::new(reference_python()).arg(&script),
        list.as_bytes(),
    );
    assert!(
        output.status.success(),
        "{} failed (exit {}): {}",
        script.display(),
        output.exit(),
        output.stderr_text()
    );
    let stdout = output.stdout_text();
    let results: Vec<PythonResult> = stdout.lines().map(parse_record).collect();
    assert_eq!(
        results.len(),
        files.len(),
        "digest_ref.py answered {} of {} files: {}",
        results.len(),
        files.len(),
        output.stderr_text()
    );
    results
}

fn parse_record(line: &str) -> PythonResult {
    let record: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("bad digest_ref.py line {line:?}: {e}"));
    if let Some(error) = record["error"].as_str() {
        return Err(error.to_owned());
    }
    let digest = record["digest"]
        .as_str()
        .expect("digest_ref.py gives a digest");
    Ok(Digested {
        digest: digest.to_owned(),
        predigest: string_list(&record, "predigest"),
        lines: string_list(&record, "lines"),
    })
}

fn string_list(record: &serde_json::Value, key: &str) -> Vec<String> {
    record[key]
        .as_array()
        .unwrap_or_else(|| panic!("digest_ref.py gives {key}"))
        .iter()
        .map(|line| {
            line.as_str()
                .unwrap_or_else(|| panic!("{key} lines are strings"))
                .to_owned()
        })
        .collect()
}

/// Our digest and predigest of a message; a panic becomes an error.
pub fn our_digest(message: &[u8]) -> Result<Digested, String> {
    catch_unwind(AssertUnwindSafe(|| Digested {
        digest: pyzor_milter::digest::digest(message).to_hex(),
        predigest: pyzor_milter::digest::predigest_lines(message),
        lines: pyzor_milter::digest::counted_lines(message),
    }))
    .map_err(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        format!("panicked: {text}")
    })
}

/// The outcome of comparing a batch.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Messages both sides digested.
    pub compared: usize,
    /// Messages Python itself fails on (skipped), with the first error.
    pub python_errors: usize,
    pub first_python_error: Option<String>,
    /// Messages where we differ from Python (or panic), each one's file,
    /// and the report of the first few.
    pub mismatches: usize,
    pub mismatched: Vec<PathBuf>,
    pub report: String,
}

impl Comparison {
    /// Fails the test, showing the first mismatches, unless all agree and
    /// at least one message was compared.
    pub fn assert_all_agree(&self, what: &str) {
        eprintln!(
            "{what}: {} compared, {} mismatched, {} skipped because Python pyzor itself raises{}",
            self.compared,
            self.mismatches,
            self.python_errors,
            match &self.first_python_error {
                Some(error) => format!(" (first: {error})"),
                None => String::new(),
            }
        );
        assert!(
            self.mismatches == 0,
            "{what}: {} of {} messages differ from Python pyzor 1.1.2\n{}",
            self.mismatches,
            self.compared,
            self.report
        );
        assert!(
            self.compared > 0,
            "{what}: no message was compared ({} skipped because Python pyzor raised)",
            self.python_errors
        );
    }
}

/// Digests every file ourselves and compares with Python's answers.
pub fn compare_files(files: &[PathBuf]) -> Comparison {
    let python = python_digests(files);
    let mut comparison = Comparison::default();
    for (file, expected) in files.iter().zip(python) {
        let expected = match expected {
            Ok(expected) => expected,
            Err(error) => {
                comparison.python_errors += 1;
                comparison
                    .first_python_error
                    .get_or_insert_with(|| format!("{}: {error}", file.display()));
                continue;
            }
        };
        let message = std::fs::read(file).expect("the test file is readable");
        comparison.compared += 1;
        let ours = our_digest(&message);
        if ours.as_ref() != Ok(&expected) {
            comparison.mismatches += 1;
            comparison.mismatched.push(file.clone());
            if comparison.mismatches <= MISMATCHES_SHOWN {
                describe_mismatch(&mut comparison.report, file, &expected, &ours);
            }
        }
    }
    comparison
}

fn describe_mismatch(
    report: &mut String,
    file: &Path,
    expected: &Digested,
    ours: &Result<Digested, String>,
) {
    let _ = writeln!(report, "--- {}", file.display());
    let _ = writeln!(report, "  python: {}", expected.digest);
    show_lines(report, &expected.predigest);
    match ours {
        Ok(ours) => {
            let _ = writeln!(report, "  ours:   {}", ours.digest);
            show_lines(report, &ours.predigest);
            show_first_difference(report, &expected.lines, &ours.lines);
        }
        Err(error) => {
            let _ = writeln!(report, "  ours:   {error}");
        }
    }
}

/// Where the lines that counted first differ, when the predigest lines
/// alone do not show it.
fn show_first_difference(report: &mut String, expected: &[String], ours: &[String]) {
    let _ = writeln!(
        report,
        "  lines that counted: python {}, ours {}",
        expected.len(),
        ours.len()
    );
    let at =
        (0..expected.len().max(ours.len())).find(|&index| expected.get(index) != ours.get(index));
    if let Some(index) = at {
        let _ = writeln!(report, "  first different line, number {index}:");
        let none = String::from("(none)");
        show_lines(report, &[expected.get(index).unwrap_or(&none).clone()]);
        show_lines(report, &[ours.get(index).unwrap_or(&none).clone()]);
    }
}

fn show_lines(report: &mut String, lines: &[String]) {
    for line in lines {
        let shown: String = line.chars().take(LINE_SHOWN_CHARS).collect();
        let more = if shown.len() < line.len() {
            " [...]"
        } else {
            ""
        };
        let _ = writeln!(report, "    | {shown:?}{more}");
    }
}
