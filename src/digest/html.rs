//! HTML stripping as pyzor 1.1.2's `DataDigester.normalize_html_part`: its
//! `HTMLStripper` subclass of CPython 3.11.7's `html.parser.HTMLParser`
//! (with `convert_charrefs=True`) keeps each piece of text outside
//! `<script>` and `<style>`, stripped of Python whitespace, and joins the
//! pieces with single spaces.
//!
//! pyzor calls `feed()` once and never `close()`, so whatever the parser
//! still holds back at the end is lost: an unclosed tag, comment or
//! declaration and everything after it, a lone `<` at the very end, the
//! content of an unclosed `<script>`, and trailing text whose last 34
//! characters hold an `&` not followed by a space or `;` (it might be a
//! reference cut in half).
//!
//! On a few inputs `feed()` raises (a `<![` marked section with a missing or
//! unknown keyword, a decimal character reference of more than 4300 digits),
//! and pyzor's own `except` clause then fails with `AttributeError`: pyzor
//! cannot digest such a message at all. [`try_strip`] reports these;
//! [`strip`] keeps the text found before the failure, as pyzor meant to.
//!
//! This module only parses: no I/O, no logging, and no regular-expression
//! engine (every scan is linear, even where Python's are not).

mod entities;
mod markup;
mod unescape;

use std::borrow::Cow;

use self::markup::{Fault, QuoteFinder};
use crate::python;

/// Why Python's `HTMLParser.feed` raises on a document (and pyzor with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `_markupbase.ParserBase._scan_name` finds no name after `<![`.
    #[error("marked section at byte {position} has no keyword")]
    MissingSectionKeyword { position: usize },
    /// `parse_marked_section` knows only SGML and MS Office keywords.
    #[error("marked section at byte {position} has unknown keyword \"{keyword}\"")]
    UnknownSectionKeyword { position: usize, keyword: String },
    /// `int()` refuses more than 4300 decimal digits.
    #[error("character reference at byte {position} has {digits} digits, too many for Python")]
    LongCharacterReference { position: usize, digits: usize },
}

/// pyzor's `normalize_html_part`: the text of an HTML document.
///
/// Where Python's parser would raise (see [`try_strip`]) this returns the
/// text collected before that point.
pub fn strip(html: &str) -> String {
    let (text, _) = run(html);
    text
}

/// [`strip`], or the reason pyzor fails on this document.
pub fn try_strip(html: &str) -> Result<String, Error> {
    match run(html) {
        (text, None) => Ok(text),
        (_, Some(error)) => Err(error),
    }
}

fn run(html: &str) -> (String, Option<Error>) {
    let mut stripper = Stripper {
        raw: html,
        text: String::new(),
        collect: true,
        cdata: None,
        quotes: QuoteFinder::default(),
    };
    let error = stripper.go_ahead().err();
    (stripper.text, error)
}

/// The elements whose content `HTMLParser` passes through unparsed
/// (`CDATA_CONTENT_ELEMENTS`), which are also the ones pyzor skips.
const CDATA_ELEMENTS: [&str; 2] = ["script", "style"];

/// Python would keep at most this many trailing characters back while
/// waiting for the rest of a character reference (`goahead`'s `n-34`).
const PENDING_REFERENCE_CHARS: usize = 34;

/// `HTMLStripper` and the parser state it depends on.
struct Stripper<'a> {
    /// The document (`rawdata`).
    raw: &'a str,
    /// pyzor's collected pieces, already joined.
    text: String,
    /// pyzor's `collect`: off inside `<script>` and `<style>`.
    collect: bool,
    /// `cdata_elem`: the open `script` or `style` whose end is awaited.
    cdata: Option<&'static str>,
    quotes: QuoteFinder,
}

