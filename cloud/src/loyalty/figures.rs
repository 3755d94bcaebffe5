//! The ledger's figures for the dashboards: per store and day, the cards that came, and
//! transactions per hour. Days and hours are UTC, by when the ledger applied a transaction
//! (a till that was offline for a day shows its sales on the day they arrived).
//!
//! Every query takes `[from_day, to_day)` as `YYYY-MM-DD` and a store, `""` for every
//! store; the same SQL runs on SQLite and PostgreSQL.

use serde::{Deserialize, Serialize};

use super::{Ledger, LedgerError};

/// A store's loyalty figures for one UTC day (by when the ledger applied them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Stamps given by `stamp` transactions.
    pub stamps_issued: i64,
    /// Points given by `earn` transactions.
    pub points_issued: i64,
    /// `redeem` transactions: one reward each.
    pub rewards_redeemed: i64,
    /// Transactions that took a card's balance below zero (offline redemptions the cloud
    /// could not cover): each flags its card.
    pub overdrafts_flagged: i64,
    /// Sales: `stamp`, `earn` and `redeem` transactions.
    pub transactions: i64,
}

/// The cards seen at a store (or anywhere, `store` empty) in a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CardCounts {
    pub store: String,
    /// Cards with a transaction in the period.
    pub active_cards: i64,
    /// Of those, cards seen on at least two days, up to the end of the period.
    pub returning_cards: i64,
}

/// Sales at one store in one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourCount {
    pub store: String,
    pub day: String,
    /// 0 to 23.
    pub hour: i64,
    pub transactions: i64,
}

const DAYS: &str = "WITH run AS (
      SELECT store, applied_at, op, delta,
             SUM(delta) OVER (PARTITION BY card, program ORDER BY seq) AS after
      FROM ledger
      WHERE card IN (SELECT card FROM ledger WHERE applied_at >= $1 AND applied_at < $2
                     AND ($3 = '' OR store = $3)))
    SELECT store, substr(applied_at, 1, 10) AS day,
      CAST(SUM(CASE WHEN op = 'stamp' THEN delta ELSE 0 END) AS BIGINT),
      CAST(SUM(CASE WHEN op = 'earn' THEN delta ELSE 0 END) AS BIGINT),
      CAST(SUM(CASE WHEN op = 'redeem' THEN 1 ELSE 0 END) AS BIGINT),
      CAST(SUM(CASE WHEN after < 0 AND after - delta >= 0 THEN 1 ELSE 0 END) AS BIGINT),
      CAST(SUM(CASE WHEN op IN ('stamp', 'earn', 'redeem') THEN 1 ELSE 0 END) AS BIGINT)
    FROM run
    WHERE applied_at >= $1 AND applied_at < $2 AND ($3 = '' OR store = $3) AND op <> 'expire'
    GROUP BY store, day ORDER BY store, day";

/// Active and returning cards per store; a card counts once per store it visited.
const CARDS_PER_STORE: &str = "WITH active AS (
      SELECT DISTINCT store, card FROM ledger
      WHERE applied_at >= $1 AND applied_at < $2 AND op <> 'expire' AND ($3 = '' OR store = $3)),
    days AS (
      SELECT card, COUNT(DISTINCT substr(applied_at, 1, 10)) AS n FROM ledger
      WHERE applied_at < $2 AND op <> 'expire' AND card IN (SELECT card FROM active)
      GROUP BY card)
    SELECT a.store, CAST(COUNT(*) AS BIGINT),
      CAST(SUM(CASE WHEN d.n >= 2 THEN 1 ELSE 0 END) AS BIGINT)
    FROM active a JOIN days d ON d.card = a.card
    GROUP BY a.store ORDER BY a.store";

/// The same over the stores together: a card at two stores counts once.
const CARDS_OVERALL: &str = "WITH active AS (
      SELECT DISTINCT card FROM ledger
      WHERE applied_at >= $1 AND applied_at < $2 AND op <> 'expire' AND ($3 = '' OR store = $3)),
    days AS (
      SELECT card, COUNT(DISTINCT substr(applied_at, 1, 10)) AS n FROM ledger
      WHERE applied_at < $2 AND op <> 'expire' AND card IN (SELECT card FROM active)
      GROUP BY card)
    SELECT '', CAST(COUNT(*) AS BIGINT),
      CAST(COALESCE(SUM(CASE WHEN n >= 2 THEN 1 ELSE 0 END), 0) AS BIGINT)
    FROM days";

