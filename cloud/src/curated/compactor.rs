//! A compaction round: for each table and each day whose raw objects are newer than its
//! curated files, read them all, keep each record once, sort, write Parquet, and replace
//! the day in one commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::arrow::datatypes::Schema;
use deltalake::kernel::Add;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use object_store::ObjectMeta;
use tracing::{info, warn};

use super::lease::Lease;
use super::metrics::{Backlog, CompactMetrics};
use super::rows::{self, Event, Outcome, Parsed, Reading, Scan, Txn};
use super::store::Lake;
use super::tables::{self, Columns, Table};
use super::{CompactError, delta, raw};
use crate::config::LakeConfig;
use crate::loyalty::LedgerPool;

/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Settings {
    /// A day's rows go to files of about this size (one file when the day is smaller).
    pub file_bytes: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Files a compaction replaced stay this long for readers of older versions.
    pub retention: Duration,
    /// A day with raw objects older than this and not compacted counts as overdue.
    pub lag_alert: Duration,
}

impl Settings {
    pub fn from_config(cfg: &LakeConfig) -> Self {
        Self {
            file_bytes: cfg.curated_file_bytes,
            row_group_rows: 1 << 20,
            retention: Duration::from_secs(cfg.curated_retention_days * 86_400),
            lag_alert: Duration::from_secs(cfg.compact_lag_alert_s),
        }
    }
}

/// What one round did (`compact --once` prints it as JSON).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub commits: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub duplicates: u64,
}

impl Report {
    fn add(&mut self, other: &Report) {
        self.commits += other.commits;
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.duplicates += other.duplicates;
    }
}

/// A day with raw objects its curated files were not built from.
struct Pending {
    day: String,
    objects: Vec<ObjectMeta>,
    /// When the oldest of those arrived. Raw objects are only added, so they are the
    /// newest `objects.len() - built` of the day's.
    waiting_since: chrono::DateTime<chrono::Utc>,
}

impl Pending {
    fn new(day: String, objects: Vec<ObjectMeta>, built: i64) -> Self {
        let mut arrivals: Vec<_> = objects.iter().map(|o| o.last_modified).collect();
        arrivals.sort_unstable_by(|a, b| b.cmp(a));
        let new = usize::try_from(objects.len() as i64 - built).unwrap_or(objects.len());
        let waiting_since = arrivals
            .get(new.saturating_sub(1))
            .copied()
            .unwrap_or_else(chrono::Utc::now);
        Self {
            day,
            objects,
            waiting_since,
        }
    }
}

pub struct Compactor {
    lake: Lake,
    settings: Settings,
    ledger: Option<Arc<LedgerPool>>,
    metrics: Arc<CompactMetrics>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compactor({:?})", self.lake)
    }
}

impl Compactor {
    pub fn new(
        cfg: &LakeConfig,
        ledger: Option<Arc<LedgerPool>>,
        metrics: Arc<CompactMetrics>,
    ) -> Result<Self, CompactError> {
        Ok(Self {
            lake: Lake::open(cfg)?,
            settings: Settings::from_config(cfg),
            ledger,
            metrics,
        })
    }

