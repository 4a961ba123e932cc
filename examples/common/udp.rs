//! Pyzor requests over UDP for the example load generators (`udp_load`,
//! `soak`): answers are matched to requests by their Thread.

/// The Thread of an answer, if it has one.
pub fn thread_of(answer: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(answer).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("Thread: "))
        .and_then(|value| value.trim().parse().ok())
}

/// The Code of an answer, if it has one.
#[allow(dead_code)] // For the soak test; udp_load only counts answers.
pub fn code_of(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("Code: "))
        .and_then(|value| value.trim().parse().ok())
}
