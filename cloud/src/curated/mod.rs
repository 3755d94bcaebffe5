//! The curated lake: one Delta Lake table per record type under `{lake.root}/curated/`,
//! built from the raw layer by `ferry-cloud compact` (README: the curated lake).
//!
//! Invariants:
//! - each `(device, spool, seq)` is once in its table, whatever the raw layer holds (resends
//!   from several ingests of a share group), in the day its raw partition names (its `ts`;
//!   its arrival for a `ts_suspect` record);
//! - a day is replaced in one Delta commit that adds its new files and removes its old
//!   ones, so a reader sees the day before or after, never half; a crash leaves the last
//!   commit and, at most, files no commit names, which VACUUM removes;
//! - the commit records how many raw objects the day was built from, so a round with no
//!   new raw object commits nothing, and a late object makes its day be rebuilt;
//! - raw objects are never deleted here.

mod compactor;
mod ddl;
mod delta;
mod lease;
mod metrics;
mod raw;
mod rows;
mod store;
mod tables;
mod time;

use std::time::Duration;

pub use compactor::{Compactor, Report, Settings};
pub use ddl::ddl;
pub use metrics::CompactMetrics;
pub use tables::Table;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("{0}")]
    Config(String),
    #[error("another compactor holds the lake's lease ({0}); one compactor runs per lake")]
    LeaseHeld(String),
    #[error("lease: {0}")]
    Lease(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lake: {0}")]
    Store(#[from] object_store::Error),
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("a raw line cannot be read: {0}")]
    Line(#[from] rows::LineError),
    #[error("{0}")]
    Schema(String),
    #[error("ledger: {0}")]
    Ledger(String),
}

impl From<deltalake::kernel::transaction::CommitBuilderError> for CompactError {
    fn from(e: deltalake::kernel::transaction::CommitBuilderError) -> Self {
        Self::Delta(e.into())
    }
}

/// `all`'s compactor: a round every `interval`, on a thread and runtime of its own, so
/// that Parquet encoding never stalls the ingest's tasks.
pub fn spawn(
    compactor: Compactor,
    interval: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("compactor".into())
        .spawn(move || runtime.block_on(every(compactor, interval, shutdown)))
}

/// Rounds until `shutdown`. A failed round (S3 down, say) is logged and tried again at the
/// next interval; stopping mid-round is safe, as a round only ever adds whole commits.
async fn every(compactor: Compactor, interval: Duration, shutdown: CancellationToken) {
    loop {
        let round = tokio::select! {
            _ = shutdown.cancelled() => return,
            round = compactor.run_once(None) => round,
        };
        match round {
            Ok(report) if report.commits > 0 => {
                let rows = report.rows_out;
                info!(commits = report.commits, rows, "compaction round done");
            }
            Ok(_) => {}
            Err(CompactError::LeaseHeld(holder)) => {
                info!(
                    holder,
                    "another compactor holds the lease; skipping this round"
                );
            }
            Err(e) => {
                warn!(error = %e, "compaction round failed; trying again at the next interval")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
