//! Prints `digest::mime::payloads` for each file given, in the JSON-lines
//! format of `tests/ref/mime_payloads.py`, to compare the MIME walk with
//! Python's: `cargo run --release --example mime_dump -- FILES...`.

use std::fmt::Write as _;

use pyzor_milter::digest::mime::{self, Payload};

fn main() -> std::io::Result<()> {
    let mut out = String::new();
    for path in std::env::args().skip(1) {
        let message = std::fs::read(&path)?;
        let items: Vec<String> = mime::payloads(&message)
            .iter()
            .map(|payload| match payload {
                Payload::Text {
                    body,
                    charset,
                    html,
                } => {
                    let charset = charset
                        .as_ref()
                        .map_or("null".to_owned(), |c| format!("\"{}\"", hex::encode(c)));
                    format!("[\"text\",\"{}\",{charset},{html}]", hex::encode(body))
                }
                Payload::Raw(text) => format!("[\"raw\",\"{}\"]", hex::encode(text)),
            })
            .collect();
        let path = path.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "{{\"file\":\"{path}\",\"payloads\":[{}]}}",
            items.join(",")
        );
    }
    print!("{out}");
    Ok(())
}
