//! Counters the serial sources keep for `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// Sensor readings appended.
    pub readings: AtomicU64,
    /// Sensor readings the edge filter dropped.
    pub filtered: AtomicU64,
    /// Card scans appended.
    pub scans: AtomicU64,
    /// Repeated reads of a card within `debounce_ms`, ignored.
    pub debounced: AtomicU64,
    /// Times a serial device vanished or could not be opened.
    pub port_lost: AtomicU64,
    bad_lines: Mutex<BTreeMap<&'static str, u64>>,
}

impl SourceMetrics {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bad_line(&self, reason: &'static str) {
        if let Ok(mut map) = self.bad_lines.lock() {
            *map.entry(reason).or_insert(0) += 1;
        }
    }

    /// Bad lines so far, by reason.
    pub fn bad_lines(&self) -> BTreeMap<&'static str, u64> {
        self.bad_lines.lock().map(|m| m.clone()).unwrap_or_default()
    }
}
