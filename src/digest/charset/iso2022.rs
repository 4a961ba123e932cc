//! Python's ISO-2022 codecs (`iso2022_jp*`, `iso2022_kr`), ported from
//! CPython's `_codecs_iso2022.c`: escape sequences designate character
//! sets into G0..G2, and each error spans the bytes CPython's does.

use super::cjk::{self, GB2312, JISX0208, JISX0212, KSX1001};
use super::{Invalid, Output};

/// A character set as the escape sequences name it (`'B' | DBCS` ...).
type Charset = u8;

const DBCS: u8 = 0x80;
const ASCII: Charset = b'B';
const ISO8859_1: Charset = b'A';
const ISO8859_7: Charset = b'F';
const JISX0201_K: Charset = b'I';
const JISX0201_R: Charset = b'J';
const CS_GB2312: Charset = b'A' | DBCS;
const CS_JISX0208: Charset = b'B' | DBCS;
const CS_KSX1001: Charset = b'C' | DBCS;
const CS_JISX0212: Charset = b'D' | DBCS;
const CS_JISX0208_O: Charset = b'@' | DBCS;
const CS_JISX0213_2000_1: Charset = b'O' | DBCS;
const CS_JISX0213_2: Charset = b'P' | DBCS;
const CS_JISX0213_2004_1: Charset = b'Q' | DBCS;

struct Config {
    designations: &'static [Charset],
    shift: bool,
    g2: bool,
    jisx0208_ext: bool,
}

const fn jp(designations: &'static [Charset], g2: bool) -> Config {
    Config {
        designations,
        shift: false,
        g2,
        jisx0208_ext: true,
    }
}

fn config(codec: &str) -> Option<Config> {
    Some(match codec {
        "iso2022_kr" => Config {
            designations: &[CS_KSX1001],
            shift: true,
            g2: false,
            jisx0208_ext: false,
        },
        "iso2022_jp" => jp(&[CS_JISX0208, JISX0201_R, CS_JISX0208_O], false),
        "iso2022_jp_1" => jp(
            &[CS_JISX0208, CS_JISX0212, JISX0201_R, CS_JISX0208_O],
            false,
        ),
        "iso2022_jp_2" => jp(
            &[
                CS_JISX0208,
                CS_JISX0212,
                CS_KSX1001,
                CS_GB2312,
                JISX0201_R,
                CS_JISX0208_O,
                ISO8859_1,
                ISO8859_7,
            ],
            true,
        ),
        // JIS X 0213 planes decode as their JIS X 0208 subset here
        "iso2022_jp_2004" => jp(&[CS_JISX0213_2004_1, CS_JISX0208, CS_JISX0213_2], false),
        "iso2022_jp_3" => jp(&[CS_JISX0213_2000_1, CS_JISX0208, CS_JISX0213_2], false),
        "iso2022_jp_ext" => jp(
            &[
                CS_JISX0208,
                CS_JISX0212,
                JISX0201_R,
                JISX0201_K,
                CS_JISX0208_O,
            ],
            false,
        ),
        _ => return None,
    })
}

/// A set's width in bytes and its decoding of one character's bytes.
fn decode_char(charset: Charset, data: &[u8]) -> Option<char> {
    match charset {
        JISX0201_R => match data[0] {
            0x5c => Some('\u{a5}'),
            0x7e => Some('\u{203e}'),
            c if c < 0x80 => Some(char::from(c)),
            _ => None,
        },
        JISX0201_K => match data[0] ^ 0x80 {
            c @ 0xa1..=0xdf => char::from_u32(0xfec0 + u32::from(c)),
            _ => None,
        },
        CS_JISX0208 | CS_JISX0208_O | CS_JISX0213_2000_1 | CS_JISX0213_2004_1 => {
            cjk::lookup(JISX0208, data[0], data[1])
        }
        CS_JISX0212 => cjk::lookup(JISX0212, data[0], data[1]),
        CS_KSX1001 => cjk::lookup(KSX1001, data[0] | 0x80, data[1] | 0x80)
            .filter(|_| data[0] < 0x80 && data[1] < 0x80),
        CS_GB2312 => cjk::lookup(GB2312, data[0] | 0x80, data[1] | 0x80)
            .filter(|_| data[0] < 0x80 && data[1] < 0x80),
        _ => None,
    }
}

fn width(charset: Charset) -> usize {
    if charset & DBCS != 0 { 2 } else { 1 }
}

/// The outcome of one step, as in cjk's `run`.
enum Step {
    Ok(usize),
    Error(usize),
    TooFew,
}

struct State {
    g: [Charset; 3],
    shifted: bool,
    escape_throughout: bool,
}

/// Decodes with the ISO-2022 codec `codec`, None if it is not one.
pub(super) fn decode(codec: &str, bytes: &[u8], out: &mut Output) -> Option<Result<(), Invalid>> {
    let config = config(codec)?;
    let mut state = State {
        g: [ASCII; 3],
        shifted: false,
        escape_throughout: false,
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        match step(&config, &mut state, rest, out) {
            Step::Ok(consumed) => rest = &rest[consumed.clamp(1, rest.len())..],
            Step::Error(span) => {
                if let Err(invalid) = out.invalid() {
                    return Some(Err(invalid));
                }
                rest = &rest[span.clamp(1, rest.len())..];
            }
            Step::TooFew => return Some(out.invalid()),
        }
    }
    Some(Ok(()))
}

