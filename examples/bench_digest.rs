//! In-process digest speed over a directory tree of messages (the corpus),
//! for `scripts/bench-digest`: loads every `*/*.txt` under the directory,
//! then digests them all, round after round, for at least two seconds.
//!
//! Usage: bench_digest CORPUS_DATA_DIR
//! Prints one line: `messages=N bytes=N seconds=F messages_per_sec=F mb_per_sec=F`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Long enough for a steady figure on a busy machine.
const MIN_BENCH_TIME: Duration = Duration::from_secs(2);

fn messages(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let sub = entry?.path();
        if sub.is_dir() {
            for file in std::fs::read_dir(&sub)? {
                let file = file?.path();
                if file.extension().is_some_and(|ext| ext == "txt") {
                    files.push(file);
                }
            }
        }
    }
    files.sort();
    files.iter().map(std::fs::read).collect()
}

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: bench_digest CORPUS_DATA_DIR");
        std::process::exit(2);
    };
    let messages = messages(Path::new(&dir))?;
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let start = Instant::now();
    let mut rounds = 0usize;
    let mut sink = 0u8;
    while rounds == 0 || start.elapsed() < MIN_BENCH_TIME {
        for message in &messages {
            sink ^= pyzor_milter::digest::digest(message).0[0];
        }
        rounds += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    let count = messages.len() * rounds;
    println!(
        "messages={count} bytes={} seconds={seconds:.3} messages_per_sec={:.1} mb_per_sec={:.2}",
        bytes * rounds,
        count as f64 / seconds,
        (bytes * rounds) as f64 / seconds / 1e6
    );
    Ok(())
}