    /// One round under the lease; `only` limits it to one day.
    pub async fn run_once(&self, only: Option<&str>) -> Result<Report, CompactError> {
        self.metrics.rounds.fetch_add(1, Ordering::Relaxed);
        let outcome = match Lease::acquire(&self.lake).await {
            Ok(mut lease) => {
                let outcome = self.round(&mut lease, only).await;
                lease.release().await;
                outcome
            }
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(_) => self
                .metrics
                .last_success_s
                .store(chrono::Utc::now().timestamp(), Ordering::Relaxed),
            // Another compactor at work is how it should be, not a failure.
            Err(CompactError::LeaseHeld(_)) => {}
            Err(_) => {
                self.metrics.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        outcome
    }

    async fn round(&self, lease: &mut Lease, only: Option<&str>) -> Result<Report, CompactError> {
        let mut report = Report::default();
        for table in Table::ALL {
            let days = raw::days(&self.lake, table, only).await?;
            if days.is_empty() {
                self.metrics.set_pending(table.name(), Backlog::default());
                continue;
            }
            let mut delta = delta::open(&self.lake, table).await?;
            let mut todo = Vec::new();
            for (day, objects) in days {
                let built = delta::built_from(&delta, &day)?;
                if objects.len() as i64 > built {
                    todo.push(Pending::new(day, objects, built));
                }
            }
            self.publish_pending(table, &todo);
            let committed_before = report.commits;
            for (i, Pending { day, objects, .. }) in todo.iter().enumerate() {
                let (adds, done) = self.compact_day(&delta, table, day, objects).await?;
                // The files durable before the commit that names them, and the commit
                // before it is reported: on a folder, nothing else fsyncs either.
                let files: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
                self.lake.make_durable(&table.key(), &files).await?;
                // Renewed right before the commit: a compactor whose lease expired and was
                // taken over meanwhile stops here, leaving only files no commit names.
                lease.renew().await?;
                let sources: Vec<String> = objects
                    .iter()
                    .map(|o| self.lake.key(&o.location).to_owned())
                    .collect();
                let version = delta::replace_day(&mut delta, day, adds, &sources).await?;
                self.lake
                    .make_durable(&table.key(), &[delta::commit_file(version)])
                    .await?;
                info!(
                    table = table.name(),
                    day,
                    raw_objects = objects.len(),
                    rows_in = done.rows_in,
                    rows_out = done.rows_out,
                    duplicates = done.duplicates,
                    "day compacted"
                );
                self.metrics.add(&done);
                report.add(&done);
                self.publish_pending(table, &todo[i + 1..]);
            }
            if report.commits > committed_before {
                self.vacuum(delta).await;
            }
        }
        Ok(report)
    }

    fn publish_pending(&self, table: Table, todo: &[Pending]) {
        let now = chrono::Utc::now();
        let ages: Vec<i64> = todo
            .iter()
            .map(|p| (now - p.waiting_since).num_seconds().max(0))
            .collect();
        let alert = self.settings.lag_alert.as_secs() as i64;
        self.metrics.set_pending(
            table.name(),
            Backlog {
                days: todo.len() as u64,
                lag_s: ages.iter().copied().max().unwrap_or(0),
                overdue_days: ages.iter().filter(|&&age| age > alert).count() as u64,
            },
        );
    }

    /// The day's new files, written but not committed, and what went into them.
    async fn compact_day(
        &self,
        delta: &DeltaTable,
        table: Table,
        day: &str,
        objects: &[ObjectMeta],
    ) -> Result<(Vec<Add>, Report), CompactError> {
        let texts = raw::fetch(&self.lake, objects).await?;
        match table {
            Table::Readings => self.write::<Reading>(delta, day, &texts).await,
            Table::Scans => self.write::<Scan>(delta, day, &texts).await,
            Table::Events => self.write::<Event>(delta, day, &texts).await,
            Table::Transactions => self.write::<Txn>(delta, day, &texts).await,
        }
    }

    async fn write<'a, R: Columns<'a>>(
        &self,
        delta: &DeltaTable,
        day: &str,
        texts: &'a [(String, Vec<u8>)],
    ) -> Result<(Vec<Add>, Report), CompactError> {
        let mut rows: Vec<Parsed<R>> = Vec::new();
        for (key, text) in texts {
            rows::parse(key, text, &mut rows)?;
        }
        let rows_in = rows.len() as u64;
        let duplicates = rows::dedupe_and_sort(&mut rows) as u64;
        let outcomes = self.outcomes(&rows, day).await?;
        let mut writer = RecordBatchWriter::for_table(delta)?
            .with_writer_properties(self.writer_properties()?)
            .with_target_file_size(self.settings.file_bytes);
        let schema: Arc<Schema> = writer.arrow_schema();
        for (at, chunk) in (0..rows.len())
            .step_by(BATCH_ROWS)
            .zip(rows.chunks(BATCH_ROWS))
        {
            let extra = outcomes.get(at..at + chunk.len()).unwrap_or(&[]);
            writer
                .write(tables::batch(chunk, extra, &schema, day)?)
                .await?;
        }
        let adds = writer.flush().await?;
        let report = Report {
            commits: 1,
            rows_in,
            rows_out: rows.len() as u64,
            duplicates,
        };
        Ok((adds, report))
    }

    fn writer_properties(&self) -> Result<WriterProperties, CompactError> {
        let zstd = ZstdLevel::try_new(3).map_err(|e| CompactError::Schema(e.to_string()))?;
        Ok(WriterProperties::builder()
            .set_compression(Compression::ZSTD(zstd))
            .set_max_row_group_row_count(Some(self.settings.row_group_rows))
            .build())
    }

    /// The ledger's answer for each transaction row: applied or held as the ledger (where
    /// this process can ask it) says, rejected with its reason as the router traced it.
    async fn outcomes<'a, R: Columns<'a>>(
        &self,
        rows: &[Parsed<R>],
        day: &str,
    ) -> Result<Vec<Option<Outcome>>, CompactError> {
        let tx_ids: Vec<String> = rows
            .iter()
            .filter_map(|r| r.row.tx_id().map(str::to_owned))
            .collect();
        if tx_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut answers: HashMap<String, Outcome> = raw::rejections(&self.lake, day)
            .await?
            .into_iter()
            .map(|(tx_id, reason)| {
                let rejected = Outcome {
                    outcome: "rejected",
                    reason: Some(reason),
                };
                (tx_id, rejected)
            })
            .collect();
        if let Some(ledger) = &self.ledger {
            let known = ledger
                .run(move |l| l.known(&tx_ids))
                .await
                .map_err(|e| CompactError::Ledger(e.to_string()))?;
            for (set, outcome) in [(known.applied, "applied"), (known.held, "held")] {
                for tx_id in set {
                    let answer = Outcome {
                        outcome,
                        reason: None,
                    };
                    answers.insert(tx_id, answer);
                }
            }
        }
        Ok(rows::outcomes(rows, |r| r.tx_id(), &answers))
    }

    /// Deletes files replaced, or written and never committed, longer ago than the
    /// retention. A failure only delays it.
    async fn vacuum(&self, delta: DeltaTable) {
        let retention = chrono::Duration::from_std(self.settings.retention)
            .unwrap_or(chrono::Duration::days(7));
        // Full, not lite: besides the files commits removed, the files a killed round wrote
        // that no commit names.
        let vacuumed = delta
            .vacuum()
            .with_mode(VacuumMode::Full)
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .await;
        if let Err(e) = vacuumed {
            warn!(error = %e, "vacuum of a curated table failed; the next round tries again");
        }
    }
}
