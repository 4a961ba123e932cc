//! Character references in text, as CPython 3.11's `html.unescape`: the
//! HTML5 rules for numeric references and the longest-prefix rule for named
//! references without their `;`.

use std::borrow::Cow;

use super::entities::{ENTITIES, LONGEST_BARE_NAME};

/// CPython 3.11 refuses to convert decimal strings longer than this
/// (`sys.int_info.default_max_str_digits`): `int()` raises `ValueError`.
pub const MAX_DECIMAL_DIGITS: usize = 4300;

/// Named references are at most this many code points before the `;`
/// (`html._charref`'s `{1,32}`).
const MAX_NAME_CHARS: usize = 32;

/// A decimal reference too long for Python's `int()`: `unescape` raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyDigits {
    /// Where its `&` is in the text.
    pub offset: usize,
    /// How many digits it has.
    pub digits: usize,
}

/// `html.unescape(text)`.
pub fn unescape(text: &str) -> Result<Cow<'_, str>, TooManyDigits> {
    let Some(first) = text.find('&') else {
        return Ok(Cow::Borrowed(text));
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first]);
    let mut pos = first;
    while let Some(offset) = text[pos..].find('&') {
        let amp = pos + offset;
        out.push_str(&text[pos..amp]);
        pos = replace_reference(text, amp, &mut out)?;
    }
    out.push_str(&text[pos..]);
    Ok(Cow::Owned(out))
}

/// Replaces the reference starting with the `&` at `amp`, if `_charref`
/// matches there, and returns where scanning resumes.
fn replace_reference(text: &str, amp: usize, out: &mut String) -> Result<usize, TooManyDigits> {
    let bytes = text.as_bytes();
    let after = amp + 1;
    if bytes.get(after) == Some(&b'#') {
        let decimal = count_while(&bytes[after + 1..], u8::is_ascii_digit);
        if decimal > 0 {
            if decimal > MAX_DECIMAL_DIGITS {
                return Err(TooManyDigits {
                    offset: amp,
                    digits: decimal,
                });
            }
            let digits = &text[after + 1..after + 1 + decimal];
            push_numeric(digits, 10, out);
            return Ok(skip_semicolon(bytes, after + 1 + decimal));
        }
        if matches!(bytes.get(after + 1), Some(b'x' | b'X')) {
            let hex = count_while(&bytes[after + 2..], u8::is_ascii_hexdigit);
            if hex > 0 {
                push_numeric(&text[after + 2..after + 2 + hex], 16, out);
                return Ok(skip_semicolon(bytes, after + 2 + hex));
            }
        }
        // `#` cannot start a name: the `&` stays as it is.
        out.push('&');
        return Ok(after);
    }
    let name_end = text[after..]
        .char_indices()
        .take(MAX_NAME_CHARS)
        .take_while(|&(_, c)| !matches!(c, '\t' | '\n' | '\u{0c}' | ' ' | '<' | '&' | '#' | ';'))
        .last()
        .map_or(after, |(offset, c)| after + offset + c.len_utf8());
    if name_end == after {
        out.push('&');
        return Ok(after);
    }
    let end = skip_semicolon(bytes, name_end);
    push_named(&text[after..end], out);
    Ok(end)
}

fn count_while(bytes: &[u8], pred: impl Fn(&u8) -> bool) -> usize {
    bytes.iter().take_while(|b| pred(b)).count()
}

fn skip_semicolon(bytes: &[u8], pos: usize) -> usize {
    if bytes.get(pos) == Some(&b';') {
        pos + 1
    } else {
        pos
    }
}

/// `html._replace_charref` for a named reference `name` (with its `;`,
/// if any): the whole name, else its longest known prefix of at least two
/// characters followed by the rest, else the text unchanged.
fn push_named(name: &str, out: &mut String) {
    if let Some(value) = lookup(name) {
        out.push_str(value);
        return;
    }
    // Prefixes of 2 to len-1 characters, longest first; names are ASCII, so
    // only ASCII prefixes up to the longest bare name can match.
    let ascii = name.bytes().take_while(u8::is_ascii).count();
    let longest_cut = ascii.min(name.len() - 1).min(LONGEST_BARE_NAME);
    let longest = (2..=longest_cut)
        .rev()
        .find_map(|cut| lookup(&name[..cut]).map(|value| (cut, value)));
    match longest {
        Some((cut, value)) => {
            out.push_str(value);
            out.push_str(&name[cut..]);
        }
        None => {
            out.push('&');
            out.push_str(name);
        }
    }
}

fn lookup(name: &str) -> Option<&'static str> {
    ENTITIES
        .binary_search_by(|(key, _)| key.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|index| ENTITIES[index].1)
}

/// `html._replace_charref` for a numeric reference: the WHATWG
/// replacements for C1 controls, U+FFFD for NUL, surrogates and values past
/// U+10FFFF, nothing for the other non-characters and controls.
fn push_numeric(digits: &str, radix: u32, out: &mut String) {
    let significant = digits.trim_start_matches('0');
    // Eight hex or decimal digits already exceed U+10FFFF.
    let value = if significant.len() > 7 {
        u32::MAX
    } else {
        u32::from_str_radix(
            if significant.is_empty() {
                "0"
            } else {
                significant
            },
            radix,
        )
        .unwrap_or(u32::MAX)
    };
    if let Some(replacement) = invalid_charref(value) {
        out.push(replacement);
    } else if (0xD800..=0xDFFF).contains(&value) || value > 0x10FFFF {
        out.push('\u{FFFD}');
    } else if is_invalid_codepoint(value) {
        // Dropped.
    } else if let Some(c) = char::from_u32(value) {
        out.push(c);
    }
}

/// `html._invalid_charrefs`: NUL, CR and the C1 range read as windows-1252.
fn invalid_charref(value: u32) -> Option<char> {
    const C1: [char; 32] = [
        '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}',
        '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}',
        '\u{178}',
    ];
    match value {
        0x00 => Some('\u{FFFD}'),
        0x0D => Some('\r'),
        0x80..=0x9F => Some(C1[(value - 0x80) as usize]),
        _ => None,
    }
}

/// `html._invalid_codepoints`.
fn is_invalid_codepoint(value: u32) -> bool {
    matches!(value, 0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F..=0x9F | 0xFDD0..=0xFDEF)
        || (value & 0xFFFE == 0xFFFE && value <= 0x10FFFF)
}
