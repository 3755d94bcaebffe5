//! `POST /v1/transactions`: a txn without `tx_id`, plus an optional `idempotency_key`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use ferry_shared::{RecordBody, TxId, Txn, TxnOp, rules};
use serde::{Deserialize, Serialize};

use super::{ApiError, PosState, cards};
use crate::spool::{Keyed, NewRecord, Once, SpoolError};

/// What a POS sends. Unknown fields are refused, so a typo never silently drops data.
/// Serialised (the key left out), it is what an idempotency key stands for.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PosTransaction {
    pub op: TxnOp,
    #[schema(min_length = 1, max_length = 256)]
    pub program: String,
    #[schema(min_length = 1, max_length = 256)]
    pub card: String,
    #[schema(min_length = 1, max_length = 256)]
    pub store: String,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub qty: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub amount_minor: Option<i64>,
    #[serde(default)]
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256)]
    pub receipt: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 128)]
    pub reverses: Option<TxId>,
    #[serde(default, skip_serializing)]
    #[schema(min_length = 1, max_length = 128)]
    pub idempotency_key: Option<String>,
    /// The cashier who rang it up: kept with the transaction in the ledger, so an offline
    /// overdraft names a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub staff: Option<String>,
    /// The cashier's override: redeem even when the offline estimate does not cover it.
    #[serde(default)]
    pub allow_overdraft: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub tx_id: String,
    pub seq: u64,
}

const MAX_KEY_LEN: usize = 128;

pub async fn submit(
    State(state): State<PosState>,
    body: Result<Json<PosTransaction>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Json(req) = body.map_err(rejection)?;
    if let Some(key) = &req.idempotency_key
        && (key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "invalid_field",
            "idempotency_key: 1 to 128 characters without control characters",
        ));
    }
    let tx_id = TxId::new(format!("{}:{}", state.device, ulid::Ulid::new()))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let keyed = match req.idempotency_key.clone() {
        Some(key) => Some(Keyed {
            key,
            request: serde_json::to_string(&req).map_err(|e| ApiError::Internal(e.into()))?,
        }),
        None => None,
    };
    // A replay gets its original answer, whatever the balance says now.
    if let Some(keyed) = keyed.clone()
        && let Some(once) = state.read(move |r| r.idempotency_key(&keyed)).await?
    {
        return answer(&tx_id, Ok(once));
    }

    let txn = Txn {
        tx_id: tx_id.clone(),
        op: req.op,
        program: req.program,
        card: req.card,
        store: req.store,
        qty: req.qty,
        amount_minor: req.amount_minor,
        currency: req.currency,
        receipt: req.receipt,
        reverses: req.reverses,
        // The agent never waits for the cloud's word before accepting a redemption.
        offline: req.op == TxnOp::Redeem,
        staff: req.staff,
    };
    txn.validate()
        .map_err(|e| ApiError::invalid(e.reason_code(), e.to_string()))?;
    // The cloud said the card is blocked: nothing more goes on it here. A till that has
    // not heard yet cannot know, and the ledger rejects what it sends (`card_blocked`).
    // A reversal still goes through, to undo a sale on the card.
    if txn.op != TxnOp::Reverse
        && let Some(block) = cards::block_of(&state, &txn.card).await?
    {
        return Err(ApiError::CardBlocked {
            reason: block.reason,
            successor: block.successor,
        });
    }
    // Held until the record is in the spool: the next redemption's estimate counts it.
    let _turn = if txn.op == TxnOp::Redeem && !req.allow_overdraft {
        let turn = state.redemptions.clone().lock_owned().await;
        let estimate = cards::estimate(&state, &txn.card, &txn.program).await?;
        let needed = estimate
            .reward_cost
            .and_then(|cost| rules::redemption_cost(txn.qty.unwrap_or_default(), cost));
        if needed.is_none_or(|needed| estimate.balance < needed) {
            return Err(ApiError::InsufficientBalance {
                balance: estimate.balance,
                needed,
            });
        }
        Some(turn)
    } else {
        None
    };
    let record = NewRecord::new(&crate::clock::record(RecordBody::Txn(txn)))
        .map_err(|e| ApiError::invalid(e.reason_code(), e.to_string()))?;

    let stored = match keyed {
        Some(keyed) => {
            state
                .spool
                .append_once(keyed, tx_id.to_string(), record)
                .await
        }
        None => state
            .spool
            .append(vec![record])
            .await
            .map(|a| Once::Accepted { seq: a.first }),
    };
    answer(&tx_id, stored)
}

/// The POS's answer: 202 for a transaction stored now (as `tx_id`), 200 with the original
/// answer for a replay.
fn answer(
    tx_id: &TxId,
    stored: Result<Once, SpoolError>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    match stored {
        Ok(Once::Accepted { seq }) => Ok((
            StatusCode::ACCEPTED,
            Json(Accepted {
                tx_id: tx_id.to_string(),
                seq,
            }),
        )),
        Ok(Once::Replayed { tx_id, seq }) => Ok((StatusCode::OK, Json(Accepted { tx_id, seq }))),
        Ok(Once::Mismatch { tx_id }) => Err(ApiError::IdempotencyMismatch { tx_id }),
        Err(SpoolError::Full { .. }) => Err(ApiError::SpoolFull),
        Err(SpoolError::DiskFull) => Err(ApiError::DiskFull),
        Err(SpoolError::Storage(_)) => Err(ApiError::Storage),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}

/// Turns axum's JSON rejections into the API's error shape, naming the field.
fn rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            let message = e.body_text();
            let code = if message.contains("missing field") {
                "missing_field"
            } else if message.contains("unknown field") {
                "unknown_field"
            } else {
                "invalid_field"
            };
            ApiError::invalid(code, message)
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::invalid("invalid_json", e.body_text()),
        JsonRejection::MissingJsonContentType(e) => {
            ApiError::invalid("invalid_content_type", e.body_text())
        }
        other => ApiError::invalid("invalid_request", other.body_text()),
    }
}