impl Stripper<'_> {
    /// `HTMLParser.goahead(0)`: parses as far as it can, and stops where
    /// Python would wait for more input.
    fn go_ahead(&mut self) -> Result<(), Error> {
        let raw = self.raw;
        let end = raw.len();
        let mut pos = 0;
        while pos < end {
            let next = match self.cdata {
                None => match raw[pos..].find('<') {
                    Some(offset) => pos + offset,
                    None if self.reference_pending(pos) => break,
                    None => end,
                },
                Some(name) => match markup::find_cdata_end(raw, pos, name) {
                    Some(at) => at,
                    None => break,
                },
            };
            if pos < next {
                let data = &raw[pos..next];
                if self.cdata.is_none() {
                    let text = unescape_at(data, pos)?;
                    self.handle_data(&text);
                } else {
                    self.handle_data(data);
                }
            }
            pos = next;
            if pos == end {
                break;
            }
            match self.parse_markup(pos)? {
                Some(after) => pos = after,
                None => break,
            }
        }
        Ok(())
    }

    /// Whether the text from `pos` to the end might end in a cut character
    /// reference: an `&` among the last 34 characters with no space or `;`
    /// after it.
    fn reference_pending(&self, pos: usize) -> bool {
        let raw = self.raw;
        let window = raw
            .char_indices()
            .rev()
            .nth(PENDING_REFERENCE_CHARS - 1)
            .map_or(0, |(at, _)| at);
        let from = window.max(pos);
        match raw[from..].rfind('&') {
            Some(offset) => !raw[from + offset..].contains(|c| c == ';' || python::is_space(c)),
            None => false,
        }
    }

    /// The markup at `pos` (a `<`): where parsing resumes, or `None` if
    /// Python would wait for more input.
    fn parse_markup(&mut self, pos: usize) -> Result<Option<usize>, Error> {
        let raw = self.raw;
        let rest = &raw.as_bytes()[pos..];
        let after = match rest.get(1) {
            Some(c) if c.is_ascii_alphabetic() => self.parse_start_tag(pos)?,
            Some(b'/') => self.parse_end_tag(pos),
            Some(b'!') if rest.starts_with(b"<!--") => {
                markup::find_close(raw, pos + 4, &[('-', false), ('-', true)])
            }
            Some(b'?') => markup::find_past(raw, pos + 2, '>'),
            Some(b'!') => markup::html_declaration_end(raw, pos).map_err(|fault| match fault {
                Fault::MissingSectionName => Error::MissingSectionKeyword { position: pos },
                Fault::UnknownSectionKeyword(keyword) => Error::UnknownSectionKeyword {
                    position: pos,
                    keyword,
                },
            })?,
            Some(_) => {
                self.handle_data("<");
                Some(pos + 1)
            }
            None => None,
        };
        Ok(after)
    }

    /// `parse_starttag` for the `<` + ASCII letter at `start`. Attribute
    /// values only matter because unescaping them may raise.
    fn parse_start_tag(&mut self, start: usize) -> Result<Option<usize>, Error> {
        let raw = self.raw;
        let Some(end) = markup::whole_start_tag_end(raw, start, &mut self.quotes) else {
            return Ok(None);
        };
        let (name_end, mut pos) = markup::tag_find(raw, start + 1);
        while pos < end {
            let Some(attribute) = markup::attribute(raw, pos, &mut self.quotes) else {
                break;
            };
            if let Some(value) = attribute.value {
                unescape_at(&raw[value.clone()], value.start)?;
            }
            pos = attribute.end;
        }
        let rest = raw
            .get(pos..end)
            .unwrap_or("")
            .trim_matches(python::is_space);
        let name = &raw[start + 1..name_end];
        match rest {
            ">" => {
                self.handle_start_tag(name);
                self.cdata = cdata_element(name);
            }
            "/>" => {
                self.handle_start_tag(name);
                self.handle_end_tag(name);
            }
            _ => self.handle_data(&raw[start..end]),
        }
        Ok(Some(end))
    }

    /// `parse_endtag` for the `</` at `start`.
    fn parse_end_tag(&mut self, start: usize) -> Option<usize> {
        let raw = self.raw;
        let gt_end = markup::find_past(raw, start + 1, '>')?;
        if let Some((name_start, name_end, _)) = markup::simple_end_tag(raw, start) {
            let name = &raw[name_start..name_end];
            if self
                .cdata
                .is_some_and(|open| !open.eq_ignore_ascii_case(name))
            {
                self.handle_data(&raw[start..gt_end]);
            } else {
                self.handle_end_tag(name);
                self.cdata = None;
            }
            return Some(gt_end);
        }
        if self.cdata.is_some() {
            self.handle_data(&raw[start..gt_end]);
            return Some(gt_end);
        }
        if !raw.as_bytes().get(start + 2)?.is_ascii_alphabetic() {
            if raw[start..].starts_with("</>") {
                return Some(start + 3);
            }
            // A bogus comment, up to the first `>`.
            return Some(gt_end);
        }
        let (name_end, match_end) = markup::tag_find(raw, start + 2);
        self.handle_end_tag(&raw[start + 2..name_end]);
        markup::find_past(raw, match_end, '>')
    }

    /// pyzor's `handle_data`.
    fn handle_data(&mut self, data: &str) {
        let data = data.trim_matches(python::is_space);
        if !data.is_empty() && self.collect {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            self.text.push_str(data);
        }
    }

    /// pyzor's `handle_starttag`.
    fn handle_start_tag(&mut self, name: &str) {
        if cdata_element(name).is_some() {
            self.collect = false;
        }
    }

    /// pyzor's `handle_endtag`.
    fn handle_end_tag(&mut self, name: &str) {
        if cdata_element(name).is_some() {
            self.collect = true;
        }
    }
}

/// `script` or `style` if `name.lower()` is one of them (no non-ASCII
/// character lowers to ASCII letters these names contain).
fn cdata_element(name: &str) -> Option<&'static str> {
    CDATA_ELEMENTS
        .into_iter()
        .find(|element| element.eq_ignore_ascii_case(name))
}

/// `html.unescape` of `text`, found at `position` in the document.
fn unescape_at(text: &str, position: usize) -> Result<Cow<'_, str>, Error> {
    unescape::unescape(text).map_err(|too_many| Error::LongCharacterReference {
        position: position + too_many.offset,
        digits: too_many.digits,
    })
}

#[cfg(test)]
mod tests;
