//! Read-only views of the spool: pending rows for the uplink, figures for `status`.

use std::path::Path;

use ferry_shared::record::Unsequenced;
use ferry_shared::{RecordBody, Txn};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{Class, Keyed, Once, SpoolError, schema};

pub struct SpoolReader {
    conn: Connection,
}

/// A spooled record: its seq and its JSON without the seq.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub seq: u64,
    pub json: String,
}

/// The spool part of `ferry-agent status`'s object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SpoolStatus {
    pub spool: String,
    pub last_seq: u64,
    pub pending: u64,
    pub pending_bytes: u64,
    pub pending_transactions: u64,
    pub oldest_pending_age_s: f64,
    pub evicted_total: u64,
}

impl SpoolReader {
    pub fn open(path: &Path) -> Result<Self, SpoolError> {
        Ok(Self {
            conn: schema::open_reader(path)?,
        })
    }

    /// Up to `limit` rows of `class` after `after_seq`, oldest first, stopping early once
    /// their JSON passes `max_bytes` (the row that passes it is included).
    pub fn pending(
        &self,
        class: Class,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<PendingRow>, SpoolError> {
        let mut out = Vec::new();
        self.visit_pending(class, after_seq, limit, max_bytes, |seq, json| {
            out.push(PendingRow {
                seq,
                json: json.to_owned(),
            })
        })?;
        Ok(out)
    }

    /// [`SpoolReader::pending`] without a copy: each row's JSON is lent to `visit` straight
    /// from SQLite's buffer. This is the drain's hot path. Returns how many rows it visited.
    pub fn visit_pending(
        &self,
        class: Class,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
        mut visit: impl FnMut(u64, &str),
    ) -> Result<usize, SpoolError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, body FROM records WHERE class = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![class as i64, after_seq as i64, limit as i64])?;
        let (mut bytes, mut count) = (0, 0);
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let json = match row.get_ref(1)? {
                ValueRef::Blob(body) => std::str::from_utf8(body)
                    .map_err(|e| SpoolError::Identity(format!("row {seq} is not UTF-8: {e}")))?,
                other => {
                    return Err(SpoolError::Identity(format!(
                        "row {seq} holds a {} body, not a blob",
                        other.data_type()
                    )));
                }
            };
            visit(seq as u64, json);
            bytes += json.len();
            count += 1;
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(count)
    }

    /// The answer given to an idempotency key, if it was accepted before, as it applies to
    /// this request.
    pub fn idempotency_key(&self, key: &Keyed) -> Result<Option<Once>, SpoolError> {
        let seen: Option<(String, i64, Option<String>)> = self
            .conn
            .prepare_cached("SELECT tx_id, seq, request FROM idempotency WHERE key = ?1")?
            .query_row([&key.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(seen.map(|(tx_id, seq, request)| key.replay(request.as_deref(), tx_id, seq as u64)))
    }

    /// Pending transactions of one card, oldest first. Scans the pending transactions,
    /// which are few on a till: they leave the spool on PUBACK.
    pub fn pending_transactions_of(&self, card: &str) -> Result<Vec<Txn>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, body FROM records WHERE class = ?1 ORDER BY seq")?;
        let mut rows = stmt.query([Class::Transaction as i64])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let body: Vec<u8> = row.get(1)?;
            match serde_json::from_slice::<Unsequenced>(&body) {
                Ok(Unsequenced {
                    body: RecordBody::Txn(txn),
                    ..
                }) if txn.card == card => out.push(txn),
                Ok(_) => {}
                Err(e) => {
                    let seq: i64 = row.get(0)?;
                    tracing::warn!(seq, error = %e, "unreadable spooled transaction");
                }
            }
        }
        Ok(out)
    }

    pub fn status(&self) -> Result<SpoolStatus, SpoolError> {
        self.read_status().map_err(|e| match e {
            SpoolError::Sqlite(e) if schema::is_being_created(&e) => SpoolError::BeingCreated,
            other => other,
        })
    }

    fn read_status(&self) -> Result<SpoolStatus, SpoolError> {
        let tx = self.conn.unchecked_transaction()?;
        let (spool, last_seq, evicted_total): (String, i64, i64) = tx.query_row(
            "SELECT spool_id, last_seq, evicted_total FROM spool WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (pending, pending_bytes, oldest): (i64, i64, Option<i64>) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(length(body)), 0), \
             (SELECT appended_at FROM records ORDER BY seq LIMIT 1) FROM records",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let pending_transactions: i64 = tx.query_row(
            "SELECT COUNT(*) FROM records WHERE class = ?1",
            [Class::Transaction as i64],
            |r| r.get(0),
        )?;
        tx.finish()?;
        let now = chrono::Utc::now().timestamp_millis();
        let oldest_pending_age_s = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        Ok(SpoolStatus {
            spool,
            last_seq: last_seq as u64,
            pending: pending as u64,
            pending_bytes: pending_bytes as u64,
            pending_transactions: pending_transactions as u64,
            oldest_pending_age_s,
            evicted_total: evicted_total as u64,
        })
    }
}
