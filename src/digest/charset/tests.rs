//! Hand-picked expectations from CPython 3.11 (the Python expression is in
//! each comment) and the differential test against tests/data.

use super::*;

fn decoded(bytes: &[u8], charset: &str, errors: Errors) -> Result<String, DecodeError> {
    decode(bytes, charset, errors)
}

#[test]
fn names_resolve_as_codecs_lookup_does() {
    // codecs.lookup(" latin-1 ").name == "iso8859-1"
    assert_eq!(lookup(" latin-1 "), Some("latin_1"));
    // codecs.lookup("ks_c_5601-1987").name == "euc_kr"
    assert_eq!(lookup("ks_c_5601-1987"), Some("euc_kr"));
    // codecs.lookup("iso-8859.15").name == "iso8859-15"
    assert_eq!(lookup("iso-8859.15"), Some("iso8859_15"));
    // codecs.lookup("CP-1252") raises LookupError
    assert_eq!(lookup("CP-1252"), None);
    // codecs.lookup("utf8.") raises LookupError
    assert_eq!(lookup("utf8."), None);
    // b"a".decode("base64") raises LookupError: not a text encoding
    assert_eq!(
        decoded(b"a", "base64", Errors::Ignore),
        Err(DecodeError::UnknownCharset("base64".to_owned()))
    );
    // b"".decode("nonexistent") == ""
    assert_eq!(
        decoded(b"", "nonexistent", Errors::Strict),
        Ok(String::new())
    );
}

#[test]
fn errors_consume_what_python_consumes() {
    // b"\xe0\x80abc".decode("utf-8", "replace") == "\ufffd\ufffdabc"
    assert_eq!(
        decoded(b"\xe0\x80abc", "utf-8", Errors::Replace).as_deref(),
        Ok("\u{fffd}\u{fffd}abc")
    );
    // b"\x81\x8d".decode("windows-1252", "replace") == "\ufffd\ufffd"
    assert_eq!(
        decoded(b"\x81\x8d", "windows-1252", Errors::Replace).as_deref(),
        Ok("\u{fffd}\u{fffd}")
    );
    // b"\x80".decode("iso-8859-1") == "\x80"
    assert_eq!(
        decoded(b"\x80", "iso-8859-1", Errors::Strict).as_deref(),
        Ok("\u{80}")
    );
    // b"\xa0a".decode("shift_jis", "replace") == "\ufffda"
    assert_eq!(
        decoded(b"\xa0a", "shift_jis", Errors::Replace).as_deref(),
        Ok("\u{fffd}a")
    );
    // b"\x81\x40".decode("gb2312", "replace") == "\ufffd@"
    assert_eq!(
        decoded(b"\x81\x40", "gb2312", Errors::Replace).as_deref(),
        Ok("\u{fffd}@")
    );
    // b"\xb0\xa1".decode("gb2312") == "\u554a"
    assert_eq!(
        decoded(b"\xb0\xa1", "gb2312", Errors::Strict).as_deref(),
        Ok("\u{554a}")
    );
    // b"a\x00b".decode("utf-16-le", "strict") raises UnicodeDecodeError
    assert_eq!(
        decoded(b"a\x00b", "utf-16-le", Errors::Strict),
        Err(DecodeError::Invalid("utf-16-le".to_owned()))
    );
}

#[test]
fn matches_python_on_generated_cases() {
    crate::digest::charset::tests_data::compare_with_reference();
}

#[test]
fn never_panics_on_arbitrary_bytes() {
    // a cheap deterministic generator: every codec, every handler, bytes
    // biased towards escape and lead bytes
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"\x1b$()B@JN.&+-/\\uxUN{}~\x0e\x0f\x8e\x8f\xa1\xa4\xd4\xfe\x81\x30\x39\x40\x7e\xff\x00\xd8\xdc\xed\xa0AZaz09";
    for codec in tables::TEXT_CODECS {
        for _ in 0..300 {
            let length = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..length)
                .map(|_| match next() % 3 {
                    0 => next() as u8,
                    _ => alphabet[(next() % alphabet.len() as u64) as usize],
                })
                .collect();
            for errors in [Errors::Strict, Errors::Ignore, Errors::Replace] {
                let _ = decode(&bytes, codec, errors);
            }
        }
    }
}
