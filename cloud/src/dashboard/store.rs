//! The hot store: recent readings, 1-minute rollups, the latest value of every series,
//! device state and alarms, on SQLite or PostgreSQL. The lake stays the record; this is
//! what dashboards ask, answered in milliseconds.
//!
//! The ingest writes it from its journal's `hot` queue ([`HotStore::write`]), in one
//! transaction per batch. A reading is stored once per (device, spool, seq, metric): a
//! resent one changes nothing, so the rollups and alarms count it once. Readings older than
//! the raw retention are not stored at all, because a resend of them could no longer be
//! recognised; the lake has them.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use ferry_shared::Timestamp;
use serde::{Deserialize, Serialize};

use super::alarms::{AlarmRule, Track, Transition};
use crate::db::{Db, DbError, Row, Tx, Val};

const SQLITE_SCHEMA: &str = include_str!("../../migrations/0004_hot.sql");
const POSTGRES_SCHEMA: &str = include_str!("../../migrations/0005_hot_postgres.sql");
const MINUTE_MS: i64 = 60_000;

/// One entry of the ingest's `hot` queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum HotItem {
    Reading {
        device: String,
        spool: String,
        seq: u64,
        ts_ms: i64,
        metrics: BTreeMap<String, f64>,
    },
    /// A message on the device's `status` topic.
    Status {
        device: String,
        received_ms: i64,
        #[serde(flatten)]
        status: DeviceStatus,
    },
    /// A message of records came from the device.
    Seen { device: String, at_ms: i64 },
}

/// What the agent says on its `status` topic; only `online` is required, because the will
/// message carries nothing else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When the agent said it; absent in the will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_transactions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_age_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_total: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Metric values stored for the first time.
    pub stored: u64,
    /// Metric values seen before (resends).
    pub duplicates: u64,
    /// Metric values older than the raw retention, left to the lake.
    pub too_old: u64,
}

/// A device as the dashboards show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub device: String,
    /// `online` or `offline`.
    pub state: String,
    pub last_seen: Option<String>,
    pub agent_version: Option<String>,
    pub backlog: Backlog,
    /// When the device last reported its status, by its clock (or, for the will, when the
    /// broker delivered it).
    pub status_at: Option<String>,
}

/// The spool figures of the last status message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backlog {
    pub pending: Option<i64>,
    pub pending_bytes: Option<i64>,
    pub pending_transactions: Option<i64>,
    pub oldest_pending_age_s: Option<f64>,
    pub last_seq: Option<i64>,
    pub evicted_total: Option<i64>,
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

/// What [`HotStore::changes`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub rev: i64,
    pub readings: Vec<Latest>,
    pub alarms: Vec<Alarm>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: i64,
    pub rule: String,
    pub device: String,
    pub metric: String,
    pub condition: String,
    pub raised_at: String,
    pub raised_value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleared_value: Option<f64>,
}

/// Whether a device counts as online at `now_ms`: it has not said it is offline (its will
/// says so for it) and it was heard from within `offline_after_ms`.
pub fn is_online(
    online: Option<bool>,
    last_seen_ms: Option<i64>,
    now_ms: i64,
    after_ms: i64,
) -> bool {
    online != Some(false) && last_seen_ms.is_some_and(|seen| now_ms - seen <= after_ms)
}

pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_unix_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_string())
}

pub struct HotStore {
    db: Db,
}

impl HotStore {
    /// `sqlite:///PATH` or `postgres://...`; the schema is made or checked.
    pub fn open(url: &str) -> Result<Self, DbError> {
        Ok(Self {
            db: Db::open(url, (SQLITE_SCHEMA, POSTGRES_SCHEMA))?,
        })
    }

    pub fn is_usable(&self) -> bool {
        self.db.is_usable()
    }

