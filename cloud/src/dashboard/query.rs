//! Parsing a dashboard query: times, days, steps, and the plan they make. Everything a
//! caller can put in a query is checked here before any arithmetic; the fuzz target
//! `cloud/fuzz` and a seeded noise test drive these functions.
//!
//! `GET /v1/devices/{id}/readings` picks raw points or rollups from the span when `step` is
//! absent: raw up to an hour (within the raw retention), otherwise whole-minute steps that
//! give at most [`AUTO_POINTS`] points (1 min for a day, 7 min for a week). `step=raw` asks
//! for raw points; any other step must be a whole number of minutes.

use chrono::{NaiveDate, Utc};
use ferry_shared::Timestamp;

use crate::http::ApiError;

/// Raw points at most, up to this span, when the step is chosen for the caller.
pub const RAW_SPAN_MS: i64 = 3600 * 1000;
/// Points an automatic step aims at, at most.
pub const AUTO_POINTS: i64 = 1440;
/// Points one answer holds at most, raw or aggregated.
pub const MAX_POINTS: i64 = 20_000;
pub const MINUTE_MS: i64 = 60_000;

/// What a readings query resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Raw,
    /// Step in ms, a whole number of minutes.
    Rollup(i64),
}

/// Chooses raw points or a step for `[from, to)`, as the module documentation says.
pub fn plan(
    step: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    raw_from_ms: i64,
) -> Result<Plan, ApiError> {
    let span = to_ms - from_ms;
    let plan = match step.map(str::trim) {
        None | Some("") | Some("auto") => {
            if span <= RAW_SPAN_MS && from_ms >= raw_from_ms {
                Plan::Raw
            } else {
                let per_point = (span + AUTO_POINTS - 1) / AUTO_POINTS;
                let minutes = ((per_point + MINUTE_MS - 1) / MINUTE_MS).max(1);
                Plan::Rollup(minutes * MINUTE_MS)
            }
        }
        Some("raw") => Plan::Raw,
        Some(text) => {
            let ms = parse_duration_ms(text).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_step",
                    format!("step {text:?}: use raw, auto, or a duration such as 60s, 5m, 1h, 1d"),
                )
            })?;
            if ms <= 0 || ms % MINUTE_MS != 0 {
                return Err(ApiError::invalid(
                    "invalid_step",
                    "step must be a whole number of minutes (rollups are per minute), or raw",
                ));
            }
            Plan::Rollup(ms)
        }
    };
    if let Plan::Rollup(step) = plan
        && span / step > MAX_POINTS
    {
        return Err(ApiError::invalid(
            "too_many_points",
            format!(
                "{} points at this step; at most {MAX_POINTS}: take a larger step or a shorter span",
                span / step
            ),
        ));
    }
    Ok(plan)
}

/// `90`, `90s`, `5m`, `1h`, `1d`, in ms.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1000,
        "m" => MINUTE_MS,
        "h" => 3600 * 1000,
        "d" => 24 * 3600 * 1000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The times a query may name: 2000-01-01 up to the end of 9999, so that no arithmetic on
/// them (spans, steps, a day added) can leave the calendar.
pub const EARLIEST_MS: i64 = ferry_shared::limits::EARLIEST_STATE_TS_MS;
pub const LATEST_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// The metric a query must name.
pub fn required_metric(metric: Option<String>) -> Result<String, ApiError> {
    metric
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("missing_metric", "metric is required"))
}

/// A query's `[from, to)` in Unix ms: `to` defaults to `now`, `from` to `default_ms` before
/// `to`; `from` must come first.
pub fn span(
    from: Option<&str>,
    to: Option<&str>,
    now: i64,
    default_ms: i64,
) -> Result<(i64, i64), ApiError> {
    let to = to.map(|t| parse_time("to", t)).transpose()?.unwrap_or(now);
    let from = match from {
        Some(t) => parse_time("from", t)?,
        None => to.saturating_sub(default_ms),
    };
    if from >= to {
        return Err(ApiError::invalid("invalid_range", "from must be before to"));
    }
    Ok((from, to))
}

/// RFC 3339, or Unix ms, within [`EARLIEST_MS`]..=[`LATEST_MS`].
pub fn parse_time(key: &'static str, text: &str) -> Result<i64, ApiError> {
    let ms = match text.parse::<i64>() {
        Ok(ms) => Some(ms),
        Err(_) => Timestamp::parse(text).ok().map(|t| t.unix_millis()),
    };
    ms.filter(|ms| (EARLIEST_MS..=LATEST_MS).contains(ms))
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_time",
                format!(
                    "{key} {text:?}: use RFC 3339 (2026-11-24T10:00:00Z) or Unix ms, \
                     from 2000 to 9999"
                ),
            )
        })
}

