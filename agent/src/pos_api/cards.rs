//! `GET /v1/cards/{card}`: the best offline knowledge of a card: the balances the cloud
//! last sent on the `cards` topic, plus what the transactions still pending in the spool
//! add up to.
//!
//! An estimate, in two ways: a transaction the broker has taken but the ledger has not yet
//! applied is in neither term, and one the ledger applied before its PUBACK reached the
//! agent (a reconnect) is briefly in both. Both settle with the next message for the card.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use ferry_shared::{Txn, TxnOp, rules};
use serde::Serialize;

use super::{ApiError, PosState};
use crate::cards::{CloudBalance, CloudCard};
use ferry_shared::CardBlock;

/// The cloud's answer for a card (`{card, balances: [...]}`, each balance as the ledger
/// gives it), with the till's estimate beside each balance and the pending transactions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CardView {
    pub card: String,
    /// Per program, in program order: every program the cloud sent or a pending
    /// transaction names.
    pub balances: Vec<TillBalance>,
    /// When the cloud read its balances; absent when it never sent any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cloud_at: Option<ferry_shared::Timestamp>,
    /// Set when the cloud last said the card is blocked: the till refuses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<ferry_shared::CardBlock>,
    pub pending: Vec<Txn>,
}

/// One program's balance: the cloud's fields as its ledger last sent them (zero where it
/// sent nothing yet), then the till's estimate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TillBalance {
    pub program: String,
    /// `stamps` or `points`, as the cloud said; before it has, from the first pending
    /// transaction's op (`unknown` when that is a redemption or a reversal).
    pub kind: String,
    pub balance: i64,
    pub rewards_available: i64,
    /// What one reward costs; absent until the cloud has said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_cost: Option<i64>,
    pub flagged: bool,
    /// `balance` plus what the pending transactions do to it.
    pub estimated_balance: i64,
    /// Whole rewards `estimated_balance` pays for; absent while the cost is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_rewards_available: Option<i64>,
}

pub async fn show(
    State(state): State<PosState>,
    Path(card): Path<String>,
) -> Result<Json<CardView>, ApiError> {
    Ok(Json(view(&state, card).await?))
}

/// What the till knows of one program on one card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub balance: i64,
    /// What one reward costs, as the cloud last said; unknown before it said anything.
    pub reward_cost: Option<i64>,
}

pub async fn estimate(state: &PosState, card: &str, program: &str) -> Result<Estimate, ApiError> {
    let view = view(state, card.to_owned()).await?;
    Ok(view.balances.iter().find(|b| b.program == program).map_or(
        Estimate {
            balance: 0,
            reward_cost: None,
        },
        |b| Estimate {
            balance: b.estimated_balance,
            reward_cost: b.reward_cost,
        },
    ))
}

/// The cloud's last word on the card, when it said anything.
async fn cloud_card(state: &PosState, card: &str) -> Result<Option<CloudCard>, ApiError> {
    let cache = state.cards.clone();
    let key = card.to_owned();
    tokio::task::spawn_blocking(move || cache.get(&key))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| ApiError::Internal(e.into()))
}

/// The card's block, as the cloud last said.
pub async fn block_of(state: &PosState, card: &str) -> Result<Option<CardBlock>, ApiError> {
    Ok(cloud_card(state, card).await?.and_then(|c| c.blocked))
}

async fn view(state: &PosState, card: String) -> Result<CardView, ApiError> {
    let pending = pending_for(state, card.clone()).await?;
    let (cloud_at, blocked, mut programs) = match cloud_card(state, &card).await? {
        Some(c) => (Some(c.at), c.blocked, c.balances),
        None => (None, None, BTreeMap::new()),
    };
    // A program only pending transactions know of yet starts from nothing.
    for t in &pending {
        programs
            .entry(t.program.clone())
            .or_insert_with(|| CloudBalance {
                program: t.program.clone(),
                kind: kind_of(t.op).into(),
                balance: 0,
                rewards_available: 0,
                reward_cost: None,
                flagged: false,
            });
    }
    let costs: BTreeMap<String, i64> = programs
        .iter()
        .filter_map(|(p, b)| Some((p.clone(), b.reward_cost?)))
        .collect();
    let deltas = effects(&pending, &costs);
    let balances = programs
        .into_values()
        .map(|b| {
            let estimated = b
                .balance
                .saturating_add(deltas.get(&b.program).copied().unwrap_or(0));
            TillBalance {
                estimated_rewards_available: b
                    .reward_cost
                    .filter(|c| *c > 0)
                    .map(|c| estimated.max(0) / c),
                program: b.program,
                kind: b.kind,
                balance: b.balance,
                rewards_available: b.rewards_available,
                reward_cost: b.reward_cost,
                flagged: b.flagged,
                estimated_balance: estimated,
            }
        })
        .collect();
    Ok(CardView {
        card,
        balances,
        cloud_at,
        blocked,
        pending,
    })
}

/// The unit a program counts in, as an op that adds to it shows.
fn kind_of(op: TxnOp) -> &'static str {
    match op {
        TxnOp::Stamp => "stamps",
        TxnOp::Earn => "points",
        TxnOp::Redeem | TxnOp::Reverse => "unknown",
    }
}

async fn pending_for(state: &PosState, card: String) -> Result<Vec<Txn>, ApiError> {
    state.read(move |r| r.pending_transactions_of(&card)).await
}

/// What pending transactions do to each program's balance. An `earn` given only as an
/// amount counts 0 here: its points depend on the program's rate, which the cloud knows.
/// A redemption takes `qty` times the reward's cost, as the ledger will (nothing, where the
/// cost is unknown: only a cashier's override redeems there).
fn effects(pending: &[Txn], costs: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    let effect = |t: &Txn| -> i64 {
        let qty = t.qty.unwrap_or(0);
        match t.op {
            TxnOp::Stamp | TxnOp::Earn => i64::try_from(qty).unwrap_or(0),
            TxnOp::Redeem => costs
                .get(&t.program)
                .and_then(|cost| rules::redemption_cost(qty, *cost))
                .map_or(0, |cost| -cost),
            TxnOp::Reverse => 0,
        }
    };
    let mut balances = BTreeMap::new();
    for t in pending {
        let undone = pending
            .iter()
            .any(|r| r.op == TxnOp::Reverse && r.reverses.as_ref() == Some(&t.tx_id));
        let delta = if undone { 0 } else { effect(t) };
        let balance = balances.entry(t.program.clone()).or_insert(0);
        *balance = i64::saturating_add(*balance, delta);
    }
    balances
}
