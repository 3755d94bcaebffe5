//! Device state: when each device was last heard from, what its last status said (agent
//! version, spool backlog), and whether it counts as online.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{DeviceStatus, HotStore, insert_many, rfc3339};
use crate::db::{DbError, Row, Tx, Val};

/// Moves each device's `last_seen` forward to when a message of it was received.
pub(super) fn touch(tx: &mut Tx<'_>, seen: HashMap<&str, i64>, rev: i64) -> Result<(), DbError> {
    let rows: Vec<Row> = seen
        .into_iter()
        .map(|(device, at_ms)| vec![device.into(), at_ms.into(), rev.into()])
        .collect();
    insert_many(
        tx,
        "INSERT INTO devices (device, last_seen_ms, rev) VALUES",
        &rows,
        "ON CONFLICT (device) DO UPDATE SET
           last_seen_ms = CASE WHEN devices.last_seen_ms IS NULL
                                OR excluded.last_seen_ms > devices.last_seen_ms
                          THEN excluded.last_seen_ms ELSE devices.last_seen_ms END,
           rev = excluded.rev",
    )?;
    Ok(())
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

impl HotStore {
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
}

/// A status applies unless a newer one is already stored: a retained message delivered
/// again after a restart must not undo what came since.
pub(super) fn write_status(
    tx: &mut Tx<'_>,
    device: &str,
    received_ms: i64,
    s: &DeviceStatus,
    rev: i64,
) -> Result<(), DbError> {
    // The device's clock is believed only as far as the cloud's: a status stamped later
    // than it arrived counts as of its arrival, so a device whose clock says 2999 cannot
    // stay online, or shadow its later statuses, for good. An earlier stamp is kept: a
    // retained status that the broker delivers again after an ingest restart is old news,
    // not a sign of life.
    let said_ms = s.at.as_ref().map(|at| at.unix_millis().min(received_ms));
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
