//! The whole digest pipeline (MIME walk, charsets, HTML stripping, line
//! normalisation, selection, SHA-1) on arbitrary bytes, as `pyzor digest`
//! and `pyzor predigest` run it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyzor_milter::digest::{self, MIN_LINE_LENGTH};
use sha1::{Digest as _, Sha1};

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

fuzz_target!(|message: &[u8]| {
    let digest = digest::digest(message);
    let hex = digest.to_hex();
    assert!(
        common::is_digest_hex(&hex),
        "digest {hex:?} is not 40 hex digits"
    );
    assert_eq!(
        digest.is_empty(),
        hex == "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    );

    // `pyzor predigest` prints the lines the digest hashes: at most six
    // (two spec entries of three), each whitespace-free and long enough.
    let lines = digest::predigest_lines(message);
    assert!(lines.len() <= 6, "{} predigest lines", lines.len());
    for line in &lines {
        assert!(
            line.chars().count() >= MIN_LINE_LENGTH,
            "short line {line:?}"
        );
        assert!(
            !line.chars().any(char::is_whitespace),
            "whitespace in {line:?}"
        );
    }
    let mut hasher = Sha1::new();
    for line in &lines {
        hasher.update(line.as_bytes());
    }
    let rehashed: [u8; 20] = hasher.finalize().into();
    assert_eq!(
        rehashed, digest.0,
        "digest is not the SHA-1 of the predigest lines"
    );
    assert_eq!(
        digest::digest(message),
        digest,
        "digest is not deterministic"
    );
});
