//! The lines a sensor's microcontroller sends over serial to a `serial` source.
//!
//! Firmware written by others speaks one of two formats, one reading per line:
//! - `jsonl`: `{"temperature_c": 21.4, "humidity_pct": 48.2}`;
//! - `kv`: `temperature_c=21.4,humidity_pct=48.2`, optionally framed NMEA-style as
//!   `$temperature_c=21.4*5A`, where `*HH` is the XOR of every byte between the optional `$`
//!   and the `*`, in hex.
//!
//! [`parse`] takes the raw bytes of one line (without its terminator) and either returns its
//! metrics or a [`LineError`] whose [`LineError::reason_code`] is stable, for metrics and for
//! the `event` records that report bad lines. It never panics, whatever the bytes.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Metric names become lake columns (Athena, DuckDB, Spark), so they are kept to identifiers.
pub const MAX_METRIC_NAME_LEN: usize = 64;

/// More metrics than this in one line is firmware gone wrong, not a reading.
pub const MAX_METRICS_PER_LINE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    Jsonl,
    Kv,
}

pub type Metrics = BTreeMap<String, f64>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("the line is empty")]
    Empty,
    #[error("the line holds bytes that are not text")]
    Binary,
    #[error("not a JSON object of metrics: {0}")]
    NotJson(String),
    #[error("metric {0:?} is not a number")]
    NotNumber(String),
    #[error("metric {0:?} is not a finite number")]
    NonFinite(String),
    #[error("{0:?} is not a name=value pair")]
    BadPair(String),
    #[error("metric name {0:?} is not [A-Za-z_][A-Za-z0-9_]{{0,63}}")]
    BadName(String),
    #[error("metric {0:?} appears twice")]
    DuplicateMetric(String),
    #[error("the line has no metrics")]
    NoMetrics,
    #[error("the line has more than {MAX_METRICS_PER_LINE} metrics")]
    TooManyMetrics,
    #[error("checksum {0:?} is not two hex digits")]
    BadChecksum(String),
    #[error("checksum says {stated:02X}, the line adds up to {computed:02X}")]
    ChecksumMismatch { stated: u8, computed: u8 },
}

impl LineError {
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Binary => "binary",
            Self::NotJson(_) => "not_json",
            Self::NotNumber(_) => "not_a_number",
            Self::NonFinite(_) => "non_finite",
            Self::BadPair(_) => "bad_pair",
            Self::BadName(_) => "bad_name",
            Self::DuplicateMetric(_) => "duplicate_metric",
            Self::NoMetrics => "no_metrics",
            Self::TooManyMetrics => "too_many_metrics",
            Self::BadChecksum(_) => "bad_checksum",
            Self::ChecksumMismatch { .. } => "checksum_mismatch",
        }
    }
}

/// Parses one line, without its terminator. Surrounding whitespace is ignored.
pub fn parse(format: LineFormat, line: &[u8]) -> Result<Metrics, LineError> {
    let text = std::str::from_utf8(line).map_err(|_| LineError::Binary)?;
    // Tabs are whitespace; any other control character means line noise or a wrong baud.
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(LineError::Binary);
    }
    let text = text.trim();
    if text.is_empty() {
        return Err(LineError::Empty);
    }
    match format {
        LineFormat::Jsonl => parse_json(text),
        LineFormat::Kv => parse_kv(text),
    }
}

fn parse_json(text: &str) -> Result<Metrics, LineError> {
    let Pairs(object) = serde_json::from_str(text).map_err(|e| {
        // serde_json refuses NaN and Infinity as syntax; the firmware's real fault is a
        // non-finite value, so say that.
        if text.contains("NaN")
            || text.contains("Infinity")
            || e.to_string().contains("number out of range")
        {
            LineError::NonFinite(format!("(unparsed: {e})"))
        } else {
            LineError::NotJson(e.to_string())
        }
    })?;
    let mut metrics = Metrics::new();
    for (name, value) in object {
        let number = value
            .as_f64()
            .ok_or_else(|| LineError::NotNumber(name.clone()))?;
        insert(&mut metrics, name, number)?;
    }
    finish(metrics)
}

/// A JSON object's members in order, duplicates kept: serde_json's `Map` would silently keep
/// the last of two values for one name, and firmware that sends both has a bug to report.
struct Pairs(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of metrics")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(Visitor)
    }
}

