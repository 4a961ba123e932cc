//! The embedded SQLite engine alone, without the network: how many reports
//! per second one thread commits through the same group commit pyzord uses
//! ([`LocalStorage::write_all`]), IN_FLIGHT reports per transaction, new
//! digests as `udp_load` sends them. `scripts/bench-server` prints it beside
//! the UDP figures, as the ceiling that the database alone sets on reports.
//!
//! `engine_load DIR IN_FLIGHT SECONDS` prints one line like `udp_load`:
//! `engine requests/s p99_ms 0` (p99 of one transaction's time).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/figures.rs"]
mod figures;

use pyzor_milter::storage::sqlite::{DEFAULT_FILE_NAME, SqliteStorage};
use pyzor_milter::storage::{Kind, LocalStorage, LocalWrite};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, in_flight, seconds] = &args[..] else {
        eprintln!("usage: engine_load DIR IN_FLIGHT SECONDS");
        std::process::exit(2);
    };
    let in_flight: u64 = in_flight.parse()?;
    let limit = Duration::from_secs_f64(seconds.parse()?);
    let storage = SqliteStorage::open(&std::path::Path::new(dir).join(DEFAULT_FILE_NAME))?;
    let committed = Arc::new(AtomicU64::new(0));
    let mut latencies = Vec::new();
    let mut sequence = 1u64;
    let start = Instant::now();
    while start.elapsed() < limit {
        let writes = (0..in_flight)
            .map(|_| {
                let digest = format!("{:040x}", sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                sequence += 1;
                let committed = Arc::clone(&committed);
                LocalWrite {
                    kind: Kind::Report,
                    digests: vec![digest],
                    request: None,
                    done: Box::new(move |outcome| {
                        if outcome.is_ok() {
                            committed.fetch_add(1, Ordering::Relaxed);
                        }
                    }),
                }
            })
            .collect();
        let began = Instant::now();
        // No other thread writes: this one commits before it returns.
        storage.write_all(writes, &());
        latencies.push(began.elapsed());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let count = committed.load(Ordering::Relaxed);
    figures::print_line("engine", count, elapsed, &mut latencies, 0);
    Ok(())
}
