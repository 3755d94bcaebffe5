//! The ledger's PostgreSQL store, for production. Writers of one (card, program) take turns
//! on a transaction-scoped advisory lock, taken for a whole batch in one global order, so
//! they never deadlock. Should a race abort a batch anyway (a unique violation, a
//! serialization failure), `Ledger::apply` runs it again.

use postgres::Transaction;

use super::apply::{Entry, LedgerTx, Registered, Rows, Submitted, Target, apply_rules, sql};
use super::pg_batch::{self, PgBatch, Statements};
use super::{LedgerError, Outcome};

pub const SCHEMA: &str = concat!(
    include_str!("../../migrations/0003_ledger_postgres.sql"),
    include_str!("../../migrations/0006_organisation.sql"),
);

fn text_params<'a>(params: &'a [&'a str]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// A PostgreSQL transaction of the ledger, with its connection's prepared statements.
pub struct PgTx<'a, 'c> {
    pub tx: &'a mut Transaction<'c>,
    pub statements: &'a Statements,
}

impl LedgerTx for PgTx<'_, '_> {
    /// Set-based: a fixed number of round trips per batch (`pg_batch`).
    fn apply_batch(&mut self, batch: &[Submitted]) -> Result<Vec<Outcome>, LedgerError> {
        let mut set = PgBatch::new(self.tx, self.statements, batch);
        let outcomes = apply_rules(&mut set, batch)?;
        set.flush()?;
        Ok(outcomes)
    }

    fn lock(&mut self, keys: &[(&str, &str)]) -> Result<(), LedgerError> {
        pg_batch::lock(self.tx, self.statements, keys)
    }

    fn content(&mut self, tx_id: &str) -> Result<Option<String>, LedgerError> {
        let row = self.tx.query_opt(sql::CONTENT, &[&tx_id])?;
        Ok(row.map(|r| r.get(0)))
    }

    fn program(&mut self, id: &str) -> Result<Option<String>, LedgerError> {
        let row = self.tx.query_opt(sql::PROGRAM, &[&id])?;
        Ok(row.map(|r| r.get(0)))
    }

    fn balance(&mut self, card: &str, program: &str) -> Result<i64, LedgerError> {
        // Locked already by `lock`, for the whole batch.
        let row = self.tx.query_opt(sql::BALANCE, &[&card, &program])?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    fn target(&mut self, tx_id: &str) -> Result<Option<Target>, LedgerError> {
        let row = self.tx.query_opt(sql::TARGET, &[&tx_id])?;
        Ok(row.map(|r| Target {
            delta: r.get(0),
            card: r.get(1),
            program: r.get(2),
            reversed_by: r.get(3),
            store: r.get(4),
        }))
    }

    fn registration(&mut self, device: &str) -> Result<Option<Registered>, LedgerError> {
        let row = self.tx.query_opt(sql::DEVICE, &[&device])?;
        Ok(row.map(|r| Registered {
            kind: r.get(0),
            store: r.get(1),
            retired: r.get::<_, Option<String>>(2).is_some(),
        }))
    }

    fn exec_text(&mut self, sql: &str, params: &[&str]) -> Result<(), LedgerError> {
        self.tx.execute(sql, &text_params(params))?;
        Ok(())
    }

    fn texts(&mut self, sql: &str, params: &[&str]) -> Result<Rows, LedgerError> {
        Ok(self
            .tx
            .query(sql, &text_params(params))?
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
            .collect())
    }

    fn mark_reversed(&mut self, tx_id: &str, by: &str) -> Result<(), LedgerError> {
        self.tx.execute(sql::MARK_REVERSED, &[&by, &tx_id])?;
        Ok(())
    }

    fn set_balance(
        &mut self,
        card: &str,
        program: &str,
        balance: i64,
        now: &str,
    ) -> Result<(), LedgerError> {
        self.tx.execute(sql::CARD, &[&card, &now])?;
        self.tx.execute(
            sql::SET_BALANCE,
            &[&card, &program, &balance, &(balance < 0)],
        )?;
        Ok(())
    }

    fn record(&mut self, e: &Entry<'_>) -> Result<(), LedgerError> {
        self.tx.execute(
            sql::RECORD,
            &[
                &e.tx_id, &e.content, &e.card, &e.program, &e.store, &e.op, &e.delta, &e.offline,
                &e.at,
            ],
        )?;
        Ok(())
    }

    fn earned_before(
        &mut self,
        card: &str,
        program: &str,
        cutoff: &str,
    ) -> Result<i64, LedgerError> {
        Ok(self
            .tx
            .query_one(sql::EARNED_BEFORE, &[&card, &program, &cutoff])?
            .get(0))
    }

    fn spent(&mut self, card: &str, program: &str) -> Result<i64, LedgerError> {
        Ok(self.tx.query_one(sql::SPENT, &[&card, &program])?.get(0))
    }
}
