//! The loyalty ledger: an append-only ledger of transactions, each applied exactly once
//! however often it is resent, and the balances it implies; on SQLite (the embedded
//! default) or PostgreSQL (production), with the same rules (`apply::apply_one`).
//!
//! A transaction is identified by its `tx_id` and compared by its canonical content (the
//! `txn` as the `shared` crate serialises it): the same id with the same content is a
//! `duplicate` and changes nothing; with other content it is `rejected` with `conflict`.
//! A batch commits in one database transaction. Rejections are not recorded: a rejected
//! transaction sent again is judged again, so one refused for an unknown program is applied
//! once the program exists.
//!
//! The calls block; async callers run them on blocking threads.

use std::time::Duration;

use ferry_shared::Txn;
use postgres::error::SqlState;
use rusqlite::TransactionBehavior;
use serde::Serialize;

use super::apply::apply_batch;
use super::program::Program;
use super::{pg, sqlite};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger database (PostgreSQL): {0}")]
    Postgres(#[from] postgres::Error),
    #[error("ledger database: journal_mode reads back {0:?}, not \"wal\"")]
    NotWal(String),
    #[error("loyalty.database must be sqlite:///PATH or postgres://..., not {0:?}")]
    Url(String),
    #[error("ledger row: {0}")]
    Row(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Applied,
    Duplicate,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub tx_id: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balance {
    pub program: String,
    pub kind: &'static str,
    pub balance: i64,
    pub rewards_available: i64,
    /// The balance went below zero (an offline redemption or a reversal): a person should
    /// look at this card.
    pub flagged: bool,
}

/// How often a PostgreSQL batch is run again after losing a race to another writer.
const PG_RETRIES: u32 = 50;

pub enum Ledger {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Ledger {
    /// `sqlite:///var/lib/ferry-cloud/loyalty.db` (or a plain path), or
    /// `postgres://user@host:port/db`.
    pub fn open(database: &str) -> Result<Self, LedgerError> {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            let mut client = postgres::Client::connect(database, postgres::NoTls)?;
            // Several processes may start at once; one migrates at a time.
            client.batch_execute("SELECT pg_advisory_lock(7152001)")?;
            let migrated = client.batch_execute(pg::SCHEMA);
            client.batch_execute("SELECT pg_advisory_unlock(7152001)")?;
            migrated?;
            return Ok(Self::Postgres(client));
        }
        let path = match database.strip_prefix("sqlite://") {
            Some(path) => path,
            None if database.contains("://") => return Err(LedgerError::Url(database.into())),
            None => database,
        };
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::NotWal(mode));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(sqlite::SCHEMA)?;
        Ok(Self::Sqlite(conn))
    }

    pub fn put_program(&mut self, id: &str, program: &Program) -> Result<(), LedgerError> {
        let body = serde_json::to_string(program).map_err(|e| LedgerError::Row(e.to_string()))?;
        let sql = "INSERT INTO programs (id, body) VALUES ($1, $2)
                   ON CONFLICT (id) DO UPDATE SET body = excluded.body";
        match self {
            Self::Sqlite(c) => {
                c.execute(sql, rusqlite::params![id, body])?;
            }
            Self::Postgres(c) => {
                c.execute(sql, &[&id, &body])?;
            }
        }
        Ok(())
    }

    pub fn programs(&mut self) -> Result<Vec<(String, Program)>, LedgerError> {
        let sql = "SELECT id, body FROM programs ORDER BY id";
        let rows: Vec<(String, String)> = match self {
            Self::Sqlite(c) => c
                .prepare(sql)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?,
            Self::Postgres(c) => c
                .query(sql, &[])?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        };
        rows.into_iter()
            .map(|(id, body)| {
                let program =
                    serde_json::from_str(&body).map_err(|e| LedgerError::Row(e.to_string()))?;
                Ok((id, program))
            })
            .collect()
    }

    /// Applies a batch, each transaction on its own: one outcome per input, in order.
    pub fn apply(&mut self, txns: &[Txn]) -> Result<Vec<Outcome>, LedgerError> {
        match self {
            Self::Sqlite(c) => {
                let mut tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let outcomes = apply_batch(&mut tx, txns)?;
                tx.commit()?;
                Ok(outcomes)
            }
            Self::Postgres(c) => {
                let mut attempt = 0;
                loop {
                    let mut run = || -> Result<Vec<Outcome>, LedgerError> {
                        let mut tx = c.transaction()?;
                        let outcomes = apply_batch(&mut tx, txns)?;
                        tx.commit()?;
                        Ok(outcomes)
                    };
                    match run() {
                        Err(LedgerError::Postgres(e)) if attempt < PG_RETRIES && lost_race(&e) => {
                            attempt += 1;
                            std::thread::sleep(Duration::from_millis(
                                rand::random_range(1..=10) * u64::from(attempt.min(10)),
                            ));
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    pub fn balances(&mut self, card: &str) -> Result<Vec<Balance>, LedgerError> {
        let sql = "SELECT b.program, b.balance, b.flagged, p.body FROM balances b
                   JOIN programs p ON p.id = b.program WHERE b.card = $1 ORDER BY b.program";
        let rows: Vec<(String, i64, bool, String)> = match self {
            Self::Sqlite(c) => c
                .prepare_cached(sql)?
                .query_map([card], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?,
            Self::Postgres(c) => c
                .query(sql, &[&card])?
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect(),
        };
        rows.into_iter()
            .map(|(program, balance, flagged, body)| {
                let p: Program =
                    serde_json::from_str(&body).map_err(|e| LedgerError::Row(e.to_string()))?;
                Ok(Balance {
                    program,
                    kind: p.kind(),
                    balance,
                    rewards_available: (balance / p.reward_cost()).max(0),
                    flagged,
                })
            })
            .collect()
    }
}

/// Another writer got there first: run the batch again and see its work.
fn lost_race(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::UNIQUE_VIOLATION
    })
}
