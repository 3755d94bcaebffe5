//! The loyalty core's counters, for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Outcome, Status};

#[derive(Debug, Default)]
pub struct LoyaltyMetrics {
    applied: AtomicU64,
    duplicates: AtomicU64,
    held: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Points that lapsed under their program's `expiry_days`.
    pub points_lapsed: AtomicU64,
}

impl LoyaltyMetrics {
    pub fn count(&self, outcomes: &[Outcome]) {
        for o in outcomes {
            match o.status {
                Status::Applied => self.applied.fetch_add(1, Ordering::Relaxed),
                Status::Duplicate => self.duplicates.fetch_add(1, Ordering::Relaxed),
                Status::Held => self.held.fetch_add(1, Ordering::Relaxed),
                Status::Rejected => {
                    if let Ok(mut map) = self.rejected.lock() {
                        *map.entry(o.reason.unwrap_or("unknown")).or_insert(0) += 1;
                    }
                    0
                }
            };
        }
    }
}

impl crate::http::RenderMetrics for LoyaltyMetrics {
    /// Prometheus text.
    fn render(&self, out: &mut String) {
        let name = "ferry_loyalty_transactions_total";
        let _ = writeln!(
            out,
            "# HELP {name} Transactions judged by the ledger, by status and reason.\n# TYPE {name} counter"
        );
        let _ = writeln!(
            out,
            "{name}{{status=\"applied\"}} {}",
            self.applied.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "{name}{{status=\"duplicate\"}} {}",
            self.duplicates.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "{name}{{status=\"held\"}} {}",
            self.held.load(Ordering::Relaxed)
        );
        for (reason, n) in self.rejected.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = writeln!(out, "{name}{{status=\"rejected\",reason=\"{reason}\"}} {n}");
        }
        let lapsed = "ferry_loyalty_points_lapsed_total";
        let _ = writeln!(
            out,
            "# HELP {lapsed} Points that lapsed under their program's expiry_days.\n# TYPE {lapsed} counter\n{lapsed} {}",
            self.points_lapsed.load(Ordering::Relaxed)
        );
    }
}
