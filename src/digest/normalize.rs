//! Line splitting and normalisation, as pyzor's `DataDigester.normalize`
//! does it with Python's `str.splitlines()` and Unicode regular expressions.
//!
//! pyzor removes, in order: NUL characters, runs of 10 or more non-space
//! characters (`\S{10,}`), anything that looks like an e-mail address
//! (`\S+@\S+`), anything that looks like a URL (`[a-z]+:\S+`, ignoring
//! case), and finally every whitespace character. "Space" here is Python's
//! `str.isspace()`, which is wider than Rust's `char::is_whitespace` (it
//! includes U+001C..U+001F and leaves out U+0085's neighbours that Rust
//! counts). Each of those patterns only ever removes whole or trailing parts
//! of a maximal run of non-space characters, so the work is done one run at
//! a time without a regex engine.

use crate::python::{self, is_line_boundary};

/// What `[a-z]` matches under `re.IGNORECASE` in a Python `str` pattern:
/// ASCII letters, plus the characters whose simple case mapping or sre's
/// case equivalences lead into a-z (İ, ı, ſ and the Kelvin sign).
const fn is_url_scheme_char(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '\u{130}' | '\u{131}' | '\u{17f}' | '\u{212a}')
}

/// How a character takes part in splitting and normalising.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Part of a run of non-space characters.
    Word,
    /// Python whitespace that does not end a line.
    Space,
    /// A `str.splitlines()` boundary (all of them are whitespace too).
    Boundary,
    /// NUL, removed before anything else, so invisible.
    Nul,
    /// In [`BYTE_CLASS`] only: a byte of a non-ASCII character, to decode.
    NonAscii,
}

/// The class of every byte, so an ASCII character costs one load.
const BYTE_CLASS: [Class; 256] = {
    let mut table = [Class::NonAscii; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8 as char;
        table[b] = if b == 0 {
            Class::Nul
        } else if is_line_boundary(c) {
            Class::Boundary
        } else if python::is_space(c) {
            Class::Space
        } else {
            Class::Word
        };
        b += 1;
    }
    table
};

/// The class of a non-ASCII character.
fn class_of_non_ascii(c: char) -> Class {
    if is_line_boundary(c) {
        Class::Boundary
    } else if python::is_space(c) {
        Class::Space
    } else {
        Class::Word
    }
}

/// The class of the character at `at` in `text`, and its length in bytes.
#[inline]
fn class_at(text: &str, at: usize) -> (Class, usize) {
    match BYTE_CLASS[usize::from(text.as_bytes()[at])] {
        Class::NonAscii => {
            let c = text[at..].chars().next().expect("at is a char boundary");
            (class_of_non_ascii(c), c.len_utf8())
        }
        class => (class, 1),
    }
}

/// Normalised lines long enough to count, gathered from one or more texts
/// in one buffer: what pyzor's `DataDigester` keeps of `splitlines()` over
/// each payload after `normalize` and the length rule.
///
/// Splitting, normalising and counting code points are done in one pass:
/// every line boundary is also whitespace, so runs of non-space characters
/// never cross lines and each line's kept text is the concatenation of what
/// survives of its runs.
#[derive(Debug, Default)]
pub struct Lines {
    /// The kept lines, back to back.
    text: String,
    /// Each kept line's byte range in `text`.
    bounds: Vec<(usize, usize)>,
}

impl Lines {
    /// Splits `text` as `str.splitlines()` and keeps each line whose
    /// normalised form has at least `MIN_LINE_LENGTH` code points.
    pub fn push_text(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut line_start = self.text.len();
        let mut line_chars = 0;
        let mut at = 0;
        while at < bytes.len() {
            let (class, width) = class_at(text, at);
            match class {
                Class::Space | Class::Nul => at += width,
                Class::Boundary => {
                    self.end_line(line_start, line_chars);
                    line_start = self.text.len();
                    line_chars = 0;
                    at += width;
                    if bytes[at - 1] == b'\r' && bytes.get(at) == Some(&b'\n') {
                        at += 1;
                    }
                }
                Class::Word | Class::NonAscii => {
                    let (run, end) = read_run(text, at);
                    line_chars += push_run(&mut self.text, &text[at..end], &run);
                    at = end;
                }
            }
        }
        self.end_line(line_start, line_chars);
    }

    /// Keeps the line that began at `start` in the buffer if its `chars`
    /// code points are enough, drops it otherwise.
    fn end_line(&mut self, start: usize, chars: usize) {
        if chars >= crate::digest::MIN_LINE_LENGTH {
            self.bounds.push((start, self.text.len()));
        } else {
            self.text.truncate(start);
        }
    }

    /// How many lines were kept.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    /// Whether no line was kept.
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// The kept line at `index`, in message order.
    pub fn get(&self, index: usize) -> &str {
        let (start, end) = self.bounds[index];
        &self.text[start..end]
    }
}

