//! Emulations of the regular expressions and scanners that
//! `html.parser.HTMLParser` and `_markupbase.ParserBase` (CPython 3.11.7)
//! use to find where a piece of markup ends. Only the end positions (and a
//! tag's name) matter to pyzor, so that is all these compute.
//!
//! Positions are byte offsets into the document, always on character
//! boundaries; `\s` is Python's `str.isspace()`. Python's backtracking is
//! followed where it changes a match (attribute values), but every scan
//! here is linear.

use std::ops::Range;

use crate::python::is_space;

/// How `_markupbase.ParserBase` fails on markup it cannot handle: these
/// raise `AssertionError` out of `feed()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `<![` not followed by a name (`_scan_name`).
    MissingSectionName,
    /// `<![name` with a name other than the SGML and MS Office keywords.
    UnknownSectionKeyword(String),
}

/// The first position at or after `pos` whose character fails `pred`.
pub fn skip(text: &str, pos: usize, pred: impl Fn(char) -> bool) -> usize {
    let Some(rest) = text.get(pos..) else {
        return pos;
    };
    let bytes = rest.as_bytes();
    let mut at = 0;
    // ASCII characters are their byte; only the others need decoding.
    while at < bytes.len() {
        let c = if bytes[at].is_ascii() {
            char::from(bytes[at])
        } else {
            rest[at..].chars().next().expect("at is a char boundary")
        };
        if !pred(c) {
            return pos + at;
        }
        at += c.len_utf8();
    }
    pos + bytes.len()
}

/// The character at `pos`, if any.
fn char_at(text: &str, pos: usize) -> Option<char> {
    text.get(pos..).and_then(|rest| rest.chars().next())
}

/// The position just past the first `needle` at or after `pos`.
pub fn find_past(text: &str, pos: usize, needle: char) -> Option<usize> {
    let rest = text.get(pos..)?;
    rest.find(needle)
        .map(|offset| pos + offset + needle.len_utf8())
}

/// Remembers the last search for a quote, so that documents full of
/// unclosed quotes are not rescanned to the end for every attribute (where
/// Python's regular expressions do take quadratic time).
#[derive(Default)]
pub struct QuoteFinder {
    /// (quote, searched from, next occurrence at or after that position).
    last: [Option<(usize, Option<usize>)>; 2],
}

impl QuoteFinder {
    /// The next `quote` (`'` or `"`) at or after `pos`.
    fn find(&mut self, text: &str, quote: u8, pos: usize) -> Option<usize> {
        let slot = usize::from(quote == b'"');
        if let Some((from, found)) = self.last[slot]
            && from <= pos
            && found.is_none_or(|at| pos <= at)
        {
            return found;
        }
        let found = text
            .as_bytes()
            .get(pos..)
            .and_then(|rest| rest.iter().position(|&b| b == quote))
            .map(|offset| pos + offset);
        self.last[slot] = Some((pos, found));
        found
    }
}

/// `tagfind_tolerant` (`([a-zA-Z][^\t\n\r\f />\x00]*)(?:\s|/(?!>))*`)
/// matched where the tag name starts (an ASCII letter): the end of the name
/// and the end of the match.
pub fn tag_find(text: &str, name_start: usize) -> (usize, usize) {
    let name_end = tag_name_end(text, name_start);
    (name_end, skip_spaces_and_slashes(text, name_end))
}

/// `[a-zA-Z][^\t\n\r\f />\x00]*` from an ASCII letter at `pos`.
fn tag_name_end(text: &str, pos: usize) -> usize {
    skip(text, pos + 1, |c| {
        !matches!(c, '\t' | '\n' | '\r' | '\u{0c}' | ' ' | '/' | '>' | '\0')
    })
}

/// `(?:\s|/(?!>))*`.
fn skip_spaces_and_slashes(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    loop {
        pos = skip(text, pos, is_space);
        if bytes.get(pos) == Some(&b'/') && bytes.get(pos + 1) != Some(&b'>') {
            pos += 1;
        } else {
            return pos;
        }
    }
}

