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
pub fn is_python_space(c: char) -> bool {
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
fn is_line_boundary(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}'
            ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// What `[a-z]` matches under `re.IGNORECASE` in a Python `str` pattern:
/// ASCII letters, plus the characters whose simple case mapping or sre's
/// case equivalences lead into a-z (İ, ı, ſ and the Kelvin sign).
fn is_url_scheme_char(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '\u{130}' | '\u{131}' | '\u{17f}' | '\u{212a}')
}

/// The lines of `text` as Python's `str.splitlines()` returns them.
pub fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.char_indices().find(|&(_, c)| is_line_boundary(c)) {
            None => Some(std::mem::take(&mut rest)),
            Some((at, c)) => {
                let line = &rest[..at];
                let mut next = at + c.len_utf8();
                if c == '\r' && rest[next..].starts_with('\n') {
                    next += 1;
                }
                rest = &rest[next..];
                Some(line)
            }
        }
    })
}

/// pyzor's `DataDigester.normalize` of one line.
pub fn normalize(line: &str) -> String {
    // NUL is removed before any pattern runs, so it neither counts towards a
    // run's length nor separates runs.
    let without_nul;
    let line = if line.contains('\0') {
        without_nul = line.replace('\0', "");
        without_nul.as_str()
    } else {
        line
    };
    let mut out = String::with_capacity(line.len());
    for run in line.split(is_python_space).filter(|run| !run.is_empty()) {
        out.push_str(keep_of_run(run));
    }
    out
}

/// What survives of one maximal run of non-space characters.
fn keep_of_run(run: &str) -> &str {
    let mut chars = [('\0', 0usize); 10];
    let mut len = 0;
    for (at, c) in run.char_indices() {
        // `\S{10,}`: the whole run goes.
        if len == chars.len() {
            return "";
        }
        chars[len] = (c, at);
        len += 1;
    }
    if len == chars.len() {
        return "";
    }
    let chars = &chars[..len];
    // `\S+@\S+`: an @ with something before and after it takes the run.
    if len >= 3 && chars[1..len - 1].iter().any(|&(c, _)| c == '@') {
        return "";
    }
    // `[a-z]+:\S+`: from the start of the first letter run that is followed
    // by a colon and at least one more character, to the end of the run.
    let mut i = 0;
    while i < len {
        if !is_url_scheme_char(chars[i].0) {
            i += 1;
            continue;
        }
        let start = chars[i].1;
        while i < len && is_url_scheme_char(chars[i].0) {
            i += 1;
        }
        if i + 1 < len && chars[i].0 == ':' {
            return &run[..start];
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_like_python() {
        // Expected: "a\rb\r\nc\x1cd\u2028e\n".splitlines() in CPython 3.11.
        let lines: Vec<&str> = split_lines("a\rb\r\nc\u{1c}d\u{2028}e\n").collect();
        assert_eq!(lines, ["a", "b", "c", "d", "e"]);
        assert_eq!(split_lines("\n\nx").collect::<Vec<_>>(), ["", "", "x"]);
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
            let kept: Vec<String> = split_lines(&input)
                .map(normalize)
                .filter(|line| line.chars().count() >= crate::digest::MIN_LINE_LENGTH)
                .collect();
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