    /// Stores a batch from the ingest's queue in one transaction: readings (and their
    /// rollups, latest values and alarms), device status, and when devices were last heard.
    pub fn write(
        &mut self,
        items: &[HotItem],
        rules: &[AlarmRule],
        raw_keep_ms: i64,
        now_ms: i64,
    ) -> Result<WriteOutcome, DbError> {
        let oldest_kept = now_ms.saturating_sub(raw_keep_ms);
        self.db.transaction(|tx| {
            let rev = next_rev(tx)?;
            let mut outcome = WriteOutcome::default();
            let mut readings: Vec<Row> = Vec::new();
            let mut seen: HashMap<&str, i64> = HashMap::new();
            for item in items {
                match item {
                    HotItem::Reading {
                        device,
                        spool,
                        seq,
                        ts_ms,
                        metrics,
                    } => {
                        for (metric, value) in metrics {
                            if *ts_ms < oldest_kept {
                                outcome.too_old += 1;
                                continue;
                            }
                            readings.push(vec![
                                device.as_str().into(),
                                metric.as_str().into(),
                                (*ts_ms).into(),
                                spool.as_str().into(),
                                (*seq as i64).into(),
                                (*value).into(),
                            ]);
                        }
                    }
                    HotItem::Seen { device, at_ms } => {
                        let at = seen.entry(device).or_insert(*at_ms);
                        *at = (*at).max(*at_ms);
                    }
                    HotItem::Status {
                        device,
                        received_ms,
                        status,
                    } => write_status(tx, device, *received_ms, status, rev)?,
                }
            }
            // Only the rows stored now come back: a resend is not counted again anywhere.
            let stored = insert_many(
                tx,
                "INSERT INTO readings (device, metric, ts_ms, spool, seq, value) VALUES",
                &readings,
                "ON CONFLICT DO NOTHING RETURNING device, metric, ts_ms, value",
            )?;
            outcome.stored = stored.len() as u64;
            outcome.duplicates = (readings.len() - stored.len()) as u64;
            // (device, metric) -> new readings, as (ts, value).
            let mut fresh: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
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
            let seen: Vec<Row> = seen
                .into_iter()
                .map(|(device, at_ms)| vec![device.into(), at_ms.into(), rev.into()])
                .collect();
            insert_many(
                tx,
                "INSERT INTO devices (device, last_seen_ms, rev) VALUES",
                &seen,
                "ON CONFLICT (device) DO UPDATE SET
                   last_seen_ms = CASE WHEN devices.last_seen_ms IS NULL
                                        OR excluded.last_seen_ms > devices.last_seen_ms
                                  THEN excluded.last_seen_ms ELSE devices.last_seen_ms END,
                   rev = excluded.rev",
            )?;
            let mut rollups = Vec::new();
            let mut latest = Vec::new();
            for ((device, metric), points) in &mut fresh {
                points.sort_by_key(|p| p.0);
                rollups.extend(minute_rows(device, metric, points));
                if let Some(&(ts, value)) = points.last() {
                    latest.push(vec![
                        device.as_str().into(),
                        metric.as_str().into(),
                        ts.into(),
                        value.into(),
                        rev.into(),
                    ]);
                }
            }
            insert_many(
                tx,
                "INSERT INTO rollups (device, metric, minute_ms, n, total, lo, hi) VALUES",
                &rollups,
                "ON CONFLICT (device, metric, minute_ms) DO UPDATE SET
                   n = rollups.n + excluded.n,
                   total = rollups.total + excluded.total,
                   lo = CASE WHEN excluded.lo < rollups.lo THEN excluded.lo ELSE rollups.lo END,
                   hi = CASE WHEN excluded.hi > rollups.hi THEN excluded.hi ELSE rollups.hi END",
            )?;
            insert_many(
                tx,
                "INSERT INTO latest (device, metric, ts_ms, value, rev) VALUES",
                &latest,
                "ON CONFLICT (device, metric) DO UPDATE SET
                   ts_ms = excluded.ts_ms, value = excluded.value, rev = excluded.rev
                 WHERE excluded.ts_ms >= latest.ts_ms",
            )?;
            for ((device, metric), points) in &fresh {
                for rule in rules.iter().filter(|r| r.applies(device, metric)) {
                    judge(tx, rule, device, points, rev)?;
                }
            }
            Ok(outcome)
        })
    }

