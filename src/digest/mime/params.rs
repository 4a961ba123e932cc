//! `Content-Type` as CPython 3.11's `email.message.Message` reads it:
//! `get_content_type`, `get_param` (with `_parseparam` and
//! `utils.decode_params`, RFC 2231 continuations included),
//! `get_content_charset` and `get_boundary`.
//!
//! Under compat32 a header value holding non-ASCII bytes is fetched as a
//! `Header` whose `str()` turns each such byte into U+FFFD; the parameter
//! code works on that string, so it works on Rust strings here.

use crate::digest::charset::{self, Errors};
use crate::python;

/// `get_content_type()`, reduced to what the walk and the parser ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType {
    main: Main,
    subtype: Subtype,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Main {
    Text,
    Multipart,
    Message,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subtype {
    Html,
    Digest,
    DeliveryStatus,
    Other,
}

impl ContentType {
    /// `text/plain`, or `message/rfc822` inside `multipart/digest`.
    pub fn default_for(digest_child: bool) -> Self {
        let main = if digest_child {
            Main::Message
        } else {
            Main::Text
        };
        ContentType {
            main,
            subtype: Subtype::Other,
        }
    }

    /// `_splitparam(value)[0].strip().lower()`, `text/plain` unless it has
    /// exactly one `/`.
    pub fn parse(value: &[u8]) -> Self {
        let head = value.split(|&b| b == b';').next().unwrap_or_default();
        let head = python::strip_escaped(head);
        let mut halves = head.split(|&b| b == b'/');
        let (Some(main), Some(sub), None) = (halves.next(), halves.next(), halves.next()) else {
            return Self::default_for(false);
        };
        let main = if main.eq_ignore_ascii_case(b"text") {
            Main::Text
        } else if main.eq_ignore_ascii_case(b"multipart") {
            Main::Multipart
        } else if main.eq_ignore_ascii_case(b"message") {
            Main::Message
        } else {
            Main::Other
        };
        let subtype = if sub.eq_ignore_ascii_case(b"html") {
            Subtype::Html
        } else if sub.eq_ignore_ascii_case(b"digest") {
            Subtype::Digest
        } else if sub.eq_ignore_ascii_case(b"delivery-status") {
            Subtype::DeliveryStatus
        } else {
            Subtype::Other
        };
        ContentType { main, subtype }
    }

    pub fn is_text(self) -> bool {
        self.main == Main::Text
    }

    pub fn is_html(self) -> bool {
        self.is_text() && self.subtype == Subtype::Html
    }

    pub fn is_multipart(self) -> bool {
        self.main == Main::Multipart
    }

    pub fn is_message(self) -> bool {
        self.main == Main::Message
    }

    pub fn is_digest(self) -> bool {
        self.is_multipart() && self.subtype == Subtype::Digest
    }

    pub fn is_delivery_status(self) -> bool {
        self.is_message() && self.subtype == Subtype::DeliveryStatus
    }
}

/// `str(header)`: non-ASCII bytes become U+FFFD.
fn header_text(value: &[u8]) -> String {
    value
        .iter()
        .map(|&b| {
            if b.is_ascii() {
                char::from(b)
            } else {
                '\u{fffd}'
            }
        })
        .collect()
}

/// A parameter value as `get_param` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// A plain (unquoted) string.
    Plain(String),
    /// An RFC 2231 value: (charset, language, value).
    Extended(Option<String>, Option<String>, String),
}

/// `utils.unquote`.
fn unquote(text: &str) -> String {
    if text.len() > 1 {
        if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            return inner.replace("\\\\", "\\").replace("\\\"", "\"");
        }
        if let Some(inner) = text.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
            return inner.to_owned();
        }
    }
    text.to_owned()
}

