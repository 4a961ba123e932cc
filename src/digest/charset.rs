//! Python's `bytes.decode(charset, errors)` for every text codec CPython 3.11
//! ships, under the `strict`, `ignore` and `replace` handlers.
//!
//! Pyzor decodes each text part with the charset the message names, so the
//! digest depends on exactly which names Python accepts and on exactly which
//! code points each codec yields, errors included. This module owns both: the
//! codec lookup (`codecs.lookup` name folding, `encodings.aliases`, the codec
//! modules), and one decoder per codec family. The registry and single-byte
//! tables are generated from Python by `scripts/gen-charsets.py`; the CJK
//! decoders port CPython's `cjkcodecs` on top of encoding_rs's tables plus the
//! generated cells where Python's tables differ.
//!
//! Rust strings cannot hold lone surrogates, which only Python's `utf_7`
//! decoder can produce from bytes (a surrogate half shifted in on its own):
//! they are dropped, as pyzor's later `encode("utf8", "ignore")` drops them.
//! A line's code point count can then differ from Python's by the number of
//! such halves. This module does no I/O and never panics on any input.

mod cjk;
mod cjk_tables;
mod iso2022;
mod tables;
#[cfg(test)]
mod tests_data;
mod unicode;

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
    // Argument parsing rejects an embedded NUL (ValueError) before any lookup.
    if charset.contains('\0') {
        return Err(DecodeError::UnknownCharset(charset.to_owned()));
    }
    // PyUnicode_Decode returns '' for empty input before looking the codec up.
    if bytes.is_empty() {
        return Ok(String::new());
    }
    let codec = lookup(charset).ok_or_else(|| DecodeError::UnknownCharset(charset.to_owned()))?;
    let mut out = Output::new(errors, bytes.len());
    match decode_with(codec, bytes, &mut out) {
        Ok(()) => Ok(out.text),
        Err(Invalid) => Err(DecodeError::Invalid(charset.to_owned())),
    }
}

/// The module name of the text codec Python finds for `charset`, as
/// `codecs.lookup` then `encodings.search_function` resolve it.
fn lookup(charset: &str) -> Option<&'static str> {
    let normalized = normalize(charset);
    let alias = find_alias(&normalized).or_else(|| find_alias(&normalized.replace('.', "_")));
    let candidates = [alias, Some(normalized.as_str())];
    for module in candidates.into_iter().flatten() {
        // search_function skips empty names and dotted ones (no submodules).
        if module.is_empty() || module.contains('.') {
            continue;
        }
        if let Ok(index) = tables::TEXT_CODECS.binary_search(&module) {
            return Some(tables::TEXT_CODECS[index]);
        }
        // base64, rot13 and friends import fine but are not text encodings:
        // bytes.decode raises LookupError for them.
        if tables::BINARY_CODECS.binary_search(&module).is_ok() {
            return None;
        }
    }
    None
}

/// `_Py_normalize_encoding` (what `codecs.lookup` applies): ASCII letters and
/// digits and '.' are kept and lowercased, every run of anything else
/// becomes one '_', dropped at both ends.
fn normalize(charset: &str) -> String {
    let mut normalized = String::with_capacity(charset.len());
    let mut punctuation = false;
    for byte in charset.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'.' {
            if punctuation && !normalized.is_empty() {
                normalized.push('_');
            }
            punctuation = false;
            normalized.push(byte.to_ascii_lowercase() as char);
        } else {
            punctuation = true;
        }
    }
    normalized
}

fn find_alias(name: &str) -> Option<&'static str> {
    let index = tables::ALIASES
        .binary_search_by(|(alias, _)| (*alias).cmp(name))
        .ok()?;
    Some(tables::ALIASES[index].1)
}

fn decode_with(codec: &str, bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    match codec {
        "ascii" => unicode::ascii(bytes, out),
        "latin_1" | "charmap" => {
            out.text.extend(bytes.iter().map(|&byte| char::from(byte)));
            Ok(())
        }
        "utf_8" => unicode::utf8(bytes, out),
        "utf_8_sig" => unicode::utf8(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes), out),
        "utf_16" => unicode::utf16(bytes, None, out),
        "utf_16_le" => unicode::utf16(bytes, Some(false), out),
        "utf_16_be" => unicode::utf16(bytes, Some(true), out),
        "utf_32" => unicode::utf32(bytes, None, out),
        "utf_32_le" => unicode::utf32(bytes, Some(false), out),
        "utf_32_be" => unicode::utf32(bytes, Some(true), out),
        "utf_7" => unicode::utf7(bytes, out),
        "unicode_escape" => unicode::unicode_escape(bytes, false, out),
        "raw_unicode_escape" => unicode::unicode_escape(bytes, true, out),
        "punycode" => unicode::punycode(bytes, out),
        "idna" => unicode::idna(bytes, out),
        // encodings.undefined raises UnicodeError whatever the handler.
        "undefined" => Err(Invalid),
        _ => {
            if let Some(decoded) = cjk::decode(codec, bytes, out) {
                return decoded;
            }
            if let Some(decoded) = iso2022::decode(codec, bytes, out) {
                return decoded;
            }
            let index = tables::SINGLE_BYTE
                .binary_search_by(|table| table.name.cmp(codec))
                .map_err(|_| Invalid)?;
            single_byte(&tables::SINGLE_BYTE[index], bytes, out)
        }
    }
}

/// `codecs.charmap_decode` with a decoding table: each byte is one
/// character or one error.
fn single_byte(table: &tables::SingleByte, bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    for &byte in bytes {
        let unit = match (byte < 0x80, table.low) {
            (true, None) => u16::from(byte),
            (true, Some(low)) => low[usize::from(byte)],
            (false, _) => table.high[usize::from(byte - 0x80)],
        };
        match char::from_u32(u32::from(unit)) {
            Some(c) if unit != 0xfffe => out.text.push(c),
            _ => out.invalid()?,
        }
    }
    Ok(())
}

/// A `strict` failure; the caller names the charset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Invalid;

/// The text being decoded and what to do at each error.
struct Output {
    text: String,
    errors: Errors,
}

impl Output {
    fn new(errors: Errors, capacity: usize) -> Self {
        Output {
            text: String::with_capacity(capacity),
            errors,
        }
    }

    fn push(&mut self, c: char) {
        self.text.push(c);
    }

    /// Pushes a code point that may be a lone surrogate (see the module doc).
    fn push_code_point(&mut self, code_point: u32) {
        if let Some(c) = char::from_u32(code_point) {
            self.text.push(c);
        }
    }

    /// One error event: the handler either raises or yields its replacement.
    fn invalid(&mut self) -> Result<(), Invalid> {
        match self.errors {
            Errors::Strict => Err(Invalid),
            Errors::Ignore => Ok(()),
            Errors::Replace => {
                self.text.push('\u{fffd}');
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
