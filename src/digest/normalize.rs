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

/// Python's `str.isspace()` (and `\s` in a `str` pattern): bidirectional
/// class WS, B or S, or general category Zs, in Unicode 14 (CPython 3.11).
pub const fn is_python_space(c: char) -> bool {
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

/// Python's `str.splitlines()` boundaries, `\r\n` counting as one.
const fn is_line_boundary(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}'
            ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// What `[a-z]` matches under `re.IGNORECASE` in a Python `str` pattern:
/// ASCII letters, plus the characters whose simple case mapping or sre's
/// case equivalences lead into a-z (İ, ı, ſ and the Kelvin sign).
const fn is_url_scheme_char(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '\u{130}' | '\u{131}' | '\u{17f}' | '\u{212a}')
}

/// How an ASCII byte takes part in splitting and normalising.
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
}

/// The class of every ASCII byte, so the common case costs one load.
const ASCII_CLASS: [Class; 128] = {
    let mut table = [Class::Word; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8 as char;
        table[b] = if b == 0 {
            Class::Nul
        } else if is_line_boundary(c) {
            Class::Boundary
        } else if is_python_space(c) {
            Class::Space
        } else {
            Class::Word
        };
        b += 1;
    }
    table
};

/// The class of any character.
fn class_of(c: char) -> Class {
    if c.is_ascii() {
        ASCII_CLASS[c as usize]
    } else if is_line_boundary(c) {
        Class::Boundary
    } else if is_python_space(c) {
        Class::Space
    } else {
        Class::Word
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
        let mut line = LineState::new(self.text.len());
        let mut at = 0;
        while at < bytes.len() {
            let byte = bytes[at];
            let (c, class, width) = if byte.is_ascii() {
                (byte as char, ASCII_CLASS[byte as usize], 1)
            } else {
                let c = text[at..].chars().next().expect("at is a char boundary");
                (c, class_of(c), c.len_utf8())
            };
            at += width;
            match class {
                Class::Word => line.run.push(c),
                Class::Nul => {}
                Class::Space => line.end_run(&mut self.text),
                Class::Boundary => {
                    if c == '\r' && bytes.get(at) == Some(&b'\n') {
                        at += 1;
                    }
                    line.end_run(&mut self.text);
                    self.end_line(&mut line);
                }
            }
        }
        line.end_run(&mut self.text);
        self.end_line(&mut line);
    }

    /// Keeps the line just finished if it is long enough, drops it
    /// otherwise, and starts the next one.
    fn end_line(&mut self, line: &mut LineState) {
        if line.chars >= crate::digest::MIN_LINE_LENGTH {
            self.bounds.push((line.start, self.text.len()));
        } else {
            self.text.truncate(line.start);
        }
        *line = LineState::new(self.text.len());
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

/// The line being normalised: where it starts in the output, how many code
/// points it has so far, and the run of non-space characters being read.
struct LineState {
    start: usize,
    chars: usize,
    run: Run,
}

impl LineState {
    fn new(start: usize) -> Self {
        LineState {
            start,
            chars: 0,
            run: Run::default(),
        }
    }

    /// Appends what survives of the current run to `out`.
    fn end_run(&mut self, out: &mut String) {
        let kept = self.run.kept();
        for &c in kept {
            out.push(c);
        }
        self.chars += kept.len();
        self.run.len = 0;
    }
}

/// The first characters of a maximal run of non-space characters (NUL
/// left out): a run of ten or more is dropped whole by `\S{10,}`, so no
/// more need be held.
#[derive(Default)]
struct Run {
    chars: [char; RUN_LIMIT],
    len: usize,
}

/// `\S{10,}`: runs this long are removed.
const RUN_LIMIT: usize = 10;

impl Run {
    fn push(&mut self, c: char) {
        if self.len < RUN_LIMIT {
            self.chars[self.len] = c;
            self.len += 1;
        }
    }

    /// What survives of the run once the patterns have been applied.
    fn kept(&self) -> &[char] {
        let len = self.len;
        // `\S{10,}`: the whole run goes.
        if len == RUN_LIMIT {
            return &[];
        }
        let chars = &self.chars[..len];
        // `\S+@\S+`: an @ with something before and after it takes the run.
        if len >= 3 && chars[1..len - 1].contains(&'@') {
            return &[];
        }
        // `[a-z]+:\S+`: from the start of the first letter run that is
        // followed by a colon and at least one more character, to the end.
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
                return &chars[..start];
            }
        }
        chars
    }
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
