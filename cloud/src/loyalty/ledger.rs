//! The loyalty ledger on SQLite: an append-only ledger of transactions, each applied exactly
//! once however often it is resent, and the balances it implies.
//!
//! A transaction is identified by its `tx_id` and compared by its canonical content (the
//! `txn` serialised by the `shared` crate): the same id with the same content is a
//! `duplicate` and changes nothing; with other content it is `rejected` with `conflict`.
//! A transaction and its balance change commit in one SQLite transaction
//! (`BEGIN IMMEDIATE`, so concurrent writers queue instead of failing).
//!
//! Rejections are not recorded: a rejected transaction sent again is judged again, so one
//! refused for an unknown program is applied once the program exists.

use std::path::Path;

use ferry_shared::{Timestamp, Txn, TxnOp};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::program::Program;

const SCHEMA: &str = include_str!("../../migrations/0002_ledger.sql");

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger database: journal_mode reads back {0:?}, not \"wal\"")]
    NotWal(String),
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

pub struct Ledger {
    conn: Connection,
}

impl Ledger {
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::NotWal(mode));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    pub fn put_program(&mut self, id: &str, program: &Program) -> Result<(), LedgerError> {
        let json = serde_json::to_string(program).map_err(|e| LedgerError::Row(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO programs (id, body) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            params![id, json],
        )?;
        Ok(())
    }

    pub fn programs(&self) -> Result<Vec<(String, Program)>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, body FROM programs ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (id, body) = row?;
            let program =
                serde_json::from_str(&body).map_err(|e| LedgerError::Row(e.to_string()))?;
            Ok((id, program))
        })
        .collect()
    }

    /// Applies a batch, each transaction on its own: one outcome per input, in order.
    pub fn apply(&mut self, txns: &[Txn]) -> Result<Vec<Outcome>, LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(txns.len());
        for txn in txns {
            outcomes.push(apply_one(&tx, txn)?);
        }
        tx.commit()?;
        Ok(outcomes)
    }

    pub fn balances(&self, card: &str) -> Result<Vec<Balance>, LedgerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT b.program, b.balance, b.flagged, p.body FROM balances b
             JOIN programs p ON p.id = b.program WHERE b.card = ?1 ORDER BY b.program",
        )?;
        let rows = stmt.query_map(params![card], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (program, balance, flagged, body) = row?;
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

fn apply_one(tx: &rusqlite::Transaction<'_>, txn: &Txn) -> Result<Outcome, LedgerError> {
    let outcome = |status, reason| Outcome {
        tx_id: txn.tx_id.to_string(),
        status,
        reason,
    };
    if txn.validate().is_err() {
        return Ok(outcome(Status::Rejected, Some("invalid")));
    }
    let content = serde_json::to_string(txn).map_err(|e| LedgerError::Row(e.to_string()))?;
    let earlier: Option<String> = tx
        .query_row(
            "SELECT content FROM ledger WHERE tx_id = ?1",
            params![txn.tx_id.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(earlier) = earlier {
        return Ok(if earlier == content {
            outcome(Status::Duplicate, None)
        } else {
            outcome(Status::Rejected, Some("conflict"))
        });
    }
    let body: Option<String> = tx
        .query_row(
            "SELECT body FROM programs WHERE id = ?1",
            params![txn.program],
            |r| r.get(0),
        )
        .optional()?;
    let Some(body) = body else {
        return Ok(outcome(Status::Rejected, Some("unknown_program")));
    };
    let program: Program =
        serde_json::from_str(&body).map_err(|e| LedgerError::Row(e.to_string()))?;
    let balance: i64 = tx
        .query_row(
            "SELECT balance FROM balances WHERE card = ?1 AND program = ?2",
            params![txn.card, txn.program],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let qty = txn.qty.unwrap_or(0) as i64;
    let delta = match (txn.op, &program) {
        (TxnOp::Stamp, Program::Stamps { .. }) => qty,
        (TxnOp::Earn, Program::Points { .. }) => match txn.qty {
            Some(points) => points as i64,
            None => program
                .points_for(txn.amount_minor.unwrap_or(0))
                .unwrap_or(0),
        },
        (TxnOp::Stamp, _) | (TxnOp::Earn, _) => {
            return Ok(outcome(Status::Rejected, Some("wrong_program_kind")));
        }
        (TxnOp::Redeem, _) => {
            let cost = qty.saturating_mul(program.reward_cost());
            if balance < cost && !txn.offline {
                return Ok(outcome(Status::Rejected, Some("insufficient_balance")));
            }
            -cost
        }
        (TxnOp::Reverse, _) => {
            let reversed = txn
                .reverses
                .as_ref()
                .map(|r| r.as_str())
                .unwrap_or_default();
            let original: Option<(i64, String, String, Option<String>)> = tx
                .query_row(
                    "SELECT delta, card, program, reversed_by FROM ledger WHERE tx_id = ?1",
                    params![reversed],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            match original {
                None => return Ok(outcome(Status::Rejected, Some("unknown_reversed"))),
                Some((_, card, program, _)) if card != txn.card || program != txn.program => {
                    return Ok(outcome(Status::Rejected, Some("reversal_mismatch")));
                }
                Some((_, _, _, Some(_))) => {
                    return Ok(outcome(Status::Rejected, Some("already_reversed")));
                }
                Some((delta, _, _, None)) => {
                    tx.execute(
                        "UPDATE ledger SET reversed_by = ?1 WHERE tx_id = ?2",
                        params![txn.tx_id.as_str(), reversed],
                    )?;
                    -delta
                }
            }
        }
    };
    let now = Timestamp::now().to_string();
    tx.execute(
        "INSERT INTO cards (card, created_at) VALUES (?1, ?2) ON CONFLICT (card) DO NOTHING",
        params![txn.card, now],
    )?;
    let after = balance + delta;
    tx.execute(
        "INSERT INTO balances (card, program, balance, flagged) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (card, program) DO UPDATE SET balance = excluded.balance,
             flagged = balances.flagged OR excluded.flagged",
        params![txn.card, txn.program, after, after < 0],
    )?;
    tx.execute(
        "INSERT INTO ledger (tx_id, content, card, program, store, op, delta, offline, applied_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            txn.tx_id.as_str(),
            content,
            txn.card,
            txn.program,
            txn.store,
            serde_json::to_value(txn.op)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            delta,
            txn.offline,
            now
        ],
    )?;
    Ok(outcome(Status::Applied, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::TxId;

    fn ledger() -> (Ledger, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut l = Ledger::open(&dir.path().join("loyalty.db")).expect("open");
        l.put_program(
            "coffee",
            &Program::Stamps {
                stamps_per_reward: 10,
                reward: "free coffee".into(),
            },
        )
        .expect("program");
        l.put_program(
            "points",
            &Program::Points {
                points_per_currency_unit: 1.0,
                reward: "voucher".into(),
                reward_cost: 500,
                expiry_days: None,
            },
        )
        .expect("program");
        (l, dir)
    }

    fn txn(id: &str, op: TxnOp, program: &str, qty: Option<u64>) -> Txn {
        Txn {
            tx_id: TxId::new(id).expect("id"),
            op,
            program: program.into(),
            card: "C-1".into(),
            store: "S-01".into(),
            qty,
            amount_minor: None,
            currency: None,
            receipt: None,
            reverses: None,
            offline: false,
        }
    }

    fn balance(l: &Ledger, program: &str) -> (i64, i64, bool) {
        l.balances("C-1")
            .expect("balances")
            .into_iter()
            .find(|b| b.program == program)
            .map_or((0, 0, false), |b| {
                (b.balance, b.rewards_available, b.flagged)
            })
    }

    /// Each step: a transaction, the outcome it must get, and the coffee balance after it.
    #[test]
    fn idempotency_and_rules_table() {
        let (mut l, _dir) = ledger();
        let stamp = |id: &str, qty| txn(id, TxnOp::Stamp, "coffee", Some(qty));
        let mut redeem_offline = txn("r-off", TxnOp::Redeem, "coffee", Some(2));
        redeem_offline.offline = true;
        let mut reverse = txn("rev-1", TxnOp::Reverse, "coffee", None);
        reverse.reverses = Some(TxId::new("s-1").expect("id"));
        let mut reverse_again = reverse.clone();
        reverse_again.tx_id = TxId::new("rev-2").expect("id");
        let steps: Vec<(Txn, Status, Option<&str>, i64)> = vec![
            (stamp("s-1", 3), Status::Applied, None, 3),
            (stamp("s-1", 3), Status::Duplicate, None, 3),
            (stamp("s-1", 4), Status::Rejected, Some("conflict"), 3),
            (stamp("s-2", 8), Status::Applied, None, 11),
            (
                txn("r-1", TxnOp::Redeem, "coffee", Some(2)),
                Status::Rejected,
                Some("insufficient_balance"),
                11,
            ),
            (
                txn("r-2", TxnOp::Redeem, "coffee", Some(1)),
                Status::Applied,
                None,
                1,
            ),
            (
                txn("r-2", TxnOp::Redeem, "coffee", Some(1)),
                Status::Duplicate,
                None,
                1,
            ),
            (redeem_offline.clone(), Status::Applied, None, -19),
            (redeem_offline, Status::Duplicate, None, -19),
            (reverse, Status::Applied, None, -22),
            (
                reverse_again,
                Status::Rejected,
                Some("already_reversed"),
                -22,
            ),
            (
                txn("e-1", TxnOp::Earn, "coffee", Some(5)),
                Status::Rejected,
                Some("wrong_program_kind"),
                -22,
            ),
            (
                txn("x-1", TxnOp::Stamp, "tea", Some(1)),
                Status::Rejected,
                Some("unknown_program"),
                -22,
            ),
        ];
        for (i, (t, status, reason, after)) in steps.into_iter().enumerate() {
            let got = l.apply(std::slice::from_ref(&t)).expect("apply").remove(0);
            assert_eq!(
                (got.status, got.reason),
                (status, reason),
                "step {i}: {}",
                t.tx_id
            );
            assert_eq!(balance(&l, "coffee").0, after, "step {i}");
        }
        assert!(balance(&l, "coffee").2, "a negative balance flags the card");
    }

    #[test]
    fn points_from_amounts_and_rewards_available() {
        let (mut l, _dir) = ledger();
        let mut earn = txn("e-1", TxnOp::Earn, "points", None);
        earn.amount_minor = Some(123_456);
        let out = l
            .apply(&[earn, txn("e-2", TxnOp::Earn, "points", Some(10))])
            .expect("apply");
        assert!(out.iter().all(|o| o.status == Status::Applied), "{out:?}");
        assert_eq!(balance(&l, "points"), (1244, 2, false));
        let stamps = l
            .apply(&[txn("s-1", TxnOp::Stamp, "coffee", Some(25))])
            .expect("apply");
        assert_eq!(stamps[0].status, Status::Applied);
        assert_eq!(balance(&l, "coffee"), (25, 2, false));
    }

    /// 8 writers, each with its own connection, replay the same 10,000 transactions in
    /// different orders: every one is applied once, the balances are exact, and no writer
    /// sees a busy or serialization error.
    #[test]
    fn concurrent_replays_apply_each_transaction_once() {
        let (_, dir) = ledger();
        let path = dir.path().join("loyalty.db");
        let all: Vec<Txn> = (0..10_000u64)
            .map(|i| {
                let mut t = match i % 3 {
                    0 => txn(&format!("t-{i}"), TxnOp::Stamp, "coffee", Some(1 + i % 3)),
                    1 => txn(&format!("t-{i}"), TxnOp::Earn, "points", Some(i % 50)),
                    _ => {
                        let mut r = txn(&format!("t-{i}"), TxnOp::Redeem, "coffee", Some(1));
                        r.offline = true;
                        r
                    }
                };
                t.card = format!("C-{}", i % 50);
                if t.qty == Some(0) {
                    t.qty = Some(1);
                }
                t
            })
            .collect();
        let mut expected = std::collections::BTreeMap::<(String, String), i64>::new();
        for t in &all {
            let delta = match t.op {
                TxnOp::Redeem => -10,
                _ => t.qty.unwrap_or(0) as i64,
            };
            *expected
                .entry((t.card.clone(), t.program.clone()))
                .or_insert(0) += delta;
        }
        let writers: Vec<_> = (0..8u64)
            .map(|w| {
                let path = path.clone();
                let mut order = all.clone();
                // A different order per writer: rotated and, for odd writers, reversed.
                let shift = (w as usize * 1_237) % order.len();
                order.rotate_left(shift);
                if w % 2 == 1 {
                    order.reverse();
                }
                std::thread::spawn(move || {
                    let mut l = Ledger::open(&path).expect("open");
                    let mut applied = 0;
                    for batch in order.chunks(100) {
                        for o in l.apply(batch).expect("no busy or serialization error") {
                            assert_ne!(o.status, Status::Rejected, "{o:?}");
                            applied += usize::from(o.status == Status::Applied);
                        }
                    }
                    applied
                })
            })
            .collect();
        let applied: usize = writers.into_iter().map(|w| w.join().expect("writer")).sum();
        assert_eq!(
            applied,
            all.len(),
            "each transaction applied exactly once in all"
        );
        let l = Ledger::open(&path).expect("open");
        for ((card, program), want) in expected {
            let got = l
                .balances(&card)
                .expect("balances")
                .into_iter()
                .find(|b| b.program == program)
                .map_or(0, |b| b.balance);
            assert_eq!(got, want, "{card} {program}");
        }
    }

    #[test]
    fn journal_mode_reads_back_wal() {
        let (l, _dir) = ledger();
        let mode: String = l
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
    }
}
