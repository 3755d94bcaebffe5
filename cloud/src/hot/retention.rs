//! Dropping what is past its retention: raw readings, rollups and cleared alarms.

use super::HotStore;
use crate::db::DbError;

impl HotStore {
    /// Drops raw readings older than `raw_keep_ms` and rollups (and cleared alarms) older
    /// than `rollup_keep_ms`, a series at a time so no transaction holds the store long.
    pub fn retain(
        &mut self,
        now_ms: i64,
        raw_keep_ms: i64,
        rollup_keep_ms: i64,
    ) -> Result<(u64, u64), DbError> {
        let raw_cutoff = now_ms.saturating_sub(raw_keep_ms);
        let rollup_cutoff = now_ms.saturating_sub(rollup_keep_ms);
        let series = self.db.query(
            "SELECT device, metric FROM latest ORDER BY device, metric",
            &[],
        )?;
        let (mut raw, mut rollups) = (0, 0);
        for s in &series {
            let (device, metric) = (s[0].clone(), s[1].clone());
            raw += self.db.exec(
                "DELETE FROM readings WHERE device = $1 AND metric = $2 AND ts_ms < $3",
                &[device.clone(), metric.clone(), raw_cutoff.into()],
            )?;
            rollups += self.db.exec(
                "DELETE FROM rollups WHERE device = $1 AND metric = $2 AND minute_ms < $3",
                &[device, metric, rollup_cutoff.into()],
            )?;
        }
        self.db.exec(
            "DELETE FROM alarms WHERE cleared_ms IS NOT NULL AND cleared_ms < $1",
            &[rollup_cutoff.into()],
        )?;
        Ok((raw, rollups))
    }
}
