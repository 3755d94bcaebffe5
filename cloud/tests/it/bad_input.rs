//! Every kind of malformed payload, mixed into good traffic: each lands in `errors/` with its
//! reason, the good records all arrive, and the ingest never stops.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use base64::Engine;
use ferry_shared::Timestamp;
use ferry_tests::broker::Mosquitto;
use ferry_tests::devices::{Message, device_messages, publish_all};
use ferry_tests::s3::S3Server;

use crate::{Lake, assert_exactly_once, ingest, spool_id};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_traced_with_their_reason() {
    let _serial = crate::one_at_a_time().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let s3 = S3Server::start(crate::BUCKET);
    let mut ingest = ingest(dir.path(), broker.port, Lake::S3(&s3), "");
    ingest.proc.start();
    ingest.wait_subscribed().await;

    let topic = "ferry/v1/ws-bad/telemetry";
    let spool = spool_id(1);
    let good = |ts: &str, extra: &str| {
        format!(
            r#"{{"v":1,"device":"ws-bad","spool":"{spool}","sent_at":"{ts}","records":[{{"seq":1,"ts":"{ts}","type":"reading","sensor":"s","metrics":{{"t":1.5}}{extra}}}]}}"#
        )
    };
    let ts = Timestamp::now().to_string();
    let bad: Vec<(&str, &str, Vec<u8>)> = vec![
        ("not_json", topic, b"hello, broker".to_vec()),
        (
            "bad_gzip",
            topic,
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3],
        ),
        (
            "unknown_version",
            topic,
            good(&ts, "").replace("\"v\":1", "\"v\":2").into_bytes(),
        ),
        (
            "device_mismatch",
            "ferry/v1/ws-other/telemetry",
            good(&ts, "").into_bytes(),
        ),
        ("oversize", topic, vec![b' '; 200 * 1024]),
        (
            "non_finite_metric",
            topic,
            good(&ts, "")
                .replace(r#""t":1.5"#, r#""t":NaN"#)
                .into_bytes(),
        ),
        (
            "missing_field",
            topic,
            good(&ts, "")
                .replace(&format!("\"spool\":\"{spool}\","), "")
                .into_bytes(),
        ),
        ("not_json", topic, gzip(b"{\"v\": 1, \"dev")),
    ];
    let mut messages: Vec<Message> = Vec::new();
    let mut expected = BTreeMap::new();
    for d in 0..4 {
        let device = format!("ws-good-{d}");
        let mut good = device_messages(&device, &spool_id(d), 500, 50, Timestamp::now());
        expected.insert((device, spool_id(d)), 500);
        messages.append(&mut good);
        if let Some((_, topic, payload)) = bad.get(d * 2) {
            messages.push(Message {
                topic: topic.to_string(),
                payload: payload.clone(),
            });
        }
        if let Some((_, topic, payload)) = bad.get(d * 2 + 1) {
            messages.push(Message {
                topic: topic.to_string(),
                payload: payload.clone(),
            });
        }
    }
    publish_all(broker.port, "bad-input-devices", &messages).await;
    ingest
        .wait_for_records(2_000, Duration::from_secs(180))
        .await;
    ferry_tests::wait_until(Duration::from_secs(60), "8 distinct error lines", || {
        distinct(&error_lines(&ingest.lake())).len() >= 8
    })
    .await;

    let objects = ingest.lake();
    assert_exactly_once(&objects, &expected);
    let errors = error_lines(&objects);
    let reasons: Vec<&str> = errors
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or(""))
        .collect();
    let want: BTreeSet<&str> = bad.iter().map(|(r, _, _)| *r).collect();
    assert_eq!(
        reasons.iter().copied().collect::<BTreeSet<_>>(),
        want,
        "{errors:#?}"
    );
    // Rejects are traced at least once: a bad message the broker redelivers (after a
    // reconnect, before its ack arrived) is traced again, identically.
    assert_eq!(distinct(&errors).len(), bad.len(), "{errors:#?}");
    for e in &errors {
        assert!(
            e["received_at"].is_string() && e["topic"].is_string(),
            "{e}"
        );
        let payload = base64::engine::general_purpose::STANDARD
            .decode(e["payload_b64"].as_str().expect("payload_b64"))
            .expect("base64");
        let original = bad
            .iter()
            .find(|(r, t, p)| *r == e["reason"] && *t == e["topic"] && p.starts_with(&payload))
            .unwrap_or_else(|| panic!("no bad payload matches {e}"));
        assert_eq!(
            payload.len(),
            original.2.len(),
            "the payload is kept whole under the cap"
        );
    }
    let text = ingest.metrics();
    assert_eq!(
        crate::metric(&text, "ferry_ingest_rejects_total{reason=\"not_json\"}"),
        2.0,
        "{text}"
    );
    assert!(ingest.proc.is_running());
    assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
}

/// Error lines without their arrival time: what tells one bad payload from another.
fn distinct(errors: &[serde_json::Value]) -> BTreeSet<(String, String, String)> {
    errors
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (field("topic"), field("reason"), field("payload_b64"))
        })
        .collect()
}

fn error_lines(objects: &[ferry_tests::lake::Object]) -> Vec<serde_json::Value> {
    objects
        .iter()
        .filter(|o| o.key.starts_with("errors/dt="))
        .flat_map(|o| o.lines.iter().cloned())
        .collect()
}
