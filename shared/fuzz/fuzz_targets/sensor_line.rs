#![no_main]
//! Any line is either metrics or a typed refusal, never a panic; what parses obeys the
//! rules; and well-formed metrics survive a `kv` and a `jsonl` round trip.

use ferry_shared::sensor_line::{LineFormat, MAX_METRICS_PER_LINE, parse, to_kv_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [LineFormat::Jsonl, LineFormat::Kv] {
        let Ok(metrics) = parse(format, data) else {
            continue;
        };
        assert!(!metrics.is_empty() && metrics.len() <= MAX_METRICS_PER_LINE);
        assert!(metrics.values().all(|v| v.is_finite()));
        let kv = to_kv_line(&metrics);
        assert_eq!(parse(LineFormat::Kv, kv.as_bytes()).as_ref(), Ok(&metrics));
        let json = serde_json::to_string(&metrics).expect("finite metrics serialise");
        assert_eq!(parse(LineFormat::Jsonl, json.as_bytes()).as_ref(), Ok(&metrics));
    }
});
