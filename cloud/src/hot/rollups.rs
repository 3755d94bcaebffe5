//! 1-minute rollups (count, sum, min, max) per series, grown only by readings stored for
//! the first time; what a week's chart is drawn from.

use super::readings::{Fresh, Series};
use super::{HotStore, insert_many};
use crate::db::{DbError, Row, Tx, Val};

const MINUTE_MS: i64 = 60_000;

/// Adds the fresh points to their minutes.
pub(super) fn add(tx: &mut Tx<'_>, fresh: &Fresh) -> Result<(), DbError> {
    let rows: Vec<Row> = fresh
        .iter()
        .flat_map(|((device, metric), points)| minute_rows(device, metric, points))
        .collect();
    insert_many(
        tx,
        "INSERT INTO rollups (device, metric, minute_ms, n, total, lo, hi) VALUES",
        &rows,
        "ON CONFLICT (device, metric, minute_ms) DO UPDATE SET
           n = rollups.n + excluded.n,
           total = rollups.total + excluded.total,
           lo = CASE WHEN excluded.lo < rollups.lo THEN excluded.lo ELSE rollups.lo END,
           hi = CASE WHEN excluded.hi > rollups.hi THEN excluded.hi ELSE rollups.hi END",
    )?;
    Ok(())
}

impl HotStore {
    /// Avg, min, max and count per `step_ms` (a whole number of minutes), from the rollups;
    /// steps are aligned to multiples of `step_ms` since the epoch.
    pub fn rollup(
        &mut self,
        device: &str,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Series, DbError> {
        let rows = self.db.query(
            "SELECT (minute_ms / $1) * $1 AS bucket,
                    CAST(SUM(total) AS DOUBLE PRECISION) / CAST(SUM(n) AS DOUBLE PRECISION),
                    MIN(lo), MAX(hi), CAST(SUM(n) AS BIGINT)
             FROM rollups
             WHERE device = $2 AND metric = $3 AND minute_ms >= $4 AND minute_ms < $5
             GROUP BY bucket ORDER BY bucket",
            &range(step_ms, device, metric, from_ms, to_ms),
        )?;
        let mut series = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in &rows {
            series.0.push(r[0].int().unwrap_or_default());
            series.1.push(r[1].real().unwrap_or(f64::NAN));
            series.2.push(r[2].real().unwrap_or(f64::NAN));
            series.3.push(r[3].real().unwrap_or(f64::NAN));
            series.4.push(r[4].int().unwrap_or_default());
        }
        Ok(Series::Rollup {
            step_s: step_ms / 1000,
            t: series.0,
            avg: series.1,
            min: series.2,
            max: series.3,
            count: series.4,
        })
    }
}

/// The parameters of a per-step query of one series over `[from_ms, to_ms)`.
pub(super) fn range(
    step_ms: i64,
    device: &str,
    metric: &str,
    from_ms: i64,
    to_ms: i64,
) -> [Val; 5] {
    [
        step_ms.into(),
        device.into(),
        metric.into(),
        from_ms.into(),
        to_ms.into(),
    ]
}

/// Sorted new points of one series, as rollup rows: one per minute.
fn minute_rows(device: &str, metric: &str, points: &[(i64, f64)]) -> Vec<Row> {
    points
        .chunk_by(|a, b| a.0.div_euclid(MINUTE_MS) == b.0.div_euclid(MINUTE_MS))
        .map(|minute| {
            let start = minute[0].0.div_euclid(MINUTE_MS) * MINUTE_MS;
            let values = minute.iter().map(|p| p.1);
            let lo = values.clone().fold(f64::INFINITY, f64::min);
            let hi = values.clone().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = values.sum();
            vec![
                device.into(),
                metric.into(),
                start.into(),
                (minute.len() as i64).into(),
                total.into(),
                lo.into(),
                hi.into(),
            ]
        })
        .collect()
}
