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

use ferry_shared::{Timestamp, Txn};
use postgres::error::SqlState;
use rusqlite::TransactionBehavior;
use serde::{Deserialize, Serialize};

use super::apply::{LedgerTx, Submitted, lapse};
use super::pg::PgTx;
use super::pg_batch::Statements;
use super::program::Program;
use super::{pg, sqlite};
use crate::db::{Db, DbError};

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
    #[error("ledger: {0}")]
    Pool(#[from] crate::pool::PoolError),
    /// A write the ledger's state refuses, with a code for the API (`unknown_brand`,
    /// `store_in_use`...).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
}

impl LedgerError {
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }
}

impl From<DbError> for LedgerError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sqlite(e) => Self::Sqlite(e),
            DbError::Postgres(e) => Self::Postgres(e),
            DbError::NotWal(mode) => Self::NotWal(mode),
            DbError::Url(url) => Self::Url(url),
            DbError::Other(what) => Self::Row(what),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Applied,
    Duplicate,
    Rejected,
    /// From a device not registered (yet): not applied, not final. The router keeps it
    /// queued and sends it again, so a till's transactions wait out the order in which an
    /// operator set things up.
    Held,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub tx_id: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Balance {
    pub program: String,
    /// `stamps` or `points`.
    pub kind: String,
    pub balance: i64,
    pub rewards_available: i64,
    /// What one reward costs in the program's unit: a till's offline check charges
    /// `qty` times this, as the ledger does.
    pub reward_cost: i64,
    /// The balance went below zero (an offline redemption or a reversal): a person should
    /// look at this card.
    pub flagged: bool,
}

/// How often a PostgreSQL batch is run again after losing a race to another writer.
const PG_RETRIES: u32 = 50;
/// Cards decided per database transaction by the expiry job.
const EXPIRY_CHUNK: usize = 100;

/// One entry of a card's ledger (`GET /v1/cards/{card}/transactions`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub seq: i64,
    pub tx_id: String,
    /// `stamp`, `earn`, `redeem`, `reverse`, `expire` for points that lapsed, or
    /// `transfer` for balances a replace or merge moved.
    pub op: String,
    pub program: String,
    pub store: String,
    /// What the entry did to the balance.
    pub delta: i64,
    pub offline: bool,
    pub applied_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversed_by: Option<String>,
    /// The cashier, when the till said (the transaction's `staff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staff: Option<String>,
    /// The transaction as it was applied.
    #[schema(value_type = Object)]
    pub content: serde_json::Value,
}

pub enum Ledger {
    Sqlite(rusqlite::Connection),
    /// With the set-based statements of `pg_batch`, prepared once per connection.
    Postgres(postgres::Client, Box<Statements>),
}

impl Ledger {
    /// `sqlite:///var/lib/ferry-cloud/loyalty.db` (or a plain path), or
    /// `postgres://user@host:port/db`.
    pub fn open(database: &str) -> Result<Self, LedgerError> {
        Ok(match Db::open(database, (sqlite::SCHEMA, pg::SCHEMA))? {
            Db::Sqlite(c) => Self::Sqlite(c),
            Db::Postgres(mut c) => {
                let statements = Statements::prepare(&mut c)?;
                Self::Postgres(c, Box::new(statements))
            }
        })
    }

    /// False once a PostgreSQL connection has closed: the pool then opens a new one.
    pub fn is_usable(&self) -> bool {
        match self {
            Self::Sqlite(_) => true,
            Self::Postgres(c, _) => !c.is_closed(),
        }
    }

    pub fn put_program(&mut self, id: &str, program: &Program) -> Result<(), LedgerError> {
        self.in_transaction(|tx| put_program(tx, id, program))
    }

    pub fn programs(&mut self) -> Result<Vec<(String, Program)>, LedgerError> {
        let rows: Vec<(String, String)> =
            self.pairs("SELECT id, body FROM programs ORDER BY id")?;
        rows.into_iter()
            .map(|(id, body)| {
                let program =
                    serde_json::from_str(&body).map_err(|e| LedgerError::Row(e.to_string()))?;
                Ok((id, program))
            })
            .collect()
    }

    /// Applies a batch, each transaction on its own: one outcome per input, in order, with
    /// an admin's rights (the in-process callers: tests, imports).
    pub fn apply(&mut self, txns: &[Txn]) -> Result<Vec<Outcome>, LedgerError> {
        let batch: Vec<Submitted> = txns
            .iter()
            .map(|t| Submitted {
                txn: t.clone(),
                device: None,
                admin: true,
            })
            .collect();
        self.apply_submitted(&batch)
    }