/// `YYYY-MM-DD`, or the day of an RFC 3339 time, from 2000 to 9999.
pub fn parse_day(key: &'static str, text: &str) -> Result<NaiveDate, ApiError> {
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .or_else(|| {
            let ms = Timestamp::parse(text).ok()?.unix_millis();
            Some(chrono::DateTime::<Utc>::from_timestamp_millis(ms)?.date_naive())
        });
    let in_range = |d: &NaiveDate| {
        chrono::DateTime::<Utc>::from_timestamp_millis(EARLIEST_MS)
            .zip(chrono::DateTime::<Utc>::from_timestamp_millis(LATEST_MS))
            .is_some_and(|(first, last)| (first.date_naive()..last.date_naive()).contains(d))
    };
    day.filter(in_range).ok_or_else(|| {
        ApiError::invalid(
            "invalid_time",
            format!(
                "{key} {text:?}: use a day (2026-11-24) or an RFC 3339 time, from 2000 to 9999"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600 * 1000;

    /// What an attacker might put in a query: extremes, signs, calendar edges, and seeded
    /// noise built from them. Every parser answers a value in range or an error, never a
    /// panic (a bounded stand-in for a fuzzer that CI runs every time).
    #[test]
    fn query_parsing_survives_hostile_input() {
        let seeds = [
            "+262142-12-31",
            "-262143-01-01",
            "9999-12-31",
            "0000-01-01",
            "1970-01-01",
            "2026-02-30",
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551616",
            "1e308",
            "NaN",
            "",
            "-",
            "9223372036854775807s",
            "9223372036854775807d",
            "0m",
            "-5m",
            "60s",
            "1d",
            "2026-11-24T10:00:00Z",
            "+275760-09-13T00:00:00Z",
            "auto",
            "raw",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut inputs: Vec<String> = seeds.iter().map(|s| (*s).to_owned()).collect();
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = seeds[(x % seeds.len() as u64) as usize];
            let b = seeds[((x >> 20) % seeds.len() as u64) as usize];
            let cut = (x >> 40) as usize % (a.len() + 1);
            inputs.push(format!("{}{}", &a[..cut], b));
        }
        let now = 1_800_000_000_000;
        for text in &inputs {
            if let Ok(ms) = parse_time("from", text) {
                assert!((EARLIEST_MS..=LATEST_MS).contains(&ms), "{text}: {ms}");
                for to in [ms, ms + 1, LATEST_MS] {
                    let _ = plan(Some(text), ms, to, now);
                    let _ = plan(None, ms, to, now);
                }
            }
            if let Ok(day) = parse_day("from", text) {
                assert!(day.succ_opt().is_some(), "{text}: {day}");
            }
            let _ = parse_duration_ms(text);
            let _ = plan(Some(text), now - H, now, now);
            for other in [None, Some(text.as_str()), Some("1970-01-01")] {
                if let Ok((from, to)) = span(Some(text), other, now, i64::MAX) {
                    assert!(from < to, "{text}");
                }
                if let Ok((from, to)) = span(other, Some(text), now, i64::MAX) {
                    assert!(from < to, "{text}");
                }
            }
        }
    }

    #[test]
    fn the_step_follows_the_span_unless_asked() {
        let now = 100 * 24 * H;
        let raw_from = now - 7 * 24 * H;
        let cases: &[(Option<&str>, i64, Plan)] = &[
            (None, H, Plan::Raw),
            (Some("auto"), H, Plan::Raw),
            (None, H + 1, Plan::Rollup(MINUTE_MS)),
            (None, 24 * H, Plan::Rollup(MINUTE_MS)),
            (None, 7 * 24 * H, Plan::Rollup(7 * MINUTE_MS)),
            (None, 90 * 24 * H, Plan::Rollup(90 * MINUTE_MS)),
            (Some("raw"), 24 * H, Plan::Raw),
            (Some("60"), 7 * 24 * H, Plan::Rollup(MINUTE_MS)),
            (Some("1m"), 7 * 24 * H, Plan::Rollup(MINUTE_MS)),
            (Some("1h"), 7 * 24 * H, Plan::Rollup(H)),
            (Some("1d"), 7 * 24 * H, Plan::Rollup(24 * H)),
        ];
        for &(step, span, want) in cases {
            let got = plan(step, now - span, now, raw_from).expect("plan");
            assert_eq!(got, want, "step {step:?} over {span} ms");
        }
        // An hour that lies before the raw retention comes from the rollups.
        assert_eq!(
            plan(None, raw_from - 2 * H, raw_from - H, raw_from).expect("plan"),
            Plan::Rollup(MINUTE_MS)
        );
        for bad in ["30s", "90s", "0", "-1m", "5x", "m"] {
            assert!(plan(Some(bad), now - H, now, raw_from).is_err(), "{bad}");
        }
        assert!(
            plan(Some("1m"), now - 90 * 24 * H, now, raw_from).is_err(),
            "129,600 points is too many"
        );
    }
}
