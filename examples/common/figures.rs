//! The one line the pyzord load examples print for `scripts/bench-server`.

use std::time::Duration;

/// Prints `NAME requests/s p99_ms lost` for `count` requests in `elapsed`
/// seconds with these latencies.
pub fn print_line(name: &str, count: u64, elapsed: f64, latencies: &mut [Duration], lost: u64) {
    latencies.sort();
    let p99 = latencies
        .get(latencies.len().saturating_mul(99) / 100)
        .copied()
        .unwrap_or_default();
    println!(
        "{name} {:.0} {:.3} {lost}",
        count as f64 / elapsed,
        p99.as_secs_f64() * 1000.0
    );
}
