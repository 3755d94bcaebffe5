//! The ledger's PostgreSQL store, for production. Writers of one (card, program) take turns
//! on a transaction-scoped advisory lock, taken for a whole batch in one global order, so
//! they never deadlock. Should a race abort a batch anyway (a unique violation, a
//! serialization failure), `Ledger::apply` runs it again.

use postgres::Transaction;

use super::LedgerError;
use super::apply::{Entry, LedgerTx, Registered, Target, sql};

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
        let row = self.query_opt(sql::CONTENT, &[&tx_id])?;
        Ok(row.map(|r| r.get(0)))
    }

    fn program(&mut self, id: &str) -> Result<Option<String>, LedgerError> {
        let row = self.query_opt(sql::PROGRAM, &[&id])?;
        Ok(row.map(|r| r.get(0)))
    }

    fn balance(&mut self, card: &str, program: &str) -> Result<i64, LedgerError> {
        // Locked already by `lock`, for the whole batch.
        let row = self.query_opt(sql::BALANCE, &[&card, &program])?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    fn target(&mut self, tx_id: &str) -> Result<Option<Target>, LedgerError> {
        let row = self.query_opt(sql::TARGET, &[&tx_id])?;
        Ok(row.map(|r| Target {
            delta: r.get(0),
            card: r.get(1),
            program: r.get(2),
            reversed_by: r.get(3),
            store: r.get(4),
        }))
    }

    fn registration(&mut self, device: &str) -> Result<Option<Registered>, LedgerError> {
        let row = self.query_opt(sql::DEVICE, &[&device])?;
        Ok(row.map(|r| Registered {
            kind: r.get(0),
            store: r.get(1),
            retired: r.get::<_, Option<String>>(2).is_some(),
        }))
    }

    fn exec_text(&mut self, sql: &str, params: &[&str]) -> Result<(), LedgerError> {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn postgres::types::ToSql + Sync))
            .collect();
        self.execute(sql, &params)?;
        Ok(())
    }

    fn mark_reversed(&mut self, tx_id: &str, by: &str) -> Result<(), LedgerError> {
        self.execute(sql::MARK_REVERSED, &[&by, &tx_id])?;
        Ok(())
    }

    fn set_balance(
        &mut self,
        card: &str,
        program: &str,
        balance: i64,
        now: &str,
    ) -> Result<(), LedgerError> {
        self.execute(sql::CARD, &[&card, &now])?;
        self.execute(
            sql::SET_BALANCE,
            &[&card, &program, &balance, &(balance < 0)],
        )?;
        Ok(())
    }

    fn record(&mut self, e: &Entry<'_>) -> Result<(), LedgerError> {
        self.execute(
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
            .query_one(sql::EARNED_BEFORE, &[&card, &program, &cutoff])?
            .get(0))
    }

    fn spent(&mut self, card: &str, program: &str) -> Result<i64, LedgerError> {
        Ok(self.query_one(sql::SPENT, &[&card, &program])?.get(0))
    }
}
