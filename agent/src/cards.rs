//! The last balances the cloud sent for each card (`ferry/v1/{device}/cards`, README: MQTT topics),
//! so that the POS API's offline estimate starts from the ledger's word.
//!
//! A small SQLite file of its own (`cards.db`) beside the spool: these are advice, resent by
//! the cloud after every transaction of the card, not records, so they stay out of the
//! spool's writer and its durability rules. A message older than the one kept (by its `at`)
//! is ignored, so a late redelivery cannot roll a card back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "cards.db";

#[derive(Debug, thiserror::Error)]
pub enum CardsError {
    #[error("cards database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cards database: journal_mode reads back {0:?}, not \"wal\"")]
    NotWal(String),
    #[error("card balances message: {0}")]
    Message(#[from] serde_json::Error),
    #[error("cards database lock poisoned")]
    Poisoned,
}

/// What the cloud publishes on the `cards` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardMessage {
    pub card: String,
    pub balances: Vec<CloudBalance>,
    /// Set while the card is blocked; absent from an older cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<ferry_shared::CardBlock>,
    /// When the cloud read these balances.
    pub at: ferry_shared::Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudBalance {
    pub program: String,
    pub kind: String,
    pub balance: i64,
    pub rewards_available: i64,
    /// What one reward costs in the program's unit; absent from an older cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_cost: Option<i64>,
    /// The balance went below zero: a person should look at this card.
    #[serde(default)]
    pub flagged: bool,
}

/// A card's balances as last heard, per program, and when the cloud read them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudCard {
    pub balances: BTreeMap<String, CloudBalance>,
    pub blocked: Option<ferry_shared::CardBlock>,
    pub at: ferry_shared::Timestamp,
}

#[derive(Clone)]
pub struct CardCache {
    conn: Arc<Mutex<Connection>>,
}

impl CardCache {
    pub fn open(data_dir: &Path) -> Result<Self, CardsError> {
        let conn = Connection::open(data_dir.join(FILE_NAME))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CardsError::NotWal(mode));
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS cloud_cards (
                 card TEXT PRIMARY KEY,
                 at   TEXT NOT NULL,
                 body TEXT NOT NULL
             ) WITHOUT ROWID;",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Keeps a `cards` message, unless a newer one for the card is kept already. Returns
    /// the card it was about.
    pub fn remember(&self, payload: &[u8]) -> Result<String, CardsError> {
        let message: CardMessage = serde_json::from_slice(payload)?;
        let body = serde_json::to_string(&message)?;
        let conn = self.conn.lock().map_err(|_| CardsError::Poisoned)?;
        conn.execute(
            "INSERT INTO cloud_cards (card, at, body) VALUES (?1, ?2, ?3)
             ON CONFLICT (card) DO UPDATE SET at = excluded.at, body = excluded.body
             WHERE excluded.at >= cloud_cards.at",
            params![message.card, message.at.to_string(), body],
        )?;
        Ok(message.card)
    }

    pub fn get(&self, card: &str) -> Result<Option<CloudCard>, CardsError> {
        let conn = self.conn.lock().map_err(|_| CardsError::Poisoned)?;
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM cloud_cards WHERE card = ?1",
                [card],
                |r| r.get(0),
            )
            .optional()?;
        drop(conn);
        let Some(body) = body else {
            return Ok(None);
        };
        let message: CardMessage = serde_json::from_str(&body)?;
        Ok(Some(CloudCard {
            balances: message
                .balances
                .into_iter()
                .map(|b| (b.program.clone(), b))
                .collect(),
            blocked: message.blocked,
            at: message.at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(card: &str, balance: i64, at: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "card": card, "at": at,
            "balances": [{"program": "coffee", "kind": "stamps", "balance": balance,
                          "rewards_available": balance / 10, "flagged": false}],
        }))
        .expect("json")
    }

    #[test]
    fn keeps_the_newest_balances_per_card() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = CardCache::open(dir.path()).expect("open");
        assert_eq!(cache.get("C-1").expect("get"), None);
        cache
            .remember(&message("C-1", 3, "2026-11-23T10:00:01.000Z"))
            .expect("remember");
        cache
            .remember(&message("C-1", 2, "2026-11-23T10:00:00.000Z"))
            .expect("an older message is taken and ignored");
        let card = cache.get("C-1").expect("get").expect("known");
        assert_eq!(card.balances["coffee"].balance, 3);
        cache
            .remember(&message("C-1", 4, "2026-11-23T10:00:02.000Z"))
            .expect("remember");
        let reopened = CardCache::open(dir.path()).expect("reopen");
        let card = reopened.get("C-1").expect("get").expect("known");
        assert_eq!(card.balances["coffee"].balance, 4, "kept across a restart");
        assert!(cache.remember(b"{\"card\": 1}").is_err());
    }
}
