//! A UDP load generator for pyzord benchmarks (`scripts/bench-server`).
//!
//! `udp_load load ADDR OP IN_FLIGHT SECONDS` keeps IN_FLIGHT requests
//! outstanding against ADDR, matching answers by Thread, and prints one
//! line: `OP requests/s p99_ms lost`. ADDR may list several servers
//! separated by commas (pyzord nodes on one database): the requests go to
//! each in turn. `udp_load echo PORT` is a bare UDP
//! echo server, the ceiling the numbers are compared with.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

#[path = "common/figures.rs"]
mod figures;
#[path = "common/udp.rs"]
mod udp;
use udp::thread_of;

fn request(op: &str, sequence: u64) -> Vec<u8> {
    // Checks ask for 10,000 digests over and over; reports write new ones.
    let digest = match op {
        "check" => format!("{:040x}", sequence % 10_000),
        _ => format!("{:040x}", sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    };
    let op = if op == "echo" { "check" } else { op };
    format!("Op: {op}\nOp-Digest: {digest}\nThread: {sequence}\nPV: 2.1\n\n").into_bytes()
}

fn load(address: &str, op: &str, in_flight: usize, seconds: f64) -> std::io::Result<()> {
    let servers: Vec<std::net::SocketAddr> = address
        .split(',')
        .map(|server| {
            server
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad address {server:?}")))
        })
        .collect::<Result<_, _>>()?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut outstanding: HashMap<u64, Instant> = HashMap::new();
    let mut sequence = 1u64;
    let mut latencies: Vec<Duration> = Vec::new();
    let mut lost = 0u64;
    let mut buffer = [0u8; 8192];
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    while start.elapsed() < limit {
        while outstanding.len() < in_flight {
            let server = servers[sequence as usize % servers.len()];
            socket.send_to(&request(op, sequence), server)?;
            outstanding.insert(sequence, Instant::now());
            sequence += 1;
        }
        match socket.recv_from(&mut buffer) {
            Ok((length, _)) => {
                if let Some(sent) =
                    thread_of(&buffer[..length]).and_then(|t| outstanding.remove(&t))
                {
                    latencies.push(sent.elapsed());
                }
            }
            Err(_) => {
                // Nothing for 500 ms: count what is outstanding as lost.
                lost += outstanding.len() as u64;
                outstanding.clear();
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let answered = latencies.len() as u64;
    figures::print_line(op, answered, elapsed, &mut latencies, lost);
    Ok(())
}

fn echo(port: &str) -> std::io::Result<()> {
    let socket = UdpSocket::bind(format!("127.0.0.1:{port}"))?;
    let mut buffer = [0u8; 8192];
    loop {
        let (length, peer) = socket.recv_from(&mut buffer)?;
        socket.send_to(&buffer[..length], peer)?;
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("load") if args.len() == 6 => {
            let in_flight = args[4].parse().unwrap_or(16);
            let seconds = args[5].parse().unwrap_or(5.0);
            load(&args[2], &args[3], in_flight, seconds)
        }
        Some("echo") if args.len() == 3 => echo(&args[2]),
        _ => {
            eprintln!("usage: udp_load load ADDR OP IN_FLIGHT SECONDS | udp_load echo PORT");
            std::process::exit(2);
        }
    }
}
