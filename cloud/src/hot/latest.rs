//! The newest value of every series, for the device page and the live feed.

use serde::{Deserialize, Serialize};

use super::readings::Fresh;
use super::{HotStore, insert_many, rfc3339};
use crate::db::{DbError, Row, Tx};

/// Moves each series' latest value to its newest fresh point, unless a newer one is stored.
pub(super) fn update(tx: &mut Tx<'_>, fresh: &Fresh, rev: i64) -> Result<(), DbError> {
    let rows: Vec<Row> = fresh
        .iter()
        .filter_map(|((device, metric), points)| {
            let &(ts, value) = points.last()?;
            Some(vec![
                device.as_str().into(),
                metric.as_str().into(),
                ts.into(),
                value.into(),
                rev.into(),
            ])
        })
        .collect();
    insert_many(
        tx,
        "INSERT INTO latest (device, metric, ts_ms, value, rev) VALUES",
        &rows,
        "ON CONFLICT (device, metric) DO UPDATE SET
           ts_ms = excluded.ts_ms, value = excluded.value, rev = excluded.rev
         WHERE excluded.ts_ms >= latest.ts_ms",
    )?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latest {
    pub device: String,
    pub metric: String,
    pub ts: String,
    /// `ts` in Unix ms, as charts take it.
    pub t: i64,
    pub value: f64,
}

impl HotStore {
    /// The latest value of each of the device's metrics.
    pub fn latest(&mut self, device: &str) -> Result<Vec<Latest>, DbError> {
        let rows = self.db.query(
            "SELECT device, metric, ts_ms, value FROM latest WHERE device = $1 ORDER BY metric",
            &[device.into()],
        )?;
        Ok(rows.iter().map(latest_row).collect())
    }

    /// The latest value of every series of every device, by device and metric.
    pub fn latest_all(&mut self) -> Result<Vec<Latest>, DbError> {
        let rows = self.db.query(
            "SELECT device, metric, ts_ms, value FROM latest ORDER BY device, metric",
            &[],
        )?;
        Ok(rows.iter().map(latest_row).collect())
    }
}

pub(super) fn latest_row(r: &Row) -> Latest {
    let t = r[2].int().unwrap_or_default();
    Latest {
        device: r[0].text().unwrap_or_default().to_owned(),
        metric: r[1].text().unwrap_or_default().to_owned(),
        ts: rfc3339(t),
        t,
        value: r[3].real().unwrap_or(f64::NAN),
    }
}
