//! Wall-clock formatting shared by health documents, logs, admin answers and audit events.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-27T12:00:00.000Z`.
pub fn rfc3339(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The first second of the year 10000: from there on RFC 3339 has no four-digit year.
const YEAR_10000: u64 = 253_402_300_800;

/// Appends `time` as RFC 3339 in UTC with nanosecond precision, e.g.
/// `2026-11-27T12:00:00.000000000Z`, byte for byte what chrono writes with
/// `SecondsFormat::Nanos`. Every audit event has such a time, so the usual case (1970 to
/// 9999) is written here directly, without chrono's general formatting machinery.
pub fn write_rfc3339_nanos(out: &mut Vec<u8>, time: SystemTime) {
    let since_epoch = match time.duration_since(UNIX_EPOCH) {
        Ok(elapsed) if elapsed.as_secs() < YEAR_10000 => elapsed,
        _ => {
            let text = DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Nanos, true);
            out.extend_from_slice(text.as_bytes());
            return;
        }
    };
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_date(seconds / 86_400);
    let of_day = seconds % 86_400;
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, of_day / 3600, 2);
    out.push(b':');
    push_digits(out, of_day / 60 % 60, 2);
    out.push(b':');
    push_digits(out, of_day % 60, 2);
    out.push(b'.');
    push_digits(out, u64::from(since_epoch.subsec_nanos()), 9);
    out.push(b'Z');
}

/// Year, month and day of the proleptic Gregorian calendar, `days` after 1970-01-01. Counts
/// in 400-year eras of 146,097 days from 0000-03-01, so that leap days end each year.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let from_march_0000 = days + 719_468;
    let era = from_march_0000 / 146_097;
    let day_of_era = from_march_0000 % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 28/29.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// `value` in decimal, zero-padded to `width` digits (it has at most that many).
fn push_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn fast(time: SystemTime) -> String {
        let mut out = Vec::new();
        write_rfc3339_nanos(&mut out, time);
        String::from_utf8(out).expect("ASCII")
    }

    fn chrono(time: SystemTime) -> String {
        DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Nanos, true)
    }

    #[test]
    fn calendar_edges_are_written_as_chrono_writes_them() {
        let at = |seconds: u64, nanos: u32| UNIX_EPOCH + Duration::new(seconds, nanos);
        let edges = [
            at(0, 0),
            at(951_782_400, 1), // 2000-02-29, a leap day of a 400th year
            at(4_107_542_400, 999_999_999), // 2100-03-01, after a century without one
            at(1_709_251_199, 500), // 2024-02-29T23:59:59
            at(YEAR_10000 - 1, 999_999_999),
            at(YEAR_10000, 0),                // chrono's five-digit year
            UNIX_EPOCH - Duration::new(1, 5), // before 1970
        ];
        for time in edges {
            assert_eq!(fast(time), chrono(time));
        }
        assert_eq!(fast(at(0, 7)), "1970-01-01T00:00:00.000000007Z");
    }

    proptest! {
        #[test]
        fn every_instant_is_written_as_chrono_writes_it(
            seconds in 0..YEAR_10000 + 86_400,
            nanos in 0..1_000_000_000u32,
        ) {
            let time = UNIX_EPOCH + Duration::new(seconds, nanos);
            prop_assert_eq!(fast(time), chrono(time));
        }
    }
}
