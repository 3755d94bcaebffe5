//! The loyalty core's HTTP API (README: loyalty core). Handlers parse and check; the ledger decides.
//!
//! `POST /v1/transactions` judges each transaction on its own: one that does not parse is
//! `rejected` with reason `invalid`, and the rest of the batch still applies. With
//! `?balances=true` the answer also carries `cards`: the balances, after the batch, of every
//! card it applied or recognised, which the ingest's router sends back to devices. A
//! transaction that carries `device` (the ingest's router adds the device it came from) is
//! judged against the device registry as well (`PUT`/`DELETE /v1/devices/{id}`).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ferry_shared::Txn;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    AuditRecord, Balance, Ledger, LedgerEntry, LedgerError, LedgerPool, LoyaltyMetrics, Outcome,
    Program, Registration, Status, Submitted, ledger, registry,
};
use crate::config::ApiRole;
use crate::http::{ApiError, Caller};

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Sqlite(_) | LedgerError::Postgres(_) => Self::Unavailable(e.into()),
            LedgerError::Refused { code, message } => Self::Conflict { code, message },
            other => Self::Internal(other.into()),
        }
    }
}

/// Transactions in one request, at most (README: loyalty core).
pub const MAX_BATCH: usize = 500;
const MAX_ID_LEN: usize = 128;
const MAX_PAGE: u32 = 1000;

#[derive(Clone)]
pub struct LoyaltyApi {
    pub pool: Arc<LedgerPool>,
    pub metrics: Arc<LoyaltyMetrics>,
}

pub fn routes(api: LoyaltyApi) -> Router {
    Router::new()
        .route("/v1/programs", get(list_programs))
        .route("/v1/programs/{id}", put(put_program))
        .route("/v1/transactions", post(submit))
        .route("/v1/cards", get(list_cards))
        .route("/v1/cards/{card}", get(show_card))
        .route("/v1/cards/{card}/transactions", get(card_transactions))
        .route("/v1/devices/{id}", put(put_device).delete(retire_device))
        .route("/v1/registry", get(list_registry))
        .route("/v1/audit", get(audit_log))
        .merge(super::org_api::routes())
        .merge(super::card_api::routes())
        .with_state(api)
}

/// What the audit trail says of a write by `caller`.
pub(super) fn record(
    caller: &Caller,
    action: &'static str,
    target: &str,
    detail: Value,
) -> AuditRecord {
    AuditRecord {
        who: caller.name.clone(),
        role: caller.role.name(),
        action,
        target: target.to_owned(),
        detail,
        request_id: caller.request_id.clone(),
    }
}

/// `GET /v1/audit`: the audit trail, newest first, a page at a time.
async fn audit_log(
    State(api): State<LoyaltyApi>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_limit(page.limit)?;
    let entries = api
        .pool
        .run(move |l| l.audit_log(limit, page.before))
        .await?;
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(json!({ "entries": entries, "next_before": next })))
}

fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            format!("limit: must be 1 to {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// A `store` caller sees a card only once it has a transaction at one of its stores; to
/// it, any other card is unknown.
pub(super) async fn check_card_scope(
    api: &LoyaltyApi,
    caller: &Caller,
    card: &str,
) -> Result<(), ApiError> {
    if caller.role != ApiRole::Store {
        return Ok(());
    }
    let key = card.to_owned();
    let stores = api.pool.run(move |l| l.card_stores(&key)).await?;
    if stores.iter().any(|s| caller.covers(s)) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "unknown_card",
            format!("no transaction for card {card:?} at this token's stores"),
        ))
    }
}

/// A card's balances, as `GET /v1/cards/{card}` answers and the `cards` topic carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardBalances {
    pub card: String,
    pub balances: Vec<Balance>,
    /// Set while the card is blocked: its transactions are rejected `card_blocked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<ferry_shared::CardBlock>,
}

