//! Raw readings, keyed by (device, metric, ts, spool, seq): stored once, so a resend
//! changes nothing; kept for the raw retention.

use std::collections::BTreeMap;

use postgres::error::SqlState;
use postgres::types::Type;
use serde::{Deserialize, Serialize};

use super::{HotStore, insert_many, rollups::range};
use crate::db::{DbError, Row, Tx};

/// New points per (device, metric), as (ts, value), sorted by ts.
pub(super) type Fresh = BTreeMap<(String, String), Vec<(i64, f64)>>;

const INSERT: &str = "INSERT INTO readings (device, metric, ts_ms, spool, seq, value) VALUES";
const ON_CONFLICT: &str = "ON CONFLICT DO NOTHING RETURNING device, metric, ts_ms, value";

/// On PostgreSQL, a batch of readings none of which is stored yet goes in by binary
/// `COPY`, the fastest way in (no per-row `ON CONFLICT` check, nothing returned: every row
/// is new). If one is stored already (a resend, or another ingest of the share group got
/// there first), the copy fails on the key and the batch takes the `ON CONFLICT` path from
/// a savepoint, which returns only the rows that were new.
fn insert_pg(tx: &mut Tx<'_>, rows: &[Row]) -> Result<Vec<Row>, DbError> {
    tx.exec("SAVEPOINT new_readings", &[])?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::FLOAT8,
    ];
    match tx.copy_in(
        "readings (device, metric, ts_ms, spool, seq, value)",
        &types,
        rows,
    ) {
        Ok(()) => {
            tx.exec("RELEASE SAVEPOINT new_readings", &[])?;
            // As RETURNING would give them: device, metric, ts_ms, value.
            Ok(rows
                .iter()
                .map(|r| vec![r[0].clone(), r[1].clone(), r[2].clone(), r[5].clone()])
                .collect())
        }
        Err(DbError::Postgres(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.exec("ROLLBACK TO SAVEPOINT new_readings", &[])?;
            insert_many(tx, INSERT, rows, ON_CONFLICT)
        }
        Err(e) => Err(e),
    }
}

/// Inserts `rows` (device, metric, ts_ms, spool, seq, value) and returns only the points
/// stored for the first time: a resend is not counted again anywhere.
pub(super) fn insert(tx: &mut Tx<'_>, rows: &[Row]) -> Result<Fresh, DbError> {
    let stored = if tx.is_postgres() {
        insert_pg(tx, rows)?
    } else {
        insert_many(tx, INSERT, rows, ON_CONFLICT)?
    };
    let mut fresh = Fresh::new();
    for row in &stored {
        let key = (
            row[0].text().unwrap_or_default().to_owned(),
            row[1].text().unwrap_or_default().to_owned(),
        );
        let point = (
            row[2].int().unwrap_or_default(),
            row[3].real().unwrap_or(f64::NAN),
        );
        fresh.entry(key).or_default().push(point);
    }
    for points in fresh.values_mut() {
        points.sort_by_key(|p| p.0);
    }
    Ok(fresh)
}

/// Raw points or per-step aggregates, as columns (what charting libraries take).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Series {
    Raw {
        t: Vec<i64>,
        value: Vec<f64>,
    },
    Rollup {
        step_s: i64,
        t: Vec<i64>,
        avg: Vec<f64>,
        min: Vec<f64>,
        max: Vec<f64>,
        count: Vec<i64>,
    },
}

impl Series {
    pub fn len(&self) -> usize {
        match self {
            Self::Raw { t, .. } | Self::Rollup { t, .. } => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl HotStore {
    /// Raw points in `[from_ms, to_ms)`, at most `limit`.
    pub fn raw(
        &mut self,
        device: &str,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Series, DbError> {
        let rows = self.db.query(
            "SELECT ts_ms, value FROM readings
             WHERE device = $1 AND metric = $2 AND ts_ms >= $3 AND ts_ms < $4
             ORDER BY ts_ms LIMIT $5",
            &[
                device.into(),
                metric.into(),
                from_ms.into(),
                to_ms.into(),
                (limit as i64).into(),
            ],
        )?;
        let (t, value) = rows
            .iter()
            .map(|r| {
                (
                    r[0].int().unwrap_or_default(),
                    r[1].real().unwrap_or(f64::NAN),
                )
            })
            .unzip();
        Ok(Series::Raw { t, value })
    }

    /// The same aggregates computed from the raw readings: the benchmark's baseline, which
    /// is what a store without rollups must do.
    pub fn rollup_from_raw(
        &mut self,
        device: &str,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<usize, DbError> {
        let rows = self.db.query(
            "SELECT (ts_ms / $1) * $1 AS bucket, AVG(value), MIN(value), MAX(value),
                    CAST(COUNT(*) AS BIGINT)
             FROM readings
             WHERE device = $2 AND metric = $3 AND ts_ms >= $4 AND ts_ms < $5
             GROUP BY bucket ORDER BY bucket",
            &range(step_ms, device, metric, from_ms, to_ms),
        )?;
        Ok(rows.len())
    }
}
