//! What pyzord answers at all, so that it cannot be used as a reflector:
//! a datagram with a forged source gets back at most 1.5 times its own
//! size, or nothing. Python pyzord answers any datagram with a Thread,
//! echoing it (a non-ASCII one as a longer RFC 2047 word), which made an
//! 8-byte `Thread:\xff` worth 111 bytes at its victim.
//!
//! Three rules, each counted in `pyzord_rejected_total`:
//! - a datagram without `Op` or without `PV` is not a request of any pyzor
//!   client: no answer (`not_a_request`);
//! - a request without a Thread (`no_thread`) or whose Thread is not 1 to
//!   5 ASCII digits (`bad_thread`; pyzor's client sends 1024 to 65535) is
//!   not echoed: no answer;
//! - an answer longer than [`MAX_AMPLIFICATION`] times the request is not
//!   sent (`answer_too_large`). Real clients sign every request (User,
//!   Time, Sig), which makes their requests longer than any answer.
//!
//! Pure but for counting: no I/O.

use super::message::{Message, Response};
use super::metrics::{Metrics, Rejection};

/// How much larger than its request an answer may be: 3/2, as a numerator
/// and a denominator so that the bound is exact in integers.
pub const MAX_AMPLIFICATION: (usize, usize) = (3, 2);

/// The most digits a Thread may have: pyzor's ids are at most 65535.
pub const MAX_THREAD_DIGITS: usize = 5;

/// The Thread to echo when `request` is a request pyzord answers, or why
/// it gets no answer.
pub fn screen(request: &Message) -> Result<&[u8], Rejection> {
    if request.get("Op").is_none() || request.get("PV").is_none() {
        return Err(Rejection::NotARequest);
    }
    let Some(thread) = request.get("Thread").filter(|thread| !thread.is_empty()) else {
        return Err(Rejection::NoThread);
    };
    if thread.len() > MAX_THREAD_DIGITS || !thread.iter().all(u8::is_ascii_digit) {
        return Err(Rejection::BadThread);
    }
    Ok(thread)
}

/// Whether an answer of `answer_len` bytes may go back for a request of
/// `request_len` bytes.
pub fn within_bound(request_len: usize, answer_len: usize) -> bool {
    let (numerator, denominator) = MAX_AMPLIFICATION;
    answer_len.saturating_mul(denominator) <= request_len.saturating_mul(numerator)
}

/// The datagram answering a request of `request_len` bytes, or `None`
/// (counted) when it would be larger than the bound allows.
pub fn datagram(response: &Response, request_len: usize, metrics: &Metrics) -> Option<Vec<u8>> {
    let bytes = response.to_bytes();
    if within_bound(request_len, bytes.len()) {
        return Some(bytes);
    }
    metrics.reject(Rejection::AnswerTooLarge);
    tracing::debug!(
        request_len,
        answer_len = bytes.len(),
        code = response.code,
        "answer larger than the request allows dropped"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_with_a_short_numeric_thread_pass() {
        let screened = |datagram: &[u8]| screen(&Message::parse(datagram)).map(<[u8]>::to_vec);
        assert_eq!(
            screened(b"Op: ping\nThread: 65535\nPV: 2.1\n\n"),
            Ok(b"65535".to_vec())
        );
        assert_eq!(screened(b"Thread:1\n"), Err(Rejection::NotARequest));
        assert_eq!(
            screened(b"Thread: 1\nUser: alice\nOp: ping\n"),
            Err(Rejection::NotARequest)
        );
        assert_eq!(screened(b""), Err(Rejection::NotARequest));
        assert_eq!(screened(b"Op: ping\nPV: 2.1\n"), Err(Rejection::NoThread));
        assert_eq!(
            screened(b"Op: ping\nPV: 2.1\nThread: \n"),
            Err(Rejection::NoThread)
        );
        for thread in ["123456", "\u{ff}", "12a", "-1", "1 2", "+1"] {
            let datagram = format!("Op: ping\nPV: 2.1\nThread: {thread}\n");
            assert_eq!(
                screened(datagram.as_bytes()),
                Err(Rejection::BadThread),
                "{thread:?}"
            );
        }
    }

    #[test]
    fn the_bound_is_three_halves() {
        assert!(within_bound(2, 3));
        assert!(!within_bound(2, 4));
        assert!(within_bound(0, 0));
        assert!(!within_bound(0, 1));
        let metrics = Metrics::default();
        let response = Response::ok(b"1");
        let length = response.to_bytes().len();
        assert_eq!(
            datagram(&response, length, &metrics).map(|b| b.len()),
            Some(length)
        );
        assert_eq!(datagram(&response, length * 2 / 3 - 1, &metrics), None);
        assert_eq!(metrics.rejected(Rejection::AnswerTooLarge), 1);
    }
}
