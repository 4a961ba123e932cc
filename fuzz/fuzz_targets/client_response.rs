//! The client's side of the wire: an arbitrary datagram read as a response
//! (the feedparser header block), taken only as the answer to the request
//! whose Thread it carries, checked as `Client::ask` checks it, and its
//! numbers read as Python's `int()` reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyzor_milter::client;
use pyzor_milter::protocol::{self, Response, ResponseError, ThreadId, header};
use pyzor_milter::python;

fuzz_target!(|data: &[u8]| {
    let block = header::parse(data);
    assert!(block.body.len() <= data.len());
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
        .filter(|thread| thread.is_ascii())
        .and_then(|thread| python::int(thread).ok()?.exact())
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
        assert!(
            client::answer_to(data, &[other]).is_none(),
            "{other} took {thread}'s answer"
        );
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
        if let Ok(number) = python::int(value) {
            assert_eq!(python::int(&number.to_string()), Ok(number.clone()));
            let plain: String = python::strip(value).chars().filter(|&c| c != '_').collect();
            if plain.is_ascii() {
                let digits = plain.trim_start_matches(['+', '-']).trim_start_matches('0');
                let shown = number.to_string();
                assert_eq!(
                    shown.trim_start_matches('-'),
                    if digits.is_empty() { "0" } else { digits },
                    "int({value:?})"
                );
            }
        }
    }
});
