//! The client's side of the wire: an arbitrary datagram read as a response
//! (the feedparser header block), taken only as the answer to the request
//! whose Thread it carries, checked as `Client::ask` checks it, and its
//! numbers read as Python's `int()` reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyzor_milter::client;
use pyzor_milter::protocol::{self, Response, ResponseError, ThreadId, header};

fuzz_target!(|data: &[u8]| {
    let block = header::parse(data);
    assert!(block.body_start <= data.len());
    for (name, value) in &block.fields {
        // headerRE: a name of printable ASCII without colon.
        assert!(!name.is_empty(), "empty field name");
        assert!(
            name.bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b':'),
            "name {name:?}"
        );
        assert!(!value.starts_with(b" ") && !value.starts_with(b"\t"));
        assert!(!value.ends_with(b"\n") && !value.ends_with(b"\r"));
    }

    let response = Response::parse(data);
    assert_eq!(response.fields.len(), block.fields.len());
    // The client takes a datagram only if it carries the Thread of a
    // request it sent: one that does not never produces counts.
    let ours = ThreadId::from_random(data.len() as u64);
    let carried = response
        .get("Thread")
        .and_then(protocol::python_int)
        .and_then(|thread| u16::try_from(thread).ok());
    match client::answer_to(data, &[ours]) {
        Some(answer) => {
            assert_eq!(carried, Some(ours.get()), "taken with another Thread");
            assert_eq!(answer, response);
        }
        None => assert_ne!(carried, Some(ours.get()), "our answer refused"),
    }
    if let Some(thread) = carried.and_then(ThreadId::new) {
        assert!(client::answer_to(data, &[thread]).is_some());
        let other = ThreadId::from_random(u64::from(thread.get()) + 1);
        assert!(client::answer_to(data, &[other]).is_none(), "{other} took {thread}'s answer");
    }
    match response.verify() {
        Ok(()) => {
            for field in ["Code", "Diag", "PV", "Thread"] {
                assert!(response.get(field).is_some(), "verified without {field}");
            }
        }
        Err(error) => {
            let _ = error.pyzor_status();
            assert!(!error.to_string().is_empty());
        }
    }
    match response.code() {
        Ok(code) => assert_eq!(response.is_ok(), Ok(code == protocol::OK_CODE)),
        Err(ResponseError::MissingField("Code")) => assert!(response.get("Code").is_none()),
        Err(ResponseError::BadNumber { field, .. }) => assert_eq!(field, "Code"),
        Err(other) => panic!("code(): unexpected {other:?}"),
    }
    match response.counts() {
        Ok((count, wl_count)) => {
            assert_eq!(response.int_field("Count"), Ok(Some(count)));
            assert_eq!(response.int_field("WL-Count"), Ok(Some(wl_count)));
        }
        // The server's text is escaped as Python's repr escapes it: no
        // control character reaches a terminal or a log.
        Err(error) => {
            let text = error.to_string();
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
    }

    // Python's int(): a number read back from its own decimal text is the
    // same number, and is what the text says without its underscores.
    for (_, value) in &response.fields {
        if let Some(number) = protocol::python_int(value) {
            assert_eq!(protocol::python_int(&number.to_string()), Some(number));
            // Python's whitespace: Unicode's plus the separators 0x1c-0x1f.
            let space = |c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c);
            let plain: String = value
                .trim_matches(space)
                .chars()
                .filter(|&c| c != '_')
                .collect();
            assert_eq!(plain.parse::<i64>().ok(), Some(number), "int({value:?})");
        }
    }
});
