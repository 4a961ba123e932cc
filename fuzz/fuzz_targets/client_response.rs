//! The client's side of the wire: an arbitrary datagram read as a response
//! (the feedparser header block), checked as `Client::ask` checks it, and
//! its numbers read as Python's `int()` reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
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
    let expected = ThreadId::from_random(data.len() as u64);
    match response.verify(expected) {
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
    if let Ok((count, wl_count)) = response.counts() {
        assert_eq!(response.int_field("Count"), Ok(Some(count)));
        assert_eq!(response.int_field("WL-Count"), Ok(Some(wl_count)));
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