/// The card's balances and block, as the API and the `cards` topic give them.
pub(super) fn card_balances(l: &mut Ledger, card: &str) -> Result<CardBalances, LedgerError> {
    Ok(CardBalances {
        card: card.to_owned(),
        balances: l.balances(card)?,
        blocked: l.card_block(card)?,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Results {
    results: Vec<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cards: Option<Vec<CardBalances>>,
}

#[derive(Debug, Deserialize)]
struct SubmitQuery {
    #[serde(default)]
    balances: bool,
}

pub(super) fn check_id(what: &'static str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_id",
            format!("{what}: must be 1 to {MAX_ID_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

async fn put_program(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_id("program id", &id)?;
    let program: Program = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("invalid_program", e.to_string()))?;
    program
        .check()
        .map_err(|problem| ApiError::invalid("invalid_program", problem))?;
    let body = program_json(&id, &program);
    let audit = record(&caller, "put_program", &id, body.clone());
    api.pool
        .run(move |l| {
            l.audited(
                |tx| ledger::put_program(tx, &id, &program),
                |_| Some(audit.clone()),
            )
        })
        .await?;
    Ok(Json(body))
}

/// `PUT /v1/devices/{id}`: `{"kind": "till", "store": "S-01"}` or `{"kind": "station"}`.
async fn put_device(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    ferry_shared::DeviceId::new(&id)
        .map_err(|e| ApiError::invalid("invalid_device", e.to_string()))?;
    let reg: Registration = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("invalid_registration", e.to_string()))?;
    reg.check()
        .map_err(|problem| ApiError::invalid("invalid_registration", problem))?;
    let audit = record(&caller, "put_device", &id, json!(reg));
    let stored = api
        .pool
        .run(move |l| {
            l.audited(
                |tx| registry::put_device(tx, &id, &reg),
                |_| Some(audit.clone()),
            )?;
            l.device(&id)
        })
        .await?;
    Ok(Json(json!(stored)))
}

/// `DELETE /v1/devices/{id}`: retires it; its transactions are refused from now on.
async fn retire_device(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (key, audit) = (id.clone(), record(&caller, "retire_device", &id, json!({})));
    let retired = api
        .pool
        .run(move |l| {
            l.audited(
                |tx| registry::retire_device(tx, &key),
                |retired| retired.then(|| audit.clone()),
            )
        })
        .await?;
    if retired {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "unknown_device",
            format!("{id:?} is not registered"),
        ))
    }
}

/// `GET /v1/registry`: every registered device.
async fn list_registry(State(api): State<LoyaltyApi>) -> Result<Json<Value>, ApiError> {
    let devices = api.pool.run(|l| l.devices()).await?;
    Ok(Json(json!({ "devices": devices })))
}

fn program_json(id: &str, program: &Program) -> Value {
    let mut v = serde_json::to_value(program).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("id".into(), Value::String(id.to_owned()));
    }
    v
}

async fn list_programs(State(api): State<LoyaltyApi>) -> Result<Json<Value>, ApiError> {
    let programs = api.pool.run(|l| l.programs()).await?;
    let list: Vec<Value> = programs.iter().map(|(id, p)| program_json(id, p)).collect();
    Ok(Json(json!({ "programs": list })))
}

/// One `txn` object, or `{"transactions": [...]}`.
fn parse_batch(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid("not_json", e.to_string()))?;
    let items = match value {
        Value::Object(mut map) if map.contains_key("transactions") => {
            match map.remove("transactions") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(ApiError::invalid(
                        "invalid_batch",
                        "transactions: must be an array",
                    ));
                }
            }
        }
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(ApiError::invalid(
                "invalid_batch",
                "the body must be a txn object or {\"transactions\": [...]}",
            ));
        }
    };
    if items.len() > MAX_BATCH {
        return Err(ApiError::TooLarge(format!(
            "{} transactions; at most {MAX_BATCH} per request",
            items.len()
        )));
    }
    Ok(items)
}

