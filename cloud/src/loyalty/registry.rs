//! The device registry: which devices may send transactions, and for which store. The
//! ledger keeps it, so that whether a transaction may apply is decided in the same
//! database transaction that applies it.

use serde::{Deserialize, Serialize};

use super::apply::LedgerTx;
use super::{Ledger, LedgerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Till,
    Station,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Till => "till",
            Self::Station => "station",
        }
    }
}

/// `PUT /v1/devices/{id}`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub kind: DeviceKind,
    /// Required for a till: the one store whose transactions it may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

impl Registration {
    /// The problem with it, naming the field.
    pub fn check(&self) -> Result<(), String> {
        match (&self.kind, &self.store) {
            (DeviceKind::Till, None) => Err("store: required for a till".into()),
            (_, Some(store))
                if store.is_empty()
                    || store.len() > ferry_shared::limits::MAX_TEXT_LEN
                    || store.chars().any(char::is_control) =>
            {
                Err("store: 1 to 256 bytes without control characters".into())
            }
            _ => Ok(()),
        }
    }
}

/// A device's row, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisteredDevice {
    pub id: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    pub registered_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

const COLUMNS: &str = "SELECT id, kind, store, registered_at, retired_at FROM devices";

impl Ledger {
    /// Registers `id`, or changes its registration; a retired device is active again.
    pub fn put_device(&mut self, id: &str, reg: &Registration) -> Result<(), LedgerError> {
        self.in_transaction(|tx| put_device(tx, id, reg))
    }

    /// Retires `id`: its transactions are refused from now on. False when it is unknown.
    pub fn retire_device(&mut self, id: &str) -> Result<bool, LedgerError> {
        self.in_transaction(|tx| retire_device(tx, id))
    }

    pub fn device(&mut self, id: &str) -> Result<Option<RegisteredDevice>, LedgerError> {
        Ok(self
            .registry_rows(&format!("{COLUMNS} WHERE id = $1"), Some(id))?
            .pop())
    }

    /// How many transactions wait for each device's registration.
    pub fn held_counts(&mut self) -> Result<std::collections::BTreeMap<String, u64>, LedgerError> {
        let rows: Vec<(String, i64)> =
            self.pairs("SELECT device, CAST(COUNT(*) AS BIGINT) FROM held GROUP BY device")?;
        Ok(rows.into_iter().map(|(d, n)| (d, n as u64)).collect())
    }

    /// Every registered device, retired ones too, by id.
    pub fn devices(&mut self) -> Result<Vec<RegisteredDevice>, LedgerError> {
        self.registry_rows(&format!("{COLUMNS} ORDER BY id"), None)
    }

    fn registry_rows(
        &mut self,
        sql: &str,
        id: Option<&str>,
    ) -> Result<Vec<RegisteredDevice>, LedgerError> {
        Ok(match self {
            Self::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let row = |r: &rusqlite::Row<'_>| {
                    Ok(RegisteredDevice {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        store: r.get(2)?,
                        registered_at: r.get(3)?,
                        retired_at: r.get(4)?,
                    })
                };
                match id {
                    Some(id) => stmt.query_map([id], row)?.collect::<Result<_, _>>()?,
                    None => stmt.query_map([], row)?.collect::<Result<_, _>>()?,
                }
            }
            Self::Postgres(c, _) => {
                let rows = match id {
                    Some(id) => c.query(sql, &[&id])?,
                    None => c.query(sql, &[])?,
                };
                rows.into_iter()
                    .map(|r| RegisteredDevice {
                        id: r.get(0),
                        kind: r.get(1),
                        store: r.get(2),
                        registered_at: r.get(3),
                        retired_at: r.get(4),
                    })
                    .collect()
            }
        })
    }
}

/// Registers `id`, or changes its registration, in `tx`; a retired device is active again.
/// The store it names must be a store record.
pub fn put_device(tx: &mut dyn LedgerTx, id: &str, reg: &Registration) -> Result<(), LedgerError> {
    let now = ferry_shared::Timestamp::now().to_string();
    let upsert = "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, store = excluded.store,
                      registered_at = excluded.registered_at, retired_at = NULL";
    if let Some(store) = &reg.store
        && !tx.store_known(store)?
    {
        return Err(LedgerError::refused(
            "unknown_store",
            format!("store {store:?} is not a store: PUT /v1/stores/{{id}} first"),
        ));
    }
    let kind = reg.kind.name();
    match &reg.store {
        Some(store) => tx.exec_text(
            &format!(
                "INSERT INTO devices (id, kind, store, registered_at) VALUES ($1, $2, $3, $4) {upsert}"
            ),
            &[id, kind, store, &now],
        ),
        None => tx.exec_text(
            &format!(
                "INSERT INTO devices (id, kind, store, registered_at) VALUES ($1, $2, NULL, $3) {upsert}"
            ),
            &[id, kind, &now],
        ),
    }
}

/// Retires `id`, in `tx`: its transactions are refused from now on. False when it was
/// never registered.
pub fn retire_device(tx: &mut dyn LedgerTx, id: &str) -> Result<bool, LedgerError> {
    if tx.registration(id)?.is_none() {
        return Ok(false);
    }
    let now = ferry_shared::Timestamp::now().to_string();
    tx.exec_text(
        "UPDATE devices SET retired_at = $1 WHERE id = $2 AND retired_at IS NULL",
        &[&now, id],
    )?;
    Ok(true)
}
