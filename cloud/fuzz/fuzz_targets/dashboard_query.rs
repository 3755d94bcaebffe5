#![no_main]
//! Any text in a dashboard query (`from`, `to`, `step`, a day) is a value in range or a
//! typed refusal, never a panic or an arithmetic overflow.

use ferry_cloud::dashboard::query::{
    EARLIEST_MS, LATEST_MS, parse_day, parse_duration_ms, parse_time, plan, span,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = 1_800_000_000_000;
    if let Ok(ms) = parse_time("from", text) {
        assert!((EARLIEST_MS..=LATEST_MS).contains(&ms));
        let _ = plan(Some(text), ms, LATEST_MS, now);
        let _ = plan(None, ms, LATEST_MS, now);
    }
    if let Ok(day) = parse_day("from", text) {
        assert!(day.succ_opt().is_some());
    }
    let _ = parse_duration_ms(text);
    let _ = plan(Some(text), now - 3_600_000, now, now);
    for (from, to) in [(Some(text), None), (None, Some(text))] {
        if let Ok((from, to)) = span(from, to, now, i64::MAX) {
            assert!(from < to);
        }
    }
});
