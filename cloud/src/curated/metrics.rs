//! The compactor's counters, for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct CompactMetrics {
    pub rounds: AtomicU64,
    pub failures: AtomicU64,
    /// Lines read from raw objects.
    pub rows_in: AtomicU64,
    /// Rows written to curated files.
    pub rows_out: AtomicU64,
    /// Copies of a `(device, spool, seq)` left out.
    pub duplicates: AtomicU64,
    /// Days replaced, one commit each.
    pub commits: AtomicU64,
    /// Unix seconds of the last round that ended well.
    pub last_success_s: AtomicI64,
    /// Per table, as the last listing found it.
    pending: Mutex<BTreeMap<&'static str, Pending>>,
}

/// The raw objects of a table not in its curated files yet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Days with raw objects newer than their compaction.
    pub days: u64,
    /// Age of the oldest such object, in seconds.
    pub lag_s: i64,
    /// Days whose oldest such object is older than `lake.compact_lag_alert_s`.
    pub overdue_days: u64,
}

impl CompactMetrics {
    pub fn set_pending(&self, table: &'static str, pending: Pending) {
        if let Ok(mut map) = self.pending.lock() {
            map.insert(table, pending);
        }
    }

    pub fn pending(&self, table: &str) -> Pending {
        self.pending
            .lock()
            .ok()
            .and_then(|map| map.get(table).copied())
            .unwrap_or_default()
    }
}

impl crate::http::RenderMetrics for CompactMetrics {
    fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "ferry_compact_rounds_total",
                "Compaction rounds run.",
                load(&self.rounds),
            ),
            (
                "ferry_compact_failures_total",
                "Compaction rounds that failed (retried at the next interval).",
                load(&self.failures),
            ),
            (
                "ferry_compact_rows_in_total",
                "Raw lines read by compaction.",
                load(&self.rows_in),
            ),
            (
                "ferry_compact_rows_out_total",
                "Rows written to the curated tables.",
                load(&self.rows_out),
            ),
            (
                "ferry_compact_duplicates_total",
                "Copies of a (device, spool, seq) left out of the curated tables.",
                load(&self.duplicates),
            ),
            (
                "ferry_compact_commits_total",
                "Days replaced in a curated table, one Delta commit each.",
                load(&self.commits),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ferry_compact_last_success_seconds Unix time of the last round that ended well.\n\
             # TYPE ferry_compact_last_success_seconds gauge\n\
             ferry_compact_last_success_seconds {}",
            self.last_success_s.load(Ordering::Relaxed)
        );
        let Ok(pending) = self.pending.lock() else {
            return;
        };
        for (name, help, value) in [
            (
                "ferry_compact_pending_days",
                "Days with raw objects not compacted yet.",
                (|p: &Pending| p.days as i64) as fn(&Pending) -> i64,
            ),
            (
                "ferry_compact_lag_seconds",
                "Age of the oldest raw object not compacted yet.",
                |p: &Pending| p.lag_s,
            ),
            (
                "ferry_compact_overdue_days",
                "Days not compacted with raw objects older than lake.compact_lag_alert_s: alert on > 0.",
                |p: &Pending| p.overdue_days as i64,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (table, p) in pending.iter() {
                let _ = writeln!(out, "{name}{{table=\"{table}\"}} {}", value(p));
            }
        }
    }
}
