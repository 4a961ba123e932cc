//! Python's Unicode codecs: ascii, utf-8, utf-16, utf-32, utf-7, the two
//! escape codecs, punycode and idna, each with CPython's error spans.

use super::{Invalid, Output};

/// `ascii`: each byte above 0x7F is one error.
pub(super) fn ascii(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    super::for_ascii_runs(bytes, out, |_, out| out.invalid())
}

/// `utf_8`: CPython reports each maximal invalid subpart (Unicode's
/// recommended practice) as one error, exactly the chunks `Utf8Chunks` yields.
pub(super) fn utf8(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        out.text.push_str(text);
        return Ok(());
    }
    for chunk in bytes.utf8_chunks() {
        out.text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.invalid()?;
        }
    }
    Ok(())
}

/// `utf_16*`: `big_endian` None reads a BOM, else the machine's order.
pub(super) fn utf16(
    bytes: &[u8],
    big_endian: Option<bool>,
    out: &mut Output,
) -> Result<(), Invalid> {
    let (mut rest, big_endian) = match (big_endian, bytes) {
        (Some(order), _) => (bytes, order),
        (None, [0xff, 0xfe, rest @ ..]) => (rest, false),
        (None, [0xfe, 0xff, rest @ ..]) => (rest, true),
        (None, _) => (bytes, cfg!(target_endian = "big")),
    };
    let unit = |pair: &[u8]| {
        let pair = [pair[0], pair[1]];
        u32::from(if big_endian {
            u16::from_be_bytes(pair)
        } else {
            u16::from_le_bytes(pair)
        })
    };
    while !rest.is_empty() {
        if rest.len() < 2 {
            // "truncated data": the odd last byte
            out.invalid()?;
            break;
        }
        let first = unit(rest);
        if !(0xd800..0xe000).contains(&first) {
            out.push_code_point(first);
            rest = &rest[2..];
        } else if first >= 0xdc00 {
            // "illegal encoding": a lone low surrogate
            out.invalid()?;
            rest = &rest[2..];
        } else if rest.len() < 4 {
            // "unexpected end of data": everything left
            out.invalid()?;
            break;
        } else {
            let second = unit(&rest[2..]);
            if (0xdc00..0xe000).contains(&second) {
                out.push_code_point(0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00));
                rest = &rest[4..];
            } else {
                // "illegal UTF-16 surrogate": the high half only
                out.invalid()?;
                rest = &rest[2..];
            }
        }
    }
    Ok(())
}

/// `utf_32*`: `big_endian` None reads a BOM, else the machine's order.
pub(super) fn utf32(
    bytes: &[u8],
    big_endian: Option<bool>,
    out: &mut Output,
) -> Result<(), Invalid> {
    let (rest, big_endian) = match (big_endian, bytes) {
        (Some(order), _) => (bytes, order),
        (None, [0xff, 0xfe, 0, 0, rest @ ..]) => (rest, false),
        (None, [0, 0, 0xfe, 0xff, rest @ ..]) => (rest, true),
        (None, _) => (bytes, cfg!(target_endian = "big")),
    };
    let mut units = rest.chunks_exact(4);
    for unit in &mut units {
        let quad = [unit[0], unit[1], unit[2], unit[3]];
        let code_point = if big_endian {
            u32::from_be_bytes(quad)
        } else {
            u32::from_le_bytes(quad)
        };
        match char::from_u32(code_point) {
            Some(c) => out.push(c),
            // surrogates and values past U+10FFFF: four bytes each
            None => out.invalid()?,
        }
    }
    if !units.remainder().is_empty() {
        // "truncated data"
        out.invalid()?;
    }
    Ok(())
}

