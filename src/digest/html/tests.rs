//! Expectations come from the reference: each is the value of
//! `DataDigester.normalize_html_part(<input>)` in pyzor 1.1.2 on CPython
//! 3.11.7, written as the Python input in the comment above it.

use super::*;

#[track_caller]
fn check(input: &str, expected: &str) {
    assert_eq!(strip(input), expected, "input {input:?}");
}

#[test]
fn joins_stripped_text_pieces() {
    // "<p>one</p>\n<p> two\u3000</p>x\x1cy"
    check(
        "<p>one</p>\n<p> two\u{3000}</p>x\u{1c}y",
        "one two x\u{1c}y",
    );
    // "a < b"
    check("a < b", "a < b");
}

#[test]
fn drops_what_feed_holds_back() {
    // "tail &amp" / "tail &amp;" / "tail & x"
    check("tail &amp", "");
    check("tail &amp;", "tail &");
    check("tail & x", "tail & x");
    // "x<p>tail&b"
    check("x<p>tail&b", "x");
    // "a <" and "a<!-- open"
    check("a <", "a");
    check("a<!-- open", "a");
    // "<a b='c>lost"
    check("<a b='c>lost", "");
}

#[test]
fn skips_script_and_style() {
    // "<script>var a = '<p>x</p>';</script>after"
    check("<script>var a = '<p>x</p>';</script>after", "after");
    // "<script>never closed"
    check("<script>never closed", "");
    // "<script/>kept"
    check("<script/>kept", "kept");
    // "<script>x</\u017fcript>y</script>z"
    check("<script>x</\u{17f}cript>y</script>z", "z");
}

#[test]
fn unescapes_references_like_python() {
    // "&notit; &amp &#x80; &#0; &#xD800; &#1; &Aacute"
    check(
        "&notit; &amp &#x80; &#0; &#xD800; &#1; &Aacute<p>",
        "\u{ac}it; & \u{20ac} \u{fffd} \u{fffd}  \u{c1}",
    );
}

#[test]
fn reports_where_pyzor_fails() {
    // "a<![foo]>x" raises AssertionError in feed()
    assert_eq!(
        try_strip("a<![foo]>x"),
        Err(Error::UnknownSectionKeyword {
            position: 1,
            keyword: "foo".into()
        })
    );
    assert_eq!(strip("a<![foo]>x"), "a");
    // "&#" + "1" * 4301 raises ValueError in unescape()
    let long = format!("&#{};", "1".repeat(4301));
    assert!(matches!(
        try_strip(&long),
        Err(Error::LongCharacterReference {
            position: 0,
            digits: 4301
        })
    ));
}

/// Compares `strip` with a TSV of reference results: hex(input) TAB
/// (hex(output) or "!" where pyzor fails) TAB name.
fn mismatches(data: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for record in data.lines() {
        let mut fields = record.split('\t');
        let (Some(input), Some(expected), name) = (fields.next(), fields.next(), fields.next())
        else {
            bad.push(format!("bad record {record:?}"));
            continue;
        };
        let input = String::from_utf8(hex::decode(input).expect("hex input")).expect("utf-8");
        let got = match try_strip(&input) {
            Ok(text) => hex::encode(text),
            Err(_) => "!".to_owned(),
        };
        if got != expected {
            let expected = hex::decode(expected).map(|e| String::from_utf8_lossy(&e).into_owned());
            bad.push(format!(
                "{}: input {input:?}\n expected {expected:?}\n got {:?}",
                name.unwrap_or("?"),
                try_strip(&input)
            ));
        }
    }
    bad
}

#[track_caller]
fn assert_agrees(data: &str) {
    let bad = mismatches(data);
    assert!(
        bad.is_empty(),
        "{} mismatches, first:\n{}",
        bad.len(),
        bad[..bad.len().min(5)].join("\n")
    );
}

/// tests/data/html/*.tsv, made by tests/ref/html_strip.py.
#[test]
fn agrees_with_reference_on_data_files() {
    assert_agrees(include_str!("../../../tests/data/html/cases.tsv"));
    assert_agrees(include_str!("../../../tests/data/html/adversarial.tsv"));
    assert_agrees(include_str!("../../../tests/data/html/tags.tsv"));
}