/// `check_for_whole_start_tag` for the `<` + ASCII letter at `start`: the
/// end of the tag, or `None` where Python returns -1 (wait for more input).
pub fn whole_start_tag_end(text: &str, start: usize, quotes: &mut QuoteFinder) -> Option<usize> {
    let end = locate_start_tag_end(text, start, quotes);
    match char_at(text, end) {
        Some('>') => Some(end + 1),
        Some('/') if text.as_bytes().get(end + 1) == Some(&b'>') => Some(end + 2),
        None | Some('/' | '=') => None,
        Some(c) if c.is_ascii_alphabetic() => None,
        // Junk after the tag: the tag "ends" there.
        Some(_) => Some(end),
    }
}

/// Where `locatestarttagend_tolerant` stops matching at `start`.
fn locate_start_tag_end(text: &str, start: usize, quotes: &mut QuoteFinder) -> usize {
    let name_end = tag_name_end(text, start + 1);
    let mut pos = skip(text, name_end, |c| c == '/' || is_space(c));
    while let Some(attribute) = attribute(text, pos, quotes) {
        pos = attribute.end;
    }
    skip(text, pos, is_space)
}

/// One match of `attrfind_tolerant` (or one attribute of
/// `locatestarttagend_tolerant`, which ends at the same place).
pub struct Attribute {
    /// The end of the match.
    pub end: usize,
    /// The value as `parse_starttag` unescapes it (group 3, without its
    /// quotes), if not empty.
    pub value: Option<Range<usize>>,
}

/// `attrfind_tolerant` at `pos`, or `None` if it does not match:
/// `((?<=['"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*VALUE)?(?:\s|/(?!>))*`.
pub fn attribute(text: &str, pos: usize, quotes: &mut QuoteFinder) -> Option<Attribute> {
    let before = text.get(..pos)?.chars().next_back()?;
    if !(matches!(before, '\'' | '"' | '/') || is_space(before)) {
        return None;
    }
    let first = char_at(text, pos)?;
    if matches!(first, '/' | '>') || is_space(first) {
        return None;
    }
    let name_end = skip(text, pos + first.len_utf8(), |c| {
        !(matches!(c, '/' | '=' | '>') || is_space(c))
    });
    let value = value(text, name_end, quotes);
    let value_end = value.as_ref().map_or(name_end, |value| value.end);
    Some(Attribute {
        end: skip_spaces_and_slashes(text, value_end),
        value: value
            .map(|value| unquoted(text, value))
            .filter(|value| !value.is_empty()),
    })
}

/// `attrvalue[1:-1]` if the value starts and ends with the same quote.
fn unquoted(text: &str, value: Range<usize>) -> Range<usize> {
    let bytes = text.as_bytes();
    let (first, last) = (bytes.get(value.start), bytes.get(value.end.wrapping_sub(1)));
    match (first, last) {
        (Some(b'\''), Some(b'\'')) | (Some(b'"'), Some(b'"')) if value.len() >= 2 => {
            value.start + 1..value.end - 1
        }
        _ => value,
    }
}

/// `\s*=+\s*('[^']*'|"[^"]*"|(?!['"])[^>\s]*)` at `pos`: the range of
/// the value (group 3), if the group matches. Python backtracks when a
/// quote is never closed: the value becomes empty before the quote if
/// spaces precede it, else the last `=` starts a bare value if there are
/// several, else there is no value.
fn value(text: &str, pos: usize, quotes: &mut QuoteFinder) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let equals_start = skip(text, pos, is_space);
    if bytes.get(equals_start) != Some(&b'=') {
        return None;
    }
    let equals_end = skip(text, equals_start, |c| c == '=');
    let value_start = skip(text, equals_end, is_space);
    match bytes.get(value_start) {
        Some(&quote @ (b'\'' | b'"')) => {
            if let Some(close) = quotes.find(text, quote, value_start + 1) {
                Some(value_start..close + 1)
            } else if value_start > equals_end {
                // Empty, just before the quote: the end of the match is the
                // same as after the last space.
                Some(value_start..value_start)
            } else if equals_end - equals_start >= 2 {
                Some(equals_end - 1..bare_value_end(text, equals_end - 1))
            } else {
                None
            }
        }
        _ => Some(value_start..bare_value_end(text, value_start)),
    }
}

/// `[^>\s]*`.
fn bare_value_end(text: &str, pos: usize) -> usize {
    skip(text, pos, |c| c != '>' && !is_space(c))
}

