//! CPython 3.11's `email.feedparser.FeedParser` over a whole message, as
//! `email.message_from_bytes` runs it (compat32 policy).
//!
//! Python decodes the input as ASCII with `surrogateescape`, so each byte is
//! one character and this parser works on byte ranges of the input. It keeps
//! only what the MIME walk needs: each part's `Content-Type` and
//! `Content-Transfer-Encoding` (the first of each, as `Message.get` returns
//! it), whether it has subparts, and its payload as ranges of the input.
//! Parts are stored in creation order, which is `Message.walk()` order.

use std::ops::Range;

use super::params::{self, Boundary, ContentType};

/// How deep parts may nest before the rest of a part is kept as its
/// payload. Python has no such limit of its own (it hits its recursion
/// limit near 1000 generator frames and raises); this bound keeps the
/// stack small on any input.
pub const MAX_DEPTH: usize = 1000;

/// One message or subpart, as the walk sees it.
#[derive(Debug)]
pub struct Part {
    /// The value of the first `Content-Type` header, as
    /// `policy.header_source_parse` stores it.
    pub content_type: Option<Range<usize>>,
    /// The value of the first `Content-Transfer-Encoding` header.
    pub transfer_encoding: Option<Range<usize>>,
    /// `get_content_type()`, computed once the headers are known.
    pub ctype: ContentType,
    /// `is_multipart()`: subparts were attached.
    pub multipart: bool,
    /// The payload string, as pieces of the input (usually one).
    pub payload: Option<Vec<Range<usize>>>,
}

/// What makes `BufferedSubFile.readline` return a false EOF.
enum EofMatcher {
    /// `boundaryre.match` of an enclosing multipart.
    Boundary(Vec<u8>),
    /// `NLCRE.match` inside `message/delivery-status`: a line that starts
    /// with a line break.
    BlankLine,
}

/// The parser state: `BufferedSubFile` plus the message stack.
struct FeedParser<'a> {
    data: &'a [u8],
    /// Offset of the next unread line.
    pos: usize,
    /// Lines pushed back by `unreadline`, the next one last.
    pushed_back: Vec<Range<usize>>,
    eof_stack: Vec<EofMatcher>,
    parts: Vec<Part>,
    /// `_msgstack`: indexes into `parts`.
    stack: Vec<usize>,
    /// `_last`: the part created last, or the multipart just finished.
    last: usize,
    /// Header lines of the part being parsed (reused between parts).
    header_lines: Vec<Range<usize>>,
}

/// Parses a message into its parts in walk order.
pub fn parse(data: &[u8]) -> Vec<Part> {
    let mut parser = FeedParser {
        data,
        pos: 0,
        pushed_back: Vec::new(),
        eof_stack: Vec::new(),
        parts: Vec::new(),
        stack: Vec::new(),
        last: 0,
        header_lines: Vec::new(),
    };
    parser.parse_part(0);
    parser.parts
}

/// The length of a line starting at `data[0]`: up to and including the
/// first `\r\n`, `\r` or `\n` (`StringIO(newline='').readlines()`).
fn line_len(data: &[u8]) -> usize {
    match find_line_break(data) {
        None => data.len(),
        Some(at) if data[at] == b'\r' && data.get(at + 1) == Some(&b'\n') => at + 2,
        Some(at) => at + 1,
    }
}

/// The index of the first `\r` or `\n`.
fn find_line_break(data: &[u8]) -> Option<usize> {
    find_either(data, b'\n', b'\r')
}

/// The index of the first `first` or `second` byte, eight bytes at a time
/// (the parser and the decoders spend most of their time here).
pub(super) fn find_either(data: &[u8], first: u8, second: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_byte = |word: u64, byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS != 0
    };
    let mut chunks = data.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight bytes"));
        if has_byte(word, first) || has_byte(word, second) {
            break;
        }
        offset += 8;
    }
    data[offset..]
        .iter()
        .position(|&b| b == first || b == second)
        .map(|at| offset + at)
}

/// `boundaryre.match(line)`: `Some(true)` for the close boundary.
/// The regex is `--BOUNDARY(--)?[ \t]*(\r\n|\r|\n)?$` and a line holds at
/// most one line break, at its end.
fn match_boundary(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let tail_ok = |tail: &[u8]| {
        let tail = &tail[tail
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count()..];
        matches!(tail, b"" | b"\n" | b"\r" | b"\r\n")
    };
    if let Some(after) = rest.strip_prefix(b"--")
        && tail_ok(after)
    {
        return Some(true);
    }
    tail_ok(rest).then_some(false)
}

/// `headerRE.match(line)`: `From `, a field name and colon, or folding
/// whitespace.
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

/// Appends a line to a payload, merging it with the previous piece when
/// they touch.
fn push_range(pieces: &mut Vec<Range<usize>>, line: Range<usize>) {
    if line.is_empty() {
        return;
    }
    match pieces.last_mut() {
        Some(prev) if prev.end == line.start => prev.end = line.end,
        _ => pieces.push(line),
    }
}

