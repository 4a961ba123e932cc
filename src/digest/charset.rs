//! Python's `bytes.decode(charset, errors)` for the charsets mail uses.
//! PLACEHOLDER: being replaced by the full implementation.

/// Python's error handlers that pyzor and the email package use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errors {
    /// `strict`: invalid input is an error.
    Strict,
    /// `ignore`: invalid input is dropped.
    Ignore,
    /// `replace`: invalid input becomes U+FFFD.
    Replace,
}

/// Why Python's `bytes.decode` raises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `LookupError`: no text codec by that name.
    #[error("unknown charset \"{0}\"")]
    UnknownCharset(String),
    /// `UnicodeDecodeError` under the `strict` handler.
    #[error("invalid bytes for charset \"{0}\"")]
    Invalid(String),
}

/// `bytes.decode(charset, errors)` as CPython 3.11 does it.
pub fn decode(bytes: &[u8], charset: &str, errors: Errors) -> Result<String, DecodeError> {
    match charset {
        "ascii" | "us-ascii" => Ok(bytes
            .iter()
            .filter_map(|&b| match (b.is_ascii(), errors) {
                (true, _) => Some(b as char),
                (false, Errors::Replace) => Some('\u{fffd}'),
                _ => None,
            })
            .collect()),
        _ => Err(DecodeError::UnknownCharset(charset.to_owned())),
    }
}