    /// Every device, with its state at `now_ms`.
    pub fn devices(
        &mut self,
        now_ms: i64,
        offline_after_ms: i64,
    ) -> Result<Vec<DeviceView>, DbError> {
        let rows = self.db.query(&device_sql(""), &[])?;
        Ok(rows
            .iter()
            .map(|r| device_view(r, now_ms, offline_after_ms))
            .collect())
    }

    pub fn device(
        &mut self,
        device: &str,
        now_ms: i64,
        offline_after_ms: i64,
    ) -> Result<Option<DeviceView>, DbError> {
        let rows = self
            .db
            .query(&device_sql("WHERE device = $1"), &[device.into()])?;
        Ok(rows
            .first()
            .map(|r| device_view(r, now_ms, offline_after_ms)))
    }

    /// The latest value of each of the device's metrics.
    pub fn latest(&mut self, device: &str) -> Result<Vec<Latest>, DbError> {
        let rows = self.db.query(
            "SELECT device, metric, ts_ms, value FROM latest WHERE device = $1 ORDER BY metric",
            &[device.into()],
        )?;
        Ok(rows.iter().map(latest_row).collect())
    }

    /// What changed after `rev`: the latest values and the alarms, up to the rev committed
    /// when asked. Every rev up to that one is committed (writers take revs in turn, under
    /// the counter's lock), so the next call can start from it and miss nothing.
    pub fn changes(&mut self, after: i64) -> Result<Changes, DbError> {
        let rev = self.rev()?;
        if rev <= after {
            return Ok(Changes {
                rev,
                ..Changes::default()
            });
        }
        let readings = self
            .db
            .query(
                "SELECT device, metric, ts_ms, value FROM latest
                 WHERE rev > $1 AND rev <= $2 ORDER BY rev",
                &[after.into(), rev.into()],
            )?
            .iter()
            .map(latest_row)
            .collect();
        let alarms = self
            .db
            .query(
                &alarm_sql("WHERE rev > $1 AND rev <= $2 ORDER BY rev, id"),
                &[after.into(), rev.into()],
            )?
            .iter()
            .map(alarm_row)
            .collect();
        Ok(Changes {
            rev,
            readings,
            alarms,
        })
    }

    /// The newest rev committed.
    pub fn rev(&mut self) -> Result<i64, DbError> {
        let rows = self
            .db
            .query("SELECT value FROM hot_meta WHERE key = 'rev'", &[])?;
        Ok(rows.first().and_then(|r| r[0].int()).unwrap_or_default())
    }

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

    /// Alarms not cleared, newest first.
    pub fn active_alarms(&mut self) -> Result<Vec<Alarm>, DbError> {
        let rows = self
            .db
            .query(&alarm_sql("WHERE cleared_ms IS NULL ORDER BY id DESC"), &[])?;
        Ok(rows.iter().map(alarm_row).collect())
    }