impl FeedParser<'_> {
    /// `BufferedSubFile.readline`: `None` at the real or a false EOF.
    fn readline(&mut self) -> Option<Range<usize>> {
        let line = match self.pushed_back.pop() {
            Some(line) => line,
            None if self.pos >= self.data.len() => return None,
            None => {
                let start = self.pos;
                self.pos += line_len(&self.data[start..]);
                start..self.pos
            }
        };
        let text = &self.data[line.clone()];
        // Only lines starting with `-` or a line break can match.
        let candidate = matches!(text.first(), Some(b'-' | b'\r' | b'\n'));
        let at_eof = candidate
            && self.eof_stack.iter().any(|matcher| match matcher {
                EofMatcher::Boundary(boundary) => match_boundary(text, boundary).is_some(),
                EofMatcher::BlankLine => matches!(text.first(), Some(b'\r' | b'\n')),
            });
        if at_eof {
            self.pushed_back.push(line);
            return None;
        }
        Some(line)
    }

    /// `BufferedSubFile.unreadline`. Python also pushes back the `''` of an
    /// EOF in one place; reading it gives EOF again, as the next real read
    /// would, so that push is left out.
    fn unreadline(&mut self, line: Range<usize>) {
        self.pushed_back.push(line);
    }

    /// Reads to the (false) EOF, returning the lines as payload pieces.
    fn read_rest(&mut self) -> Vec<Range<usize>> {
        let mut pieces = Vec::new();
        if self.eof_stack.is_empty() {
            // Nothing can stop the reading before the end: no need to split.
            while let Some(line) = self.pushed_back.pop() {
                push_range(&mut pieces, line);
            }
            push_range(&mut pieces, self.pos..self.data.len());
            self.pos = self.data.len();
            return pieces;
        }
        while let Some(line) = self.readline() {
            push_range(&mut pieces, line);
        }
        pieces
    }

    /// `FeedParser._new_message`.
    fn new_message(&mut self) -> usize {
        let parent = self.stack.last().copied();
        let digest_child = parent.is_some_and(|p| self.parts[p].ctype.is_digest());
        if let Some(p) = parent {
            self.parts[p].multipart = true;
        }
        let index = self.parts.len();
        self.parts.push(Part {
            content_type: None,
            transfer_encoding: None,
            ctype: ContentType::default_for(digest_child),
            multipart: false,
            payload: None,
        });
        self.stack.push(index);
        self.last = index;
        index
    }

    /// `FeedParser._parsegen` for one part, which is popped when done.
    fn parse_part(&mut self, depth: usize) {
        let index = self.new_message();
        self.read_headers();
        self.parse_headers(index);
        let ctype = self.parts[index].ctype;
        if depth >= MAX_DEPTH {
            self.parts[index].payload = Some(self.read_rest());
        } else if ctype.is_delivery_status() {
            self.parse_delivery_status(depth);
        } else if ctype.is_message() {
            self.parse_part(depth + 1);
        } else if ctype.is_multipart() {
            self.parse_multipart(index, depth);
        } else {
            self.parts[index].payload = Some(self.read_rest());
        }
        self.stack.pop();
    }

    /// The header loop of `_parsegen`: header lines up to the blank line
    /// (dropped) or the first line that is not a header (pushed back).
    fn read_headers(&mut self) {
        self.header_lines.clear();
        while let Some(line) = self.readline() {
            let text = &self.data[line.clone()];
            if !is_header_line(text) {
                if !matches!(text.first(), Some(b'\r' | b'\n')) {
                    self.unreadline(line);
                }
                break;
            }
            self.header_lines.push(line);
        }
    }

    /// `FeedParser._parse_headers` with `Compat32.header_source_parse`.
    fn parse_headers(&mut self, index: usize) {
        let mut current: Option<(Range<usize>, Range<usize>)> = None;
        let count = self.header_lines.len();
        for lineno in 0..count {
            let line = self.header_lines[lineno].clone();
            let text = &self.data[line.clone()];
            if matches!(text.first(), Some(b' ' | b'\t')) {
                // A continuation; one before any header is dropped.
                if let Some((_, value)) = current.as_mut() {
                    value.end = line.end;
                }
                continue;
            }
            if let Some((name, value)) = current.take() {
                self.set_header(index, name, value);
            }
            if text.starts_with(b"From ") {
                // The unix-from line, or one at the end that starts the body.
                if lineno != 0 && lineno == count - 1 {
                    self.unreadline(line);
                    return;
                }
                continue;
            }
            match text.iter().position(|&b| b == b':') {
                Some(colon) if colon > 0 => {
                    let value_start = line.start
                        + colon
                        + 1
                        + text[colon + 1..]
                            .iter()
                            .take_while(|&&b| b == b' ' || b == b'\t')
                            .count();
                    current = Some((line.start..line.start + colon, value_start..line.end));
                }
                _ => {}
            }
        }
        if let Some((name, value)) = current {
            self.set_header(index, name, value);
        }
    }

    /// Keeps the headers the walk reads, the first of each name.
    fn set_header(&mut self, index: usize, name: Range<usize>, mut value: Range<usize>) {
        while value.end > value.start && matches!(self.data[value.end - 1], b'\r' | b'\n') {
            value.end -= 1;
        }
        let name = &self.data[name];
        let part = &mut self.parts[index];
        if name.eq_ignore_ascii_case(b"content-type") {
            if part.content_type.is_none() {
                part.ctype = ContentType::parse(&self.data[value.clone()]);
                part.content_type = Some(value);
            }
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding")
            && part.transfer_encoding.is_none()
        {
            part.transfer_encoding = Some(value);
        }
    }

    /// `message/delivery-status`: blocks of headers separated by blank
    /// lines, each parsed as a subpart.
    fn parse_delivery_status(&mut self, depth: usize) {
        loop {
            self.eof_stack.push(EofMatcher::BlankLine);
            self.parse_part(depth + 1);
            self.eof_stack.pop();
            // Consume the blank line, then look for the end of the part.
            let _ = self.readline();
            match self.readline() {
                None => break,
                Some(line) => self.unreadline(line),
            }
        }
    }

    /// The `multipart/*` branch of `_parsegen`.
    fn parse_multipart(&mut self, index: usize, depth: usize) {
        let content_type = self.parts[index].content_type.clone();
        let boundary = match content_type {
            Some(range) => params::boundary(&self.data[range]),
            None => Boundary::Missing,
        };
        let boundary = match boundary {
            Boundary::Missing => {
                self.parts[index].payload = Some(self.read_rest());
                return;
            }
            // A boundary with characters no input line can hold: nothing
            // ever matches it.
            Boundary::Unmatchable => None,
            Boundary::Text(text) => Some(text),
        };
        let matches = |line: &[u8]| {
            boundary
                .as_deref()
                .and_then(|boundary| match_boundary(line, boundary))
        };
        let mut capturing_preamble = true;
        let mut preamble = Vec::new();
        let mut close_boundary_seen = false;
        while let Some(line) = self.readline() {
            match matches(&self.data[line.clone()]) {
                Some(true) => {
                    close_boundary_seen = true;
                    break;
                }
                Some(false) if capturing_preamble => {
                    capturing_preamble = false;
                    self.unreadline(line);
                }
                Some(false) => {
                    // Repeated boundary lines (even a close one) are skipped.
                    while let Some(next) = self.readline() {
                        if matches(&self.data[next.clone()]).is_none() {
                            self.unreadline(next);
                            break;
                        }
                    }
                    let boundary = boundary.clone().unwrap_or_default();
                    self.eof_stack.push(EofMatcher::Boundary(boundary));
                    self.parse_part(depth + 1);
                    self.strip_last_line_break();
                    self.eof_stack.pop();
                    self.last = index;
                }
                None => push_range(&mut preamble, line),
            }
        }
        if capturing_preamble {
            // No start boundary: the preamble is the payload.
            self.parts[index].payload = Some(preamble);
            self.read_rest();
        } else if close_boundary_seen {
            // The epilogue.
            self.read_rest();
        }
    }

    /// RFC 2046: the line break before a boundary belongs to the boundary,
    /// so it leaves the payload of the part parsed last (multiparts keep
    /// theirs: Python trims their epilogue instead).
    fn strip_last_line_break(&mut self) {
        let part = &mut self.parts[self.last];
        if part.ctype.is_multipart() {
            return;
        }
        let Some(pieces) = part.payload.as_mut() else {
            return;
        };
        let Some(piece) = pieces.last_mut() else {
            return;
        };
        let text = &self.data[piece.clone()];
        let cut = if text.ends_with(b"\r\n") {
            2
        } else if text.ends_with(b"\n") || text.ends_with(b"\r") {
            1
        } else {
            0
        };
        piece.end -= cut;
        if piece.start == piece.end {
            pieces.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_lines() {
        assert_eq!(match_boundary(b"--b\r\n", b"b"), Some(false));
        assert_eq!(match_boundary(b"--b-- \t\n", b"b"), Some(true));
        assert_eq!(match_boundary(b"--b", b"b"), Some(false));
        assert_eq!(match_boundary(b"--b---\n", b"b"), None);
        assert_eq!(match_boundary(b"--bc\n", b"b"), None);
        assert_eq!(match_boundary(b"--b x\n", b"b"), None);
    }

    #[test]
    fn header_lines() {
        assert!(is_header_line(b"Subject: x\n"));
        assert!(is_header_line(b":x\n"));
        assert!(is_header_line(b" folded\n"));
        assert!(is_header_line(b"From someone\n"));
        assert!(!is_header_line(b"Sub ject: x\n"));
        assert!(!is_header_line(b"\n"));
    }
}