fn parse_kv(text: &str) -> Result<Metrics, LineError> {
    let body = text.strip_prefix('$').unwrap_or(text);
    let body = match body.rsplit_once('*') {
        Some((body, stated)) => {
            let stated = stated.trim();
            let parsed = (stated.len() == 2 && stated.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u8::from_str_radix(stated, 16).ok())
                .flatten()
                .ok_or_else(|| LineError::BadChecksum(truncate(stated)))?;
            let computed = body.bytes().fold(0u8, |sum, b| sum ^ b);
            if parsed != computed {
                return Err(LineError::ChecksumMismatch {
                    stated: parsed,
                    computed,
                });
            }
            body
        }
        None => body,
    };
    let mut metrics = Metrics::new();
    for pair in body.split(',') {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| LineError::BadPair(truncate(pair)))?;
        let (name, value) = (name.trim(), value.trim());
        check_name(name)?;
        // Rust's float parser also takes "inf" and "NaN", which are never a reading.
        let number: f64 = value
            .parse()
            .map_err(|_| LineError::NotNumber(name.to_owned()))?;
        insert(&mut metrics, name.to_owned(), number)?;
    }
    finish(metrics)
}

fn insert(metrics: &mut Metrics, name: String, value: f64) -> Result<(), LineError> {
    check_name(&name)?;
    if !value.is_finite() {
        return Err(LineError::NonFinite(name));
    }
    if metrics.len() == MAX_METRICS_PER_LINE {
        return Err(LineError::TooManyMetrics);
    }
    if metrics.contains_key(&name) {
        return Err(LineError::DuplicateMetric(name));
    }
    metrics.insert(name, value);
    Ok(())
}

fn finish(metrics: Metrics) -> Result<Metrics, LineError> {
    if metrics.is_empty() {
        Err(LineError::NoMetrics)
    } else {
        Ok(metrics)
    }
}

fn check_name(name: &str) -> Result<(), LineError> {
    let mut bytes = name.bytes();
    let valid = name.len() <= MAX_METRIC_NAME_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(LineError::BadName(truncate(name)))
    }
}

