//! Helpers shared by the fuzz targets (each target includes this file).

/// Splits the input into `count` parts at its first `count - 1` NUL bytes;
/// missing parts are empty. The seed script joins files the same way.
pub fn split_parts(data: &[u8], count: usize) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = data.splitn(count, |&b| b == 0).collect();
    parts.resize(count, b"");
    parts
}

/// Text as the program reads a file: invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `text` is 40 lower-case hex digits, as pyzor prints a digest.
pub fn is_digest_hex(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
