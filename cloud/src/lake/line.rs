//! What one lake line says and which partition it belongs to (README: the lake).
//!
//! - A record: its own fields plus `device`, `spool` and `received_at`, under
//!   `raw/type={type}/dt={date}/hour={hour}`, from its `ts` in UTC. A `ts` before 2020 or
//!   more than 24 h ahead of arrival, or one the device flagged `ts_suspect` (its clock
//!   not yet synchronised), is partitioned by `received_at` instead and the line says
//!   `"ts_suspect": true`, once.
//! - A rejected payload: `{"received_at", "topic", "reason", "payload_b64"}` under
//!   `errors/dt={date}`.

use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use ferry_shared::limits::MAX_PAYLOAD_BYTES;
use ferry_shared::{DeviceId, Record, SpoolId, Timestamp};
use serde_json::{Value, json};

/// A rejected payload larger than this is kept in part: enough to see what it was, without
/// letting one bad publish make a 20 MB line.
pub const MAX_REJECT_PAYLOAD: usize = 2 * MAX_PAYLOAD_BYTES;

/// A lake line, ready to append to its partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// `raw/type=reading/dt=2026-11-22/hour=09` or `errors/dt=2026-11-22`.
    pub partition: String,
    /// One line of NDJSON, with its newline.
    pub text: String,
}

fn earliest_plausible() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub fn record_line(
    device: &DeviceId,
    spool: &SpoolId,
    record: &Record,
    received: Timestamp,
) -> Result<Line, serde_json::Error> {
    let ts = record.ts.datetime();
    // The device's own flag (its clock not yet synchronised) or the receiver's rule.
    let suspect = record.ts_suspect
        || ts < earliest_plausible()
        || ts > received.datetime() + Duration::hours(24);
    let when = if suspect { received.datetime() } else { ts };
    // The record's own JSON with the arrival fields spliced in before its closing brace:
    // no intermediate map, which is most of the ingest's CPU otherwise.
    let mut text = serde_json::to_string(record)?;
    if text.pop() != Some('}') {
        return Err(serde::ser::Error::custom(
            "a record serialises as a JSON object",
        ));
    }
    text.push_str(",\"device\":");
    text.push_str(&serde_json::to_string(device)?);
    text.push_str(",\"spool\":");
    text.push_str(&serde_json::to_string(spool)?);
    text.push_str(",\"received_at\":\"");
    text.push_str(&received.to_string());
    text.push('"');
    // A record the device flagged carries the field already.
    if suspect && !record.ts_suspect {
        text.push_str(",\"ts_suspect\":true");
    }
    text.push_str("}\n");
    Ok(Line {
        partition: format!(
            "raw/type={}/dt={}/hour={}",
            record.body.type_name(),
            when.format("%Y-%m-%d"),
            when.format("%H")
        ),
        text,
    })
}

