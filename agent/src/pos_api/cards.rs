//! `GET /v1/cards/{card}`: the best offline knowledge of a card.
//!
//! Balances heard from the cloud arrive with the loyalty core (the `cards` topic); until
//! then the estimate is what the pending local transactions add up to.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use ferry_shared::{Txn, TxnOp};
use serde::Serialize;

use super::{ApiError, PosState};

#[derive(Debug, Serialize)]
pub struct CardView {
    pub card: String,
    /// Last balances heard from the cloud, per program; none yet.
    pub cloud_balances: BTreeMap<String, i64>,
    /// Cloud balance plus the effect of pending local transactions, per program.
    pub estimated_balances: BTreeMap<String, i64>,
    pub pending: Vec<Txn>,
}

pub async fn show(
    State(state): State<PosState>,
    Path(card): Path<String>,
) -> Result<Json<CardView>, ApiError> {
    let pending = pending_for(&state, card.clone()).await?;
    Ok(Json(CardView {
        estimated_balances: effects(&pending),
        cloud_balances: BTreeMap::new(),
        card,
        pending,
    }))
}

/// The estimated balance of one program on one card.
pub async fn estimate(state: &PosState, card: &str, program: &str) -> Result<i64, ApiError> {
    let pending = pending_for(state, card.to_owned()).await?;
    Ok(effects(&pending).get(program).copied().unwrap_or(0))
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
