//! The ingest's counters, for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use ferry_shared::Timestamp;

#[derive(Debug, Default)]
pub struct IngestMetrics {
    /// New records made durable in the journal.
    pub records_in: AtomicU64,
    /// Records in lake objects.
    pub records_out: AtomicU64,
    /// Records recognised as resends and left out.
    pub duplicates: AtomicU64,
    pub objects: AtomicU64,
    /// Failed lake writes (each retried).
    pub store_errors: AtomicU64,
    /// Transactions waiting in the journal for the loyalty router.
    pub routes_pending: AtomicU64,
    /// Transactions the ledger answered, whatever it said.
    pub routes_sent: AtomicU64,
    /// Transactions from devices not registered (yet) seen in the router's last pass over
    /// the queue: they stay queued until their device is registered.
    pub routes_held: AtomicU64,
    /// Requests to the loyalty API that failed (each retried).
    pub route_failures: AtomicU64,
    /// Age of the oldest transaction waiting for the ledger, in ms.
    route_backlog_age_ms: AtomicU64,
    routes_rejected: Mutex<BTreeMap<String, u64>>,
    /// Entries waiting in the journal for the hot store.
    pub hot_pending: AtomicU64,
    /// Metric values stored in the hot store for the first time.
    pub hot_stored: AtomicU64,
    /// Metric values older than the raw retention, left to the lake.
    pub hot_too_old: AtomicU64,
    /// Metric values whose `ts` is before 2000 or over a day ahead of this clock: in the
    /// lake, but moving no dashboard state.
    pub hot_ts_suspect: AtomicU64,
    /// Hot store writes that failed (each retried).
    pub hot_failures: AtomicU64,
    /// Messages received and not yet acknowledged to the broker.
    pub unacked: AtomicI64,
    /// The broker has acknowledged every subscription of the current connection: from
    /// here on it keeps what devices publish for the ingest's session.
    pub subscribed: AtomicBool,
    /// When the oldest record not yet in the lake arrived (unix ms); 0 when none.
    oldest_unflushed_at_ms: AtomicI64,
    rejects: Mutex<BTreeMap<&'static str, u64>>,
}

impl IngestMetrics {
    pub fn reject(&self, reason: &'static str) {
        if let Ok(mut map) = self.rejects.lock() {
            *map.entry(reason).or_insert(0) += 1;
        }
    }

    pub fn rejects(&self) -> BTreeMap<&'static str, u64> {
        self.rejects.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn route_rejected(&self, reason: &str) {
        if let Ok(mut map) = self.routes_rejected.lock() {
            *map.entry(reason.to_owned()).or_insert(0) += 1;
        }
    }

    pub fn set_route_backlog_age(&self, age_s: f64) {
        self.route_backlog_age_ms
            .store((age_s * 1000.0) as u64, Ordering::Relaxed);
    }

    pub fn set_oldest_unflushed(&self, oldest: Option<Instant>) {
        let at = oldest.map_or(0, |t| {
            Timestamp::now().unix_millis() - t.elapsed().as_millis() as i64
        });
        self.oldest_unflushed_at_ms.store(at, Ordering::Relaxed);
    }

    /// Measured when asked, so it grows while the pipeline waits on a lake that is down.
    fn oldest_unflushed_s(&self) -> f64 {
        match self.oldest_unflushed_at_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            at => (Timestamp::now().unix_millis() - at).max(0) as f64 / 1000.0,
        }
    }
}

impl crate::http::RenderMetrics for IngestMetrics {
    /// Prometheus text.
    fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        for (name, help, kind, value) in [
            (
                "ferry_ingest_records_in_total",
                "New records made durable in the journal.",
                "counter",
                load(&self.records_in),
            ),
            (
                "ferry_ingest_records_out_total",
                "Records written to lake objects.",
                "counter",
                load(&self.records_out),
            ),
            (
                "ferry_ingest_duplicates_total",
                "Resent records recognised and left out.",
                "counter",
                load(&self.duplicates),
            ),
            (
                "ferry_ingest_objects_total",
                "Lake objects written.",
                "counter",
                load(&self.objects),
            ),
            (
                "ferry_ingest_store_errors_total",
                "Failed lake writes, each retried.",
                "counter",
                load(&self.store_errors),
            ),
            (
                "ferry_ingest_unacked_messages",
                "Messages received and not yet acknowledged.",
                "gauge",
                self.unacked.load(Ordering::Relaxed) as f64,
            ),
            (
                "ferry_ingest_subscribed",
                "1 while the broker has acknowledged every subscription of this connection.",
                "gauge",
                f64::from(u8::from(self.subscribed.load(Ordering::Relaxed))),
            ),
            (
                "ferry_ingest_oldest_unflushed_seconds",
                "Age of the oldest record not yet in the lake.",
                "gauge",
                self.oldest_unflushed_s(),
            ),
            (
                "ferry_ingest_routes_pending",
                "Transactions waiting in the journal for the loyalty core.",
                "gauge",
                load(&self.routes_pending),
            ),
            (
                "ferry_ingest_routes_sent_total",
                "Transactions the loyalty core answered.",
                "counter",
                load(&self.routes_sent),
            ),
            (
                "ferry_ingest_route_failures_total",
                "Requests to the loyalty core that failed, each retried.",
                "counter",
                load(&self.route_failures),
            ),
            (
                "ferry_ingest_route_backlog_age_seconds",
                "Age of the oldest transaction waiting for the loyalty core.",
                "gauge",
                load(&self.route_backlog_age_ms) / 1000.0,
            ),
            (
                "ferry_ingest_hot_pending",
                "Entries waiting in the journal for the dashboards' hot store.",
                "gauge",
                load(&self.hot_pending),
            ),
            (
                "ferry_ingest_hot_stored_total",
                "Metric values stored in the hot store.",
                "counter",
                load(&self.hot_stored),
            ),
            (
                "ferry_ingest_hot_too_old_total",
                "Metric values older than the raw retention, left to the lake.",
                "counter",
                load(&self.hot_too_old),
            ),
            (
                "ferry_ingest_routes_held",
                "Transactions waiting for their device to be registered as a till.",
                "gauge",
                load(&self.routes_held),
            ),
            (
                "ferry_ingest_hot_ts_suspect_total",
                "Metric values stamped before 2000 or over a day ahead, kept out of the dashboards' state.",
                "counter",
                load(&self.hot_ts_suspect),
            ),
            (
                "ferry_ingest_hot_failures_total",
                "Hot store writes that failed, each retried.",
                "counter",
                load(&self.hot_failures),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ferry_ingest_rejects_total Payloads traced to errors/, by reason.\n# TYPE ferry_ingest_rejects_total counter"
        );
        for (reason, n) in self.rejects() {
            let _ = writeln!(out, "ferry_ingest_rejects_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP ferry_ingest_routes_rejected_total Transactions the ledger rejected, traced to errors/, by reason.\n# TYPE ferry_ingest_routes_rejected_total counter"
        );
        let rejected = self
            .routes_rejected
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        for (reason, n) in rejected {
            let _ = writeln!(
                out,
                "ferry_ingest_routes_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }
}
