//! Reading a Python pyzord gdbm file (`pyzord.db`), for `migrate` only.
//!
//! The file is read with `gdbm-native`, a maintained pure-Rust reader of C
//! GDBM's on-disk format (every byte order, offset size and alignment), so
//! importing needs no C library and no Python. The records are pyzor's
//! `gdbm_.py` strings: version 1 is `1,r_count,r_entered,r_updated,
//! wl_count,wl_entered,wl_updated` with local times written by
//! `str(datetime)` or `None`; version 0 is `r_count,r_entered,r_updated`
//! with Unix seconds.

use std::path::Path;
use std::sync::Mutex;

use gdbm_native::{Gdbm, OpenOptions};

use crate::python;

use super::{Kind, Page, Record, Storage, StorageError, StorageFuture};

/// A gdbm file opened read-only.
pub struct GdbmStorage {
    db: Mutex<Gdbm>,
    /// Every record, read at the first `scan` (gdbm has no ordered cursor
    /// that survives between calls).
    all: Mutex<Option<Vec<(String, Record)>>>,
}

impl GdbmStorage {
    /// Opens a gdbm file for reading.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = OpenOptions::new()
            .open(path)
            .map_err(|error| StorageError::Gdbm(format!("\"{}\": {error}", path.display())))?;
        Ok(Self {
            db: Mutex::new(db),
            all: Mutex::new(None),
        })
    }

    fn read_all(&self) -> Result<Vec<(String, Record)>, StorageError> {
        let db = self
            .db
            .lock()
            .map_err(|_| StorageError::Gdbm("lock poisoned".into()))?;
        let mut records = Vec::new();
        for entry in db.iter::<Vec<u8>, Vec<u8>>() {
            let (key, value) = entry.map_err(|error| StorageError::Gdbm(error.to_string()))?;
            let digest = String::from_utf8_lossy(&key).into_owned();
            match decode_record(&value) {
                Ok(record) => records.push((digest, record)),
                // pyzor's `_iteritems` logs and skips an invalid record.
                Err(why) => tracing::warn!(digest, why, "invalid record skipped"),
            }
        }
        records.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(records)
    }
}

/// Decodes one pyzor gdbm value into a record.
pub fn decode_record(value: &[u8]) -> Result<Record, String> {
    let text = std::str::from_utf8(value).map_err(|_| format!("not UTF-8: {value:?}"))?;
    let parts: Vec<&str> = text.split(',').collect();
    let number = |part: &str| -> Result<i64, String> {
        part.trim()
            .parse()
            .map_err(|_| format!("not a number: \"{part}\""))
    };
    match parts[..] {
        [count, entered, updated] => Ok(Record {
            report_count: number(count)?,
            report_entered: Some(number(entered)?),
            report_updated: Some(number(updated)?),
            ..Record::default()
        }),
        [
            "1",
            count,
            entered,
            updated,
            wl_count,
            wl_entered,
            wl_updated,
        ] => Ok(Record {
            report_count: number(count)?,
            report_entered: decode_time(entered)?,
            report_updated: decode_time(updated)?,
            whitelist_count: number(wl_count)?,
            whitelist_entered: decode_time(wl_entered)?,
            whitelist_updated: decode_time(wl_updated)?,
        }),
        _ => Err(format!("don't know how to handle db value \"{text}\"")),
    }
}

/// pyzor's `_dt_decode`: `None`, or a naive local time that Python's
/// `strptime` reads with `%Y-%m-%d %H:%M:%S.%f` or `%Y-%m-%d %H:%M:%S`
/// and `datetime` accepts, turned into Unix seconds as `time.mktime` does
/// (the fraction dropped). Anything else is an error, as in Python (whose
/// `_iteritems` then skips the record): a month 13 or a February 30 is
/// refused, not carried over into the next year or month.
fn decode_time(text: &str) -> Result<Option<i64>, String> {
    if text == "None" {
        return Ok(None);
    }
    let time = StrptimeFields::parse(text).ok_or_else(|| format!("not a time: \"{text}\""))?;
    Ok(Some(local_to_unix(
        time.year,
        time.month,
        time.day,
        time.hour,
        time.minute,
        time.second,
    )))
}

/// The fields of a time as `strptime` matches them, checked as `datetime`
/// checks them.
struct StrptimeFields {
    year: i32,
    month: i32,
    day: i32,
    hour: i32,
    minute: i32,
    second: i32,
}

