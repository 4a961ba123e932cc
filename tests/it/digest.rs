//! Our digests against Python pyzor 1.1.2's, message by message: the
//! SpamAssassin corpus, a generated adversarial set, and bad input.

use std::path::PathBuf;
use std::process::Command;

use crate::util::reference::{compare_files, our_digest, python_digests};
use crate::util::{
    corpus_files, files_in, manifest_dir, our_binary, pseudo_random_bytes, reference_python, run,
    temp_dir,
};

#[test]
fn corpus_digests_match_python() {
    let files = corpus_files();
    let comparison = compare_files(&files);
    assert_eq!(
        comparison.python_errors, 0,
        "Python pyzor digests the whole corpus"
    );
    comparison.assert_all_agree("SpamAssassin corpus");
}

#[test]
fn generated_messages_match_python() {
    let dir = temp_dir();
    let script = manifest_dir().join("tests/ref/gen_messages.py");
    let output = run(
        Command::new(reference_python())
            .arg(&script)
            .arg(dir.path()),
        b"",
    );
    assert!(
        output.status.success(),
        "gen_messages.py failed: {}",
        output.stderr_text()
    );
    let files = files_in(dir.path());
    assert!(
        files.len() >= 1000,
        "gen_messages.py wrote {} messages",
        files.len()
    );
    compare_files(&files).assert_all_agree("generated messages");
}

/// Handcrafted broken or hostile messages: (name, bytes).
fn bad_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut inputs: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("one line end", b"\n".to_vec()),
        ("headers only, no line end", b"Subject: nothing follows".to_vec()),
        ("random 1 MB", pseudo_random_bytes(1, 1 << 20)),
        (
            "multipart without boundary",
            b"Content-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\nhello there world\n--x--\n"
                .to_vec(),
        ),
        (
            "multipart whose boundary never comes",
            b"Content-Type: multipart/mixed; boundary=\"b\"\n\npreamble line here\n--c\n\nbody line here\n"
                .to_vec(),
        ),
        (
            "multipart without closing delimiter",
            b"Content-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/html\n\n<p>unclosed <b>html</p>\n--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\nw6nDqcOpw6nDqcOpw6nDqcOpw6nDqQ=\n"
                .to_vec(),
        ),
        (
            "base64 junk",
            b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!!!****====\nYWJj ZGVm\n=\nZ\n".to_vec(),
        ),
        (
            "quoted-printable bad escapes",
            b"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\ncaf=E9 =ZZ =4 =\n= \nend=\n"
                .to_vec(),
        ),
        (
            "empty message/rfc822",
            b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\n--b--\n".to_vec(),
        ),
        (
            "unclosed script and comment",
            b"Content-Type: text/html\n\n<p>visible text here</p><script>hidden text <!-- and more\n".to_vec(),
        ),
        (
            "NUL bytes",
            b"Sub\0ject: x\0\nContent-Type: text/plain; charset=\"utf-8\0\"\n\n\0a\0b\0c\0d\0e\0f\0g\0h\0\n".to_vec(),
        ),
        (
            "lone CR line ends",
            b"Subject: cr\rContent-Type: text/plain\r\rfirst line of text\rsecond line of text\r".to_vec(),
        ),
        (
            "RFC 2231 charset in an unknown charset",
            b"Content-Type: text/plain; charset*=bogus''%75tf-8\nContent-Transfer-Encoding: 8bit\n\n\xc3\xa9t\xc3\xa9 \xc3\xa0 la plage\n"
                .to_vec(),
        ),
    ];
    inputs.push(("nested 300 deep", nested_multipart(300)));
    inputs.push(("50 MB message", big_message(50 << 20)));
    inputs
}

/// `depth` multiparts, each the only part of the one above, around one
/// line of text.
fn nested_multipart(depth: usize) -> Vec<u8> {
    let mut message = b"Subject: deep\n".to_vec();
    for level in 0..depth {
        message.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{level}\"\n\n--b{level}\n")
                .as_bytes(),
        );
    }
    message.extend_from_slice(b"Content-Type: text/plain\n\nhello from the bottom line\n");
    for level in (0..depth).rev() {
        message.extend_from_slice(format!("\n--b{level}--\n").as_bytes());
    }
    message
}

