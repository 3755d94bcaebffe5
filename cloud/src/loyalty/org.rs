//! The organisation (README: loyalty model): one ledger is one business, with brands below
//! it and stores below a brand. A store names its IANA time zone and its ISO 4217 currency;
//! the ledger applies a transaction only for a store that is a record here, and holds the
//! rest until a person sets the store up.

use serde::{Deserialize, Serialize};

use super::apply::{LedgerTx, Rows};
use super::{Ledger, LedgerError};
use ferry_shared::limits::MAX_TEXT_LEN;

/// `PUT /v1/brands/{id}`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrandFields {
    pub name: String,
}

/// `PUT /v1/stores/{id}`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreFields {
    pub name: String,
    /// The brand it trades under: a brand record.
    pub brand: String,
    /// IANA, like `Europe/Berlin`: the store's days, hours and promotions are in it.
    pub time_zone: String,
    /// ISO 4217, like `EUR`: the currency of its amounts.
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Brand {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Store {
    pub id: String,
    pub name: String,
    pub brand: String,
    pub time_zone: String,
    pub currency: String,
    pub created_at: String,
}

fn name(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_TEXT_LEN || value.chars().any(char::is_control) {
        return Err(format!(
            "name: must be 1 to {MAX_TEXT_LEN} bytes without control characters"
        ));
    }
    Ok(())
}

impl BrandFields {
    /// The problem with it, naming the field.
    pub fn check(&self) -> Result<(), String> {
        name(&self.name)
    }
}

impl StoreFields {
    /// The problem with it, naming the field; whether the brand exists is the ledger's
    /// to say.
    pub fn check(&self) -> Result<(), String> {
        name(&self.name)?;
        if self.brand.is_empty() {
            return Err("brand: required".into());
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(format!(
                "time_zone: {:?} is not an IANA time zone like Europe/Berlin",
                self.time_zone
            ));
        }
        if !(self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(format!(
                "currency: {:?} is not an ISO 4217 code like EUR",
                self.currency
            ));
        }
        Ok(())
    }
}

const BRANDS: &str = "SELECT id, name, created_at FROM brands";
const STORES: &str = "SELECT id, name, brand, time_zone, currency, created_at FROM stores";

fn text(row: &mut [Option<String>], i: usize) -> String {
    row.get_mut(i).and_then(Option::take).unwrap_or_default()
}

fn brands(rows: Rows) -> Vec<Brand> {
    rows.into_iter()
        .map(|mut r| Brand {
            id: text(&mut r, 0),
            name: text(&mut r, 1),
            created_at: text(&mut r, 2),
        })
        .collect()
}

fn stores(rows: Rows) -> Vec<Store> {
    rows.into_iter()
        .map(|mut r| Store {
            id: text(&mut r, 0),
            name: text(&mut r, 1),
            brand: text(&mut r, 2),
            time_zone: text(&mut r, 3),
            currency: text(&mut r, 4),
            created_at: text(&mut r, 5),
        })
        .collect()
}

/// Creates or renames a brand, in `tx`.
pub fn put_brand(tx: &mut dyn LedgerTx, id: &str, brand: &BrandFields) -> Result<(), LedgerError> {
    let now = ferry_shared::Timestamp::now().to_string();
    tx.exec_text(
        "INSERT INTO brands (id, name, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        &[id, &brand.name, &now],
    )
}

/// Deletes a brand without stores, in `tx`; false when there was none.
pub fn delete_brand(tx: &mut dyn LedgerTx, id: &str) -> Result<bool, LedgerError> {
    if tx
        .texts(&format!("{BRANDS} WHERE id = $1"), &[id])?
        .is_empty()
    {
        return Ok(false);
    }
    let left = tx.texts("SELECT id FROM stores WHERE brand = $1 ORDER BY id", &[id])?;
    if !left.is_empty() {
        let ids: Vec<String> = left.into_iter().map(|mut r| text(&mut r, 0)).collect();
        return Err(LedgerError::refused(
            "brand_in_use",
            format!("brand {id:?} still has stores {ids:?}: move or delete them first"),
        ));
    }
    tx.exec_text("DELETE FROM brands WHERE id = $1", &[id])?;
    Ok(true)
}

/// Creates or changes a store, in `tx`: its brand must be a record.
pub fn put_store(tx: &mut dyn LedgerTx, id: &str, store: &StoreFields) -> Result<(), LedgerError> {
    if tx
        .texts(&format!("{BRANDS} WHERE id = $1"), &[&store.brand])?
        .is_empty()
    {
        return Err(LedgerError::refused(
            "unknown_brand",
            format!(
                "brand {:?} is not a brand: PUT /v1/brands/{{id}} first",
                store.brand
            ),
        ));
    }
    let now = ferry_shared::Timestamp::now().to_string();
    tx.exec_text(
        "INSERT INTO stores (id, name, brand, time_zone, currency, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, brand = excluded.brand,
             time_zone = excluded.time_zone, currency = excluded.currency",
        &[
            id,
            &store.name,
            &store.brand,
            &store.time_zone,
            &store.currency,
            &now,
        ],
    )
}

/// Deletes a store no active till is registered at, in `tx`; false when there was none.
/// Its ledger entries stay; a transaction for it from now on is held.
pub fn delete_store(tx: &mut dyn LedgerTx, id: &str) -> Result<bool, LedgerError> {
    if !tx.store_known(id)? {
        return Ok(false);
    }
    let tills = tx.texts(
        "SELECT id FROM devices WHERE store = $1 AND retired_at IS NULL ORDER BY id",
        &[id],
    )?;
    if !tills.is_empty() {
        let ids: Vec<String> = tills.into_iter().map(|mut r| text(&mut r, 0)).collect();
        return Err(LedgerError::refused(
            "store_in_use",
            format!("tills {ids:?} are registered at store {id:?}: retire or move them first"),
        ));
    }
    tx.exec_text("DELETE FROM stores WHERE id = $1", &[id])?;
    Ok(true)
}

impl Ledger {
    pub fn put_brand(&mut self, id: &str, brand: &BrandFields) -> Result<(), LedgerError> {
        self.in_transaction(|tx| put_brand(tx, id, brand))
    }

    pub fn delete_brand(&mut self, id: &str) -> Result<bool, LedgerError> {
        self.in_transaction(|tx| delete_brand(tx, id))
    }

    pub fn put_store(&mut self, id: &str, store: &StoreFields) -> Result<(), LedgerError> {
        self.in_transaction(|tx| put_store(tx, id, store))
    }

    pub fn delete_store(&mut self, id: &str) -> Result<bool, LedgerError> {
        self.in_transaction(|tx| delete_store(tx, id))
    }

    pub fn brands(&mut self) -> Result<Vec<Brand>, LedgerError> {
        let rows = self.in_transaction(|tx| tx.texts(&format!("{BRANDS} ORDER BY id"), &[]))?;
        Ok(brands(rows))
    }

    pub fn brand(&mut self, id: &str) -> Result<Option<Brand>, LedgerError> {
        let rows = self.in_transaction(|tx| tx.texts(&format!("{BRANDS} WHERE id = $1"), &[id]))?;
        Ok(brands(rows).pop())
    }

    /// Every store record, by id.
    pub fn store_records(&mut self) -> Result<Vec<Store>, LedgerError> {
        let rows = self.in_transaction(|tx| tx.texts(&format!("{STORES} ORDER BY id"), &[]))?;
        Ok(stores(rows))
    }

    pub fn store(&mut self, id: &str) -> Result<Option<Store>, LedgerError> {
        let rows = self.in_transaction(|tx| tx.texts(&format!("{STORES} WHERE id = $1"), &[id]))?;
        Ok(stores(rows).pop())
    }

    /// The stores of `brands`: what a caller scoped to those brands speaks for.
    pub fn brand_stores(&mut self, brands: &[String]) -> Result<Vec<String>, LedgerError> {
        let mut all = Vec::new();
        for brand in brands {
            let rows = self.in_transaction(|tx| {
                tx.texts(
                    "SELECT id FROM stores WHERE brand = $1 ORDER BY id",
                    &[brand],
                )
            })?;
            all.extend(rows.into_iter().map(|mut r| text(&mut r, 0)));
        }
        Ok(all)
    }
}