/// Error messages quote the offending text, but never much of it.
fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Formats metrics as a `kv` line with its checksum, the way well-behaved firmware would.
pub fn to_kv_line(metrics: &Metrics) -> String {
    let body = metrics
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let sum = body.bytes().fold(0u8, |sum, b| sum ^ b);
    format!("${body}*{sum:02X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, f64)]) -> Metrics {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn good_lines() {
        let th = metrics(&[("humidity_pct", 48.2), ("temperature_c", 21.4)]);
        let cases: &[(LineFormat, &[u8], &Metrics)] = &[
            (
                LineFormat::Jsonl,
                br#"{"temperature_c": 21.4, "humidity_pct": 48.2}"#,
                &th,
            ),
            (
                LineFormat::Jsonl,
                b"  {\"temperature_c\":21.4,\"humidity_pct\":48.2}\t",
                &th,
            ),
            (LineFormat::Kv, b"temperature_c=21.4,humidity_pct=48.2", &th),
            (
                LineFormat::Kv,
                b" temperature_c = 21.4 , humidity_pct=48.2 ",
                &th,
            ),
            // The checksum of the body between `$` and `*`, upper or lower case.
            (
                LineFormat::Kv,
                b"$temperature_c=21.4,humidity_pct=48.2*54",
                &th,
            ),
            (
                LineFormat::Kv,
                b"temperature_c=21.4,humidity_pct=48.2*54",
                &th,
            ),
            (LineFormat::Kv, b"x=-1e3", &metrics(&[("x", -1000.0)])),
            (LineFormat::Kv, b"$_a1=0*02", &metrics(&[("_a1", 0.0)])),
        ];
        for (format, line, want) in cases {
            let got = parse(*format, line);
            assert_eq!(
                got.as_ref(),
                Ok(*want),
                "{format:?} {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn bad_lines_say_why() {
        let cases: &[(LineFormat, &[u8], &str)] = &[
            (LineFormat::Kv, b"", "empty"),
            (LineFormat::Kv, b"   \t", "empty"),
            (LineFormat::Jsonl, b"\xff\xfe{}", "binary"),
            (LineFormat::Kv, b"t=1\x00\x01", "binary"),
            (LineFormat::Kv, b"t=1\x1b[0m", "binary"),
            (LineFormat::Jsonl, b"{\"t\": 1", "not_json"),
            (LineFormat::Jsonl, b"[1, 2]", "not_json"),
            (LineFormat::Jsonl, b"t=1", "not_json"),
            (LineFormat::Jsonl, b"{\"t\": \"warm\"}", "not_a_number"),
            (LineFormat::Jsonl, b"{\"t\": null}", "not_a_number"),
            (LineFormat::Jsonl, b"{\"t\": {\"a\": 1}}", "not_a_number"),
            (LineFormat::Jsonl, b"{\"t\": NaN}", "non_finite"),
            (LineFormat::Jsonl, b"{\"t\": 1e999}", "non_finite"),
            (LineFormat::Jsonl, b"{}", "no_metrics"),
            (
                LineFormat::Jsonl,
                b"{\"t\": 1, \"t\": 2}",
                "duplicate_metric",
            ),
            (LineFormat::Jsonl, b"{\"bad name\": 1}", "bad_name"),
            (LineFormat::Kv, b"t=NaN", "non_finite"),
            (LineFormat::Kv, b"t=inf", "non_finite"),
            (LineFormat::Kv, b"t=1e999", "non_finite"),
            (LineFormat::Kv, b"t=warm", "not_a_number"),
            (LineFormat::Kv, b"t=", "not_a_number"),
            (LineFormat::Kv, b"t", "bad_pair"),
            (LineFormat::Kv, b"t=1,,h=2", "bad_pair"),
            (LineFormat::Kv, b"=1", "bad_name"),
            (LineFormat::Kv, b"1t=1", "bad_name"),
            (LineFormat::Kv, b"t-c=1", "bad_name"),
            (LineFormat::Kv, b"t=1,t=2", "duplicate_metric"),
            (LineFormat::Kv, b"$t=1*00", "checksum_mismatch"),
            (LineFormat::Kv, b"$t=1*5", "bad_checksum"),
            (LineFormat::Kv, b"$t=1*ZZ", "bad_checksum"),
            (LineFormat::Kv, b"$t=1*+F", "bad_checksum"),
            // A line cut short in the middle loses its checksum's meaning too.
            (
                LineFormat::Kv,
                b"$temperature_c=21.4,humidity_pct=48*54",
                "checksum_mismatch",
            ),
        ];
        for (format, line, reason) in cases {
            let err = parse(*format, line).expect_err(&format!(
                "{format:?} {:?} must fail",
                String::from_utf8_lossy(line)
            ));
            assert_eq!(
                err.reason_code(),
                *reason,
                "{format:?} {:?}: {err}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn too_many_metrics() {
        let line = (0..=MAX_METRICS_PER_LINE)
            .map(|i| format!("m{i}=1"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            parse(LineFormat::Kv, line.as_bytes()),
            Err(LineError::TooManyMetrics)
        );
        let long_name = format!("{}=1", "a".repeat(MAX_METRIC_NAME_LEN + 1));
        assert_eq!(
            parse(LineFormat::Kv, long_name.as_bytes())
                .expect_err("too long")
                .reason_code(),
            "bad_name"
        );
    }

    /// Found by the fuzzer: serde_json without `float_roundtrip` read this one ulp off.
    #[test]
    fn json_numbers_arrive_exactly() {
        assert_eq!(
            parse(LineFormat::Jsonl, br#"{"p": 2.22e226}"#),
            Ok(metrics(&[("p", 2.22e226)]))
        );
    }

    #[test]
    fn kv_lines_round_trip() {
        let m = metrics(&[
            ("pressure_hpa", 1013.25),
            ("t", -0.1),
            ("tiny", 1e-300),
            ("huge", 1.7e308),
        ]);
        assert_eq!(parse(LineFormat::Kv, to_kv_line(&m).as_bytes()), Ok(m));
    }

    /// A bounded, deterministic stand-in for the fuzz target, so CI exercises the parsers
    /// on noise too: mutated good lines and random bytes never panic, and whatever parses
    /// obeys the rules.
    #[test]
    fn noise_never_panics() {
        let seeds: &[&[u8]] = &[
            b"$temperature_c=21.4,humidity_pct=48.2*54",
            br#"{"temperature_c": 21.4, "humidity_pct": 48.2}"#,
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut line = seeds[round % 2].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % (line.len() + 1);
                match next() % 3 {
                    0 if at < line.len() => line[at] = next() as u8,
                    1 if at < line.len() => {
                        line.remove(at);
                    }
                    _ => line.insert(at, next() as u8),
                }
            }
            for format in [LineFormat::Jsonl, LineFormat::Kv] {
                if let Ok(m) = parse(format, &line) {
                    assert!(!m.is_empty() && m.len() <= MAX_METRICS_PER_LINE);
                    assert!(m.values().all(|v| v.is_finite()));
                    assert!(m.keys().all(|k| check_name(k).is_ok()));
                }
            }
        }
    }
}
