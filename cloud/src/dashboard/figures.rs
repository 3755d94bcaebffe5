//! The loyalty panels: figures per store and day with the period's totals
//! (`GET /v1/loyalty`), and sales per hour (`GET /v1/traffic`), over a period of whole UTC
//! days ending today: `today`, `7d` or `30d`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, Query, State};
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{DashboardApi, ledger, unavailable};
use crate::config::ApiRole;
use crate::http::{ApiError, Caller};
use crate::loyalty::{CardCounts, StoreDay};

/// Hours the traffic panel names as the busiest.
const BUSIEST: usize = 3;

#[derive(Debug, Deserialize)]
pub struct PeriodQuery {
    period: Option<String>,
}

/// Whole UTC days, `from..=to`.
struct Period {
    name: &'static str,
    from: NaiveDate,
    to: NaiveDate,
}

impl Period {
    fn parse(text: Option<&str>) -> Result<Self, ApiError> {
        let (name, days) = match text.unwrap_or("7d") {
            "today" => ("today", 1),
            "7d" => ("7d", 7),
            "30d" => ("30d", 30),
            other => {
                return Err(ApiError::invalid(
                    "invalid_period",
                    format!("period {other:?}: use today, 7d or 30d"),
                ));
            }
        };
        let to = Utc::now().date_naive();
        let from = to - chrono::Days::new(days - 1);
        Ok(Self { name, from, to })
    }

    fn days(&self) -> Vec<String> {
        self.from
            .iter_days()
            .take_while(|d| *d <= self.to)
            .map(|d| d.to_string())
            .collect()
    }

    /// What an answer says of its period: the name, the first and last day, every day.
    fn describe(&self, days: &[String]) -> Value {
        json!({
            "period": self.name,
            "from": self.from.to_string(),
            "to": self.to.to_string(),
            "days": days,
        })
    }

    /// `[from, to + 1)` as the ledger's queries take it.
    fn bounds(&self) -> (String, String) {
        let end = self.to.succ_opt().unwrap_or(self.to);
        (self.from.to_string(), end.to_string())
    }
}

/// A period's sums.
#[derive(Debug, Default, Serialize)]
struct Totals {
    stamps_issued: i64,
    points_issued: i64,
    rewards_redeemed: i64,
    overdrafts_flagged: i64,
    transactions: i64,
    active_cards: i64,
    returning_cards: i64,
    /// `returning_cards / active_cards`, 0 when no card came.
    returning_share: f64,
}

impl Totals {
    fn add(&mut self, d: &StoreDay) {
        self.stamps_issued += d.stamps_issued;
        self.points_issued += d.points_issued;
        self.rewards_redeemed += d.rewards_redeemed;
        self.overdrafts_flagged += d.overdrafts_flagged;
        self.transactions += d.transactions;
    }

    fn cards(&mut self, c: &CardCounts) {
        self.active_cards = c.active_cards;
        self.returning_cards = c.returning_cards;
        self.returning_share = if c.active_cards > 0 {
            c.returning_cards as f64 / c.active_cards as f64
        } else {
            0.0
        };
    }
}

/// A `store` caller's answers hold its stores only, and their totals are theirs.
pub async fn loyalty(
    State(api): State<DashboardApi>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Value>, ApiError> {
    let period = Period::parse(q.period.as_deref())?;
    let (from, to) = period.bounds();
    let (days, cards) = ledger(&api)?
        .run(move |l| Ok((l.days("", &from, &to)?, l.card_counts("", &from, &to)?)))
        .await
        .map_err(unavailable)?;
    let names = period.days();
    let mut stores: BTreeMap<String, (Vec<StoreDay>, Totals)> = BTreeMap::new();
    let mut all = Totals::default();
    for (store, day) in days.into_iter().filter(|(s, _)| caller.covers(s)) {
        let (list, totals) = stores.entry(store).or_default();
        totals.add(&day);
        all.add(&day);
        list.push(day);
    }
    let mut own = CardCounts::default();
    for c in &cards {
        match stores.get_mut(&c.store) {
            Some((_, totals)) => {
                totals.cards(c);
                own.active_cards += c.active_cards;
                own.returning_cards += c.returning_cards;
            }
            None if c.store.is_empty() && caller.role != ApiRole::Store => all.cards(c),
            None => {}
        }
    }
    // Over a store caller's stores, a card seen at two of them counts twice.
    if caller.role == ApiRole::Store {
        all.cards(&own);
    }
    let mut stores: Vec<(String, Vec<StoreDay>, Totals)> = stores
        .into_iter()
        .map(|(store, (found, totals))| (store, every_day(&names, found), totals))
        .collect();
    // The comparison reads best busiest first.
    stores.sort_by(|a, b| b.2.transactions.cmp(&a.2.transactions).then(a.0.cmp(&b.0)));
    let stores: Vec<Value> = stores
        .into_iter()
        .map(|(store, days, totals)| json!({"store": store, "days": days, "totals": totals}))
        .collect();
    let mut body = period.describe(&names);
    body["stores"] = json!(stores);
    body["totals"] = json!(all);
    Ok(Json(body))
}

/// Every day of the period, with zeros where the ledger has none.
fn every_day(names: &[String], found: Vec<StoreDay>) -> Vec<StoreDay> {
    let mut found: BTreeMap<String, StoreDay> =
        found.into_iter().map(|d| (d.day.clone(), d)).collect();
    names
        .iter()
        .map(|day| {
            found.remove(day).unwrap_or_else(|| StoreDay {
                day: day.clone(),
                ..StoreDay::default()
            })
        })
        .collect()
}

pub async fn traffic(
    State(api): State<DashboardApi>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Value>, ApiError> {
    let period = Period::parse(q.period.as_deref())?;
    let (from, to) = period.bounds();
    let hours = ledger(&api)?
        .run(move |l| l.hours("", &from, &to))
        .await
        .map_err(unavailable)?;
    let names = period.days();
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    // Per store: (day index, hour, sales) cells and sales per hour of the day.
    let mut stores: BTreeMap<String, (Vec<[i64; 3]>, [i64; 24])> = BTreeMap::new();
    let mut all = [0i64; 24];
    for h in hours.iter().filter(|h| caller.covers(&h.store)) {
        let (Some(day), Ok(hour)) = (index.get(h.day.as_str()), usize::try_from(h.hour)) else {
            continue;
        };
        if hour >= 24 {
            continue;
        }
        let (cells, by_hour) = stores
            .entry(h.store.clone())
            .or_insert((Vec::new(), [0; 24]));
        cells.push([*day as i64, h.hour, h.transactions]);
        by_hour[hour] += h.transactions;
        all[hour] += h.transactions;
    }
    let stores: Vec<Value> = stores
        .into_iter()
        .map(|(store, (cells, by_hour))| {
            json!({"store": store, "total": by_hour.iter().sum::<i64>(),
                   "cells": cells, "busiest": busiest(&by_hour)})
        })
        .collect();
    let mut body = period.describe(&names);
    body["stores"] = json!(stores);
    body["busiest"] = json!(busiest(&all));
    Ok(Json(body))
}

/// The busiest hours of the day, most sales first (earlier first on a tie); none without
/// sales.
fn busiest(by_hour: &[i64; 24]) -> Vec<Value> {
    let mut hours: Vec<(usize, i64)> = by_hour
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, n)| *n > 0)
        .collect();
    hours.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    hours
        .into_iter()
        .take(BUSIEST)
        .map(|(hour, n)| json!({"hour": hour, "transactions": n}))
        .collect()
}