    /// The `limit` alarms cleared last, newest first.
    pub fn cleared_alarms(&mut self, limit: usize) -> Result<Vec<Alarm>, DbError> {
        let rows = self.db.query(
            &alarm_sql("WHERE cleared_ms IS NOT NULL ORDER BY id DESC LIMIT $1"),
            &[(limit as i64).into()],
        )?;
        Ok(rows.iter().map(alarm_row).collect())
    }

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

/// The parameters of a per-step query of one series over `[from_ms, to_ms)`.
fn range(step_ms: i64, device: &str, metric: &str, from_ms: i64, to_ms: i64) -> [Val; 5] {
    [
        step_ms.into(),
        device.into(),
        metric.into(),
        from_ms.into(),
        to_ms.into(),
    ]
}

fn next_rev(tx: &mut Tx<'_>) -> Result<i64, DbError> {
    tx.query(
        "UPDATE hot_meta SET value = value + 1 WHERE key = 'rev' RETURNING value",
        &[],
    )?
    .first()
    .and_then(|r| r[0].int())
    .ok_or_else(|| DbError::Other("hot_meta has no rev".into()))
}

/// A status applies unless a newer one is already stored: a retained message delivered
/// again after a restart must not undo what came since.
fn write_status(
    tx: &mut Tx<'_>,
    device: &str,
    received_ms: i64,
    s: &DeviceStatus,
    rev: i64,
) -> Result<(), DbError> {
    let said_ms = s.at.as_ref().map(Timestamp::unix_millis);
    let int = |v: Option<u64>| Val::from(v.map(|v| v as i64));
    tx.exec(
        "INSERT INTO devices (device, last_seen_ms, online, status_ms, agent_version, spool,
                              last_seq, pending, pending_bytes, pending_transactions,
                              oldest_pending_age_s, evicted_total, rev)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (device) DO UPDATE SET
           last_seen_ms = CASE WHEN excluded.last_seen_ms IS NOT NULL
                                AND (devices.last_seen_ms IS NULL
                                     OR excluded.last_seen_ms > devices.last_seen_ms)
                          THEN excluded.last_seen_ms ELSE devices.last_seen_ms END,
           online = excluded.online,
           status_ms = excluded.status_ms,
           agent_version = COALESCE(excluded.agent_version, devices.agent_version),
           spool = COALESCE(excluded.spool, devices.spool),
           last_seq = COALESCE(excluded.last_seq, devices.last_seq),
           pending = COALESCE(excluded.pending, devices.pending),
           pending_bytes = COALESCE(excluded.pending_bytes, devices.pending_bytes),
           pending_transactions = COALESCE(excluded.pending_transactions,
                                           devices.pending_transactions),
           oldest_pending_age_s = COALESCE(excluded.oldest_pending_age_s,
                                           devices.oldest_pending_age_s),
           evicted_total = COALESCE(excluded.evicted_total, devices.evicted_total),
           rev = excluded.rev
         WHERE devices.status_ms IS NULL OR excluded.status_ms >= devices.status_ms",
        &[
            device.into(),
            said_ms.into(),
            i64::from(s.online).into(),
            said_ms.unwrap_or(received_ms).into(),
            s.agent_version.clone().into(),
            s.spool.clone().into(),
            int(s.last_seq),
            int(s.pending),
            int(s.pending_bytes),
            int(s.pending_transactions),
            s.oldest_pending_age_s.into(),
            int(s.evicted_total),
            rev.into(),
        ],
    )?;
    Ok(())
}

/// Rows per statement on PostgreSQL: one round trip for hundreds of rows, well under its
/// limit of 65,535 parameters (12x the single-row rate in `benches/dashboard.rs`).
const PG_ROWS_PER_STATEMENT: usize = 400;
/// On SQLite, which has no round trips, fewer: statements that long only cost parsing.
const SQLITE_ROWS_PER_STATEMENT: usize = 50;

/// `head VALUES (...), (...) tail` over `rows`; returns what `tail`'s `RETURNING` (if any)
/// gives back.
fn insert_many(tx: &mut Tx<'_>, head: &str, rows: &[Row], tail: &str) -> Result<Vec<Row>, DbError> {
    let per_statement = if tx.is_postgres() {
        PG_ROWS_PER_STATEMENT
    } else {
        SQLITE_ROWS_PER_STATEMENT
    };
    let mut returned = Vec::new();
    for chunk in rows.chunks(per_statement) {
        let width = chunk[0].len();
        let mut sql = String::with_capacity(head.len() + tail.len() + chunk.len() * width * 6);
        sql.push_str(head);
        for (r, _) in chunk.iter().enumerate() {
            sql.push_str(if r == 0 { " (" } else { ", (" });
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(sql, "${}", r * width + c + 1);
            }
            sql.push(')');
        }
        sql.push(' ');
        sql.push_str(tail);
        returned.extend(tx.query(&sql, &chunk.concat())?);
    }
    Ok(returned)
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

