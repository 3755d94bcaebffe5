//! Golden fixtures for envelope version 1. Every file in `fixtures/v1/valid` must decode and
//! re-serialise to the same JSON value; every file in `fixtures/v1/invalid` is named
//! `{reason_code}--{description}.json` and must be refused with that reason.

use std::fs;
use std::path::PathBuf;

use ferry_shared::{DeviceId, EnvelopeWriter, SpoolId, Timestamp, decode};

fn fixtures(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1")
        .join(kind);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, fs::read(&path).expect("read"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn device() -> DeviceId {
    DeviceId::new("ws-001").expect("id")
}

#[test]
fn valid_fixtures_round_trip() {
    for (name, bytes) in fixtures("valid") {
        let env = decode(&bytes, &device()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let original: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        let again = serde_json::to_value(&env).expect("serialise");
        assert_eq!(again, original, "{name} does not round-trip");
    }
}

#[test]
fn invalid_fixtures_are_refused_with_their_reason() {
    for (name, bytes) in fixtures("invalid") {
        let want = name.split("--").next().expect("reason prefix");
        let got = decode(&bytes, &device())
            .map(|_| ())
            .map_err(|e| e.reason_code());
        assert_eq!(got, Err(want), "{name}");
    }
}

#[test]
fn writer_output_is_byte_for_byte_stable() {
    let env = decode(&fixtures("valid")[0].1, &device()).expect("decode contract example");
    let spool = SpoolId::new("01JD3W6Q3X8F2M7C9K4N5P6R8T").expect("id");
    let sent_at = Timestamp::parse("2026-11-22T10:00:00.123Z").expect("ts");
    let mut w = EnvelopeWriter::new(&device(), &spool, sent_at);
    for r in &env.records {
        let spooled = ferry_shared::record::Unsequenced::new(r.ts, r.body.clone());
        w.push(r.seq, &spooled.to_spool_json().expect("json"));
    }
    let want = concat!(
        r#"{"v":1,"device":"ws-001","spool":"01JD3W6Q3X8F2M7C9K4N5P6R8T","sent_at":"2026-11-22T10:00:00.123Z","records":["#,
        r#"{"seq":41,"ts":"2026-11-22T09:59:58.000Z","type":"reading","sensor":"bme280","metrics":{"humidity_pct":48.2,"pressure_hpa":1013.1,"temperature_c":21.4}},"#,
        r#"{"seq":42,"ts":"2026-11-22T09:59:59.500Z","type":"txn","tx_id":"pos-17:R-000881","op":"stamp","program":"coffee","card":"C-0042","store":"S-01","qty":1,"receipt":"R-000881"}]}"#,
    );
    assert_eq!(w.finish(), want);
}
