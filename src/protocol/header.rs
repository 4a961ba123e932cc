//! The header block of a Pyzor datagram as CPython's `email` feedparser
//! (compat32 policy) reads it; pyzor parses requests and responses alike
//! with `email.message_from_bytes`, so the client and the server share
//! this one reader.
//!
//! Lines end at CRLF, CR or LF (`NLCRE_crack`). The block ends at the
//! first line that is not a header line by `headerRE`; an empty line there
//! is consumed. A `From ` line is never a field (the last header line goes
//! back to the body when it is one), a line starting with `:` is skipped,
//! and a continuation line with no field right before it is dropped (all
//! defects Python records and skips). Values lose their leading blanks and
//! final line end; continuation lines keep theirs.

/// Field names as written, with their raw values, in order.
pub type Fields = Vec<(String, Vec<u8>)>;

/// The fields of a header block, in order, and the body after them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    pub fields: Fields,
    /// The body, as `get_payload()` holds it (before any decoding).
    pub body: Vec<u8>,
}

/// Reads the header block at the start of `data`; never fails.
pub fn parse(data: &[u8]) -> HeaderBlock {
    let mut header_lines = Vec::new();
    let mut rest_start = data.len();
    let mut offset = 0;
    for line in lines(data) {
        if !is_header_line(line) {
            let blank = matches!(line, b"\n" | b"\r" | b"\r\n");
            rest_start = if blank { offset + line.len() } else { offset };
            break;
        }
        header_lines.push(line);
        offset += line.len();
    }
    let (fields, pushed_back) = parse_fields(&header_lines);
    let mut body = pushed_back.unwrap_or_default().to_vec();
    body.extend_from_slice(&data[rest_start..]);
    HeaderBlock { fields, body }
}

/// The feedparser's `_parse_headers`: a line that is no field (a `From `
/// line, a line starting with `:`) ends the field before it, so a
/// continuation line after it continues nothing and is dropped. A `From `
/// line that is the last header line goes back to the body. Returns the
/// fields and that line.
fn parse_fields<'a>(header_lines: &[&'a [u8]]) -> (Fields, Option<&'a [u8]>) {
    let mut fields = Vec::new();
    let mut current: Option<(String, Vec<u8>)> = None;
    let last = header_lines.len().saturating_sub(1);
    for (number, &line) in header_lines.iter().enumerate() {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some((_, value)) = current.as_mut() {
                value.extend_from_slice(line);
            }
            continue;
        }
        fields.extend(current.take().map(finish));
        if line.starts_with(b"From ") {
            if number == last && number > 0 {
                return (fields, Some(line));
            }
        } else if line.first() != Some(&b':') {
            current = Some(field(line));
        }
    }
    fields.extend(current.map(finish));
    (fields, None)
}

/// A whole field: its value without the final line ends (compat32's
/// `header_source_parse`).
fn finish((name, mut value): (String, Vec<u8>)) -> (String, Vec<u8>) {
    trim_line_end(&mut value);
    (name, value)
}

/// A field from its first line; its continuation lines are appended to the
/// value as they come, and the final line end goes ([`finish`]).
fn field(first: &[u8]) -> (String, Vec<u8>) {
    let colon = first.iter().position(|&b| b == b':').unwrap_or(first.len());
    let name = String::from_utf8_lossy(&first[..colon]).into_owned();
    let value = &first[(colon + 1).min(first.len())..];
    let blanks = value
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    (name, value[blanks..].to_vec())
}

/// Drops the line ends at the end of a whole value.
fn trim_line_end(value: &mut Vec<u8>) {
    let kept = value.len()
        - value
            .iter()
            .rev()
            .take_while(|&&b| matches!(b, b'\r' | b'\n'))
            .count();
    value.truncate(kept);
}

/// How the email package writes a value holding non-ASCII bytes (a
/// surrogate-escaped `str`): one RFC 2047 word in the `unknown-8bit`
/// charset, Q or B encoding, whichever is shorter (Q on a tie), as
/// `Charset.header_encode` chooses; nothing for an empty value.
pub fn unknown_8bit_word(value: &[u8]) -> String {
    use base64::Engine as _;
    if value.is_empty() {
        return String::new();
    }
    let q_safe = |b: u8| b.is_ascii_alphanumeric() || b"-!*+/".contains(&b);
    let q: String = value
        .iter()
        .map(|&b| match b {
            b' ' => "_".to_owned(),
            b if q_safe(b) => char::from(b).to_string(),
            b => format!("={b:02X}"),
        })
        .collect();
    let b_len = value.len().div_ceil(3) * 4;
    if b_len < q.len() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        format!("=?unknown-8bit?b?{encoded}?=")
    } else {
        format!("=?unknown-8bit?q?{q}?=")
    }
}

/// Splits after each line end (`\r\n`, `\r` or `\n`), keeping the ends.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => rest.len(),
            Some(at) if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') => at + 2,
            Some(at) => at + 1,
        };
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

/// The feedparser's `headerRE`: `^(From |[\041-\071\073-\176]*:|[\t ])`.
fn is_header_line(line: &[u8]) -> bool {
    if line.starts_with(b"From ") || matches!(line.first(), Some(b' ' | b'\t')) {
        return true;
    }
    let name_len = line
        .iter()
        .take_while(|&&b| (0x21..=0x7e).contains(&b) && b != b':')
        .count();
    line.get(name_len) == Some(&b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_as_the_feedparser() {
        // Python: m = email.message_from_bytes(DATA); m.items() gives
        // [('Code', '200'), ('Diag', 'OK\n x')] and m.get_payload() 'body'.
        let data = b"From x\r\n cont\r\n:bad\r\nCode: 200\rDiag:\t OK\n x\n\nbody";
        let block = parse(data);
        assert_eq!(
            block.fields,
            [
                ("Code".to_owned(), b"200".to_vec()),
                ("Diag".to_owned(), b"OK\n x".to_vec())
            ]
        );
        assert_eq!(block.body, b"body");
    }

    #[test]
    fn a_skipped_line_ends_the_field_before_it() {
        // Python: email.message_from_bytes(b"Op: check\n:x\n y\nThread: 1\nFrom x\n 5\nPV: 2.1\n")
        // .items() == [('Op', 'check'), ('Thread', '1'), ('PV', '2.1')]
        let block = parse(b"Op: check\n:x\n y\nThread: 1\nFrom x\n 5\nPV: 2.1\n");
        let values: Vec<&[u8]> = block.fields.iter().map(|(_, value)| &value[..]).collect();
        assert_eq!(values, [&b"check"[..], b"1", b"2.1"]);
        // A `From ` last header line is the body's first: get_payload() is
        // 'From x\nrest'.
        let block = parse(b"Op: ping\nFrom x\n\nrest");
        assert_eq!(block.fields.len(), 1);
        assert_eq!(block.body, b"From x\nrest");
        assert!(parse(b"From x\nOp: ping\n").body.is_empty());
    }
}