    /// The same, for transactions that name the device they came from: each applies only
    /// if the registry admits that device for it.
    pub fn apply_submitted(&mut self, batch: &[Submitted]) -> Result<Vec<Outcome>, LedgerError> {
        self.in_transaction(|tx| tx.apply_batch(batch))
    }
}

/// Creates or changes a program, in `tx`.
pub fn put_program(tx: &mut dyn LedgerTx, id: &str, program: &Program) -> Result<(), LedgerError> {
    let body = serde_json::to_string(program).map_err(|e| LedgerError::Row(e.to_string()))?;
    tx.exec_text(
        "INSERT INTO programs (id, body) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        &[id, &body],
    )
}

impl Ledger {
    /// Runs `work` in one database transaction and commits it. On PostgreSQL, a batch that
    /// lost a race to another writer is run again from the start.
    pub(super) fn in_transaction<T>(
        &mut self,
        mut work: impl FnMut(&mut dyn LedgerTx) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        match self {
            Self::Sqlite(c) => {
                let mut tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = work(&mut tx)?;
                tx.commit()?;
                Ok(out)
            }
            Self::Postgres(c, statements) => {
                let mut attempt = 0;
                loop {
                    let mut run = || -> Result<T, LedgerError> {
                        let mut tx = c.transaction()?;
                        let out = work(&mut PgTx {
                            tx: &mut tx,
                            statements,
                        })?;
                        tx.commit()?;
                        Ok(out)
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

    /// Lets points lapse in every points program with `expiry_days`, as of `now`; returns
    /// how many points lapsed. Safe to run at any time and from several processes: each
    /// card is decided under its lock, from what the ledger says then.
    pub fn expire(&mut self, now: chrono::DateTime<chrono::Utc>) -> Result<i64, LedgerError> {
        let mut lapsed = 0;
        for (id, program) in self.programs()? {
            let Program::Points {
                expiry_days: Some(days),
                ..
            } = program
            else {
                continue;
            };
            // A program stored before `expiry_days` was bounded may name more days than the
            // calendar holds: it lapses nothing, rather than stopping the job.
            let Some(cutoff) = chrono::TimeDelta::try_days(i64::from(days))
                .and_then(|span| now.checked_sub_signed(span))
            else {
                tracing::warn!(program = %id, days, "expiry_days out of range; nothing lapses");
                continue;
            };
            let cutoff = Timestamp::from(cutoff).to_string();
            let cards = self.strings(
                "SELECT card FROM balances WHERE program = $1 AND balance > 0 ORDER BY card",
                &id,
            )?;
            for chunk in cards.chunks(EXPIRY_CHUNK) {
                lapsed += self.in_transaction(|tx| {
                    chunk
                        .iter()
                        .map(|card| lapse(tx, card, &id, &cutoff))
                        .sum::<Result<i64, _>>()
                })?;
            }
        }
        Ok(lapsed)
    }

    /// The card's ledger, newest first: at most `limit` entries, before ledger seq `before`.
    pub fn card_entries(
        &mut self,
        card: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let sql = "SELECT seq, tx_id, op, program, store, delta, offline, applied_at,
                          reversed_by, content
                   FROM ledger WHERE card = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::from(limit);
        let rows: Vec<(LedgerEntry, String)> = match self {
            Self::Sqlite(c) => c
                .prepare_cached(sql)?
                .query_map(rusqlite::params![card, before, limit], |r| {
                    Ok((
                        LedgerEntry {
                            seq: r.get(0)?,
                            tx_id: r.get(1)?,
                            op: r.get(2)?,
                            program: r.get(3)?,
                            store: r.get(4)?,
                            delta: r.get(5)?,
                            offline: r.get(6)?,
                            applied_at: r.get(7)?,
                            reversed_by: r.get(8)?,
                            staff: None,
                            content: serde_json::Value::Null,
                        },
                        r.get(9)?,
                    ))
                })?
                .collect::<Result<_, _>>()?,
            Self::Postgres(c, _) => c
                .query(sql, &[&card, &before, &limit])?
                .into_iter()
                .map(|r| {
                    (
                        LedgerEntry {
                            seq: r.get(0),
                            tx_id: r.get(1),
                            op: r.get(2),
                            program: r.get(3),
                            store: r.get(4),
                            delta: r.get(5),
                            offline: r.get(6),
                            applied_at: r.get(7),
                            reversed_by: r.get(8),
                            staff: None,
                            content: serde_json::Value::Null,
                        },
                        r.get(9),
                    )
                })
                .collect(),
        };
        rows.into_iter()
            .map(|(mut entry, content)| {
                entry.content =
                    serde_json::from_str(&content).map_err(|e| LedgerError::Row(e.to_string()))?;
                entry.staff = entry.content["staff"].as_str().map(str::to_owned);
                Ok(entry)
            })
            .collect()
    }

    /// Every store the ledger has seen.
    pub fn stores(&mut self) -> Result<Vec<String>, LedgerError> {
        let sql = "SELECT DISTINCT store FROM ledger WHERE op <> $1 ORDER BY store";
        self.strings(sql, &"expire")
    }

    /// Cards whose balance went below zero in some program, for a person to review.
    pub fn flagged_cards(&mut self) -> Result<Vec<String>, LedgerError> {
        self.strings(
            "SELECT DISTINCT card FROM balances WHERE flagged = $1 ORDER BY card",
            &true,
        )
    }

    /// Whether the card has been seen in any transaction.
    pub fn card_known(&mut self, card: &str) -> Result<bool, LedgerError> {
        Ok(!self
            .strings("SELECT card FROM cards WHERE card = $1", &card)?
            .is_empty())
    }

    /// Of `tx_ids`, those the ledger applied, and those it holds for a device not
    /// registered yet. A transaction it rejected is in neither: the router traces those to
    /// the lake's `errors/`.
    pub fn known(&mut self, tx_ids: &[String]) -> Result<Known, LedgerError> {
        let mut known = Known::default();
        for tx_id in tx_ids {
            if !self
                .strings("SELECT tx_id FROM ledger WHERE tx_id = $1", tx_id)?
                .is_empty()
            {
                known.applied.insert(tx_id.clone());
            } else if !self
                .strings("SELECT tx_id FROM held WHERE tx_id = $1", tx_id)?
                .is_empty()
            {
                known.held.insert(tx_id.clone());
            }
        }
        Ok(known)
    }

    /// The first two columns of a query without parameters.
    pub(super) fn pairs<A, B>(&mut self, sql: &str) -> Result<Vec<(A, B)>, LedgerError>
    where
        A: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>,
        B: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>,
    {
        Ok(match self {
            Self::Sqlite(c) => c
                .prepare_cached(sql)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?,
            Self::Postgres(c, _) => c
                .query(sql, &[])?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        })
    }

    /// The first column of a query with one parameter, as text.
    pub(super) fn strings<P>(&mut self, sql: &str, param: &P) -> Result<Vec<String>, LedgerError>
    where
        P: rusqlite::ToSql + postgres::types::ToSql + Sync,
    {
        Ok(match self {
            Self::Sqlite(c) => c
                .prepare_cached(sql)?
                .query_map([param], |r| r.get(0))?
                .collect::<Result<_, _>>()?,
            Self::Postgres(c, _) => c
                .query(sql, &[param])?
                .into_iter()
                .map(|r| r.get(0))
                .collect(),
        })
    }

    pub fn balances(&mut self, card: &str) -> Result<Vec<Balance>, LedgerError> {
        let sql = "SELECT b.program, b.balance, b.flagged, p.body FROM balances b
                   JOIN programs p ON p.id = b.program WHERE b.card = $1 ORDER BY b.program";
        let rows: Vec<(String, i64, bool, String)> = match self {
            Self::Sqlite(c) => c
                .prepare_cached(sql)?
                .query_map([card], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?,
            Self::Postgres(c, _) => c
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
                    kind: p.kind().to_owned(),
                    balance,
                    rewards_available: (balance / p.reward_cost()).max(0),
                    reward_cost: p.reward_cost(),
                    flagged,
                })
            })
            .collect()
    }
}

impl crate::pool::Pooled for Ledger {
    type Error = LedgerError;

    fn open(url: &str) -> Result<Self, LedgerError> {
        Ledger::open(url)
    }

    fn is_usable(&self) -> bool {
        Ledger::is_usable(self)
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

/// What [`Ledger::known`] found.
#[derive(Debug, Default)]
pub struct Known {
    pub applied: std::collections::HashSet<String>,
    pub held: std::collections::HashSet<String>,
}
