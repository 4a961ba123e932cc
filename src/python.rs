//! The parts of Python's semantics that pyzor's behaviour rests on, as
//! CPython 3.11 has them: `int()` of a string, `str.isspace()`,
//! `str.strip()`, `str.split()`, `str.splitlines()`, the lines of a file
//! opened in text mode, and `repr()` of the strings and tuples pyzor
//! prints. Every other module asks this one; none writes its own copy.
//!
//! Pure functions: no I/O, no logging. The Unicode tables come from
//! CPython's own database (`tables.rs`, generated), and the differential
//! test (`tests/it/python.rs`) checks each function against CPython over
//! every code point that matters.
//!
//! Two kinds of text reach pyzor: real `str`s (files, command-line values)
//! and datagrams, which the `email` package decodes as ASCII with
//! `surrogateescape`, so that every byte above 0x7f becomes a lone
//! surrogate that is neither space nor digit nor printable. The `_escaped`
//! functions take such bytes.

mod tables;

use std::fmt::{self, Write as _};

/// Python's `str.isspace()` (and `\s` in a `str` pattern): bidirectional
/// class WS, B or S, or general category Zs, in Unicode 14. Wider than
/// Rust's `char::is_whitespace` by U+001C..U+001F.
pub const fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..='\u{20}'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Where `str.splitlines()` ends a line (`\r\n` counting as one end).
pub const fn is_line_boundary(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}'
            ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Python's `str.isprintable()`: false for the categories Cc, Cf, Cs, Co,
/// Cn, Zl, Zp and Zs, except the space itself.
pub fn is_printable(c: char) -> bool {
    let code = u32::from(c);
    if (0x20..0x7f).contains(&code) {
        return true;
    }
    let after = tables::NON_PRINTABLE.partition_point(|&(start, _)| start <= code);
    !(after > 0 && code <= tables::NON_PRINTABLE[after - 1].1)
}

/// The value of a Unicode decimal digit (`str.isdecimal()`), as `int()`
/// reads it.
pub fn decimal_value(c: char) -> Option<u8> {
    if c.is_ascii_digit() {
        return Some(c as u8 - b'0');
    }
    let code = u32::from(c);
    let after = tables::DECIMAL_ZEROS.partition_point(|&zero| zero <= code);
    let zero = *tables::DECIMAL_ZEROS.get(after.checked_sub(1)?)?;
    u8::try_from(code - zero).ok().filter(|&digit| digit < 10)
}

/// `str.strip()` with no argument.
pub fn strip(text: &str) -> &str {
    text.trim_matches(is_space)
}

/// `str.strip()` of bytes decoded as ASCII with `surrogateescape`: only
/// ASCII bytes can be space (unlike `bytes.strip()`, U+001C..U+001F are).
pub fn strip_escaped(bytes: &[u8]) -> &[u8] {
    let space = |b: &u8| b.is_ascii() && is_space(char::from(*b));
    let start = bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// `str.lstrip()` of bytes decoded as ASCII with `surrogateescape`.
pub fn lstrip_escaped(bytes: &[u8]) -> &[u8] {
    let space = |b: &u8| b.is_ascii() && is_space(char::from(*b));
    &bytes[bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len())..]
}

/// `str.split()` with no argument: the runs of non-space characters.
pub fn split(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_space).filter(|word| !word.is_empty())
}

/// `str.splitlines()`: the lines without their ends.
pub fn splitlines(text: &str) -> impl Iterator<Item = &str> {
    lines_ending_at(text, is_line_boundary)
}

/// `str.splitlines()` of bytes decoded as ASCII with `surrogateescape`
/// (only ASCII bytes end lines).
pub fn splitlines_escaped(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let boundary = |b: &u8| b.is_ascii() && is_line_boundary(char::from(*b));
        let Some(at) = rest.iter().position(boundary) else {
            return Some(std::mem::take(&mut rest));
        };
        let line = &rest[..at];
        let skip = if rest[at..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[at + skip..];
        Some(line)
    })
}

