//! The ledger's SQLite store: the embedded default. `BEGIN IMMEDIATE` makes writers take
//! turns, so a balance read is current for the whole transaction.

use rusqlite::{OptionalExtension, Transaction, params};

use super::LedgerError;
use super::apply::{Entry, LedgerTx, Target};

pub const SCHEMA: &str = include_str!("../../migrations/0002_ledger.sql");

impl LedgerTx for Transaction<'_> {
    /// `BEGIN IMMEDIATE` already holds the one write lock.
    fn lock(&mut self, _keys: &[(&str, &str)]) -> Result<(), LedgerError> {
        Ok(())
    }

    fn content(&mut self, tx_id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .query_row(
                "SELECT content FROM ledger WHERE tx_id = ?1",
                params![tx_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn program(&mut self, id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .query_row(
                "SELECT body FROM programs WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn balance(&mut self, card: &str, program: &str) -> Result<i64, LedgerError> {
        Ok(self
            .query_row(
                "SELECT balance FROM balances WHERE card = ?1 AND program = ?2",
                params![card, program],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    fn target(&mut self, tx_id: &str) -> Result<Option<Target>, LedgerError> {
        Ok(self
            .query_row(
                "SELECT delta, card, program, reversed_by FROM ledger WHERE tx_id = ?1",
                params![tx_id],
                |r| {
                    Ok(Target {
                        delta: r.get(0)?,
                        card: r.get(1)?,
                        program: r.get(2)?,
                        reversed_by: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    fn mark_reversed(&mut self, tx_id: &str, by: &str) -> Result<(), LedgerError> {
        self.execute(
            "UPDATE ledger SET reversed_by = ?1 WHERE tx_id = ?2",
            params![by, tx_id],
        )?;
        Ok(())
    }

    fn set_balance(
        &mut self,
        card: &str,
        program: &str,
        balance: i64,
        now: &str,
    ) -> Result<(), LedgerError> {
        self.execute(
            "INSERT INTO cards (card, created_at) VALUES (?1, ?2) ON CONFLICT (card) DO NOTHING",
            params![card, now],
        )?;
        self.execute(
            "INSERT INTO balances (card, program, balance, flagged) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (card, program) DO UPDATE SET balance = excluded.balance,
                 flagged = balances.flagged OR excluded.flagged",
            params![card, program, balance, balance < 0],
        )?;
        Ok(())
    }

    fn record(&mut self, e: &Entry<'_>) -> Result<(), LedgerError> {
        self.execute(
            "INSERT INTO ledger (tx_id, content, card, program, store, op, delta, offline, applied_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                e.txn.tx_id.as_str(),
                e.content,
                e.txn.card,
                e.txn.program,
                e.txn.store,
                e.op,
                e.delta,
                e.txn.offline,
                e.at
            ],
        )?;
        Ok(())
    }
}
