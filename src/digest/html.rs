//! HTML stripping as pyzor's `HTMLStripper` over CPython 3.11's
//! `html.parser.HTMLParser`. PLACEHOLDER: being replaced.

/// pyzor's `normalize_html_part`.
pub fn strip(html: &str) -> String {
    html.to_owned()
}