/// `_parseaddr.quote`.
fn quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `message._parseparam`: the `;`-separated items, `;` inside an odd
/// number of quotes not counting.
fn split_params(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut rest = value;
    loop {
        let mut end = rest.find(';');
        while let Some(at) = end.filter(|&at| at > 0) {
            let head = &rest[..at];
            if (head.matches('"').count() - head.matches("\\\"").count()).is_multiple_of(2) {
                break;
            }
            end = rest[at + 1..].find(';').map(|next| next + at + 1);
        }
        let end = end.unwrap_or(rest.len());
        let item = &rest[..end];
        let item = match item.find('=') {
            Some(eq) => format!(
                "{}={}",
                python::strip(&item[..eq]).to_lowercase(),
                python::strip(&item[eq + 1..])
            ),
            None => item.to_owned(),
        };
        items.push(python::strip(&item).to_owned());
        match rest[end..].strip_prefix(';') {
            Some(next) => rest = next,
            None => return items,
        }
    }
}

/// `rfc2231_continuation.match(name)`: the base name and the section
/// number (its digits without leading zeros).
fn continuation(name: &str) -> Option<(&str, Option<String>)> {
    let (base, section) = name.split_once('*')?;
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !word(base) {
        return None;
    }
    if section.is_empty() {
        return Some((base, None));
    }
    let digits = section.strip_suffix('*').unwrap_or(section);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some((
        base,
        Some(if trimmed.is_empty() { "0" } else { trimmed }.to_owned()),
    ))
}

/// `urllib.parse.unquote(text, encoding="latin-1")`.
fn percent_decode_latin1(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let hex = text
            .get(at + 1..at + 3)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        match (c, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            ('%', Some(byte)) => {
                out.push(char::from(byte));
                chars.next();
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// `_get_params_preserve` with `utils.decode_params`: (name, value) with
/// values still quoted as Python keeps them, the first item as it is.
fn params(value: &[u8]) -> Vec<(String, Param)> {
    let text = header_text(value);
    let mut items = split_params(&text)
        .into_iter()
        .map(|item| match item.split_once('=') {
            Some((name, value)) => (
                python::strip(name).to_owned(),
                python::strip(value).to_owned(),
            ),
            None => (python::strip(&item).to_owned(), String::new()),
        });
    let mut out = Vec::new();
    if let Some((name, value)) = items.next() {
        out.push((name, Param::Plain(value)));
    }
    // (base name, [(section, value, encoded)]) in order of first appearance.
    type Sections = Vec<(Option<String>, String, bool)>;
    let mut extended: Vec<(String, Sections)> = Vec::new();
    for (name, value) in items {
        let encoded = name.ends_with('*');
        let value = unquote(&value);
        match continuation(&name) {
            Some((base, section)) => {
                let entry = (section, value, encoded);
                match extended.iter_mut().find(|(n, _)| n == base) {
                    Some((_, sections)) => sections.push(entry),
                    None => extended.push((base.to_owned(), vec![entry])),
                }
            }
            None => out.push((name, Param::Plain(format!("\"{}\"", quote(&value))))),
        }
    }
    for (name, mut sections) in extended {
        // Python raises TypeError sorting a numbered section against an
        // unnumbered one; those sort first here.
        sections.sort_by(|a, b| {
            let key = |s: &Option<String>| s.as_ref().map(|d| (d.len(), d.clone()));
            key(&a.0)
                .cmp(&key(&b.0))
                .then_with(|| (&a.1, a.2).cmp(&(&b.1, b.2)))
        });
        let is_extended = sections.iter().any(|s| s.2);
        let joined: String = sections
            .into_iter()
            .map(|(_, s, encoded)| {
                if encoded {
                    percent_decode_latin1(&s)
                } else {
                    s
                }
            })
            .collect();
        let value = quote(&joined);
        let param = if is_extended {
            let mut parts = value.splitn(3, '\'');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(cs), Some(lang), Some(rest)) => Param::Extended(
                    Some(cs.to_owned()),
                    Some(lang.to_owned()),
                    format!("\"{rest}\""),
                ),
                _ => Param::Extended(None, None, format!("\"{value}\"")),
            }
        } else {
            Param::Plain(format!("\"{value}\""))
        };
        out.push((name, param));
    }
    out
}

/// `get_param(name)` on a `Content-Type` value, unquoted.
pub fn get_param(value: &[u8], name: &str) -> Option<Param> {
    let (_, param) = params(value)
        .into_iter()
        .find(|(key, _)| key.to_lowercase() == name)?;
    Some(match param {
        Param::Plain(v) => Param::Plain(unquote(&v)),
        Param::Extended(cs, lang, v) => Param::Extended(cs, lang, unquote(&v)),
    })
}

/// `str.encode('raw-unicode-escape')`.
fn raw_unicode_escape(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match u32::from(c) {
            code @ 0..=0xff => out.push(code as u8),
            code @ 0x100..=0xffff => out.extend_from_slice(format!("\\u{code:04x}").as_bytes()),
            code => out.extend_from_slice(format!("\\U{code:08x}").as_bytes()),
        }
    }
    out
}

