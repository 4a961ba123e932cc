//! Python's CJK multibyte codecs (CPython's `cjkcodecs`): the decoders'
//! control flow is ported, so each error consumes the bytes CPython's
//! does; the double-byte tables are encoding_rs's, corrected by the
//! generated `cjk_tables` where Python's differ.
//!
//! A [`Grid`] is one table as a decoder consults it: a rectangle of
//! (lead, trail) cells. Its cells come from decoding a probe with
//! encoding_rs, unless `cjk_tables` lists the cell; scripts/gen-charsets.py
//! builds that list by decoding the Python probe of every cell with Python.

use std::sync::OnceLock;

use encoding_rs::{BIG5, EUC_JP, EUC_KR, Encoding, GB18030, GBK, SHIFT_JIS};

use super::cjk_tables as diffs;
use super::{Invalid, Output, tables};

/// One double-byte table: cells `leads` x `trails`; how Python and
/// encoding_rs each decode a cell: `prefix` then the two bytes ORed with
/// `or_mask`. The Python side is read only by `dump_grids`, for the generator.
pub(super) struct Grid {
    pub(super) name: &'static str,
    leads: (u8, u8),
    trails: (u8, u8),
    pub(super) python_codec: &'static str,
    python_prefix: &'static [u8],
    python_or: u8,
    base: &'static Encoding,
    base_prefix: &'static [u8],
    base_or: u8,
    diffs: &'static diffs::Diffs,
}

const fn grid(
    name: &'static str,
    leads: (u8, u8),
    trails: (u8, u8),
    python_codec: &'static str,
    base: &'static Encoding,
    diffs: &'static diffs::Diffs,
) -> Grid {
    Grid {
        name,
        leads,
        trails,
        python_codec,
        python_prefix: b"",
        python_or: 0,
        base,
        base_prefix: b"",
        base_or: 0,
        diffs,
    }
}

pub(super) const GB2312: usize = 0;
pub(super) const GBK_GRID: usize = 1;
pub(super) const GB18030_GRID: usize = 2;
pub(super) const BIG5_GRID: usize = 3;
pub(super) const CP950: usize = 4;
pub(super) const CP949: usize = 5;
pub(super) const KSX1001: usize = 6;
pub(super) const JISX0208: usize = 7;
pub(super) const JISX0212: usize = 8;
pub(super) const CP932: usize = 9;
pub(super) const BIG5HKSCS: usize = 10;

/// Every table the decoders consult; index with the constants above.
pub(super) static GRIDS: [Grid; 11] = [
    grid(
        "gb2312",
        (0xa1, 0xfe),
        (0xa1, 0xfe),
        "gb2312",
        GBK,
        &diffs::GB2312,
    ),
    grid("gbk", (0x81, 0xfe), (0x40, 0xfe), "gbk", GBK, &diffs::GBK),
    grid(
        "gb18030",
        (0x81, 0xfe),
        (0x40, 0xfe),
        "gb18030",
        GB18030,
        &diffs::GB18030,
    ),
    grid(
        "big5",
        (0xa1, 0xfe),
        (0x40, 0xfe),
        "big5",
        BIG5,
        &diffs::BIG5,
    ),
    grid(
        "cp950",
        (0x81, 0xfe),
        (0x40, 0xfe),
        "cp950",
        BIG5,
        &diffs::CP950,
    ),
    grid(
        "cp949",
        (0x81, 0xfe),
        (0x41, 0xfe),
        "cp949",
        EUC_KR,
        &diffs::CP949,
    ),
    // KS X 1001 as the cp949 codec decodes it (euc_kr diverts A4 D4)
    grid(
        "ksx1001",
        (0xa1, 0xfe),
        (0xa1, 0xfe),
        "cp949",
        EUC_KR,
        &diffs::KSX1001,
    ),
    // JIS X 0208 in 7-bit cells as iso2022_jp decodes it (0x2140 is U+FF3C)
    Grid {
        python_prefix: b"\x1b$B",
        base_or: 0x80,
        ..grid(
            "jisx0208",
            (0x21, 0x7e),
            (0x21, 0x7e),
            "iso2022_jp",
            EUC_JP,
            &diffs::JISX0208,
        )
    },
    Grid {
        python_prefix: b"\x8f",
        python_or: 0x80,
        base_prefix: b"\x8f",
        base_or: 0x80,
        ..grid(
            "jisx0212",
            (0x21, 0x7e),
            (0x21, 0x7e),
            "euc_jp",
            EUC_JP,
            &diffs::JISX0212,
        )
    },
    grid(
        "cp932",
        (0x81, 0xfc),
        (0x40, 0xfc),
        "cp932",
        SHIFT_JIS,
        &diffs::CP932,
    ),
    grid(
        "big5hkscs",
        (0x81, 0xfe),
        (0x40, 0xfe),
        "big5hkscs",
        BIG5,
        &diffs::BIG5HKSCS,
    ),
];