pub fn reject_line(topic: &str, reason: &str, payload: &[u8], received: Timestamp) -> Line {
    let kept = &payload[..payload.len().min(MAX_REJECT_PAYLOAD)];
    let mut fields = json!({
        "received_at": received,
        "topic": topic,
        "reason": reason,
        "payload_b64": base64::engine::general_purpose::STANDARD.encode(kept),
    });
    if kept.len() < payload.len() {
        fields["payload_bytes"] = json!(payload.len());
        fields["payload_truncated"] = Value::Bool(true);
    }
    let mut text = fields.to_string();
    text.push('\n');
    Line {
        partition: format!("errors/dt={}", received.datetime().format("%Y-%m-%d")),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::RecordBody;

    fn reading(ts: &str) -> Record {
        Record {
            seq: 7,
            ts: Timestamp::parse(ts).expect("ts"),
            ts_suspect: false,
            body: RecordBody::Reading {
                sensor: "bme280".into(),
                metrics: [("t".to_owned(), 21.5)].into(),
            },
        }
    }

    #[test]
    fn partitions_by_ts_unless_it_is_implausible() {
        let device = DeviceId::new("ws-1").expect("id");
        let spool = SpoolId::new("01JD3W6Q3X8F2M7C9K4N5P6R8T").expect("spool");
        let received = Timestamp::parse("2026-11-22T10:00:00.000Z").expect("ts");
        let cases = [
            (
                "2026-11-22T09:59:58.000Z",
                "raw/type=reading/dt=2026-11-22/hour=09",
                false,
            ),
            (
                "2026-11-21T23:00:00+02:00",
                "raw/type=reading/dt=2026-11-21/hour=21",
                false,
            ),
            (
                "2026-11-23T09:59:00.000Z",
                "raw/type=reading/dt=2026-11-23/hour=09",
                false,
            ),
            (
                "2026-11-23T10:00:01.000Z",
                "raw/type=reading/dt=2026-11-22/hour=10",
                true,
            ),
            (
                "1970-01-01T00:00:00.000Z",
                "raw/type=reading/dt=2026-11-22/hour=10",
                true,
            ),
            (
                "2019-12-31T23:59:59.999Z",
                "raw/type=reading/dt=2026-11-22/hour=10",
                true,
            ),
        ];
        for (ts, partition, suspect) in cases {
            let line = record_line(&device, &spool, &reading(ts), received).expect("line");
            assert_eq!(line.partition, partition, "{ts}");
            let v: Value = serde_json::from_str(&line.text).expect("json");
            assert!(line.text.ends_with('\n'));
            assert_eq!(v["ts_suspect"].as_bool().unwrap_or(false), suspect, "{ts}");
            assert_eq!(v["device"], "ws-1");
            assert_eq!(v["spool"], "01JD3W6Q3X8F2M7C9K4N5P6R8T");
            assert_eq!(v["seq"], 7);
            assert_eq!(v["type"], "reading");
            assert_eq!(v["metrics"]["t"], 21.5);
            assert_eq!(v["received_at"], "2026-11-22T10:00:00.000Z");
        }
    }

    #[test]
    fn a_record_the_device_flagged_is_partitioned_by_arrival_and_flagged_once() {
        let device = DeviceId::new("ws-1").expect("id");
        let spool = SpoolId::new("01JD3W6Q3X8F2M7C9K4N5P6R8T").expect("spool");
        let received = Timestamp::parse("2026-11-22T10:00:00.000Z").expect("ts");
        let mut record = reading("2026-11-21T09:00:00.000Z");
        record.ts_suspect = true;
        let line = record_line(&device, &spool, &record, received).expect("line");
        assert_eq!(line.partition, "raw/type=reading/dt=2026-11-22/hour=10");
        assert_eq!(line.text.matches("ts_suspect").count(), 1, "{}", line.text);
        let v: Value = serde_json::from_str(&line.text).expect("json");
        assert_eq!(v["ts_suspect"], true);
        assert_eq!(v["ts"], "2026-11-21T09:00:00.000Z");
    }

    #[test]
    fn rejects_keep_the_payload_within_a_bound() {
        let received = Timestamp::parse("2026-11-22T10:00:00.000Z").expect("ts");
        let line = reject_line("ferry/v1/x/telemetry", "not_json", b"hello", received);
        assert_eq!(line.partition, "errors/dt=2026-11-22");
        let v: Value = serde_json::from_str(&line.text).expect("json");
        assert_eq!(v["payload_b64"], "aGVsbG8=");
        assert_eq!(v["reason"], "not_json");
        assert!(v.get("payload_truncated").is_none());
        let big = vec![b'x'; MAX_REJECT_PAYLOAD + 10];
        let v: Value =
            serde_json::from_str(&reject_line("t", "oversize", &big, received).text).expect("json");
        assert_eq!(v["payload_truncated"], true);
        assert_eq!(v["payload_bytes"], MAX_REJECT_PAYLOAD + 10);
    }
}