/// The lines of a file opened in text mode (`for line in open(path)`),
/// without their ends: universal newlines end a line at `\r\n`, `\r` or
/// `\n` only, so unlike [`splitlines`] U+000B, U+000C, U+001C..U+001E and
/// U+0085 stay inside the line.
pub fn file_lines(text: &str) -> impl Iterator<Item = &str> {
    lines_ending_at(text, |c| c == '\n' || c == '\r')
}

/// Splits after each character `ends` accepts, `\r\n` counting as one.
fn lines_ending_at(text: &str, ends: impl Fn(char) -> bool) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some((at, end)) = rest.char_indices().find(|&(_, c)| ends(c)) else {
            return Some(std::mem::take(&mut rest));
        };
        let line = &rest[..at];
        let skip = if rest[at..].starts_with("\r\n") {
            2
        } else {
            end.len_utf8()
        };
        rest = &rest[at + skip..];
        Some(line)
    })
}

/// `sys.get_int_max_str_digits()`: CPython 3.11 refuses to convert longer
/// decimal strings.
pub const INT_MAX_STR_DIGITS: usize = 4300;

/// How many characters of the text `int()`'s ValueError quotes (`%.200R`).
const INT_ERROR_REPR_CHARS: usize = 200;

/// The value of Python's `int(text)`: of any size, as Python's is, so that
/// whether it is valid and its sign match Python's, and [`Int::saturating`]
/// gives what we store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Int {
    negative: bool,
    /// ASCII digits without leading zeros ("0" for zero).
    magnitude: String,
}

impl Int {
    /// The value, clamped to the range of `i64`.
    pub fn saturating(&self) -> i64 {
        self.exact()
            .unwrap_or(if self.negative { i64::MIN } else { i64::MAX })
    }

    /// The value when it fits in an `i64`.
    pub fn exact(&self) -> Option<i64> {
        let magnitude: u64 = self.magnitude.parse().ok()?;
        if self.negative {
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        }
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// `float(value)`, correctly rounded as Python's is; `None` where
    /// Python raises OverflowError ("int too large to convert to float").
    pub fn to_f64(&self) -> Option<f64> {
        let magnitude: f64 = self.magnitude.parse().ok()?;
        magnitude
            .is_finite()
            .then_some(if self.negative { -magnitude } else { magnitude })
    }
}

impl fmt::Display for Int {
    /// `str(value)` (and `"%d" % value`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_char('-')?;
        }
        f.write_str(&self.magnitude)
    }
}

/// The ValueError of `int(text)`, with Python's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntError {
    /// The repr of the text, cut at 200 characters as CPython cuts it.
    #[error("invalid literal for int() with base 10: {repr}")]
    Invalid { repr: String },
    #[error(
        "Exceeds the limit ({INT_MAX_STR_DIGITS} digits) for integer string conversion: \
         value has {digits} digits; use sys.set_int_max_str_digits() to increase the limit"
    )]
    TooManyDigits { digits: usize },
}

/// Python's `int(text)` (base 10) for a `str`: CPython turns non-ASCII
/// spaces into ' ' and Unicode decimal digits into ASCII ones, then skips
/// ASCII space (not U+001C..U+001F) around an optional sign and digits
/// with single underscores between them.
pub fn int(text: &str) -> Result<Int, IntError> {
    let mut ascii = Vec::with_capacity(text.len());
    for c in text.chars() {
        if u32::from(c) < 0x7f {
            ascii.push(c as u8);
        } else if is_space(c) {
            ascii.push(b' ');
        } else if let Some(digit) = decimal_value(c) {
            ascii.push(b'0' + digit);
        } else {
            ascii.push(b'?');
            break;
        }
    }
    let invalid = || IntError::Invalid {
        repr: repr_str(text).chars().take(INT_ERROR_REPR_CHARS).collect(),
    };
    int_of_ascii(&ascii).map_err(|error| error.unwrap_or_else(invalid))
}

