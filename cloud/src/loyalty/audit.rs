//! The audit trail: who changed what, when, under which request. Kept in the ledger's
//! database, append-only, newest first when read (`GET /v1/audit`).

use serde::Serialize;

use super::apply::LedgerTx;
use super::{Ledger, LedgerError};

/// One write, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// The token's name.
    pub who: String,
    pub role: String,
    /// `put_program`, `put_device`, `retire_device`, `transactions`.
    pub action: String,
    /// What it acted on: a program or device id, or the first transaction's id.
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub request_id: String,
}

impl AuditEntry {
    /// A row of `COLUMNS`, from SQLite: the ledger's audit table, and the fleet's in
    /// `fleet.db`, which has the same columns.
    pub fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            at: r.get(1)?,
            who: r.get(2)?,
            role: r.get(3)?,
            action: r.get(4)?,
            target: r.get(5)?,
            detail: serde_json::from_str(&r.get::<_, String>(6)?)
                .unwrap_or(serde_json::Value::Null),
            request_id: r.get(7)?,
        })
    }
}

/// A write to record, as its caller knows it.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub who: String,
    pub role: &'static str,
    pub action: &'static str,
    pub target: String,
    pub detail: serde_json::Value,
    pub request_id: String,
}

const COLUMNS: &str = "id, at, who, role, action, target, detail, request_id";
const INSERT: &str = "INSERT INTO audit (at, who, role, action, target, detail, request_id)
                      VALUES ($1, $2, $3, $4, $5, $6, $7)";

impl AuditRecord {
    /// Records it in `tx`, the database transaction of the write it describes.
    fn insert(&self, tx: &mut dyn LedgerTx) -> Result<(), LedgerError> {
        let at = ferry_shared::Timestamp::now().to_string();
        let detail = self.detail.to_string();
        tx.exec_text(
            INSERT,
            &[
                &at,
                &self.who,
                self.role,
                self.action,
                &self.target,
                &detail,
                &self.request_id,
            ],
        )
    }
}

impl Ledger {
    /// Runs `work`, then records what `audit` makes of its result, in one database
    /// transaction: a write and its audit row commit together or not at all. `audit` may
    /// say there is nothing to record.
    pub fn audited<T>(
        &mut self,
        mut work: impl FnMut(&mut dyn LedgerTx) -> Result<T, LedgerError>,
        audit: impl Fn(&T) -> Option<AuditRecord>,
    ) -> Result<T, LedgerError> {
        self.in_transaction(|tx| {
            let done = work(tx)?;
            if let Some(record) = audit(&done) {
                record.insert(tx)?;
            }
            Ok(done)
        })
    }

    /// Up to `limit` entries older than `before` (an id), newest first.
    pub fn audit_log(
        &mut self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AuditEntry>, LedgerError> {
        let sql = format!("SELECT {COLUMNS} FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2");
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::from(limit);
        let parse =
            |detail: String| serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null);
        Ok(match self {
            Self::Sqlite(c) => c
                .prepare_cached(&sql)?
                .query_map(rusqlite::params![before, limit], AuditEntry::from_sqlite)?
                .collect::<Result<_, _>>()?,
            Self::Postgres(c, _) => c
                .query(&sql, &[&before, &limit])?
                .into_iter()
                .map(|r| AuditEntry {
                    id: r.get(0),
                    at: r.get(1),
                    who: r.get(2),
                    role: r.get(3),
                    action: r.get(4),
                    target: r.get(5),
                    detail: parse(r.get(6)),
                    request_id: r.get(7),
                })
                .collect(),
        })
    }

    /// The stores where `card` has a transaction.
    pub fn card_stores(&mut self, card: &str) -> Result<Vec<String>, LedgerError> {
        self.strings(
            "SELECT DISTINCT store FROM ledger WHERE card = $1 AND op <> 'expire' ORDER BY store",
            &card,
        )
    }
}