fn base64_value(byte: u8) -> Option<u32> {
    Some(u32::from(match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// `utf_7`, ported from PyUnicode_DecodeUTF7Stateful (final).
pub(super) fn utf7(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    let direct = |byte: u8| byte <= 127 && byte != b'+';
    let mut in_shift = false;
    let mut bits = 0u32;
    let mut buffer = 0u32;
    let mut surrogate = 0u32;
    let mut position = 0;
    while position < bytes.len() {
        let byte = bytes[position];
        if in_shift {
            if let Some(value) = base64_value(byte) {
                buffer = (buffer << 6) | value;
                bits += 6;
                position += 1;
                if bits >= 16 {
                    let unit = (buffer >> (bits - 16)) & 0xffff;
                    bits -= 16;
                    buffer &= (1 << bits) - 1;
                    if surrogate != 0 {
                        if (0xdc00..0xe000).contains(&unit) {
                            out.push_code_point(
                                0x10000 + ((surrogate - 0xd800) << 10) + (unit - 0xdc00),
                            );
                            surrogate = 0;
                            continue;
                        }
                        out.push_code_point(surrogate);
                        surrogate = 0;
                    }
                    if (0xd800..0xdc00).contains(&unit) {
                        surrogate = unit;
                    } else {
                        out.push_code_point(unit);
                    }
                }
                continue;
            }
            in_shift = false;
            if bits >= 6 || (bits > 0 && buffer != 0) {
                // "partial character" or "non-zero padding bits": the span
                // runs from the '+' through the terminating byte
                position += 1;
                out.invalid()?;
                continue;
            }
            if surrogate != 0 && direct(byte) {
                out.push_code_point(surrogate);
            }
            surrogate = 0;
            if byte == b'-' {
                position += 1;
            }
        } else if byte == b'+' {
            position += 1;
            match bytes.get(position) {
                Some(b'-') => {
                    position += 1;
                    out.push('+');
                }
                Some(&next) if base64_value(next).is_none() => {
                    // "ill-formed sequence": '+' and the byte after it
                    position += 1;
                    out.invalid()?;
                }
                _ => {
                    in_shift = true;
                    surrogate = 0;
                    bits = 0;
                    buffer = 0;
                }
            }
        } else if direct(byte) {
            position += 1;
            out.push(char::from(byte));
        } else {
            // "unexpected special character"
            position += 1;
            out.invalid()?;
        }
    }
    if in_shift && (surrogate != 0 || bits >= 6 || (bits > 0 && buffer != 0)) {
        // "unterminated shift sequence"
        out.invalid()?;
    }
    Ok(())
}

fn hex_value(byte: u8) -> Option<u32> {
    char::from(byte).to_digit(16)
}

/// `unicode_escape` (`raw` false) and `raw_unicode_escape` (`raw` true),
/// after CPython's decoders. `\N{name}` needs Unicode's name table, which
/// this crate does not carry: every name is reported unknown (see the report
/// in the module's tests).
pub(super) fn unicode_escape(bytes: &[u8], raw: bool, out: &mut Output) -> Result<(), Invalid> {
    let mut position = 0;
    while position < bytes.len() {
        let byte = bytes[position];
        position += 1;
        if byte != b'\\' {
            out.push(char::from(byte));
            continue;
        }
        let Some(&escape) = bytes.get(position) else {
            if raw {
                out.push('\\');
            } else {
                // "\\ at end of string"
                out.invalid()?;
            }
            break;
        };
        position += 1;
        let digits = match escape {
            b'u' => 4,
            b'U' => 8,
            b'x' if !raw => 2,
            _ if raw => {
                out.push('\\');
                out.push(char::from(escape));
                continue;
            }
            _ => {
                simple_escape(bytes, escape, &mut position, out)?;
                continue;
            }
        };
        let mut code_point = 0u32;
        let mut complete = true;
        for _ in 0..digits {
            match bytes.get(position).copied().and_then(hex_value) {
                Some(value) => {
                    code_point = (code_point << 4) | value;
                    position += 1;
                }
                None => {
                    // truncated escape: the span stops before the bad byte
                    complete = false;
                    break;
                }
            }
        }
        if complete && code_point <= 0x10ffff {
            out.push_code_point(code_point);
        } else {
            out.invalid()?;
        }
    }
    Ok(())
}

/// The escapes of `unicode_escape` other than `\x`, `\u` and `\U`.
fn simple_escape(
    bytes: &[u8],
    escape: u8,
    position: &mut usize,
    out: &mut Output,
) -> Result<(), Invalid> {
    let simple = match escape {
        b'\n' => return Ok(()),
        b'\\' => '\\',
        b'\'' => '\'',
        b'"' => '"',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b't' => '\t',
        b'n' => '\n',
        b'r' => '\r',
        b'v' => '\u{b}',
        b'a' => '\u{7}',
        b'0'..=b'7' => {
            let mut code_point = u32::from(escape - b'0');
            for _ in 0..2 {
                match bytes.get(*position) {
                    Some(&digit @ b'0'..=b'7') => {
                        code_point = (code_point << 3) + u32::from(digit - b'0');
                        *position += 1;
                    }
                    _ => break,
                }
            }
            out.push_code_point(code_point);
            return Ok(());
        }
        b'N' => {
            // "malformed \\N character escape" or "unknown Unicode character
            // name": with a name, the span covers the closing brace, an empty
            // name leaves it to be read as text.
            if bytes.get(*position) == Some(&b'{') {
                match bytes[*position + 1..].iter().position(|&b| b == b'}') {
                    Some(0) => *position += 1,
                    Some(length) => *position += length + 2,
                    None => *position = bytes.len(),
                }
            }
            return out.invalid();
        }
        other => {
            // an unknown escape keeps its backslash (a DeprecationWarning only)
            out.push('\\');
            out.push(char::from(other));
            return Ok(());
        }
    };
    out.push(simple);
    Ok(())
}

/// `punycode`, after encodings.punycode. Python's integers do not overflow;
/// here a generalized number past u128 ends decoding as a malformed one does.
pub(super) fn punycode(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    let (base, extended) = match bytes.iter().rposition(|&b| b == b'-') {
        None => (Vec::new(), bytes),
        Some(dash) => {
            let mut base = Output::new(out.errors, dash);
            ascii(&bytes[..dash], &mut base)?;
            (
                base.text.chars().map(u32::from).collect(),
                &bytes[dash + 1..],
            )
        }
    };
    // str(extended, "ascii") is strict whatever the handler
    if !extended.is_ascii() {
        return Err(Invalid);
    }
    let extended: Vec<u8> = extended.to_ascii_uppercase();
    let decoded = insertion_sort(base, &extended, out.errors == super::Errors::Strict)?;
    for code_point in decoded {
        out.push_code_point(code_point);
    }
    Ok(())
}

fn insertion_sort(mut base: Vec<u32>, extended: &[u8], strict: bool) -> Result<Vec<u32>, Invalid> {
    let mut char_value: u128 = 0x80;
    let mut position: i128 = -1;
    let mut bias = 72u128;
    let mut offset = 0;
    while offset < extended.len() {
        let Some((next, delta)) = generalized_number(extended, offset, bias, strict)? else {
            return Ok(base);
        };
        let length = base.len() as i128 + 1;
        let Some(moved) = position.checked_add(delta as i128 + 1) else {
            return Ok(base);
        };
        position = moved;
        char_value += (position / length) as u128;
        if char_value > 0x10ffff {
            if strict {
                return Err(Invalid);
            }
            char_value = u128::from(b'?');
        }
        position %= length;
        base.insert(position as usize, char_value as u32);
        bias = adapt(delta, offset == 0, base.len() as u128);
        offset = next;
    }
    Ok(base)
}

fn generalized_number(
    extended: &[u8],
    mut offset: usize,
    bias: u128,
    strict: bool,
) -> Result<Option<(usize, u128)>, Invalid> {
    let mut result: u128 = 0;
    let mut weight: u128 = 1;
    let mut j: u128 = 0;
    loop {
        let Some(&byte) = extended.get(offset) else {
            return if strict { Err(Invalid) } else { Ok(None) };
        };
        offset += 1;
        let digit = match byte {
            b'A'..=b'Z' => u128::from(byte - b'A'),
            b'0'..=b'9' => u128::from(byte) - 22,
            _ if strict => return Err(Invalid),
            _ => return Ok(None),
        };
        let threshold = (36 * (j + 1)).saturating_sub(bias).clamp(1, 26);
        let Some(sum) = digit
            .checked_mul(weight)
            .and_then(|term| result.checked_add(term))
        else {
            return Ok(None);
        };
        result = sum;
        if digit < threshold {
            return Ok(Some((offset, result)));
        }
        let Some(product) = weight.checked_mul(36 - threshold) else {
            return Ok(None);
        };
        weight = product;
        j += 1;
    }
}

fn adapt(delta: u128, first: bool, length: u128) -> u128 {
    let mut delta = if first { delta / 700 } else { delta / 2 };
    delta += delta / length;
    let mut divisions = 0;
    while delta > 455 {
        delta /= 35;
        divisions += 36;
    }
    divisions + (36 * delta / (delta + 38))
}

/// `idna` (encodings.idna): only `strict` is supported; ASCII labels pass,
/// `xn--` labels are punycode-decoded. The nameprep round trip Python then
/// checks is not reproduced, so a malformed `xn--` label that Python rejects
/// decodes here.
pub(super) fn idna(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    if out.errors != super::Errors::Strict {
        return Err(Invalid);
    }
    let ace = b"xn--";
    if !bytes.windows(4).any(|window| window == ace) {
        return ascii(bytes, out);
    }
    let (labels, trailing_dot) = match bytes.strip_suffix(b".") {
        Some(rest) => (rest, true),
        None => (bytes, false),
    };
    for (index, label) in labels.split(|&b| b == b'.').enumerate() {
        if index > 0 {
            out.push('.');
        }
        if label.len() > 1024 {
            return Err(Invalid);
        }
        match label.strip_prefix(ace) {
            Some(encoded) => punycode(encoded, out)?,
            None => ascii(label, out)?,
        }
    }
    if trailing_dot {
        out.push('.');
    }
    Ok(())
}