/// `int(text)` for a datagram's value (bytes decoded as ASCII with
/// `surrogateescape`; a non-ASCII byte is never part of a number).
pub fn int_escaped(bytes: &[u8]) -> Result<Int, IntError> {
    let ascii_end = bytes.iter().position(|&b| b >= 0x7f);
    let ascii = ascii_end.map_or(bytes.to_vec(), |end| {
        let mut ascii = bytes[..end].to_vec();
        ascii.push(b'?');
        ascii
    });
    let invalid = || IntError::Invalid {
        repr: repr_escaped(bytes)
            .chars()
            .take(INT_ERROR_REPR_CHARS)
            .collect(),
    };
    int_of_ascii(&ascii).map_err(|error| error.unwrap_or_else(invalid))
}

/// CPython's `PyLong_FromString` for base 10 on the transformed text; a
/// NUL ends the C string there, and the caller then finds text left over.
/// `Err(None)` is an invalid literal.
fn int_of_ascii(ascii: &[u8]) -> Result<Int, Option<IntError>> {
    let (ascii, after_nul) = match ascii.iter().position(|&b| b == 0) {
        Some(nul) => (&ascii[..nul], true),
        None => (ascii, false),
    };
    let is_c_space = |b: &u8| matches!(b, b' ' | b'\t'..=b'\r');
    let mut rest = &ascii[ascii.iter().take_while(|b| is_c_space(b)).count()..];
    let negative = rest.first() == Some(&b'-');
    if matches!(rest.first(), Some(b'+' | b'-')) {
        rest = &rest[1..];
    }
    let run = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'_')
        .count();
    let (number, tail) = rest.split_at(run);
    if number.first() == Some(&b'_') || number.last() == Some(&b'_') {
        return Err(None);
    }
    if number.windows(2).any(|pair| pair == b"__") {
        return Err(None);
    }
    let digits: Vec<u8> = number.iter().copied().filter(u8::is_ascii_digit).collect();
    if digits.len() > INT_MAX_STR_DIGITS {
        return Err(Some(IntError::TooManyDigits {
            digits: digits.len(),
        }));
    }
    if digits.is_empty() || !tail.iter().all(is_c_space) || after_nul {
        return Err(None);
    }
    let significant = digits.iter().position(|&b| b != b'0');
    let magnitude = match significant {
        Some(start) => String::from_utf8(digits[start..].to_vec()).expect("ASCII digits"),
        None => "0".to_owned(),
    };
    Ok(Int {
        negative: negative && significant.is_some(),
        magnitude,
    })
}

/// `repr(text)` of a `str`: single quotes unless the text holds a single
/// quote and no double quote; backslash escapes for the quote, the
/// backslash, `\t`, `\n`, `\r` and every character `str.isprintable()`
/// rejects.
pub fn repr_str(text: &str) -> String {
    let quote = pick_quote(text.contains('\''), text.contains('"'));
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        push_repr_char(&mut out, c, quote);
    }
    out.push(quote);
    out
}

/// `repr()` of a datagram's value: non-ASCII bytes are the lone
/// surrogates `\udc80`..`\udcff`.
pub fn repr_escaped(bytes: &[u8]) -> String {
    let quote = pick_quote(bytes.contains(&b'\''), bytes.contains(&b'"'));
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push(quote);
    for &byte in bytes {
        if byte.is_ascii() {
            push_repr_char(&mut out, char::from(byte), quote);
        } else {
            let _ = write!(out, "\\udc{byte:02x}");
        }
    }
    out.push(quote);
    out
}

/// `repr((code, text))`, the tuple pyzor prints for a response head.
pub fn repr_head_tuple(code: impl fmt::Display, text: &str) -> String {
    format!("({code}, {})", repr_str(text))
}

fn pick_quote(has_single: bool, has_double: bool) -> char {
    if has_single && !has_double { '"' } else { '\'' }
}

