//! The `Content-Transfer-Encoding` decoders behind CPython 3.11's
//! `Message.get_payload(decode=True)`: `binascii.a2b_qp` (what
//! `quopri.decodestring` calls), `_encoded_words.decode_b` over
//! `binascii.a2b_base64`, and `message._decode_uu` over `binascii.a2b_uu`.
//! Each keeps Python's handling of broken input, byte for byte.

use super::parser::find_either;

/// `binascii.a2b_qp(data, header=False)`.
pub fn quoted_printable(data: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    while at < data.len() {
        let run = find_either(&data[at..], b'=', b'=').unwrap_or(data.len() - at);
        out.extend_from_slice(&data[at..at + run]);
        at += run;
        if at >= data.len() {
            break;
        }
        at += 1;
        match data.get(at..) {
            None | Some([]) => break,
            // A soft line break; after `=\r` everything up to `\n` goes.
            Some([b'\n' | b'\r', ..]) => {
                at += data[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len() - at, |n| n + 1);
            }
            Some([b'=', ..]) => {
                out.push(b'=');
                at += 1;
            }
            Some([high, low, ..]) if hex(*high).is_some() && hex(*low).is_some() => {
                let value = hex(*high).unwrap_or(0) * 16 + hex(*low).unwrap_or(0);
                out.push(value as u8);
                at += 2;
            }
            Some(_) => out.push(b'='),
        }
    }
    out
}

/// `binascii.a2b_base64(data, strict_mode=strict)` as in CPython 3.11;
/// `None` where it raises `binascii.Error`.
fn a2b_base64(data: &[u8], strict: bool) -> Option<Vec<u8>> {
    if strict && data.first() == Some(&b'=') {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 3);
    let (mut quad_pos, mut left, mut pads) = (0u32, 0u8, 0u32);
    let mut padding_started = false;
    for (index, &byte) in data.iter().enumerate() {
        if byte == b'=' {
            padding_started = true;
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    if strict && index + 1 < data.len() {
                        return None;
                    }
                    return Some(out);
                }
            }
            continue;
        }
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ if strict => return None,
            _ => continue,
        };
        if strict && padding_started {
            return None;
        }
        pads = 0;
        match quad_pos {
            0 => left = value,
            1 => {
                out.push(left << 2 | value >> 4);
                left = value & 0x0f;
            }
            2 => {
                out.push(left << 4 | value >> 2);
                left = value & 0x03;
            }
            _ => out.push(left << 6 | value),
        }
        quad_pos = (quad_pos + 1) % 4;
    }
    (quad_pos == 0).then_some(out)
}

/// `decode_b(b''.join(payload.splitlines()))`: strict with repaired
/// padding, then lenient, then lenient with `==`, else the joined input.
pub fn base64(payload: &[u8]) -> Vec<u8> {
    let mut joined: Vec<u8> = payload
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    let original_len = joined.len();
    let pad_err = original_len % 4;
    if pad_err != 0 {
        joined.extend(std::iter::repeat_n(b'=', 4 - pad_err));
    }
    if let Some(decoded) = a2b_base64(&joined, true) {
        return decoded;
    }
    joined.truncate(original_len);
    if let Some(decoded) = a2b_base64(&joined, false) {
        return decoded;
    }
    joined.extend_from_slice(b"==");
    if let Some(decoded) = a2b_base64(&joined, false) {
        return decoded;
    }
    joined.truncate(original_len);
    joined
}

/// `binascii.a2b_uu(line)`; `None` where it raises.
fn a2b_uu(line: &[u8]) -> Option<Vec<u8>> {
    let (&first, mut rest) = line.split_first()?;
    let mut remaining = usize::from(first.wrapping_sub(b' ') & 0o77);
    let mut out = Vec::with_capacity(remaining);
    let (mut left, mut bits) = (0u32, 0u32);
    while remaining > 0 {
        let value = match rest.split_first() {
            None | Some((b'\n' | b'\r', _)) => 0,
            Some((&c, _)) if !(b' '..=b' ' + 64).contains(&c) => return None,
            Some((&c, _)) => u32::from(c - b' ') & 0o77,
        };
        rest = rest.get(1..).unwrap_or_default();
        left = left << 6 | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((left >> bits) as u8);
            left &= (1 << bits) - 1;
            remaining -= 1;
        }
    }
    rest.iter()
        .all(|&c| matches!(c, b' ' | b'`' | b'\n' | b'\r'))
        .then_some(out)
}