/// Runs a rule over a series' new points, from where it stood, and keeps where it stands.
fn judge(
    tx: &mut Tx<'_>,
    rule: &AlarmRule,
    device: &str,
    points: &[(i64, f64)],
    rev: i64,
) -> Result<(), DbError> {
    let stored = tx.query(
        "SELECT since_ms, active_id, last_ts_ms FROM alarm_state WHERE rule = $1 AND device = $2",
        &[rule.name.as_str().into(), device.into()],
    )?;
    let mut active_id = stored.first().and_then(|r| r[1].int());
    let mut track = Track {
        since_ms: stored.first().and_then(|r| r[0].int()),
        active: active_id.is_some(),
        last_ts_ms: stored.first().and_then(|r| r[2].int()),
    };
    for &(ts, value) in points {
        match track.observe(rule, ts, value) {
            Some(Transition::Raise { at_ms, value }) => {
                let id = tx
                    .query(
                        "INSERT INTO alarms (rule, device, metric, condition, raised_ms,
                                             raised_value, rev)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                        &[
                            rule.name.as_str().into(),
                            device.into(),
                            rule.metric.as_str().into(),
                            rule.condition().into(),
                            at_ms.into(),
                            value.into(),
                            rev.into(),
                        ],
                    )?
                    .first()
                    .and_then(|r| r[0].int());
                active_id = id;
            }
            Some(Transition::Clear { at_ms, value }) => {
                if let Some(id) = active_id.take() {
                    tx.exec(
                        "UPDATE alarms SET cleared_ms = $1, cleared_value = $2, rev = $3
                         WHERE id = $4",
                        &[at_ms.into(), value.into(), rev.into(), id.into()],
                    )?;
                }
            }
            None => {}
        }
    }
    let Some(last_ts) = track.last_ts_ms else {
        return Ok(());
    };
    tx.exec(
        "INSERT INTO alarm_state (rule, device, since_ms, active_id, last_ts_ms)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (rule, device) DO UPDATE SET
           since_ms = excluded.since_ms, active_id = excluded.active_id,
           last_ts_ms = excluded.last_ts_ms",
        &[
            rule.name.as_str().into(),
            device.into(),
            track.since_ms.into(),
            active_id.into(),
            last_ts.into(),
        ],
    )?;
    Ok(())
}

fn device_sql(filter: &str) -> String {
    format!(
        "SELECT device, last_seen_ms, online, status_ms, agent_version, pending, pending_bytes,
                pending_transactions, oldest_pending_age_s, last_seq, evicted_total
         FROM devices {filter} ORDER BY device"
    )
}

fn device_view(r: &Row, now_ms: i64, offline_after_ms: i64) -> DeviceView {
    let last_seen = r[1].int();
    let online = r[2].int().map(|o| o != 0);
    DeviceView {
        device: r[0].text().unwrap_or_default().to_owned(),
        state: if is_online(online, last_seen, now_ms, offline_after_ms) {
            "online"
        } else {
            "offline"
        }
        .to_owned(),
        last_seen: last_seen.map(rfc3339),
        status_at: r[3].int().map(rfc3339),
        agent_version: r[4].text().map(str::to_owned),
        backlog: Backlog {
            pending: r[5].int(),
            pending_bytes: r[6].int(),
            pending_transactions: r[7].int(),
            oldest_pending_age_s: r[8].real(),
            last_seq: r[9].int(),
            evicted_total: r[10].int(),
        },
    }
}

fn latest_row(r: &Row) -> Latest {
    let t = r[2].int().unwrap_or_default();
    Latest {
        device: r[0].text().unwrap_or_default().to_owned(),
        metric: r[1].text().unwrap_or_default().to_owned(),
        ts: rfc3339(t),
        t,
        value: r[3].real().unwrap_or(f64::NAN),
    }
}

fn alarm_sql(tail: &str) -> String {
    format!(
        "SELECT id, rule, device, metric, condition, raised_ms, raised_value, cleared_ms,
                cleared_value FROM alarms {tail}"
    )
}

fn alarm_row(r: &Row) -> Alarm {
    Alarm {
        id: r[0].int().unwrap_or_default(),
        rule: r[1].text().unwrap_or_default().to_owned(),
        device: r[2].text().unwrap_or_default().to_owned(),
        metric: r[3].text().unwrap_or_default().to_owned(),
        condition: r[4].text().unwrap_or_default().to_owned(),
        raised_at: rfc3339(r[5].int().unwrap_or_default()),
        raised_value: r[6].real().unwrap_or(f64::NAN),
        cleared_at: r[7].int().map(rfc3339),
        cleared_value: r[8].real(),
    }
}