/// `endtagfind` (`</\s*([a-zA-Z][-.a-zA-Z0-9:_]*)\s*>`) at `start`: the
/// tag name's range and the end of the match.
pub fn simple_end_tag(text: &str, start: usize) -> Option<(usize, usize, usize)> {
    let name_start = skip(text, start + 2, is_space);
    if !text.as_bytes().get(name_start)?.is_ascii_alphabetic() {
        return None;
    }
    let name_end = skip(text, name_start, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_')
    });
    let close = skip(text, name_end, is_space);
    (text.as_bytes().get(close) == Some(&b'>')).then_some((name_start, name_end, close + 1))
}

/// The `<` of the first `</\s*name\s*>` at or after `pos`, compared as
/// `re.IGNORECASE` does in a `str` pattern (`set_cdata_mode`'s
/// `interesting` pattern): `s` also matches U+017F and `i` matches U+0130
/// and U+0131.
pub fn find_cdata_end(text: &str, mut pos: usize, name: &str) -> Option<usize> {
    while let Some(offset) = text.get(pos..)?.find("</") {
        let start = pos + offset;
        if cdata_end_matches(text, start + 2, name) {
            return Some(start);
        }
        pos = start + 1;
    }
    None
}

fn cdata_end_matches(text: &str, pos: usize, name: &str) -> bool {
    let rest = text.get(skip(text, pos, is_space)..).unwrap_or("");
    let mut chars = rest.chars();
    for expected in name.chars() {
        let matched = match chars.next() {
            Some(c) if c.eq_ignore_ascii_case(&expected) => true,
            Some('\u{17f}') => expected == 's',
            Some('\u{130}' | '\u{131}') => expected == 'i',
            _ => false,
        };
        if !matched {
            return false;
        }
    }
    chars.find(|&c| !is_space(c)) == Some('>')
}

/// The end of the first match at or after `from` of a pattern made of
/// `tail` (literal characters, each optionally followed by `\s*`) and a
/// final `>`: `--\s*>`, `]\s*]\s*>`, `]\s*>`. A match holds no `>` but its
/// last, so the leftmost match ends at the first `>` that completes one:
/// each `>` is checked by reading backwards.
pub fn find_close(text: &str, from: usize, tail: &[(char, bool)]) -> Option<usize> {
    let mut pos = from;
    loop {
        let gt = pos + text.get(pos..)?.find('>')?;
        if closes_before(text.get(from..gt)?, tail) {
            return Some(gt + 1);
        }
        pos = gt + 1;
    }
}

/// Whether `before` ends with `tail`, read backwards: each (character,
/// followed by spaces) pair, last first.
fn closes_before(before: &str, tail: &[(char, bool)]) -> bool {
    let mut rest = before;
    for &(literal, spaces_after) in tail.iter().rev() {
        if spaces_after {
            rest = rest.trim_end_matches(is_space);
        }
        match rest.strip_suffix(literal) {
            Some(shorter) => rest = shorter,
            None => return false,
        }
    }
    true
}

/// `parse_html_declaration` for `<!` (not `<!--`) at `start`.
pub fn html_declaration_end(text: &str, start: usize) -> Result<Option<usize>, Fault> {
    let bytes = text.as_bytes();
    if bytes.get(start + 2) == Some(&b'[') {
        return marked_section_end(text, start);
    }
    let doctype = bytes
        .get(start..start + 9)
        .is_some_and(|head| head.eq_ignore_ascii_case(b"<!doctype"));
    let from = if doctype { start + 9 } else { start + 2 };
    Ok(find_past(text, from, '>'))
}

/// `parse_marked_section` for `<![` at `start`.
fn marked_section_end(text: &str, start: usize) -> Result<Option<usize>, Fault> {
    let name_start = start + 3;
    if name_start >= text.len() {
        return Ok(None);
    }
    if !text.as_bytes()[name_start].is_ascii_alphabetic() {
        return Err(Fault::MissingSectionName);
    }
    let name_end = skip(text, name_start + 1, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
    });
    if skip(text, name_end, is_space) == text.len() {
        // `_scan_name` at the end of the buffer: incomplete.
        return Ok(None);
    }
    let name = text[name_start..name_end].to_ascii_lowercase();
    let tail: &[(char, bool)] = match name.as_str() {
        "temp" | "cdata" | "ignore" | "include" | "rcdata" => &[(']', true), (']', true)],
        "if" | "else" | "endif" => &[(']', true)],
        _ => return Err(Fault::UnknownSectionKeyword(name)),
    };
    Ok(find_close(text, name_start, tail))
}
