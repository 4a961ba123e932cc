//! Differential fuzzing of the digest: random MIME messages from
//! tests/ref/fuzz_messages.py, a new seed each run, digested by Python
//! pyzor 1.1.2 and by us; any difference fails, naming the seed and the
//! saved messages. `scripts/fuzz-digest` runs this test in a loop for long
//! runs.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::util::reference::compare_files;
use crate::util::{corpus_dir, files_in, manifest_dir, reference_python, run, temp_dir};

/// Messages per run when PYZOR_FUZZ_COUNT is unset: about 15 s of the
/// suite on the 2-core test machine.
const DEFAULT_COUNT: usize = 4000;

/// The seed from PYZOR_FUZZ_SEED, or else one from the clock.
fn seed() -> u64 {
    match std::env::var("PYZOR_FUZZ_SEED") {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PYZOR_FUZZ_SEED \"{value}\" is not a number")),
        Err(_) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is past 1970");
            now.as_secs() * 1_000_000 + u64::from(now.subsec_micros())
        }
    }
}

fn count() -> usize {
    std::env::var("PYZOR_FUZZ_COUNT").map_or(DEFAULT_COUNT, |value| {
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PYZOR_FUZZ_COUNT \"{value}\" is not a number"))
    })
}

/// Runs fuzz_messages.py (with the corpus, part of which it mutates);
/// returns its summary line.
fn generate(dir: &Path, count: usize, seed: u64) -> String {
    let script = manifest_dir().join("tests/ref/fuzz_messages.py");
    let output = run(
        Command::new(reference_python())
            .arg(&script)
            .arg(dir)
            .arg(count.to_string())
            .arg(seed.to_string())
            .arg(corpus_dir()),
        b"",
    );
    assert!(
        output.status.success(),
        "fuzz_messages.py failed with seed {seed}: {}",
        output.stderr_text()
    );
    output.stdout_text().trim().to_owned()
}

#[test]
fn random_messages_match_python() {
    let seed = seed();
    let count = count();
    eprintln!("digest fuzz: PYZOR_FUZZ_SEED={seed} PYZOR_FUZZ_COUNT={count}");
    let dir = temp_dir();
    let summary = generate(dir.path(), count, seed);
    eprintln!("digest fuzz: fuzz_messages.py {summary} (excluded: documented differences)");
    let files = files_in(dir.path());
    assert_eq!(files.len(), count, "fuzz_messages.py wrote {summary}");
    let comparison = compare_files(&files);
    if comparison.mismatches == 0 {
        comparison.assert_all_agree(&format!("random messages (seed {seed})"));
        return;
    }
    let kept = dir.keep();
    let listed: Vec<String> = comparison
        .mismatched
        .iter()
        .map(|file| format!("  {}", file.display()))
        .collect();
    panic!(
        "{} of {} random messages differ from Python pyzor 1.1.2 (seed {seed}); \
         all {count} messages are kept in {}; rerun with \
         PYZOR_FUZZ_SEED={seed} PYZOR_FUZZ_COUNT={count}\n{}\n{}",
        comparison.mismatches,
        comparison.compared,
        kept.display(),
        listed.join("\n"),
        comparison.report
    );
}
