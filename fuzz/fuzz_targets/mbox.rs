//! The mbox splitter `pyzor -s mbox` reads its input with, then the digest
//! of each message as `pyzor digest -s mbox` prints it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyzor_milter::{digest, mbox};

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| {
    let entries = mbox::split(data);

    // Python's mailbox.mbox starts a message at every line that begins with
    // `From ` (up to the first empty line read, which only the end of the
    // file gives).
    let from_lines = data
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"From "))
        .count();
    assert_eq!(entries.len(), from_lines, "one message per From line");

    // Each message is a slice of the input after its From line, in order
    // and without overlap.
    let base = data.as_ptr() as usize;
    let mut previous_end = 0;
    for entry in &entries {
        assert!(!entry.from_line.contains(&b'\n'), "LF in a From line");
        let from_start = entry.from_line.as_ptr() as usize - base;
        let start = entry.message.as_ptr() as usize - base;
        let end = start + entry.message.len();
        assert!(
            from_start >= previous_end + 5,
            "From line overlaps the previous message"
        );
        assert_eq!(&data[from_start - 5..from_start], b"From ");
        assert!(
            start >= from_start + entry.from_line.len(),
            "message before its From line"
        );
        assert!(end <= data.len());
        assert!(
            !entry
                .message
                .split(|&b| b == b'\n')
                .any(|line| line.starts_with(b"From ")),
            "a From line inside a message"
        );
        previous_end = end;
        let hex = digest::digest(entry.message).to_hex();
        assert!(common::is_digest_hex(&hex));
    }
});