fn push_repr_char(out: &mut String, c: char, quote: char) {
    let code = u32::from(c);
    match c {
        '\\' => out.push_str("\\\\"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if is_printable(c) => out.push(c),
        _ if code <= 0xff => {
            let _ = write!(out, "\\x{code:02x}");
        }
        _ if code <= 0xffff => {
            let _ = write!(out, "\\u{code:04x}");
        }
        _ => {
            let _ = write!(out, "\\U{code:08x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<String> {
        int(text).ok().map(|n| n.to_string())
    }

    #[test]
    fn int_strips_ascii_and_unicode_space_but_not_separators() {
        // python3 -c 'print(int(" 12\n"), int("\x85-3\u3000"), int("\u0663"))'
        assert_eq!(value(" 12\n"), Some("12".into()));
        assert_eq!(value("\u{85}-3\u{3000}"), Some("-3".into()));
        assert_eq!(value("\u{663}"), Some("3".into()));
        // int("\x1c5") and int("5\x1f") raise ValueError.
        assert_eq!(value("\x1c5"), None);
        assert_eq!(value("5\x1f"), None);
        assert_eq!(value("- 5"), None);
        assert_eq!(value("5\0"), None);
        assert_eq!(value("1__0"), None);
        assert_eq!(value("_1"), None);
        assert_eq!(value("1_"), None);
        assert_eq!(value("+0_0"), Some("0".into()));
        assert_eq!(value("-000"), Some("0".into()));
    }

    #[test]
    fn int_keeps_size_and_sign_and_saturates() {
        let big = int("99999999999999999999").expect("valid");
        assert_eq!(big.to_string(), "99999999999999999999");
        assert_eq!(big.saturating(), i64::MAX);
        assert_eq!(big.exact(), None);
        let small = int("-99999999999999999999").expect("valid");
        assert!(small.is_negative());
        assert_eq!(small.saturating(), i64::MIN);
        assert_eq!(
            int("-9223372036854775808").expect("valid").exact(),
            Some(i64::MIN)
        );
        assert_eq!(int(&"9".repeat(400)).expect("valid").to_f64(), None);
        assert_eq!(
            int("1e5").map_err(|e| e.to_string()),
            Err("invalid literal for int() with base 10: '1e5'".into())
        );
    }

    #[test]
    fn int_error_texts_are_pythons() {
        // python3 -c "int('\x01' * 2000)": the repr cut at 200 characters.
        let long = int_escaped(&[1u8; 2000]).expect_err("not a number");
        let expected = format!(
            "invalid literal for int() with base 10: '{}\\x0",
            "\\x01".repeat(49)
        );
        assert_eq!(long.to_string(), expected);
        assert_eq!(
            int(&"1".repeat(4301)),
            Err(IntError::TooManyDigits { digits: 4301 })
        );
        assert_eq!(
            int_escaped(b"1\xff").map_err(|e| e.to_string()),
            Err("invalid literal for int() with base 10: '1\\udcff'".into())
        );
    }

    #[test]
    fn lines_and_words() {
        let text = "a\x1cb\rc\r\nd\x0be\u{2028}f\n";
        assert_eq!(
            splitlines(text).collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e", "f"]
        );
        assert_eq!(
            file_lines(text).collect::<Vec<_>>(),
            ["a\x1cb", "c", "d\x0be\u{2028}f"]
        );
        assert_eq!(
            split(" check\x1fwhitelist\u{a0}x ").collect::<Vec<_>>(),
            ["check", "whitelist", "x"]
        );
        assert_eq!(strip("\x1c allow\x1f"), "allow");
        assert_eq!(strip_escaped(b"\x1c\xa0a\x0b"), b"\xa0a");
    }

    #[test]
    fn repr_picks_quotes_and_escapes_as_python() {
        // python3 -c 'print(repr((200, "OK")), repr((400, "doesn'"'"'t")), repr((1, "a\"b\x01\\")))'
        assert_eq!(repr_head_tuple(200, "OK"), "(200, 'OK')");
        assert_eq!(repr_head_tuple(400, "doesn't"), "(400, \"doesn't\")");
        assert_eq!(repr_head_tuple(1, "a\"b\x01\\"), "(1, 'a\"b\\x01\\\\')");
        assert_eq!(repr_str("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(
            repr_str("\u{a0}\u{378}\u{1f600}\u{e0001}"),
            "'\\xa0\\u0378\u{1f600}\\U000e0001'"
        );
        assert_eq!(repr_escaped(b"it's\xff"), "\"it's\\udcff\"");
    }
}