impl StrptimeFields {
    fn parse(text: &str) -> Option<Self> {
        let mut rest = text;
        // %Y is exactly four digits.
        let year = take_digits(&mut rest, 4, 4)?;
        expect(&mut rest, '-')?;
        // %m is 1 to 12, with or without a leading zero.
        let month = take_digits(&mut rest, 1, 2).filter(|m| (1..=12).contains(m))?;
        expect(&mut rest, '-')?;
        // %d is 1 to 31 with a leading zero or none, or a space and 1 to 9.
        let day = match rest.strip_prefix(' ') {
            Some(after) => {
                rest = after;
                take_digits(&mut rest, 1, 1).filter(|d| *d >= 1)?
            }
            None => take_digits(&mut rest, 1, 2).filter(|d| (1..=31).contains(d))?,
        };
        // The space of the format is one or more white-space characters.
        let trimmed = rest.trim_start_matches(python::is_space);
        if trimmed.len() == rest.len() {
            return None;
        }
        rest = trimmed;
        let hour = take_digits(&mut rest, 1, 2).filter(|h| *h <= 23)?;
        expect(&mut rest, ':')?;
        let minute = take_digits(&mut rest, 1, 2).filter(|m| *m <= 59)?;
        expect(&mut rest, ':')?;
        // %S allows 60 and 61; `datetime` then refuses them.
        let second = take_digits(&mut rest, 1, 2).filter(|s| *s <= 59)?;
        // %f: one to six digits.
        if let Some(fraction) = rest.strip_prefix('.') {
            rest = fraction;
            take_digits(&mut rest, 1, 6)?;
        }
        let valid = rest.is_empty() && year >= 1 && day <= days_in_month(year, month);
        valid.then_some(StrptimeFields {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }
}

/// Takes `min..=max` ASCII digits from the front of `rest`, which must not
/// go on with another digit.
fn take_digits(rest: &mut &str, min: usize, max: usize) -> Option<i32> {
    let count = rest.bytes().take_while(u8::is_ascii_digit).count();
    if !(min..=max).contains(&count) {
        return None;
    }
    let value = rest[..count].parse().ok()?;
    *rest = &rest[count..];
    Some(value)
}

fn expect(rest: &mut &str, separator: char) -> Option<()> {
    *rest = rest.strip_prefix(separator)?;
    Some(())
}

fn days_in_month(year: i32, month: i32) -> i32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Local broken-down time to Unix seconds with the C library's `mktime`,
/// which is what Python's `time.mktime` calls (DST decided by the zone).
fn local_to_unix(year: i32, month: i32, day: i32, hour: i32, minute: i32, second: i32) -> i64 {
    // SAFETY: `tm` is a plain C struct that zero bytes initialise validly,
    // and `mktime` only reads and normalises the struct it is given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = year - 1900;
        tm.tm_mon = month - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = minute;
        tm.tm_sec = second;
        tm.tm_isdst = -1;
        #[allow(clippy::useless_conversion)] // time_t is i32 on some targets
        i64::from(libc::mktime(&mut tm))
    }
}

impl Storage for GdbmStorage {
    fn get<'a>(&'a self, digest: &'a str) -> StorageFuture<'a, Option<Record>> {
        Box::pin(async move {
            let db = self
                .db
                .lock()
                .map_err(|_| StorageError::Gdbm("lock poisoned".into()))?;
            let value: Option<Vec<u8>> = db
                .get(digest.as_bytes())
                .map_err(|error| StorageError::Gdbm(error.to_string()))?;
            value
                .map(|value| {
                    decode_record(&value).map_err(|why| StorageError::InvalidRecord {
                        digest: digest.to_owned(),
                        why,
                    })
                })
                .transpose()
        })
    }

    fn increment<'a>(&'a self, _kind: Kind, _digests: &'a [String]) -> StorageFuture<'a, ()> {
        Box::pin(async { Err(StorageError::ReadOnly("gdbm")) })
    }

    fn put_many<'a>(&'a self, _records: &'a [(String, Record)]) -> StorageFuture<'a, ()> {
        Box::pin(async { Err(StorageError::ReadOnly("gdbm")) })
    }

    fn scan<'a>(&'a self, after: Option<String>, limit: usize) -> StorageFuture<'a, Page> {
        Box::pin(async move {
            let mut all = self
                .all
                .lock()
                .map_err(|_| StorageError::Gdbm("lock poisoned".into()))?;
            if all.is_none() {
                *all = Some(self.read_all()?);
            }
            let records = all.as_deref().unwrap_or_default();
            let start = after.map_or(0, |after| {
                records.partition_point(|(digest, _)| digest.as_str() <= after.as_str())
            });
            let end = start.saturating_add(limit.max(1)).min(records.len());
            let page = records[start..end].to_vec();
            let next = (end < records.len()).then(|| records[end - 1].0.clone());
            Ok((page, next))
        })
    }

    fn cleanup(&self, _max_age_secs: u64) -> StorageFuture<'_, u64> {
        Box::pin(async { Err(StorageError::ReadOnly("gdbm")) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_one_record_with_none_times() {
        let record = decode_record(b"1,3,None,None,0,None,None").expect("valid");
        assert_eq!(
            record,
            Record {
                report_count: 3,
                ..Record::default()
            }
        );
    }

    #[test]
    fn version_zero_record_has_unix_times() {
        let record = decode_record(b"5,1000,2000").expect("valid");
        assert_eq!(
            (
                record.report_count,
                record.report_entered,
                record.report_updated
            ),
            (5, Some(1000), Some(2000))
        );
    }

    #[test]
    fn unknown_version_is_refused() {
        assert!(decode_record(b"2,1,2,3,4,5,6").is_err());
    }
}
