//! The ledger's PostgreSQL store, for production. Writers of one (card, program) take turns
//! on a transaction-scoped advisory lock, taken for a whole batch in one global order, so
//! they never deadlock. Should a race abort a batch anyway (a unique violation, a
//! serialization failure), `Ledger::apply` runs it again.

use postgres::Transaction;

use super::LedgerError;
use super::apply::{Entry, LedgerTx, Target};

pub const SCHEMA: &str = include_str!("../../migrations/0003_ledger_postgres.sql");

impl LedgerTx for Transaction<'_> {
    fn lock(&mut self, keys: &[(&str, &str)]) -> Result<(), LedgerError> {
        let lock = self.prepare("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")?;
        for (card, program) in keys {
            let key = format!("{card}\u{1f}{program}");
            self.execute(&lock, &[&key])?;
        }
        Ok(())
    }

    fn content(&mut self, tx_id: &str) -> Result<Option<String>, LedgerError> {
        let row = self.query_opt("SELECT content FROM ledger WHERE tx_id = $1", &[&tx_id])?;
        Ok(row.map(|r| r.get(0)))
    }

    fn program(&mut self, id: &str) -> Result<Option<String>, LedgerError> {
        let row = self.query_opt("SELECT body FROM programs WHERE id = $1", &[&id])?;
        Ok(row.map(|r| r.get(0)))
    }

    fn balance(&mut self, card: &str, program: &str) -> Result<i64, LedgerError> {
        let key = format!("{card}\u{1f}{program}");
        self.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&key],
        )?;
        let row = self.query_opt(
            "SELECT balance FROM balances WHERE card = $1 AND program = $2",
            &[&card, &program],
        )?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    fn target(&mut self, tx_id: &str) -> Result<Option<Target>, LedgerError> {
        let row = self.query_opt(
            "SELECT delta, card, program, reversed_by FROM ledger WHERE tx_id = $1",
            &[&tx_id],
        )?;
        Ok(row.map(|r| Target {
            delta: r.get(0),
            card: r.get(1),
            program: r.get(2),
            reversed_by: r.get(3),
        }))
    }

    fn mark_reversed(&mut self, tx_id: &str, by: &str) -> Result<(), LedgerError> {
        self.execute(
            "UPDATE ledger SET reversed_by = $1 WHERE tx_id = $2",
            &[&by, &tx_id],
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
            "INSERT INTO cards (card, created_at) VALUES ($1, $2) ON CONFLICT (card) DO NOTHING",
            &[&card, &now],
        )?;
        self.execute(
            "INSERT INTO balances (card, program, balance, flagged) VALUES ($1, $2, $3, $4)
             ON CONFLICT (card, program) DO UPDATE SET balance = excluded.balance,
                 flagged = balances.flagged OR excluded.flagged",
            &[&card, &program, &balance, &(balance < 0)],
        )?;
        Ok(())
    }

    fn record(&mut self, e: &Entry<'_>) -> Result<(), LedgerError> {
        self.execute(
            "INSERT INTO ledger (tx_id, content, card, program, store, op, delta, offline, applied_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &e.txn.tx_id.as_str(),
                &e.content,
                &e.txn.card,
                &e.txn.program,
                &e.txn.store,
                &e.op,
                &e.delta,
                &e.txn.offline,
                &e.at,
            ],
        )?;
        Ok(())
    }
}
