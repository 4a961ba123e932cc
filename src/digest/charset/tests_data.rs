//! The differential test: tests/ref/charset_cases.py writes, with the
//! reference Python, each case's bytes, charset, handler and Python's result;
//! every case must decode here to the same result.

use super::{DecodeError, Errors, decode};

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).expect("the case file holds hex")
}

/// Runs the reference script with the reference Python and compares every
/// case; fails listing the first mismatches.
pub(super) fn compare_with_reference() {
    let python = crate::test_support::reference_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ref/charset_cases.py");
    let output = std::process::Command::new(&python)
        .arg(script)
        .output()
        .expect("the reference Python runs");
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cases = String::from_utf8(output.stdout).expect("the case list is UTF-8");
    let mut failures = Vec::new();
    let mut count = 0;
    for line in cases.lines() {
        let mut fields = line.split('\t');
        let (Some(charset), Some(errors), Some(input), Some(expected)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            panic!("malformed case line {line:?}");
        };
        let charset = String::from_utf8(unhex(charset)).expect("charset names are UTF-8");
        let errors = match errors {
            "strict" => Errors::Strict,
            "ignore" => Errors::Ignore,
            _ => Errors::Replace,
        };
        let input = unhex(input);
        let expected = match expected {
            "LookupError" => Err(DecodeError::UnknownCharset(charset.clone())),
            "UnicodeError" => Err(DecodeError::Invalid(charset.clone())),
            text => Ok(String::from_utf8(unhex(text)).expect("results are UTF-8")),
        };
        count += 1;
        let actual = decode(&input, &charset, errors);
        if actual != expected {
            let shown = |text: String| text.chars().take(160).collect::<String>();
            failures.push((
                charset.clone(),
                shown(format!(
                    "{charset:?} {errors:?} {}: python {expected:?}, ours {actual:?}",
                    hex::encode(&input)
                )),
            ));
        }
    }
    assert!(count > 0, "no cases from {script}");
    // the shortest three failures of each charset
    failures.sort_by_key(|(charset, line)| (charset.clone(), line.len()));
    let mut report = Vec::new();
    let mut shown_for = (String::new(), 0);
    for (charset, line) in &failures {
        if shown_for.0 != *charset {
            shown_for = (charset.clone(), 0);
        }
        shown_for.1 += 1;
        if shown_for.1 <= 3 {
            report.push(line.clone());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases differ:\n{}",
        failures.len(),
        report.join("\n")
    );
}
