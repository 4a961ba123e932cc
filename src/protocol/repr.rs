//! Python's `repr()` of a string, for text a server sent that we print:
//! the `(code, diag)` tuple `pyzor` prints, and a field that is not a
//! number in an error. Escaping keeps a server's control characters (a
//! terminal's escape sequences) out of terminals and logs, as Python's
//! `repr` does.

use std::fmt::Write as _;

/// `repr(str)`: single quotes unless the text has a single quote and no
/// double quote; backslash escapes for the quote, backslash and
/// non-printable characters.
pub fn repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
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
            c if u32::from(c) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable()` for one character, close enough for
/// server Diag texts: controls, line and paragraph separators, format
/// characters and spaces other than U+0020 are escaped.
fn is_printable(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{a0}' | '\u{ad}' | '\u{1680}' | '\u{2000}'..='\u{200f}' | '\u{2028}'..='\u{202f}'
                | '\u{205f}'..='\u{206f}' | '\u{3000}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
                | '\u{e000}'..='\u{f8ff}'
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python() {
        // python3 -c 'print(repr("it'"'"'s \"x\""), repr("\x1b]0;owned\x07"), repr("\u2028\U0001f600"))'
        assert_eq!(repr_str("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(repr_str("\x1b]0;owned\x07"), "'\\x1b]0;owned\\x07'");
        assert_eq!(repr_str("\u{2028}\u{1f600}"), "'\\u2028\u{1f600}'");
    }
}
