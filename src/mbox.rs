//! Splitting an mbox file into messages exactly as Python's
//! `mailbox.mbox` does (CPython 3.11 `_generate_toc` and `get_message`),
//! which is how `pyzor -s mbox` reads its input.
//!
//! A message starts at every line beginning with `From ` (no escaping is
//! undone) and ends before the next one; a single empty line right before
//! the next `From ` line (or the end of the file) is not part of the
//! message. Lines end at LF only. Text before the first `From ` line is
//! ignored. No I/O.

/// One message of an mbox file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The `From ` line's text after `From `, without its line end.
    pub from_line: &'a [u8],
    /// The message itself, after the `From ` line.
    pub message: &'a [u8],
}

impl Entry<'_> {
    /// Python decodes the `From ` line as ascii and fails on anything else
    /// (`mailbox.mbox.get_message`), ending `pyzor -s mbox` with a traceback.
    pub fn from_line_is_ascii(&self) -> bool {
        self.from_line.is_ascii()
    }
}

/// The messages of an mbox file, in file order.
pub fn split(data: &[u8]) -> Vec<Entry<'_>> {
    let mut bounds: Vec<(usize, usize)> = Vec::new();
    let mut start: Option<usize> = None;
    let mut last_was_empty = false;
    let mut pos = 0;
    loop {
        let line_end = match find_newline(&data[pos..]) {
            Some(at) => pos + at + 1,
            None => data.len(),
        };
        let line = &data[pos..line_end];
        if line.starts_with(b"From ") {
            if let Some(begin) = start {
                bounds.push((begin, if last_was_empty { pos - 1 } else { pos }));
            }
            start = Some(pos);
            last_was_empty = false;
        } else if line.is_empty() {
            if let Some(begin) = start {
                bounds.push((begin, if last_was_empty { pos - 1 } else { pos }));
            }
            break;
        } else {
            last_was_empty = line == b"\n";
        }
        pos = line_end;
    }
    bounds
        .into_iter()
        .map(|(begin, stop)| {
            let from_end = match find_newline(&data[begin..]) {
                Some(at) => begin + at + 1,
                None => data.len(),
            };
            let from_line = data[begin + 5..from_end]
                .strip_suffix(b"\n")
                .unwrap_or(&data[begin + 5..from_end]);
            Entry {
                from_line,
                message: &data[from_end.min(stop.max(from_end))..stop.max(from_end)],
            }
        })
        .collect()
}

/// The first LF in `bytes`, looked for eight bytes at a time (the mbox is
/// mostly long lines, and this scan is most of the splitting).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        let zeroed = word ^ NEWLINES;
        // The lowest high bit set marks the first zero byte, the LF.
        let found = zeroed.wrapping_sub(ONES) & !zeroed & HIGHS;
        if found != 0 {
            return Some(offset + found.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|at| offset + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_one_blank_line_before_from() {
        // Python: [m.as_bytes() ...] of mailbox.mbox over this text gives
        // b"a: b\n\nbody\n" and b"c: d\n\nx\n\n".
        let data = b"junk\nFrom a\na: b\n\nbody\n\nFrom b\nc: d\n\nx\n\n\n";
        let entries = split(data);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].from_line, b"a");
        assert_eq!(entries[0].message, b"a: b\n\nbody\n");
        assert_eq!(entries[1].message, b"c: d\n\nx\n\n");
    }

    #[test]
    fn finds_the_first_newline_anywhere() {
        for filler in [0x00, 0x0b, 0x8a, 0xff] {
            for len in 0..20 {
                for at in 0..=len {
                    let mut bytes = vec![filler; len];
                    if at < len {
                        bytes[at] = b'\n';
                        if at + 1 < len {
                            bytes[at + 1] = b'\n';
                        }
                    }
                    let expected = (at < len).then_some(at);
                    assert_eq!(find_newline(&bytes), expected, "{filler:#x} {len} {at}");
                }
            }
        }
    }
}
