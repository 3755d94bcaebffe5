//! One MQTT message into an [`Admission`]: its records as lake lines, or one reject line
//! with its reason. Nothing that arrives is dropped without a trace.

use ferry_shared::{RecordBody, Stream, Timestamp, Topic, decode};

use super::journal::{Admission, Admitted};
use crate::lake::{record_line, reject_line};

pub fn admission(topic: &str, payload: &[u8], received: Timestamp) -> Admission {
    let reject = |reason: &'static str| Admission::Reject {
        reason,
        line: reject_line(topic, reason, payload, received),
    };
    let parsed = match Topic::parse(topic) {
        Ok(t) if matches!(t.stream, Stream::Telemetry | Stream::Transactions) => t,
        _ => return reject("unknown_topic"),
    };
    let envelope = match decode(payload, &parsed.device) {
        Ok(env) => env,
        Err(e) => return reject(e.reason_code()),
    };
    let mut records = Vec::with_capacity(envelope.records.len());
    for record in &envelope.records {
        let line = match record_line(&envelope.device, &envelope.spool, record, received) {
            Ok(line) => line,
            Err(_) => return reject("unserialisable"),
        };
        // The router gets the lake line itself: the record once serialised, with its device.
        let tx_id = match &record.body {
            RecordBody::Txn(txn) => Some(txn.tx_id.to_string()),
            _ => None,
        };
        records.push(Admitted {
            seq: record.seq,
            line,
            tx_id,
        });
    }
    Admission::Records {
        device: envelope.device,
        spool: envelope.spool,
        records,
    }
}