impl Grid {
    fn width(&self) -> usize {
        usize::from(self.trails.1 - self.trails.0) + 1
    }

    fn cells(&self) -> impl Iterator<Item = (u8, u8)> + '_ {
        (self.leads.0..=self.leads.1)
            .flat_map(move |lead| (self.trails.0..=self.trails.1).map(move |trail| (lead, trail)))
    }

    /// What encoding_rs decodes the cell's probe to, if one character.
    pub(super) fn base_cell(&self, lead: u8, trail: u8) -> Option<char> {
        let mut probe = [0u8; 3];
        let length = self.base_prefix.len() + 2;
        probe[..self.base_prefix.len()].copy_from_slice(self.base_prefix);
        probe[length - 2] = lead | self.base_or;
        probe[length - 1] = trail | self.base_or;
        // decode into a stack buffer: a grid build decodes up to 24k probes
        let mut buffer = [0u8; 16];
        let text = std::str::from_utf8_mut(&mut buffer).expect("zero bytes are UTF-8");
        let mut decoder = self.base.new_decoder_without_bom_handling();
        let (result, read, written) =
            decoder.decode_to_str_without_replacement(&probe[..length], text, true);
        if result != encoding_rs::DecoderResult::InputEmpty || read != length {
            return None;
        }
        let mut chars = text[..written].chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    }

    /// The bytes whose Python decoding defines the cell.
    fn python_probe(&self, lead: u8, trail: u8) -> Vec<u8> {
        let mut probe = self.python_prefix.to_vec();
        probe.extend([lead | self.python_or, trail | self.python_or]);
        probe
    }

    fn build(&self) -> Box<[Option<char>]> {
        self.cells()
            .map(|(lead, trail)| {
                let key = u16::from_be_bytes([lead, trail]);
                let mapped = &self.diffs.mapped;
                if let Ok(index) = mapped.binary_search_by_key(&key, |&(cell, _)| cell) {
                    return char::from_u32(mapped[index].1);
                }
                let undefined = &self.diffs.undefined;
                let run = undefined.partition_point(|&(first, _)| first <= key);
                if run > 0 && key <= undefined[run - 1].1 {
                    return None;
                }
                self.base_cell(lead, trail)
            })
            .collect()
    }

    fn all_cells(&self) -> Vec<(u8, u8)> {
        self.cells().collect()
    }
}

/// Python's character for a cell of table `grid`, None when undefined.
pub(super) fn lookup(grid: usize, lead: u8, trail: u8) -> Option<char> {
    static BUILT: [OnceLock<Box<[Option<char>]>>; 11] = [const { OnceLock::new() }; 11];
    let table = &GRIDS[grid];
    if !(table.leads.0..=table.leads.1).contains(&lead)
        || !(table.trails.0..=table.trails.1).contains(&trail)
    {
        return None;
    }
    let cells = BUILT[grid].get_or_init(|| table.build());
    let index =
        usize::from(lead - table.leads.0) * table.width() + usize::from(trail - table.trails.0);
    cells.get(index).copied().flatten()
}

/// What a decoder step did, in CPython's terms.
enum Step {
    /// Consumed this many bytes (output already written).
    Ok(usize),
    /// `return n`: an error spanning n bytes.
    Error(usize),
    /// MBERR_TOOFEW at the end: an error spanning all that is left.
    TooFew,
}

/// multibytecodec's loop: run `step` until the input is used up, handling
/// each error as the handler says. Runs of ASCII, which every decoder but
/// hz's passes through, are copied in one go.
fn run(
    bytes: &[u8],
    out: &mut Output,
    step: impl FnMut(&[u8], &mut Output) -> Step,
) -> Result<(), Invalid> {
    run_with(bytes, out, true, step)
}