/// A maximal run of non-space characters.
struct Run {
    /// How many characters it has, NUL left out.
    chars: usize,
    /// Whether it is ASCII without NUL, so what survives is a byte prefix.
    plain: bool,
}

/// Reads the maximal run of non-space characters that starts at `start`
/// with a word character; returns it and where it ends.
fn read_run(text: &str, start: usize) -> (Run, usize) {
    let bytes = text.as_bytes();
    let mut run = Run {
        chars: 0,
        plain: true,
    };
    let mut at = start;
    loop {
        let from = at;
        while at < bytes.len() && BYTE_CLASS[usize::from(bytes[at])] == Class::Word {
            at += 1;
        }
        run.chars += at - from;
        if at == bytes.len() {
            break;
        }
        match class_at(text, at) {
            (Class::Nul, _) => {
                run.plain = false;
                at += 1;
            }
            (Class::Word, width) => {
                run.plain = false;
                run.chars += 1;
                at += width;
            }
            _ => break,
        }
    }
    (run, at)
}

/// `\S{10,}`: runs this long are removed.
const RUN_LIMIT: usize = 10;

/// Appends what survives of `text`, one maximal run of non-space
/// characters described by `run`, to `out`; returns how many code points
/// that is.
fn push_run(out: &mut String, text: &str, run: &Run) -> usize {
    // `\S{10,}`: the whole run goes.
    if run.chars >= RUN_LIMIT {
        return 0;
    }
    if run.plain {
        let kept = kept_of_ascii_run(text.as_bytes());
        out.push_str(&text[..kept]);
        return kept;
    }
    // NUL is removed before any pattern runs, so it neither counts towards
    // a run's length nor separates runs.
    let mut chars = ['\0'; RUN_LIMIT];
    let mut len = 0;
    for c in text.chars().filter(|&c| c != '\0') {
        chars[len] = c;
        len += 1;
    }
    let kept = &chars[..kept_of_run(&chars[..len])];
    out.extend(kept);
    kept.len()
}

/// How many characters survive of a run of fewer than ten characters:
/// `\S+@\S+` takes the run if an @ has something before and after it;
/// `[a-z]+:\S+` takes it from the start of the first letter run that is
/// followed by a colon and at least one more character.
fn kept_of_run(chars: &[char]) -> usize {
    let len = chars.len();
    if len >= 3 && chars[1..len - 1].contains(&'@') {
        return 0;
    }
    let mut i = 0;
    while i < len {
        if !is_url_scheme_char(chars[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < len && is_url_scheme_char(chars[i]) {
            i += 1;
        }
        if i + 1 < len && chars[i] == ':' {
            return start;
        }
    }
    len
}

/// [`kept_of_run`] for a run of ASCII bytes, where a-z under IGNORECASE
/// is just the ASCII letters.
fn kept_of_ascii_run(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // Most runs are words: without an @ or a colon neither pattern applies.
    if !bytes.iter().any(|&b| b == b'@' || b == b':') {
        return len;
    }
    if len >= 3 && bytes[1..len - 1].contains(&b'@') {
        return 0;
    }
    let mut i = 0;
    while i < len {
        if !bytes[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let start = i;
        while i < len && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        if i + 1 < len && bytes[i] == b':' {
            return start;
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(text: &str) -> Vec<String> {
        let mut lines = Lines::default();
        lines.push_text(text);
        (0..lines.len()).map(|i| lines.get(i).to_owned()).collect()
    }

    #[test]
    fn splits_lines_like_python() {
        // Expected: [pyzor's normalize(l) for l in
        // "aaaaaaaa\rb b b b b b b b\r\ncccccccc\x1cdd\x00dddddd\u2028e\u3000eeeeeee\x85ff\n"
        // .splitlines()] in CPython 3.11, lines under 8 code points left out.
        let text = "aaaaaaaa\rb b b b b b b b\r\ncccccccc\u{1c}dd\0dddddd\u{2028}e\u{3000}eeeeeee\u{85}ff\n";
        assert_eq!(
            kept(text),
            ["aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd", "eeeeeeee"]
        );
        assert!(kept("\n\nx").is_empty());
    }

    /// Random lines through splitlines, normalize and the length rule,
    /// against tests/data/normalize.tsv (made by tests/ref/gen_normalize.py
    /// with the reference pyzor).
    #[test]
    fn agrees_with_reference_on_random_lines() {
        let data = include_str!("../../tests/data/normalize.tsv");
        let mut mismatches = Vec::new();
        for record in data.lines() {
            let (input, expected) = record.split_once('\t').expect("two columns");
            let input = String::from_utf8(hex::decode(input).expect("hex")).expect("utf-8");
            let expected = String::from_utf8(hex::decode(expected).expect("hex")).expect("utf-8");
            let kept = kept(&input);
            if kept.join("\0") != expected {
                mismatches.push((input, expected, kept));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{} mismatches, first: {:?}",
            mismatches.len(),
            mismatches.first()
        );
    }
}
