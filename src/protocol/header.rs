//! The header block of a Pyzor datagram as CPython's `email` feedparser
//! (compat32 policy) reads it; pyzor parses requests and responses alike
//! with `email.message_from_bytes`, so the client and the server share
//! this one reader.
//!
//! Lines end at CRLF, CR or LF (`NLCRE_crack`). The block ends at the
//! first line that is not a header line by `headerRE`; an empty line there
//! is consumed. A `From ` line is never a field, a continuation line
//! before any field is dropped, a line starting with `:` is skipped (all
//! defects Python records and skips). Values lose their leading blanks and
//! final line end; continuation lines keep theirs.

/// The fields of a header block, in order, and where the body starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    /// Field names as written, with their raw values.
    pub fields: Vec<(String, Vec<u8>)>,
    /// Byte offset of the body in the parsed data.
    pub body_start: usize,
}

/// Reads the header block at the start of `data`; never fails.
pub fn parse(data: &[u8]) -> HeaderBlock {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    let mut body_start = data.len();
    let mut offset = 0;
    for line in lines(data) {
        if !is_header_line(line) {
            let blank = matches!(line, b"\n" | b"\r" | b"\r\n");
            body_start = if blank { offset + line.len() } else { offset };
            break;
        }
        offset += line.len();
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some((_, value)) = fields.last_mut() {
                value.extend_from_slice(line);
            }
        } else if !line.starts_with(b"From ") && line.first() != Some(&b':') {
            if let Some((_, value)) = fields.last_mut() {
                trim_line_end(value);
            }
            fields.push(field(line));
        }
    }
    if let Some((_, value)) = fields.last_mut() {
        trim_line_end(value);
    }
    HeaderBlock { fields, body_start }
}

/// A field from its first line; its continuation lines are appended to the
/// value as they come, and the final line end goes ([`trim_line_end`]).
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
        assert_eq!(&data[block.body_start..], b"body");
    }
}
