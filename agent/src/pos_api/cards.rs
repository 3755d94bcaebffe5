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
use ferry_shared::{Txn, TxnOp};
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

/// The estimated balance of one program on one card.
pub async fn estimate(state: &PosState, card: &str, program: &str) -> Result<i64, ApiError> {
    let view = view(state, card.to_owned()).await?;
    Ok(view.estimated_balances.get(program).copied().unwrap_or(0))
}

async fn view(state: &PosState, card: String) -> Result<CardView, ApiError> {
    let pending = pending_for(state, card.clone()).await?;
    let cache = state.cards.clone();
    let key = card.clone();
    let cloud = tokio::task::spawn_blocking(move || cache.get(&key))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| ApiError::Internal(e.into()))?;
    let (cloud_balances, cloud_at): (BTreeMap<String, i64>, _) = match cloud {
        Some(c) => (
            c.balances
                .into_iter()
                .map(|(program, b)| (program, b.balance))
                .collect(),
            Some(c.at),
        ),
        None => (BTreeMap::new(), None),
    };
    let mut estimated_balances = cloud_balances.clone();
    for (program, delta) in effects(&pending) {
        *estimated_balances.entry(program).or_insert(0) += delta;
    }
    Ok(CardView {
        card,
        cloud_balances,
        cloud_at,
        estimated_balances,
        pending,
    })
}

async fn pending_for(state: &PosState, card: String) -> Result<Vec<Txn>, ApiError> {
    state.read(move |r| r.pending_transactions_of(&card)).await
}

/// What pending transactions do to each program's balance. An `earn` given only as an
/// amount counts 0 here: its points depend on the program's rate, which the cloud knows.
fn effects(pending: &[Txn]) -> BTreeMap<String, i64> {
    let effect = |t: &Txn| -> i64 {
        let qty = t.qty.unwrap_or(0) as i64;
        match t.op {
            TxnOp::Stamp | TxnOp::Earn => qty,
            TxnOp::Redeem => -qty,
            TxnOp::Reverse => 0,
        }
    };
    let mut balances = BTreeMap::new();
    for t in pending {
        let undone = pending
            .iter()
            .any(|r| r.op == TxnOp::Reverse && r.reverses.as_ref() == Some(&t.tx_id));
        let delta = if undone { 0 } else { effect(t) };
        *balances.entry(t.program.clone()).or_insert(0) += delta;
    }
    balances
}
