//! The MIME walk of CPython 3.11's `email` package. PLACEHOLDER: being
//! replaced.

/// What one part of a message gives to the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A `text/*` part: its body after `get_payload(decode=True)` and its
    /// `get_content_charset()`; `html` when the subtype is `html`.
    Text {
        body: Vec<u8>,
        charset: Option<String>,
        html: bool,
    },
    /// A leaf that is neither text nor multipart: `get_payload()` as Python
    /// returns it (a `str`, still transfer-encoded).
    Raw(String),
}

/// The payloads of a message's parts in `Message.walk()` order.
pub fn payloads(message: &[u8]) -> Vec<Payload> {
    let body = match message.windows(2).position(|w| w == b"\n\n") {
        Some(at) => message[at + 2..].to_vec(),
        None => Vec::new(),
    };
    vec![Payload::Text {
        body,
        charset: None,
        html: false,
    }]
}
