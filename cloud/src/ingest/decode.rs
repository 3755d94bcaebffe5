//! One MQTT message into an [`Admission`]: its records as lake lines, or one reject line
//! with its reason. Nothing that arrives is dropped without a trace.

use ferry_shared::limits::{MAX_RECORD_BYTES, MAX_STATUS_BYTES};
use ferry_shared::{RecordBody, Stream, Timestamp, Topic, decode};

use super::journal::{Admission, Admitted};
use crate::hot::{DeviceStatus, HotItem};
use crate::lake::{record_line, reject_line};

/// What a lake line adds to its record, at most: `device`, `spool`, `received_at` and
/// `ts_suspect` with their keys.
const LINE_OVERHEAD: usize = 512;

fn hot_item(item: &HotItem) -> String {
    // A map of names to finite numbers and plain strings: serialising cannot fail.
    serde_json::to_string(item).unwrap_or_default()
}

/// `hot`: the dashboards' hot store is fed, so readings (their lake lines) and status
/// messages are queued for it (and status messages are expected at all).
pub fn admission(topic: &str, payload: &[u8], received: Timestamp, hot: bool) -> Admission {
    let reject = |reason: &'static str| Admission::Reject {
        reason,
        line: reject_line(topic, reason, payload, received),
    };
    let parsed = match Topic::parse(topic) {
        Ok(t) if matches!(t.stream, Stream::Telemetry | Stream::Transactions) => t,
        Ok(t) if hot && t.stream == Stream::Status => {
            if payload.len() > MAX_STATUS_BYTES {
                return reject("status_too_large");
            }
            return match serde_json::from_slice::<DeviceStatus>(payload) {
                Ok(status) if status.is_sane() => Admission::Status {
                    hot: hot_item(&HotItem::Status {
                        device: t.device.to_string(),
                        received_ms: received.unix_millis(),
                        status,
                    }),
                },
                Ok(_) | Err(_) => reject("bad_status"),
            };
        }
        _ => return reject("unknown_topic"),
    };
    let envelope = match decode(payload, &parsed.device) {
        Ok(env) => env,
        Err(e) => return reject(e.reason_code()),
    };
    // Transactions come on their own topic, which IoT Core policies and the agent keep to
    // tills; one on telemetry is a device trying another's door.
    if parsed.stream == Stream::Telemetry && envelope.records.iter().any(|r| r.body.is_txn()) {
        return reject("txn_on_telemetry");
    }
    let mut records = Vec::with_capacity(envelope.records.len());
    for record in &envelope.records {
        let line = match record_line(&envelope.device, &envelope.spool, record, received) {
            Ok(line) => line,
            Err(_) => return reject("unserialisable"),
        };
        // The record's own limit, checked on the line the lake gets anyway (the record plus
        // device, spool and received_at): a third-party device never went through the
        // agent's check at append.
        if line.text.len() > MAX_RECORD_BYTES + LINE_OVERHEAD {
            return reject("record_too_large");
        }
        // The router gets the lake line itself: the record once serialised, with its device.
        let tx_id = match &record.body {
            RecordBody::Txn(txn) => Some(txn.tx_id.to_string()),
            _ => None,
        };
        records.push(Admitted {
            seq: record.seq,
            line,
            tx_id,
            hot: hot && matches!(record.body, RecordBody::Reading { .. }),
        });
    }
    Admission::Records {
        device: envelope.device,
        spool: envelope.spool,
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(a: &Admission) -> Option<&'static str> {
        match a {
            Admission::Reject { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn a_txn_on_the_telemetry_topic_is_refused() {
        let payload = br#"{"v":1,"device":"ws-1","spool":"01JD3W6Q3X8F2M7C9K4N5P6R8T","sent_at":"2026-11-22T10:00:00.000Z","records":[{"seq":1,"ts":"2026-11-22T10:00:00.000Z","type":"txn","tx_id":"ws-1:1","op":"stamp","program":"coffee","card":"C-1","store":"S-01","qty":1}]}"#;
        let now = Timestamp::now();
        assert_eq!(
            reason(&admission("ferry/v1/ws-1/telemetry", payload, now, false)),
            Some("txn_on_telemetry")
        );
        assert!(matches!(
            admission("ferry/v1/ws-1/transactions", payload, now, false),
            Admission::Records { .. }
        ));
    }

    #[test]
    fn status_messages_go_to_the_hot_store_or_are_traced() {
        let now = Timestamp::now();
        let topic = "ferry/v1/ws-1/status";
        let payload = br#"{"online":true,"device":"ws-1","agent_version":"0.1.0","at":"2026-11-24T00:00:00.000Z","spool":"s","last_seq":9,"pending":2,"pending_bytes":10,"pending_transactions":0,"oldest_pending_age_s":1.5,"evicted_total":0,"device_id":"ws-1"}"#;
        let Admission::Status { hot } = admission(topic, payload, now, true) else {
            panic!("a status for the hot store");
        };
        let item: HotItem = serde_json::from_str(&hot).expect("a hot item");
        let HotItem::Status { device, status, .. } = item else {
            panic!("{hot}");
        };
        assert_eq!((device.as_str(), status.pending), ("ws-1", Some(2)));
        // The will carries no figures.
        let will = br#"{"online":false,"device":"ws-1","agent_version":"0.1.0"}"#;
        assert!(matches!(
            admission(topic, will, now, true),
            Admission::Status { .. }
        ));
        assert_eq!(
            reason(&admission(topic, b"{\"online\":\"yes\"}", now, true)),
            Some("bad_status")
        );
        let long_version = format!(r#"{{"online":true,"agent_version":"{}"}}"#, "v".repeat(900));
        assert_eq!(
            reason(&admission(topic, long_version.as_bytes(), now, true)),
            Some("bad_status")
        );
        let huge = format!(
            r#"{{"online":true,"agent_version":"{}"}}"#,
            "v".repeat(900_000)
        );
        assert_eq!(
            reason(&admission(topic, huge.as_bytes(), now, true)),
            Some("status_too_large")
        );
        assert_eq!(
            reason(&admission(topic, payload, now, false)),
            Some("unknown_topic"),
            "no hot store, no status topic"
        );
    }
}