async fn submit(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<SubmitQuery>,
    body: Bytes,
) -> Result<Json<Results>, ApiError> {
    let items = parse_batch(&body)?;
    // A store's token speaks for its stores only: one transaction for another refuses the
    // request, before anything applies.
    if let Some((i, store)) = items.iter().enumerate().find_map(|(i, item)| {
        let store = item
            .get("store")
            .and_then(Value::as_str)
            .unwrap_or_default();
        (!caller.covers(store)).then_some((i, store))
    }) {
        return Err(ApiError::Forbidden(format!(
            "transaction {i} is for store {store:?}; this token ({}) posts for {:?} only",
            caller.name, caller.stores
        )));
    }
    // Each item parses on its own; one that does not is rejected, in its place.
    let mut results: Vec<Option<Outcome>> = Vec::with_capacity(items.len());
    let mut txns = Vec::with_capacity(items.len());
    for item in items {
        let tx_id = item
            .get("tx_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let device = item
            .get("device")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match serde_json::from_value::<Txn>(item) {
            Ok(txn) => {
                results.push(None);
                txns.push(Submitted {
                    txn,
                    device,
                    admin: caller.role == ApiRole::Admin,
                });
            }
            Err(_) => results.push(Some(Outcome {
                tx_id,
                status: Status::Rejected,
                reason: Some("invalid"),
            })),
        }
    }
    let with_balances = query.balances;
    // The router's device transactions are the devices' own record; what a person or a
    // token posts by hand is audited, in the batch's own database transaction.
    let by_hand = (caller.role != ApiRole::Router).then(|| caller.clone());
    let (applied, cards) = api
        .pool
        .run(move |l| {
            let outcomes = l.audited(
                |tx| tx.apply_batch(&txns),
                |outcomes: &Vec<Outcome>| {
                    let caller = by_hand.as_ref()?;
                    let first = outcomes.first()?;
                    Some(record(
                        caller,
                        "transactions",
                        &first.tx_id,
                        json!({ "results": outcomes }),
                    ))
                },
            )?;
            let mut cards = None;
            if with_balances {
                // A card refused as blocked is told too, so the till refuses it from now on.
                let touched: BTreeSet<&str> = txns
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, o)| tells_the_till(o))
                    .map(|(t, _)| t.txn.card.as_str())
                    .collect();
                let mut list = Vec::with_capacity(touched.len());
                for card in touched {
                    list.push(card_balances(l, card)?);
                }
                cards = Some(list);
            }
            Ok((outcomes, cards))
        })
        .await?;
    let mut applied = applied.into_iter();
    let results = results
        .into_iter()
        .map(|slot| slot.or_else(|| applied.next()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the ledger lost an outcome")))?;
    api.metrics.count(&results);
    Ok(Json(Results { results, cards }))
}

/// Whether the devices that sent the transaction should hear the card's balances after it.
pub fn tells_the_till(outcome: &Outcome) -> bool {
    matches!(outcome.status, Status::Applied | Status::Duplicate)
        || outcome.reason == Some("card_blocked")
}

async fn show_card(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(card): Path<String>,
) -> Result<Json<CardBalances>, ApiError> {
    check_id("card", &card)?;
    check_card_scope(&api, &caller, &card).await?;
    let key = card.clone();
    let (known, view) = api
        .pool
        .run(move |l| Ok((l.card_known(&key)?, card_balances(l, &key)?)))
        .await?;
    if !known {
        return Err(ApiError::not_found(
            "unknown_card",
            format!("no transaction for card {card:?} yet"),
        ));
    }
    Ok(Json(view))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

async fn card_transactions(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(card): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    check_id("card", &card)?;
    let limit = page_limit(page.limit)?;
    check_card_scope(&api, &caller, &card).await?;
    let key = card.clone();
    let mut entries: Vec<LedgerEntry> = api
        .pool
        .run(move |l| l.card_entries(&key, limit, page.before))
        .await?;
    // The seq to pass as `before` for the next page, while there may be one.
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    // A store's token sees the entries at its stores; paging stays on the whole ledger.
    entries.retain(|e| caller.covers(&e.store));
    Ok(Json(
        json!({ "card": card, "transactions": entries, "next_before": next }),
    ))
}

#[derive(Debug, Deserialize)]
struct CardsQuery {
    #[serde(default)]
    flagged: bool,
}

/// `GET /v1/cards?flagged=true`: the cards a person should review, and the entries that took
/// them below zero, each with its store and cashier.
async fn list_cards(
    State(api): State<LoyaltyApi>,
    Query(query): Query<CardsQuery>,
) -> Result<Json<Value>, ApiError> {
    if !query.flagged {
        return Err(ApiError::invalid(
            "invalid_query",
            "only ?flagged=true is listed; ask for one card with /v1/cards/{card}",
        ));
    }
    let (cards, overdrafts) = api
        .pool
        .run(|l| {
            let cards = l.flagged_cards()?;
            let mut overdrafts = Vec::new();
            for card in &cards {
                overdrafts.extend(l.overdrafts(card)?);
            }
            Ok((cards, overdrafts))
        })
        .await?;
    Ok(Json(json!({ "flagged": cards, "overdrafts": overdrafts })))
}