fn run_with(
    bytes: &[u8],
    out: &mut Output,
    passes_ascii: bool,
    mut step: impl FnMut(&[u8], &mut Output) -> Step,
) -> Result<(), Invalid> {
    let mut rest = bytes;
    while !rest.is_empty() {
        if passes_ascii {
            let (ascii, tail) = rest.split_at(super::ascii_prefix(rest));
            out.text
                .push_str(std::str::from_utf8(ascii).expect("ASCII is UTF-8"));
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
        match step(rest, out) {
            Step::Ok(consumed) => rest = &rest[consumed.min(rest.len())..],
            Step::Error(span) => {
                out.invalid()?;
                rest = &rest[span.clamp(1, rest.len())..];
            }
            Step::TooFew => {
                out.invalid()?;
                break;
            }
        }
    }
    Ok(())
}

/// A double-byte decoder: ASCII, else a pair looked up in `grid`; an
/// undefined pair is a one-byte error, as in every cjkcodecs decoder.
fn double_byte(grid: usize, bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    run(bytes, out, |rest, out| match *rest {
        [c, ..] if c < 0x80 => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        [_] => Step::TooFew,
        [c, c2, ..] => match lookup(grid, c, c2) {
            Some(decoded) => {
                out.push(decoded);
                Step::Ok(2)
            }
            None => Step::Error(1),
        },
        [] => Step::Ok(1),
    })
}

/// Decodes with the CJK codec module `codec`, None if it is not one.
pub(super) fn decode(codec: &str, bytes: &[u8], out: &mut Output) -> Option<Result<(), Invalid>> {
    Some(match codec {
        "gb2312" => double_byte(GB2312, bytes, out),
        "gbk" => double_byte(GBK_GRID, bytes, out),
        "gb18030" => gb18030(bytes, out),
        "big5" => double_byte(BIG5_GRID, bytes, out),
        "cp950" => double_byte(CP950, bytes, out),
        "big5hkscs" => big5hkscs(bytes, out),
        "cp949" => double_byte(CP949, bytes, out),
        "euc_kr" => euc_kr(bytes, out),
        "johab" => johab(bytes, out),
        "cp932" => cp932(bytes, out),
        // the JIS X 0213 codecs decode as their JIS X 0208 subsets here
        "shift_jis" | "shift_jis_2004" | "shift_jisx0213" => shift_jis(bytes, out),
        "euc_jp" | "euc_jis_2004" | "euc_jisx0213" => euc_jp(bytes, out),
        "hz" => hz(bytes, out),
        _ => return None,
    })
}

fn gb18030(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    run(bytes, out, |rest, out| match *rest {
        [c, ..] if c < 0x80 => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        [_] => Step::TooFew,
        [_, b'0'..=b'9'] | [_, b'0'..=b'9', _] => Step::TooFew,
        [c, c2 @ b'0'..=b'9', c3, c4, ..] => {
            if !(0x81..=0xfe).contains(&c) || !(0x81..=0xfe).contains(&c3) || !c4.is_ascii_digit() {
                return Step::Error(1);
            }
            let (c, c2, c3, c4) = (
                u32::from(c - 0x81),
                u32::from(c2 - b'0'),
                u32::from(c3 - 0x81),
                u32::from(c4 - b'0'),
            );
            let code_point = if c < 4 {
                let sequence = (c * 10 + c2) * 1260 + c3 * 10 + c4;
                (sequence < 39420).then(|| {
                    let index =
                        tables::GB18030_RANGES.partition_point(|&(base, _)| base <= sequence);
                    let (base, first) = tables::GB18030_RANGES[index.saturating_sub(1)];
                    first + (sequence - base)
                })
            } else if c >= 15 {
                let code_point = 0x10000 + ((c - 15) * 10 + c2) * 1260 + c3 * 10 + c4;
                (code_point <= 0x10ffff).then_some(code_point)
            } else {
                None
            };
            match code_point {
                Some(code_point) => {
                    out.push_code_point(code_point);
                    Step::Ok(4)
                }
                None => Step::Error(1),
            }
        }
        [c, c2, ..] => match lookup(GB18030_GRID, c, c2) {
            Some(decoded) => {
                out.push(decoded);
                Step::Ok(2)
            }
            None => Step::Error(1),
        },
        [] => Step::Ok(1),
    })
}

fn big5hkscs(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    run(bytes, out, |rest, out| match *rest {
        [c, ..] if c < 0x80 => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        [_] => Step::TooFew,
        [c, c2, ..] => {
            // the four cells that decode to a letter and a combining mark
            let pair = match (c, c2) {
                (0x88, 0x62) => Some(('\u{ca}', '\u{304}')),
                (0x88, 0x64) => Some(('\u{ca}', '\u{30c}')),
                (0x88, 0xa3) => Some(('\u{ea}', '\u{304}')),
                (0x88, 0xa5) => Some(('\u{ea}', '\u{30c}')),
                _ => None,
            };
            if let Some((letter, mark)) = pair {
                out.push(letter);
                out.push(mark);
                return Step::Ok(2);
            }
            match lookup(BIG5HKSCS, c, c2) {
                Some(decoded) => {
                    out.push(decoded);
                    Step::Ok(2)
                }
                None => Step::Error(1),
            }
        }
        [] => Step::Ok(1),
    })
}

/// KS X 1001:1998 Annex 3 jamo bytes (0xA1..=0xBE) to syllable indexes.
const NONE: u8 = 127;
const CHOSEONG: [u8; 30] = [
    0, 1, NONE, 2, NONE, NONE, 3, 4, 5, NONE, NONE, NONE, NONE, NONE, NONE, NONE, 6, 7, 8, NONE, 9,
    10, 11, 12, 13, 14, 15, 16, 17, 18,
];
const JONGSEONG: [u8; 30] = [
    1, 2, 3, 4, 5, 6, 7, NONE, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, NONE, 18, 19, 20, 21, 22,
    NONE, 23, 24, 25, 26, 27,
];

fn euc_kr(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    run(bytes, out, |rest, out| match *rest {
        [c, ..] if c < 0x80 => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        [_] => Step::TooFew,
        [0xa4, 0xd4, ..] => {
            let [_, _, a, cho, b, jung, d, jong, ..] = *rest else {
                return Step::TooFew;
            };
            if a != 0xa4 || b != 0xa4 || d != 0xa4 {
                return Step::Error(1);
            }
            let cho = if (0xa1..=0xbe).contains(&cho) {
                CHOSEONG[usize::from(cho - 0xa1)]
            } else {
                NONE
            };
            let jung = if (0xbf..=0xd3).contains(&jung) {
                jung - 0xbf
            } else {
                NONE
            };
            let jong = match jong {
                0xd4 => 0,
                0xa1..=0xbe => JONGSEONG[usize::from(jong - 0xa1)],
                _ => NONE,
            };
            if cho == NONE || jung == NONE || jong == NONE {
                return Step::Error(1);
            }
            out.push_code_point(
                0xac00 + u32::from(cho) * 588 + u32::from(jung) * 28 + u32::from(jong),
            );
            Step::Ok(8)
        }
        [c, c2, ..] => match lookup(KSX1001, c, c2) {
            Some(decoded) => {
                out.push(decoded);
                Step::Ok(2)
            }
            None => Step::Error(1),
        },
        [] => Step::Ok(1),
    })
}

const FILL: u8 = 0xfd;
const NO: u8 = 0xff;
const JOHAB_CHOSEONG: [u8; 32] = [
    NO, FILL, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, NO, NO, NO, NO, NO,
    NO, NO, NO, NO, NO, NO,
];
const JOHAB_JUNGSEONG: [u8; 32] = [
    NO, NO, FILL, 0, 1, 2, 3, 4, NO, NO, 5, 6, 7, 8, 9, 10, NO, NO, 11, 12, 13, 14, 15, 16, NO, NO,
    17, 18, 19, 20, NO, NO,
];
const JOHAB_JONGSEONG: [u8; 32] = [
    NO, FILL, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, NO, 17, 18, 19, 20, 21, 22,
    23, 24, 25, 26, 27, NO, NO,
];
const JAMO_CHOSEONG: [u8; 32] = [
    NO, FILL, 0x31, 0x32, 0x34, 0x37, 0x38, 0x39, 0x41, 0x42, 0x43, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x4b, 0x4c, 0x4d, 0x4e, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO,
];
const JAMO_JUNGSEONG: [u8; 32] = [
    NO, NO, FILL, 0x4f, 0x50, 0x51, 0x52, 0x53, NO, NO, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, NO, NO,
    0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f, NO, NO, 0x60, 0x61, 0x62, 0x63, NO, NO,
];
const JAMO_JONGSEONG: [u8; 32] = [
    NO, FILL, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
    0x40, 0x41, NO, 0x42, 0x44, 0x45, 0x46, 0x47, 0x48, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, NO, NO,
];

fn johab_hangul(c: u8, c2: u8) -> Option<u32> {
    let cho = usize::from((c >> 2) & 0x1f);
    let jung = usize::from(((c << 3) | (c2 >> 5)) & 0x1f);
    let jong = usize::from(c2 & 0x1f);
    let (i_cho, i_jung, i_jong) = (
        JOHAB_CHOSEONG[cho],
        JOHAB_JUNGSEONG[jung],
        JOHAB_JONGSEONG[jong],
    );
    if i_cho == NO || i_jung == NO || i_jong == NO {
        return None;
    }
    match (i_cho == FILL, i_jung == FILL, i_jong == FILL) {
        (true, true, true) => Some(0x3000),
        (true, true, false) => Some(0x3100 | u32::from(JAMO_JONGSEONG[jong])),
        (true, false, true) => Some(0x3100 | u32::from(JAMO_JUNGSEONG[jung])),
        (true, false, false) => None,
        (false, true, true) => Some(0x3100 | u32::from(JAMO_CHOSEONG[cho])),
        (false, true, false) => None,
        (false, false, _) => {
            let jong = if i_jong == FILL { 0 } else { u32::from(i_jong) };
            Some(0xac00 + u32::from(i_cho) * 588 + u32::from(i_jung) * 28 + jong)
        }
    }
}

fn johab_symbol(c: u8, c2: u8) -> Option<char> {
    if c == 0xdf
        || c > 0xf9
        || c2 < 0x31
        || (0x80..0x91).contains(&c2)
        || (c2 & 0x7f) == 0x7f
        || (c == 0xda && (0xa1..=0xd3).contains(&c2))
    {
        return None;
    }
    // unsigned char arithmetic, wrapping as in C (c = 0xD8 wraps)
    let t1 = if c < 0xe0 {
        c.wrapping_sub(0xd9).wrapping_mul(2)
    } else {
        c.wrapping_mul(2).wrapping_sub(0x97)
    };
    let t2 = if c2 < 0x91 {
        c2.wrapping_sub(0x31)
    } else {
        c2.wrapping_sub(0x43)
    };
    let t1 = t1.wrapping_add(u8::from(t2 >= 0x5e)).wrapping_add(0x21);
    let t2 = (if t2 < 0x5e { t2 } else { t2 - 0x5e }).wrapping_add(0x21);
    if t1 >= 0x80 || t2 >= 0x80 {
        return None;
    }
    lookup(KSX1001, t1 | 0x80, t2 | 0x80)
}

fn johab(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    run(bytes, out, |rest, out| match *rest {
        [c, ..] if c < 0x80 => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        [_] => Step::TooFew,
        [c, c2, ..] => {
            let decoded = if c < 0xd8 {
                johab_hangul(c, c2).and_then(char::from_u32)
            } else {
                johab_symbol(c, c2)
            };
            match decoded {
                Some(decoded) => {
                    out.push(decoded);
                    Step::Ok(2)
                }
                None => Step::Error(1),
            }
        }
        [] => Step::Ok(1),
    })
}

fn cp932(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    run(bytes, out, |rest, out| match *rest {
        [c, ..] if c <= 0x80 => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        [0xa0, ..] => {
            out.push('\u{f8f0}');
            Step::Ok(1)
        }
        [c @ 0xa1..=0xdf, ..] => {
            out.push_code_point(0xfec0 + u32::from(c));
            Step::Ok(1)
        }
        [c @ 0xfd..=0xff, ..] => {
            out.push_code_point(0xf8f1 - 0xfd + u32::from(c));
            Step::Ok(1)
        }
        [_] => Step::TooFew,
        [c, c2, ..] => match lookup(CP932, c, c2) {
            Some(decoded) => {
                out.push(decoded);
                Step::Ok(2)
            }
            None => Step::Error(1),
        },
        [] => Step::Ok(1),
    })
}

/// Shift_JIS (lead, trail) to JIS X 0208 7-bit row and cell.
fn sjis_to_jis(c: u8, c2: u8) -> (u8, u8) {
    let c1 = if c < 0xe0 { c - 0x81 } else { c - 0xc1 };
    let c2 = if c2 < 0x80 { c2 - 0x40 } else { c2 - 0x41 };
    (
        2 * c1 + u8::from(c2 >= 0x5e) + 0x21,
        (if c2 < 0x5e { c2 } else { c2 - 0x5e }) + 0x21,
    )
}

fn shift_jis(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    run(bytes, out, |rest, out| match *rest {
        [c, ..] if c < 0x80 => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        [c @ 0xa1..=0xdf, ..] => {
            out.push_code_point(0xfec0 + u32::from(c));
            Step::Ok(1)
        }
        [0x81..=0x9f | 0xe0..=0xea] => Step::TooFew,
        [c @ (0x81..=0x9f | 0xe0..=0xea), c2, ..] => {
            if c2 < 0x40 || (c2 > 0x7e && c2 < 0x80) || c2 > 0xfc {
                return Step::Error(1);
            }
            let (row, cell) = sjis_to_jis(c, c2);
            match lookup(JISX0208, row, cell) {
                Some(decoded) => {
                    out.push(decoded);
                    Step::Ok(2)
                }
                None => Step::Error(1),
            }
        }
        _ => Step::Error(1),
    })
}

fn euc_jp(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    run(bytes, out, |rest, out| match *rest {
        [c, ..] if c < 0x80 => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        [_] | [0x8f, _] => Step::TooFew,
        [0x8e, c2, ..] => {
            if (0xa1..=0xdf).contains(&c2) {
                out.push_code_point(0xfec0 + u32::from(c2));
                Step::Ok(2)
            } else {
                Step::Error(1)
            }
        }
        [0x8f, c2, c3, ..] => match lookup(JISX0212, c2 ^ 0x80, c3 ^ 0x80) {
            Some(decoded) => {
                out.push(decoded);
                Step::Ok(3)
            }
            None => Step::Error(1),
        },
        [c, c2, ..] => match lookup(JISX0208, c ^ 0x80, c2 ^ 0x80) {
            Some(decoded) => {
                out.push(decoded);
                Step::Ok(2)
            }
            None => Step::Error(1),
        },
        [] => Step::Ok(1),
    })
}

fn hz(bytes: &[u8], out: &mut Output) -> Result<(), Invalid> {
    let mut gb_mode = false;
    run_with(bytes, out, false, |rest, out| match *rest {
        [b'~'] => Step::TooFew,
        [b'~', c2, ..] => {
            match c2 {
                b'~' => out.push('~'),
                b'{' if !gb_mode => gb_mode = true,
                b'}' if gb_mode => gb_mode = false,
                b'\n' => {}
                _ => return Step::Error(1),
            }
            Step::Ok(2)
        }
        [c, ..] if c & 0x80 != 0 => Step::Error(1),
        [c, ..] if !gb_mode => {
            out.push(char::from(c));
            Step::Ok(1)
        }
        [_] => Step::TooFew,
        [c, c2, ..] => match lookup(GB2312, c | 0x80, c2 | 0x80).filter(|_| c2 < 0x80) {
            Some(decoded) => {
                out.push(decoded);
                Step::Ok(2)
            }
            None => Step::Error(1),
        },
        [] => Step::Ok(1),
    })
}

/// Every grid cell's probes, for scripts/gen-charsets.py (through the
/// `charset_grids` example): one line per cell, "grid python_codec cell
/// python_probe_hex base_code_point".
pub(super) fn dump_grids() -> String {
    let mut dump = String::new();
    for grid in &GRIDS {
        for (lead, trail) in grid.all_cells() {
            let base = grid
                .base_cell(lead, trail)
                .map_or("-".to_owned(), |c| format!("{:x}", u32::from(c)));
            let probe: String = grid
                .python_probe(lead, trail)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            dump.push_str(&format!(
                "{} {} {:04x} {} {}\n",
                grid.name,
                grid.python_codec,
                u16::from_be_bytes([lead, trail]),
                probe,
                base
            ));
        }
    }
    dump
}