const HOURS: &str = "SELECT store, substr(applied_at, 1, 10),
      CAST(substr(applied_at, 12, 2) AS BIGINT), CAST(COUNT(*) AS BIGINT)
    FROM ledger
    WHERE applied_at >= $1 AND applied_at < $2 AND op IN ('stamp', 'earn', 'redeem')
      AND ($3 = '' OR store = $3)
    GROUP BY store, substr(applied_at, 1, 10), CAST(substr(applied_at, 12, 2) AS BIGINT)
    ORDER BY 1, 2, 3";

/// One result row: its leading text columns, then its integer columns.
type Row = (Vec<String>, Vec<i64>);

impl Ledger {
    /// Each store's figures per day that has any, with the store's name.
    pub fn days(
        &mut self,
        store: &str,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<(String, StoreDay)>, LedgerError> {
        Ok(self
            .table(DAYS, [from_day, to_day, store], 2, 5)?
            .into_iter()
            .map(|(mut text, n)| {
                let day = text.pop().unwrap_or_default();
                let store = text.pop().unwrap_or_default();
                (
                    store,
                    StoreDay {
                        day,
                        stamps_issued: n[0],
                        points_issued: n[1],
                        rewards_redeemed: n[2],
                        overdrafts_flagged: n[3],
                        transactions: n[4],
                    },
                )
            })
            .collect())
    }

    /// The store's figures per day, for days in `[from_day, to_day)` that have any. An
    /// overdraft is found by running each card's balance over its whole ledger, wherever
    /// its other transactions happened.
    pub fn store_days(
        &mut self,
        store: &str,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<StoreDay>, LedgerError> {
        Ok(self
            .days(store, from_day, to_day)?
            .into_iter()
            .map(|(_, day)| day)
            .collect())
    }

    /// Active and returning cards per store, then over every store (the entry with an
    /// empty `store`), for the period.
    pub fn card_counts(
        &mut self,
        store: &str,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<CardCounts>, LedgerError> {
        let mut rows = self.table(CARDS_PER_STORE, [from_day, to_day, store], 1, 2)?;
        rows.extend(self.table(CARDS_OVERALL, [from_day, to_day, store], 1, 2)?);
        Ok(rows
            .into_iter()
            .map(|(mut text, n)| CardCounts {
                store: text.pop().unwrap_or_default(),
                active_cards: n[0],
                returning_cards: n[1],
            })
            .collect())
    }

    /// Sales per store, day and hour, for the hours that have any.
    pub fn hours(
        &mut self,
        store: &str,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<HourCount>, LedgerError> {
        Ok(self
            .table(HOURS, [from_day, to_day, store], 2, 2)?
            .into_iter()
            .map(|(mut text, n)| {
                let day = text.pop().unwrap_or_default();
                HourCount {
                    store: text.pop().unwrap_or_default(),
                    day,
                    hour: n[0],
                    transactions: n[1],
                }
            })
            .collect())
    }

    /// Runs a query with three text parameters whose rows are `texts` text columns, then
    /// `ints` integer columns.
    fn table(
        &mut self,
        sql: &str,
        params: [&str; 3],
        texts: usize,
        ints: usize,
    ) -> Result<Vec<Row>, LedgerError> {
        Ok(match self {
            Self::Sqlite(c) => c
                .prepare_cached(sql)?
                .query_map(params, |r| {
                    Ok((
                        (0..texts).map(|i| r.get(i)).collect::<Result<_, _>>()?,
                        (texts..texts + ints)
                            .map(|i| r.get(i))
                            .collect::<Result<_, _>>()?,
                    ))
                })?
                .collect::<Result<_, _>>()?,
            Self::Postgres(c, _) => c
                .query(sql, &[&params[0], &params[1], &params[2]])?
                .into_iter()
                .map(|r| {
                    (
                        (0..texts).map(|i| r.get(i)).collect(),
                        (texts..texts + ints).map(|i| r.get(i)).collect(),
                    )
                })
                .collect(),
        })
    }
}