/// `int(mode, base=8)` succeeding on the bytes of a `begin` line's mode.
fn is_octal_int(mode: &[u8]) -> bool {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let start = mode.iter().position(|b| !is_space(b)).unwrap_or(mode.len());
    let end = mode
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    let mut digits = &mode[start..end];
    if let Some(rest) = digits
        .strip_prefix(b"+")
        .or_else(|| digits.strip_prefix(b"-"))
    {
        digits = rest;
    }
    if let Some(rest) = digits
        .strip_prefix(b"0o")
        .or_else(|| digits.strip_prefix(b"0O"))
    {
        digits = rest.strip_prefix(b"_").unwrap_or(rest);
    }
    !digits.is_empty()
        && digits
            .split(|&b| b == b'_')
            .all(|group| !group.is_empty() && group.iter().all(|b| (b'0'..=b'7').contains(b)))
}

/// `bytes.splitlines()`: lines without their `\r\n`, `\r` or `\n`.
fn split_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = match rest.get(end..end + 2) {
            Some(b"\r\n") => 2,
            _ => (end + 1).min(rest.len()) - end,
        };
        rest = &rest[end + skip..];
        Some(line)
    })
}

/// `message._decode_uu`; `None` where it raises `ValueError` (the caller
/// then keeps the payload as it is).
pub fn uudecode(payload: &[u8]) -> Option<Vec<u8>> {
    let mut lines = split_lines(payload);
    lines.by_ref().find(|line| {
        line.strip_prefix(b"begin ").is_some_and(|rest| {
            let mode = rest.split(|&b| b == b' ').next().unwrap_or_default();
            is_octal_int(mode)
        })
    })?;
    let mut out = Vec::new();
    for line in lines {
        if line.is_empty() {
            return None;
        }
        let trimmed = line
            .iter()
            .position(|b| !b" \t\r\n\x0c".contains(b))
            .map(|s| {
                &line[s..line
                    .iter()
                    .rposition(|b| !b" \t\r\n\x0c".contains(b))
                    .unwrap_or(s)
                    + 1]
            });
        if trimmed == Some(b"end".as_slice()) {
            break;
        }
        let decoded = match a2b_uu(line) {
            Some(decoded) => decoded,
            None => {
                // "Workaround for broken uuencoders by /Fredrik Lundh".
                let count = (usize::from(line[0].wrapping_sub(32) & 63) * 4 + 5) / 3;
                a2b_uu(&line[..count.min(line.len())])?
            }
        };
        out.extend_from_slice(&decoded);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_quirks() {
        // binascii.a2b_qp(b'a=\rbc\nd=4 =41=\r\nx=') == b'ad=4 Ax'
        assert_eq!(quoted_printable(b"a=\rbc\nd=4 =41=\r\nx="), b"ad=4 Ax");
        // binascii.a2b_qp(b'==41=4g') == b'=41=4g'
        assert_eq!(quoted_printable(b"==41=4g"), b"=41=4g");
    }

    #[test]
    fn base64_repairs() {
        // decode_b(b'QUJD')[0] == b'ABC'; decode_b(b'QUI')[0] == b'AB'
        assert_eq!(base64(b"QUJD"), b"ABC");
        assert_eq!(base64(b"QU\r\nI"), b"AB");
        // decode_b(b'QU=JD')[0] == b'ABC' (lenient pass)
        assert_eq!(base64(b"QU=JD"), b"ABC");
        // decode_b(b'QUJDR')[0] == b'QUJDR' (length 1 mod 4)
        assert_eq!(base64(b"QUJDR"), b"QUJDR");
        // decode_b(b'QQ==QUJD')[0] == b'A'
        assert_eq!(base64(b"QQ==QUJD"), b"A");
    }

    #[test]
    fn uu() {
        // email.message._decode_uu(b'begin 644 f\n#86)C\n`\nend\n') == b'abc'
        assert_eq!(
            uudecode(b"begin 644 f\n#86)C\n`\nend\n"),
            Some(b"abc".to_vec())
        );
        assert_eq!(uudecode(b"no begin\n"), None);
        assert!(is_octal_int(b"0o_7") && is_octal_int(b" +7 ") && !is_octal_int(b"8"));
    }
}
