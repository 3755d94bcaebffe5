//! The hot writer: drains the journal's durable `hot` queue into the dashboards' hot store.
//!
//! A queue entry is a reading's lake line, as the journal already holds it (so the ingest
//! serialises a reading once), or a [`HotItem`] for a status message or device activity.
//!
//! Entries are read in id order through a read-only connection ([`QueueReader`]) and
//! written in one hot-store transaction per batch; then this task reports how far it got,
//! and the pipeline deletes them from the journal. A crash in between writes the batch
//! again, which the hot store recognises (readings are keyed by device, spool and seq). While
//! the hot store is down, entries wait in the journal and the lake is not held up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_shared::Timestamp;
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::IngestMetrics;
use super::journal::QueueReader;
use crate::config::DashboardConfig;
use crate::hot::{HotItem, HotStore};

/// Entries per hot-store transaction.
const BATCH: usize = 2000;
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long the writer sleeps with nothing queued, should it miss a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A `hot` queue entry: tried in this order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Entry {
    /// Status and activity, tagged with `k`.
    Item(HotItem),
    /// A reading's lake line: the record's fields with `device` and `spool`.
    Line {
        device: String,
        spool: String,
        seq: u64,
        ts: Timestamp,
        #[serde(default)]
        ts_suspect: bool,
        metrics: BTreeMap<String, f64>,
    },
}

impl From<Entry> for HotItem {
    fn from(entry: Entry) -> Self {
        match entry {
            Entry::Item(item) => item,
            Entry::Line {
                device,
                spool,
                seq,
                ts,
                ts_suspect,
                metrics,
            } => HotItem::Reading {
                device,
                spool,
                seq,
                ts_ms: ts.unix_millis(),
                ts_suspect,
                metrics,
            },
        }
    }
}

/// The hot store holds every entry up to `upto`; `entries` of them were in this batch.
#[derive(Debug)]
pub struct HotReport {
    pub upto: i64,
    pub entries: u64,
}

pub struct HotWriter {
    cfg: DashboardConfig,
    data_dir: PathBuf,
    report: mpsc::UnboundedSender<HotReport>,
    metrics: Arc<IngestMetrics>,
}

impl HotWriter {
    pub fn new(
        cfg: DashboardConfig,
        data_dir: PathBuf,
        report: mpsc::UnboundedSender<HotReport>,
        metrics: Arc<IngestMetrics>,
    ) -> Self {
        Self {
            cfg,
            data_dir,
            report,
            metrics,
        }
    }

    /// Writes batches until `stop`. `wake` is notified when the pipeline queues entries.
    pub async fn run(self, wake: Arc<Notify>, stop: CancellationToken) {
        let mut store: Option<HotStore> = None;
        let mut queue: Option<QueueReader> = None;
        // Entries up to `cursor` are written; the pipeline deletes them when it takes the
        // report, so reads go past them rather than wait for that.
        let mut cursor = 0;
        let mut failures = 0u32;
        // Checked before each batch too: a long backlog must not hold up a shutdown.
        while !stop.is_cancelled() {
            let step = tokio::task::block_in_place(|| self.step(&mut store, &mut queue, cursor));
            match step {
                Ok(Some(report)) => {
                    failures = 0;
                    cursor = report.upto;
                    if self.report.send(report).is_err() {
                        return; // the pipeline has stopped
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
                Err(e) => {
                    self.metrics.hot_failures.fetch_add(1, Ordering::Relaxed);
                    if store.as_ref().is_some_and(|s| !s.is_usable()) {
                        store = None;
                    }
                    let delay = ferry_shared::backoff::jittered(RETRY_MIN, RETRY_MAX, failures);
                    if failures == 0 {
                        error!(
                            error = format!("{e:#}"),
                            "hot store write failed; the entries stay queued"
                        );
                    } else {
                        warn!(
                            error = format!("{e:#}"),
                            failures, "hot store write failed again"
                        );
                    }
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Writes the next batch after `cursor`, opening what is not open yet.
    fn step(
        &self,
        store: &mut Option<HotStore>,
        queue: &mut Option<QueueReader>,
        cursor: i64,
    ) -> anyhow::Result<Option<HotReport>> {
        let queue = match queue {
            Some(q) => q,
            None => queue.insert(QueueReader::hot(&self.data_dir)?),
        };
        let entries = queue.after(cursor, BATCH)?;
        let Some(&(upto, _)) = entries.last() else {
            return Ok(None);
        };
        let items: Vec<HotItem> = entries
            .iter()
            .filter_map(|(id, body)| match serde_json::from_str::<Entry>(body) {
                Ok(entry) => Some(entry.into()),
                Err(e) => {
                    // Written by this program; a bad entry must not block the rest.
                    warn!(id, error = %e, "hot queue entry not understood; skipped");
                    None
                }
            })
            .collect();
        let store = match store {
            Some(s) => s,
            None => {
                let opened = HotStore::open(&self.cfg.database)?;
                info!("hot store open");
                store.insert(opened)
            }
        };
        let outcome = store.write(
            &items,
            &self.cfg.alarms,
            self.cfg.raw_keep_ms(),
            Timestamp::now().unix_millis(),
        )?;
        let m = &self.metrics;
        m.hot_stored.fetch_add(outcome.stored, Ordering::Relaxed);
        m.hot_too_old.fetch_add(outcome.too_old, Ordering::Relaxed);
        m.hot_ts_suspect
            .fetch_add(outcome.ts_suspect, Ordering::Relaxed);
        Ok(Some(HotReport {
            upto,
            entries: entries.len() as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_entries_are_lake_lines_or_items() {
        let line = r#"{"seq":7,"ts":"2026-11-24T00:00:01.000Z","type":"reading","sensor":"bme280","metrics":{"temperature_c":21.5},"device":"ws-1","spool":"S1","received_at":"2026-11-24T00:00:02.000Z"}"#;
        let item: HotItem = serde_json::from_str::<Entry>(line).expect("a line").into();
        let want_ts = Timestamp::parse("2026-11-24T00:00:01.000Z")
            .expect("ts")
            .unix_millis();
        assert_eq!(
            item,
            HotItem::Reading {
                device: "ws-1".into(),
                spool: "S1".into(),
                seq: 7,
                ts_ms: want_ts,
                ts_suspect: false,
                metrics: [("temperature_c".to_owned(), 21.5)].into(),
            }
        );
        let flagged = line.replace(r#""type""#, r#""ts_suspect":true,"type""#);
        let item: HotItem = serde_json::from_str::<Entry>(&flagged)
            .expect("a flagged line")
            .into();
        assert!(
            matches!(
                item,
                HotItem::Reading {
                    ts_suspect: true,
                    ..
                }
            ),
            "{item:?}"
        );
        let seen = HotItem::Seen {
            device: "pos-1".into(),
            at_ms: 5,
        };
        let text = serde_json::to_string(&seen).expect("json");
        let back: HotItem = serde_json::from_str::<Entry>(&text)
            .expect("an item")
            .into();
        assert_eq!(back, seen);
    }
}
