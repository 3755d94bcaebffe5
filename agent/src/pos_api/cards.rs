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

#[derive(Debug, Serialize)]
pub struct CardView {
    pub card: String,
    /// Last balances heard from the cloud, per program.
    pub cloud_balances: BTreeMap<String, i64>,
    /// When the cloud read `cloud_balances`; absent when it never sent any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_at: Option<ferry_shared::Timestamp>,
    /// Cloud balance plus the effect of pending local transactions, per program.
    pub estimated_balances: BTreeMap<String, i64>,
    pub pending: Vec<Txn>,
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
    let (view, costs) = view_and_costs(state, card.to_owned()).await?;
    Ok(Estimate {
        balance: view.estimated_balances.get(program).copied().unwrap_or(0),
        reward_cost: costs.get(program).copied(),
    })
}

async fn view(state: &PosState, card: String) -> Result<CardView, ApiError> {
    Ok(view_and_costs(state, card).await?.0)
}

/// The card's view, and each program's reward cost as the cloud last sent it.
async fn view_and_costs(
    state: &PosState,
    card: String,
) -> Result<(CardView, BTreeMap<String, i64>), ApiError> {
    let pending = pending_for(state, card.clone()).await?;
    let cache = state.cards.clone();
    let key = card.clone();
    let cloud = tokio::task::spawn_blocking(move || cache.get(&key))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut costs = BTreeMap::new();
    let mut cloud_balances = BTreeMap::new();
    let mut cloud_at = None;
    if let Some(c) = cloud {
        cloud_at = Some(c.at);
        for (program, b) in c.balances {
            if let Some(cost) = b.reward_cost {
                costs.insert(program.clone(), cost);
            }
            cloud_balances.insert(program, b.balance);
        }
    }
    let mut estimated_balances = cloud_balances.clone();
    for (program, delta) in effects(&pending, &costs) {
        let balance = estimated_balances.entry(program).or_insert(0);
        *balance = balance.saturating_add(delta);
    }
    let view = CardView {
        card,
        cloud_balances,
        cloud_at,
        estimated_balances,
        pending,
    };
    Ok((view, costs))
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
