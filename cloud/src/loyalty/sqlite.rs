//! The ledger's SQLite store: the embedded default. `BEGIN IMMEDIATE` makes writers take
//! turns, so a balance read is current for the whole transaction.

use rusqlite::{OptionalExtension, Transaction, params};

use super::LedgerError;
use super::apply::{Entry, LedgerTx, Registered, Rows, Target, sql};

pub const SCHEMA: &str = concat!(
    include_str!("../../migrations/0002_ledger.sql"),
    include_str!("../../migrations/0006_organisation.sql"),
);

impl LedgerTx for Transaction<'_> {
    /// `BEGIN IMMEDIATE` already holds the one write lock.
    fn lock(&mut self, _keys: &[(&str, &str)]) -> Result<(), LedgerError> {
        Ok(())
    }

    fn content(&mut self, tx_id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .query_row(sql::CONTENT, params![tx_id], |r| r.get(0))
            .optional()?)
    }

    fn program(&mut self, id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .query_row(sql::PROGRAM, params![id], |r| r.get(0))
            .optional()?)
    }

    fn balance(&mut self, card: &str, program: &str) -> Result<i64, LedgerError> {
        Ok(self
            .query_row(sql::BALANCE, params![card, program], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    fn target(&mut self, tx_id: &str) -> Result<Option<Target>, LedgerError> {
        Ok(self
            .query_row(sql::TARGET, params![tx_id], |r| {
                Ok(Target {
                    delta: r.get(0)?,
                    card: r.get(1)?,
                    program: r.get(2)?,
                    reversed_by: r.get(3)?,
                    store: r.get(4)?,
                })
            })
            .optional()?)
    }

    fn registration(&mut self, device: &str) -> Result<Option<Registered>, LedgerError> {
        Ok(self
            .query_row(sql::DEVICE, params![device], |r| {
                Ok(Registered {
                    kind: r.get(0)?,
                    store: r.get(1)?,
                    retired: r.get::<_, Option<String>>(2)?.is_some(),
                })
            })
            .optional()?)
    }

    fn exec_text(&mut self, sql: &str, params: &[&str]) -> Result<(), LedgerError> {
        self.prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(())
    }

    fn texts(&mut self, sql: &str, params: &[&str]) -> Result<Rows, LedgerError> {
        let mut stmt = self.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
            (0..columns).map(|i| r.get(i)).collect()
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn mark_reversed(&mut self, tx_id: &str, by: &str) -> Result<(), LedgerError> {
        self.execute(sql::MARK_REVERSED, params![by, tx_id])?;
        Ok(())
    }

    fn set_balance(
        &mut self,
        card: &str,
        program: &str,
        balance: i64,
        now: &str,
    ) -> Result<(), LedgerError> {
        self.execute(sql::CARD, params![card, now])?;
        self.execute(
            sql::SET_BALANCE,
            params![card, program, balance, balance < 0],
        )?;
        Ok(())
    }

    fn record(&mut self, e: &Entry<'_>) -> Result<(), LedgerError> {
        self.execute(
            sql::RECORD,
            params![
                e.tx_id, e.content, e.card, e.program, e.store, e.op, e.delta, e.offline, e.at
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
        Ok(
            self.query_row(sql::EARNED_BEFORE, params![card, program, cutoff], |r| {
                r.get(0)
            })?,
        )
    }

    fn spent(&mut self, card: &str, program: &str) -> Result<i64, LedgerError> {
        Ok(self.query_row(sql::SPENT, params![card, program], |r| r.get(0))?)
    }
}
