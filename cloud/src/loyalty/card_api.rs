//! `POST /v1/cards/{card}/{block,unblock,replace,merge,review}` (README: card lifecycle):
//! what a store manager does for a customer whose card is lost, doubled or overdrawn. Each
//! takes a reason, and is audited with it in the same database transaction.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::routing::post;
use axum::{Json, Router};
use ferry_shared::openapi::ErrorDoc;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::{CardBalances, LoyaltyApi, card_balances, check_card_scope, check_id, record};
use super::lifecycle::{self, Handover, Moved};
use crate::http::{ApiError, Caller};

pub fn routes() -> Router<LoyaltyApi> {
    Router::new()
        .route("/v1/cards/{card}/block", post(block))
        .route("/v1/cards/{card}/unblock", post(unblock))
        .route("/v1/cards/{card}/review", post(review))
        .route("/v1/cards/{card}/replace", post(replace))
        .route("/v1/cards/{card}/merge", post(merge))
}

/// Why: kept in the audit trail (and, for a block, on the card).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
}

/// `replace`'s body: the customer's new card, never used before.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    #[schema(min_length = 1, max_length = 128)]
    pub new_card: String,
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
}

/// `merge`'s body: the card, in use, that takes this one's balances.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Merger {
    #[schema(min_length = 1, max_length = 128)]
    pub into: String,
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
}

/// What a replace or merge did, and the card that now holds the balances.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HandedOver {
    pub moved: Moved,
    pub card: CardBalances,
}

fn parse<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| ApiError::invalid("invalid_body", e.to_string()))
}

fn check_reason(reason: &str) -> Result<(), ApiError> {
    let max = ferry_shared::limits::MAX_TEXT_LEN;
    if reason.trim().is_empty() || reason.len() > max || reason.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_reason",
            format!("reason: 1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

/// Runs a lifecycle step on `card` for `caller`, audited as `action`, and answers the
/// card as it is afterwards.
async fn step(
    api: LoyaltyApi,
    caller: Caller,
    card: String,
    action: &'static str,
    reason: Reason,
    work: fn(&mut dyn super::apply::LedgerTx, &str, &str) -> Result<(), super::LedgerError>,
) -> Result<Json<CardBalances>, ApiError> {
    check_id("card", &card)?;
    check_reason(&reason.reason)?;
    check_card_scope(&api, &caller, &card).await?;
    let audit = record(&caller, action, &card, json!(reason));
    let view = api
        .pool
        .run(move |l| {
            l.audited(
                |tx| work(tx, &card, &reason.reason),
                |_| Some(audit.clone()),
            )?;
            card_balances(l, &card)
        })
        .await?;
    Ok(Json(view))
}

#[utoipa::path(post, path = "/v1/cards/{card}/block", tag = "loyalty", request_body = Reason,
    params(("card" = String, Path, max_length = 128)),
    responses((status = 200, body = CardBalances), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 404, body = ErrorDoc), (status = 409, body = ErrorDoc)))]
pub async fn block(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(card): Path<String>,
    raw: Bytes,
) -> Result<Json<CardBalances>, ApiError> {
    step(
        api,
        caller,
        card,
        "block_card",
        parse(&raw)?,
        lifecycle::block,
    )
    .await
}

#[utoipa::path(post, path = "/v1/cards/{card}/unblock", tag = "loyalty", request_body = Reason,
    params(("card" = String, Path, max_length = 128)),
    responses((status = 200, body = CardBalances), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 404, body = ErrorDoc), (status = 409, body = ErrorDoc)))]
pub async fn unblock(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(card): Path<String>,
    raw: Bytes,
) -> Result<Json<CardBalances>, ApiError> {
    step(
        api,
        caller,
        card,
        "unblock_card",
        parse(&raw)?,
        |tx, card, _| lifecycle::unblock(tx, card),
    )
    .await
}

#[utoipa::path(post, path = "/v1/cards/{card}/review", tag = "loyalty", request_body = Reason,
    params(("card" = String, Path, max_length = 128)),
    responses((status = 200, body = CardBalances), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 404, body = ErrorDoc), (status = 409, body = ErrorDoc)))]
pub async fn review(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(card): Path<String>,
    raw: Bytes,
) -> Result<Json<CardBalances>, ApiError> {
    step(
        api,
        caller,
        card,
        "review_card",
        parse(&raw)?,
        |tx, card, _| lifecycle::review(tx, card),
    )
    .await
}

/// Moves `card`'s balances to `to` and blocks it, for `caller`, audited as `how`.
async fn hand_over(
    api: LoyaltyApi,
    caller: Caller,
    card: String,
    to: String,
    how: Handover,
    reason: String,
) -> Result<Json<HandedOver>, ApiError> {
    check_id("card", &card)?;
    check_id("the other card", &to)?;
    check_reason(&reason)?;
    check_card_scope(&api, &caller, &card).await?;
    let action = match how {
        Handover::Replace => "replace_card",
        Handover::Merge => {
            check_card_scope(&api, &caller, &to).await?;
            "merge_card"
        }
    };
    let reason_text = reason.clone();
    let audit = move |moved: &Moved| {
        Some(record(
            &caller,
            action,
            &moved.from,
            json!({ "to": moved.to, "moved": moved.moved, "reason": reason }),
        ))
    };
    let (moved, view) = api
        .pool
        .run(move |l| {
            let programs: Vec<String> = l.programs()?.into_iter().map(|(id, _)| id).collect();
            let moved = l.audited(
                |tx| lifecycle::hand_over(tx, &programs, &card, &to, how, &reason_text),
                audit,
            )?;
            Ok((moved, card_balances(l, &to)?))
        })
        .await?;
    Ok(Json(HandedOver { moved, card: view }))
}

#[utoipa::path(post, path = "/v1/cards/{card}/replace", tag = "loyalty",
    request_body = Replacement,
    params(("card" = String, Path, max_length = 128)),
    responses((status = 200, body = HandedOver), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 404, body = ErrorDoc), (status = 409, body = ErrorDoc)))]
pub async fn replace(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(card): Path<String>,
    raw: Bytes,
) -> Result<Json<HandedOver>, ApiError> {
    let body: Replacement = parse(&raw)?;
    hand_over(
        api,
        caller,
        card,
        body.new_card,
        Handover::Replace,
        body.reason,
    )
    .await
}

#[utoipa::path(post, path = "/v1/cards/{card}/merge", tag = "loyalty", request_body = Merger,
    params(("card" = String, Path, max_length = 128)),
    responses((status = 200, body = HandedOver), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 404, body = ErrorDoc), (status = 409, body = ErrorDoc)))]
pub async fn merge(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(card): Path<String>,
    raw: Bytes,
) -> Result<Json<HandedOver>, ApiError> {
    let body: Merger = parse(&raw)?;
    hand_over(api, caller, card, body.into, Handover::Merge, body.reason).await
}
