//! Counts of any size and sign, read as Python's `int()` reads them: a
//! server in the test harness answers `pyzor check` and `pyzor info` with
//! such counts, and Python's `pyzor` and ours must print the same lines and
//! exit alike.

use crate::client_util::{FakeServer, Home, compare, line, thread_of};

/// The count fields a server answers with, as written on the wire.
const COUNTS: &[(&str, &str)] = &[
    ("99999999999999999999", "0"),
    ("-99999999999999999999", "0"),
    ("5", "99999999999999999999"),
    ("-5", "-1"),
    ("1_000", " 7\u{a0}"),
    ("007", "-0"),
    ("\u{663}", "0"),
];

fn answer(request: &str, count: &str, whitelist_count: &str) -> Vec<u8> {
    format!(
        "Code: 200\nDiag: OK\nPV: 2.1\nThread: {}\nCount: {count}\nWL-Count: {whitelist_count}\n\
         Entered: -1\nUpdated: -1\nWL-Entered: -1\nWL-Updated: -1\n\n",
        thread_of(request)
    )
    .into_bytes()
}

#[test]
fn counts_of_any_size_are_read_and_printed_as_python_does() {
    let message = b"Subject: counts\n\nA message whose counts come from a test server.\n";
    for &(count, whitelist_count) in COUNTS {
        let server =
            FakeServer::start(move |request| Some(answer(request, count, whitelist_count)));
        let home = Home::new(&[line(server.address)]);
        for command in ["check", "info"] {
            let (python, _) = compare(&home, &["-t", "2", command], message);
            if command == "check" && count.starts_with('9') {
                // The review's case: a hit for Python, so for us too.
                assert_eq!(python.exit(), "0", "{}", python.stdout_text());
            }
        }
    }
}