/// A multipart message of about `size` bytes: a long text part, an HTML
/// part and a base64 attachment, with pseudo-random words.
fn big_message(size: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "free",
        "money",
        "click",
        "here",
        "caf\u{e9}",
        "\u{43f}\u{440}\u{438}",
        "now",
        "x@y.z",
        "http://a.b/c",
        "aaaaaaaaaaaa",
        "offer",
        "\u{4e2d}\u{6587}",
    ];
    let random = pseudo_random_bytes(50, size / 4);
    let mut text = String::new();
    let mut html = String::from("<html><body>");
    for (index, byte) in random.iter().take(size / 4).enumerate() {
        let word = WORDS[*byte as usize % WORDS.len()];
        if text.len() < size * 2 / 5 {
            text.push_str(word);
            text.push(if index % 11 == 10 { '\n' } else { ' ' });
        } else if html.len() < size / 10 {
            html.push_str(if index % 7 == 0 { "<p>" } else { " " });
            html.push_str(word);
        }
    }
    let mut message = b"Subject: big\nContent-Type: multipart/mixed; boundary=\"big\"\n\n".to_vec();
    message.extend_from_slice(b"--big\nContent-Type: text/plain; charset=utf-8\n\n");
    message.extend_from_slice(text.as_bytes());
    message.extend_from_slice(b"\n--big\nContent-Type: text/html; charset=utf-8\n\n");
    message.extend_from_slice(html.as_bytes());
    message.extend_from_slice(
        b"\n--big\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n",
    );
    let attachment = pseudo_random_bytes(7, size.saturating_sub(message.len()) * 3 / 4);
    for chunk in attachment.chunks(57) {
        message.extend_from_slice(base64_line(chunk).as_bytes());
    }
    message.extend_from_slice(b"--big--\n");
    message
}

/// One line of standard base64 with its line end.
fn base64_line(chunk: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut line = String::with_capacity(chunk.len() * 4 / 3 + 4);
    for group in chunk.chunks(3) {
        let bytes = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= group.len() {
                line.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                line.push('=');
            }
        }
    }
    line.push('\n');
    line
}

#[test]
fn bad_input_matches_python_without_panic() {
    let dir = temp_dir();
    let inputs = bad_inputs();
    let files: Vec<PathBuf> = inputs
        .iter()
        .enumerate()
        .map(|(index, (_, bytes))| {
            let path = dir.path().join(format!("{index:02}.eml"));
            std::fs::write(&path, bytes).expect("the temporary directory is writable");
            path
        })
        .collect();
    let python = python_digests(&files);
    let mut failures = Vec::new();
    for (((name, bytes), expected), file) in inputs.iter().zip(python).zip(&files) {
        let ours = our_digest(bytes);
        match (&expected, &ours) {
            (_, Err(panic)) => failures.push(format!("{name} ({}): ours {panic}", file.display())),
            (Err(error), Ok(_)) => eprintln!("{name}: Python raises ({error}); ours digests it"),
            (Ok(expected), Ok(ours)) if expected != ours => failures.push(format!(
                "{name}: python {} {:?}\n    ours {} {:?}",
                expected.digest, expected.predigest, ours.digest, ours.predigest
            )),
            (Ok(_), Ok(_)) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs differ from Python pyzor 1.1.2:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

/// Nesting deep enough that Python raises RecursionError must not
/// overflow our stack: run in a child process so a crash cannot take the
/// test binary down.
#[test]
fn very_deep_nesting_does_not_crash() {
    let message = nested_multipart(5000);
    let output = run(
        Command::new(our_binary()).args(["pyzor", "digest"]),
        &message,
    );
    assert!(
        output
            .status
            .code()
            .is_some_and(|code| code == 0 || code == 1),
        "pyzor digest of a 5000-deep multipart ended with {}: {}",
        output.exit(),
        output.stderr_text()
    );
}
