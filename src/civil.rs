//! Calendar arithmetic for dates and times in UTC.
//!
//! Owns: converting between civil dates/times and days or seconds since the
//! Unix epoch, and parsing the date/time strings clients send (RFC 3339 with
//! any offset, `YYYY-MM-DD hh:mm:ss[.frac]`, `YYYY-MM-DD`). Must not: know
//! about JSON or ClickHouse types; never panics on any input.

use time::{Date, Month};

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// Days since 1970-01-01 of a valid proleptic Gregorian date, `None` when
/// the day does not exist (2023-02-29) or lies outside years -9999..=9999.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?);
    Some(date.ok()?.to_julian_day() as i64 - UNIX_EPOCH_JULIAN_DAY)
}

/// The civil date of a day number, `None` outside years -9999..=9999.
pub(crate) fn civil_from_days(days: i64) -> Option<(i32, u8, u8)> {
    let julian = i32::try_from(days.checked_add(UNIX_EPOCH_JULIAN_DAY)?).ok()?;
    let (y, m, d) = Date::from_julian_day(julian).ok()?.to_calendar_date();
    Some((y, m as u8, d))
}

/// A point in time: whole seconds since the epoch plus nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Instant {
    pub secs: i64,
    pub nanos: u32,
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let part = self.s.get(self.pos..self.pos + n)?;
        let mut v = 0u32;
        for &c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        self.pos += n;
        Some(v)
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn eat_any(&mut self, cs: &[u8]) -> bool {
        match self.s.get(self.pos) {
            Some(c) if cs.contains(c) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }
}

fn date_part(c: &mut Cursor<'_>) -> Option<i64> {
    let y = c.digits(4)? as i64;
    if !c.eat(b'-') {
        return None;
    }
    let m = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let d = c.digits(2)?;
    days_from_civil(y, m, d)
}

/// `YYYY-MM-DD` as days since the epoch.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let mut c = Cursor {
        s: s.as_bytes(),
        pos: 0,
    };
    let days = date_part(&mut c)?;
    (c.pos == s.len()).then_some(days)
}

/// RFC 3339 (`2024-05-01T12:00:00.123+02:00`, `...Z`) or ClickHouse's
/// `YYYY-MM-DD hh:mm:ss[.frac]` (taken as UTC). Fractions beyond nanoseconds
/// are truncated.
pub(crate) fn parse_datetime(s: &str) -> Option<Instant> {
    let mut c = Cursor {
        s: s.as_bytes(),
        pos: 0,
    };
    let days = date_part(&mut c)?;
    if !c.eat_any(b"Tt ") {
        return None;
    }
    let (h, mi) = (c.digits(2)?, {
        if !c.eat(b':') {
            return None;
        }
        c.digits(2)?
    });
    if !c.eat(b':') {
        return None;
    }
    let sec = c.digits(2)?;
    // 60 is a leap second; ClickHouse has none, so it folds into the next minute.
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut nanos = 0u32;
    if c.eat(b'.') || c.eat(b',') {
        let mut n = 0;
        while let Some(&d) = c.s.get(c.pos) {
            if !d.is_ascii_digit() {
                break;
            }
            if n < 9 {
                nanos = nanos * 10 + (d - b'0') as u32;
            }
            n += 1;
            c.pos += 1;
        }
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let mut offset = 0i64;
    if c.eat_any(b"Zz") {
    } else if let Some(&sign) = c.s.get(c.pos) {
        if sign != b'+' && sign != b'-' {
            return None;
        }
        c.pos += 1;
        let oh = c.digits(2)? as i64;
        c.eat(b':');
        let om = c.digits(2)? as i64;
        if oh > 23 || om > 59 {
            return None;
        }
        offset = (oh * 60 + om) * 60 * if sign == b'-' { -1 } else { 1 };
    }
    if c.pos != s.len() {
        return None;
    }
    Some(Instant {
        secs: days * 86_400 + (h as i64) * 3600 + (mi as i64) * 60 + sec as i64 - offset,
        nanos,
    })
}

/// `YYYY-MM-DD`; a day number past year 9999 (only corrupt data has one:
/// ClickHouse's dates end in 2299) is written as the number itself.
pub(crate) fn format_date(days: i64) -> String {
    match civil_from_days(days) {
        Some((y, m, d)) => format!("{y:04}-{m:02}-{d:02}"),
        None => format!("{days} days after 1970-01-01"),
    }
}

/// `YYYY-MM-DD hh:mm:ss` plus `.fff...` with `precision` digits of `frac`.
pub(crate) fn format_datetime(secs: i64, frac: u64, precision: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let mut s = format!(
        "{} {:02}:{:02}:{:02}",
        format_date(days),
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if precision > 0 {
        s.push_str(&format!(".{:0width$}", frac, width = precision as usize));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-719_468i64, -25_567, -1, 0, 1, 19_000, 47_482, 2_932_896] {
            let (y, m, d) = civil_from_days(days).unwrap();
            assert_eq!(days_from_civil(y.into(), m.into(), d.into()), Some(days));
        }
        assert_eq!(civil_from_days(i64::MAX), None);
        assert_eq!(format_date(-719_468), "0000-03-01");
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
    }

    #[test]
    fn datetimes() {
        let t = parse_datetime("2023-11-14T22:13:20Z").unwrap();
        assert_eq!((t.secs, t.nanos), (1_700_000_000, 0));
        let t = parse_datetime("2023-11-15T00:13:20.5+02:00").unwrap();
        assert_eq!((t.secs, t.nanos), (1_700_000_000, 500_000_000));
        let t = parse_datetime("2023-11-14 22:13:20.123456789123").unwrap();
        assert_eq!(t.nanos, 123_456_789);
        for bad in [
            "2023-11-14",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:13:20+0",
            "x",
            "2023-11-14T22:13:20Zjunk",
            "2023-13-01T00:00:00Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        assert_eq!(
            format_datetime(1_700_000_000, 123, 3),
            "2023-11-14 22:13:20.123"
        );
    }
}
