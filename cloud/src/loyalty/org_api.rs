//! `/v1/brands` and `/v1/stores/{id}` (README: loyalty model): the organisation, written by
//! admins and read by everyone who sees figures. `GET /v1/stores`, the list, is the
//! dashboards'.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use ferry_shared::openapi::ErrorDoc;
use serde::Serialize;
use serde_json::json;

use super::api::{LoyaltyApi, check_id, record};
use super::org::{self, Brand, BrandFields, Store, StoreFields};
use crate::http::{ApiError, Caller};

pub fn routes() -> Router<LoyaltyApi> {
    Router::new()
        .route("/v1/brands", get(list_brands))
        .route(
            "/v1/brands/{id}",
            get(show_brand).put(put_brand).delete(delete_brand),
        )
        .route(
            "/v1/stores/{id}",
            get(show_store).put(put_store).delete(delete_store),
        )
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Brands {
    brands: Vec<Brand>,
}

fn body<T: serde::de::DeserializeOwned>(
    code: &'static str,
    body: &[u8],
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, ApiError> {
    let value: T =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(code, e.to_string()))?;
    check(&value).map_err(|problem| ApiError::invalid(code, problem))?;
    Ok(value)
}

#[utoipa::path(get, path = "/v1/brands", tag = "organisation",
    responses((status = 200, body = Brands), (status = 401, body = ErrorDoc),
              (status = 403, body = ErrorDoc)))]
pub async fn list_brands(State(api): State<LoyaltyApi>) -> Result<Json<Brands>, ApiError> {
    let brands = api.pool.run(|l| l.brands()).await?;
    Ok(Json(Brands { brands }))
}

#[utoipa::path(get, path = "/v1/brands/{id}", tag = "organisation",
    params(("id" = String, Path, max_length = 128)),
    responses((status = 200, body = Brand), (status = 401, body = ErrorDoc),
              (status = 403, body = ErrorDoc), (status = 404, body = ErrorDoc)))]
pub async fn show_brand(
    State(api): State<LoyaltyApi>,
    Path(id): Path<String>,
) -> Result<Json<Brand>, ApiError> {
    check_id("brand id", &id)?;
    let key = id.clone();
    api.pool
        .run(move |l| l.brand(&key))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_brand", format!("no brand {id:?}")))
}

#[utoipa::path(put, path = "/v1/brands/{id}", tag = "organisation", request_body = BrandFields,
    params(("id" = String, Path, max_length = 128)),
    responses((status = 200, body = Brand), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc)))]
pub async fn put_brand(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Result<Json<Brand>, ApiError> {
    check_id("brand id", &id)?;
    let brand: BrandFields = body("invalid_brand", &raw, BrandFields::check)?;
    let audit = record(&caller, "put_brand", &id, json!(brand));
    let stored = api
        .pool
        .run(move |l| {
            l.audited(
                |tx| org::put_brand(tx, &id, &brand),
                |_| Some(audit.clone()),
            )?;
            l.brand(&id)
        })
        .await?;
    stored
        .map(Json)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a brand just written is gone")))
}

#[utoipa::path(delete, path = "/v1/brands/{id}", tag = "organisation",
    params(("id" = String, Path, max_length = 128)),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorDoc),
              (status = 403, body = ErrorDoc), (status = 404, body = ErrorDoc),
              (status = 409, body = ErrorDoc, description = "the brand still has stores")))]
pub async fn delete_brand(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(api, caller, "brand", id, org::delete_brand).await
}

#[utoipa::path(get, path = "/v1/stores/{id}", tag = "organisation",
    params(("id" = String, Path, max_length = 128)),
    responses((status = 200, body = Store), (status = 401, body = ErrorDoc),
              (status = 403, body = ErrorDoc), (status = 404, body = ErrorDoc)))]
pub async fn show_store(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Store>, ApiError> {
    check_id("store id", &id)?;
    if !caller.covers(&id) {
        return Err(ApiError::Forbidden(format!(
            "this token ({}) sees stores {:?} only",
            caller.name, caller.stores
        )));
    }
    let key = id.clone();
    api.pool
        .run(move |l| l.store(&key))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_store", format!("no store {id:?}")))
}

#[utoipa::path(put, path = "/v1/stores/{id}", tag = "organisation", request_body = StoreFields,
    params(("id" = String, Path, max_length = 128)),
    responses((status = 200, body = Store), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 409, body = ErrorDoc, description = "the brand is not a brand")))]
pub async fn put_store(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Result<Json<Store>, ApiError> {
    check_id("store id", &id)?;
    let store: StoreFields = body("invalid_store", &raw, StoreFields::check)?;
    let audit = record(&caller, "put_store", &id, json!(store));
    let stored = api
        .pool
        .run(move |l| {
            l.audited(
                |tx| org::put_store(tx, &id, &store),
                |_| Some(audit.clone()),
            )?;
            l.store(&id)
        })
        .await?;
    stored
        .map(Json)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a store just written is gone")))
}

#[utoipa::path(delete, path = "/v1/stores/{id}", tag = "organisation",
    params(("id" = String, Path, max_length = 128)),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorDoc),
              (status = 403, body = ErrorDoc), (status = 404, body = ErrorDoc),
              (status = 409, body = ErrorDoc, description = "tills are registered there")))]
pub async fn delete_store(
    State(api): State<LoyaltyApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(api, caller, "store", id, org::delete_store).await
}

/// Deletes the `what` (`brand` or `store`) named `id` with `work`, audited as `delete_{what}`
/// in the same transaction: 204, or 404 `unknown_{what}`.
async fn delete(
    api: LoyaltyApi,
    caller: Caller,
    what: &'static str,
    id: String,
    work: fn(&mut dyn super::LedgerTx, &str) -> Result<bool, super::LedgerError>,
) -> Result<StatusCode, ApiError> {
    let (action, code, label) = match what {
        "brand" => ("delete_brand", "unknown_brand", "brand id"),
        _ => ("delete_store", "unknown_store", "store id"),
    };
    check_id(label, &id)?;
    let (key, audit) = (id.clone(), record(&caller, action, &id, json!({})));
    let deleted = api
        .pool
        .run(move |l| {
            l.audited(
                |tx| work(tx, &key),
                |deleted| deleted.then(|| audit.clone()),
            )
        })
        .await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(code, format!("no {what} {id:?}")))
    }
}
