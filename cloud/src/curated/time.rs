//! Lake timestamps to microseconds since the epoch, the unit of Delta's `timestamp`.
//!
//! The ingest writes every timestamp as `2026-11-22T09:15:02.125Z` (RFC 3339, milliseconds,
//! UTC); that shape is read by hand, as chrono's general parser costs more than the rest
//! of a line's columns. Any other RFC 3339 form goes through chrono.

pub fn micros(text: &str) -> Option<i64> {
    fast(text.as_bytes()).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_micros())
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, exactly.
fn fast(b: &[u8]) -> Option<i64> {
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, milli) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1_000_000 + milli * 1000)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_agrees_with_chrono() {
        for text in [
            "1970-01-01T00:00:00.000Z",
            "2026-11-22T09:15:02.125Z",
            "2024-02-29T23:59:59.999Z",
            "2000-03-01T00:00:00.001Z",
            "1969-12-31T23:59:59.500Z",
        ] {
            let expected = chrono::DateTime::parse_from_rfc3339(text)
                .expect("rfc3339")
                .timestamp_micros();
            assert_eq!(fast(text.as_bytes()), Some(expected), "{text}");
        }
    }

    #[test]
    fn other_shapes_fall_back_or_fail() {
        assert_eq!(
            micros("2026-11-22T10:15:02+01:00"),
            micros("2026-11-22T09:15:02.000Z")
        );
        assert_eq!(fast(b"2026-02-30T00:00:00.000Z"), None);
        assert_eq!(micros("2026-02-30T00:00:00.000Z"), None);
        assert_eq!(micros("yesterday"), None);
    }
}