/// `get_content_charset()`: lower case, `None` when missing or not ASCII.
pub fn content_charset(value: &[u8]) -> Option<String> {
    let charset = match get_param(value, "charset")? {
        Param::Plain(v) => v,
        Param::Extended(cs, _, text) => {
            let cs = cs
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "us-ascii".into());
            charset::decode(&raw_unicode_escape(&text), &cs, Errors::Strict).unwrap_or(text)
        }
    };
    charset.is_ascii().then(|| charset.to_ascii_lowercase())
}

/// What `get_boundary()` gives the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boundary {
    /// No `boundary` parameter: the multipart is read as a plain payload.
    Missing,
    /// A boundary holding characters no input line can (U+FFFD and the
    /// like): the parser looks for it and never finds it.
    Unmatchable,
    /// The boundary text.
    Text(Vec<u8>),
}

/// `get_boundary()`: `collapse_rfc2231_value(get_param('boundary')).rstrip()`.
pub fn boundary(value: &[u8]) -> Boundary {
    let text = match get_param(value, "boundary") {
        None => return Boundary::Missing,
        Some(Param::Plain(v)) => unquote(&v),
        Some(Param::Extended(cs, _, text)) => {
            let cs = cs.unwrap_or_else(|| "us-ascii".into());
            charset::decode(&raw_unicode_escape(&text), &cs, Errors::Replace)
                .unwrap_or_else(|_| unquote(&text))
        }
    };
    let text = text.trim_end_matches(python::is_space);
    if text.is_ascii() {
        Boundary::Text(text.as_bytes().to_vec())
    } else {
        Boundary::Unmatchable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expectations from CPython 3.11.7:
    // m = email.message_from_string('Content-Type: ' + value + '\n\n')
    #[test]
    fn charsets() {
        // m.get_content_charset() for each value.
        let cases: [(&[u8], Option<&str>); 7] = [
            (b"text/plain; charset=\"UTF-8\"", Some("utf-8")),
            (
                b"text/plain; charset*=us-ascii'en'ISO-8859-1",
                Some("iso-8859-1"),
            ),
            (
                b"text/plain; charset*0=iso-8859; charset*1=-2",
                Some("iso-8859-2"),
            ),
            (b"charset=koi8-r", Some("koi8-r")),
            (b"text/plain; charset=\xe9", None),
            (b"text/plain; name=\"a;b\"; charset=x", Some("x")),
            (b"text/plain", None),
        ];
        for (value, expected) in cases {
            assert_eq!(content_charset(value).as_deref(), expected, "{value:?}");
        }
    }

    #[test]
    fn boundaries() {
        // m.get_boundary() for each value.
        assert_eq!(
            boundary(b"multipart/mixed; boundary=\"a b \""),
            Boundary::Text(b"a b".to_vec())
        );
        assert_eq!(boundary(b"multipart/mixed"), Boundary::Missing);
        assert_eq!(
            boundary(b"multipart/mixed; boundary=\xff"),
            Boundary::Unmatchable
        );
    }

    #[test]
    fn content_types() {
        // m.get_content_type() for each value.
        assert!(ContentType::parse(b" TEXT/Html ; x").is_html());
        assert!(ContentType::parse(b"text/html/x").is_text());
        assert!(!ContentType::parse(b"text/html/x").is_html());
        assert!(ContentType::parse(b"multipart/digest").is_digest());
    }
}
