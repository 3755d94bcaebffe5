//! The hot store: recent readings, 1-minute rollups, the latest value of every series,
//! device state and alarms, on SQLite or PostgreSQL. The lake stays the record; this is
//! what dashboards ask, answered in milliseconds.
//!
//! The ingest writes it from its journal's `hot` queue ([`HotStore::write`]), in one
//! transaction per batch. A reading is stored once per (device, spool, seq, metric): a
//! resent one changes nothing, so the rollups and alarms count it once. Readings older than
//! the raw retention are not stored at all, because a resend of them could no longer be
//! recognised; the lake has them.
//!
//! One file per table it owns: [`readings`], [`rollups`], [`latest`], [`devices`],
//! [`alarms`] (with the evaluator that moves them), and [`retention`]. The SQL is written
//! once with `$n` parameters and runs on both databases through [`crate::db`].

mod alarms;
mod devices;
mod item;
mod latest;
mod readings;
mod retention;
mod rollups;

use std::collections::HashMap;
use std::fmt::Write;

use ferry_shared::Timestamp;
use ferry_shared::limits::ts_drives_state;

pub use alarms::{Alarm, Track, Transition};
pub use devices::{Backlog, DeviceView, is_online};
pub use item::{DeviceStatus, HotItem};
pub use latest::Latest;
pub use readings::Series;

use crate::config::AlarmRule;
use crate::db::{Db, DbError, Row, Tx};
use crate::pool::{Pool, Pooled};

const SQLITE_SCHEMA: &str = include_str!("../../migrations/0004_hot.sql");
const POSTGRES_SCHEMA: &str = include_str!("../../migrations/0005_hot_postgres.sql");

/// The hot store's connections, for the async side.
pub type HotPool = Pool<HotStore>;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Metric values stored for the first time.
    pub stored: u64,
    /// Metric values seen before (resends).
    pub duplicates: u64,
    /// Metric values older than the raw retention, left to the lake.
    pub too_old: u64,
    /// Metric values stamped before 2000, over a day ahead of the cloud's clock, or by a
    /// device whose clock was not yet synchronised (it flags them `ts_suspect`): the lake
    /// keeps them, but they move no latest value, rollup or alarm (a device whose clock
    /// says 2999 would otherwise freeze its series).
    pub ts_suspect: u64,
}

/// What [`HotStore::changes`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub rev: i64,
    pub readings: Vec<Latest>,
    pub alarms: Vec<Alarm>,
}

pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_unix_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_string())
}

pub struct HotStore {
    db: Db,
}

impl Pooled for HotStore {
    type Error = DbError;

    fn open(url: &str) -> Result<Self, DbError> {
        HotStore::open(url)
    }

    fn is_usable(&self) -> bool {
        HotStore::is_usable(self)
    }
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
                        ts_suspect,
                        metrics,
                    } => {
                        for (metric, value) in metrics {
                            if *ts_suspect || !ts_drives_state(*ts_ms, now_ms) {
                                outcome.ts_suspect += 1;
                                continue;
                            }
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
                    } => devices::write_status(tx, device, *received_ms, status, rev)?,
                }
            }
            let fresh = readings::insert(tx, &readings)?;
            outcome.stored = fresh.values().map(|p| p.len() as u64).sum();
            outcome.duplicates = readings.len() as u64 - outcome.stored;
            devices::touch(tx, seen, rev)?;
            rollups::add(tx, &fresh)?;
            latest::update(tx, &fresh, rev)?;
            alarms::judge_all(tx, rules, &fresh, rev)?;
            Ok(outcome)
        })
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
            .map(latest::latest_row)
            .collect();
        let alarms = self
            .db
            .query(
                &alarms::alarm_sql("WHERE rev > $1 AND rev <= $2 ORDER BY rev, id"),
                &[after.into(), rev.into()],
            )?
            .iter()
            .map(alarms::alarm_row)
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

/// Rows per statement on SQLite: longer statements only cost parsing, as it has no round
/// trips.
const SQLITE_ROWS_PER_STATEMENT: usize = 50;

/// `head VALUES (...), (...) tail` over `rows`; returns what `tail`'s `RETURNING` (if any)
/// gives back. On PostgreSQL, one statement over `unnest` of one array per column: a round
/// trip per batch, not per few hundred rows (`benches/dashboard.rs`).
pub(crate) fn insert_many(
    tx: &mut Tx<'_>,
    head: &str,
    rows: &[Row],
    tail: &str,
) -> Result<Vec<Row>, DbError> {
    if tx.is_postgres() {
        let insert = head
            .strip_suffix("VALUES")
            .ok_or_else(|| DbError::Other(format!("{head:?} does not end in VALUES")))?;
        return tx.query_unnest(
            &format!("{insert} SELECT * FROM unnest($ARRAYS) {tail}"),
            rows,
        );
    }
    let mut returned = Vec::new();
    for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
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