fn is_escape_end(c: u8) -> bool {
    c.is_ascii_uppercase() || c == b'@'
}

fn step(config: &Config, state: &mut State, rest: &[u8], out: &mut Output) -> Step {
    let c = rest[0];
    if state.escape_throughout {
        // a non-ISO-2022 escape runs through its final byte as Latin-1
        out.push(char::from(c));
        if is_escape_end(c) {
            state.escape_throughout = false;
        }
        return Step::Ok(1);
    }
    match c {
        0x1b => {
            let Some(&c2) = rest.get(1) else {
                return Step::TooFew;
            };
            if matches!(c2, b'(' | b')' | b'$' | b'.' | b'&') {
                escape(config, state, rest)
            } else if config.g2 && c2 == b'N' {
                single_shift(state, rest, out)
            } else {
                out.push('\u{1b}');
                state.escape_throughout = true;
                Step::Ok(1)
            }
        }
        0x0e | 0x0f if config.shift => {
            state.shifted = c == 0x0e;
            Step::Ok(1)
        }
        b'\n' => {
            state.shifted = false;
            out.push('\n');
            Step::Ok(1)
        }
        _ if c < 0x20 => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        _ if c >= 0x80 => Step::Error(1),
        _ => {
            let charset = if state.shifted {
                state.g[1]
            } else {
                state.g[0]
            };
            if charset == ASCII {
                out.push(char::from(c));
                return Step::Ok(1);
            }
            let width = width(charset);
            if rest.len() < width {
                return Step::TooFew;
            }
            match decode_char(charset, &rest[..width]) {
                Some(decoded) => {
                    out.push(decoded);
                    Step::Ok(width)
                }
                None => Step::Error(width),
            }
        }
    }
}

/// iso2022processesc: a designation escape, or the error it makes.
fn escape(config: &Config, state: &mut State, rest: &[u8]) -> Step {
    const MAX_LENGTH: usize = 16;
    let mut i = 1;
    let mut length = None;
    while i < MAX_LENGTH {
        if i >= rest.len() {
            return Step::TooFew;
        }
        if is_escape_end(rest[i]) {
            length = Some(i + 1);
            break;
        } else if config.jisx0208_ext
            && i + 1 < rest.len()
            && rest[i] == b'&'
            && rest[i + 1] == b'@'
        {
            i += 2;
        }
        i += 1;
    }
    let Some(length) = length else {
        return Step::Error(1);
    };
    let (charset, designation) = match length {
        3 if rest[1] == b'$' => (rest[2] | DBCS, 0),
        3 => match rest[1] {
            b'(' => (rest[2], 0),
            b')' => (rest[2], 1),
            b'.' if config.g2 => (rest[2], 2),
            _ => return Step::Error(3),
        },
        4 if rest[1] != b'$' => return Step::Error(4),
        4 => match rest[2] {
            b'(' => (rest[3] | DBCS, 0),
            b')' => (rest[3] | DBCS, 1),
            _ => return Step::Error(4),
        },
        6 if config.jisx0208_ext && rest[3] == 0x1b && rest[4] == b'$' && rest[5] == b'B' => {
            (CS_JISX0208, 0)
        }
        _ => return Step::Error(length),
    };
    if charset != ASCII && !config.designations.contains(&charset) {
        return Step::Error(length);
    }
    state.g[designation] = charset;
    Step::Ok(length)
}

/// iso2022processg2: ESC N and one character of the G2 set.
fn single_shift(state: &State, rest: &[u8], out: &mut Output) -> Step {
    let Some(&c) = rest.get(2) else {
        return Step::TooFew;
    };
    let decoded = match state.g[2] {
        ISO8859_1 if c < 0x80 => char::from_u32(u32::from(c) + 0x80),
        ISO8859_7 => iso8859_7(c ^ 0x80),
        ASCII if c & 0x80 == 0 => Some(char::from(c)),
        _ => None,
    };
    match decoded {
        Some(decoded) => {
            out.push(decoded);
            Step::Ok(3)
        }
        None => Step::Error(3),
    }
}

/// cjkcodecs' ISO8859_7_DECODE macro.
fn iso8859_7(c: u8) -> Option<char> {
    let code_point = u32::from(c);
    if c < 0xa0 {
        return char::from_u32(code_point);
    }
    if c < 0xc0 && (0x288f_3bc9_u32 & (1 << (c - 0xa0))) != 0 {
        return char::from_u32(code_point);
    }
    if (0xb4..=0xfe).contains(&c) && (c >= 0xd4 || (0xbfff_fd77_u32 & (1 << (c - 0xb4))) != 0) {
        return char::from_u32(0x02d0 + code_point);
    }
    match c {
        0xa1 => Some('\u{2018}'),
        0xa2 => Some('\u{2019}'),
        0xaf => Some('\u{2015}'),
        _ => None,
    }
}
