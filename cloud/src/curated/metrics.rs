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
    pending: Mutex<BTreeMap<&'static str, Backlog>>,
}

/// The raw objects of a table not in its curated files yet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Days with raw objects newer than their compaction.
    pub days: u64,
    /// Age of the oldest such object, in seconds.
    pub lag_s: i64,
    /// Days whose oldest such object is older than `lake.compact_lag_alert_s`.
    pub overdue_days: u64,
}

impl CompactMetrics {
    pub fn add(&self, done: &super::Report) {
        self.rows_in.fetch_add(done.rows_in, Ordering::Relaxed);
        self.rows_out.fetch_add(done.rows_out, Ordering::Relaxed);
        self.duplicates
            .fetch_add(done.duplicates, Ordering::Relaxed);
        self.commits.fetch_add(done.commits, Ordering::Relaxed);
    }

    pub fn set_pending(&self, table: &'static str, pending: Backlog) {
        if let Ok(mut map) = self.pending.lock() {
            map.insert(table, pending);
        }
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
                (|p: &Backlog| p.days as i64) as fn(&Backlog) -> i64,
            ),
            (
                "ferry_compact_lag_seconds",
                "Age of the oldest raw object not compacted yet.",
                |p: &Backlog| p.lag_s,
            ),
            (
                "ferry_compact_overdue_days",
                "Days not compacted with raw objects older than lake.compact_lag_alert_s: alert on > 0.",
                |p: &Backlog| p.overdue_days as i64,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (table, p) in pending.iter() {
                let _ = writeln!(out, "{name}{{table=\"{table}\"}} {}", value(p));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::RenderMetrics;

    #[test]
    fn renders_counters_and_a_backlog_per_table() {
        let metrics = CompactMetrics::default();
        metrics.add(&super::super::Report {
            commits: 2,
            rows_in: 901,
            rows_out: 801,
            duplicates: 100,
        });
        let backlog = Backlog {
            days: 3,
            lag_s: 7300,
            overdue_days: 1,
        };
        metrics.set_pending("readings", backlog);
        let mut text = String::new();
        metrics.render(&mut text);
        for line in [
            "ferry_compact_rows_in_total 901",
            "ferry_compact_rows_out_total 801",
            "ferry_compact_duplicates_total 100",
            "ferry_compact_commits_total 2",
            "ferry_compact_pending_days{table=\"readings\"} 3",
            "ferry_compact_lag_seconds{table=\"readings\"} 7300",
            "ferry_compact_overdue_days{table=\"readings\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
