//! The cloud's API as an OpenAPI 3.1 document, for integrators (`GET /v1/openapi.json`,
//! `ferry-cloud openapi`, and `docs/openapi/cloud.json`, which a test keeps current).
//!
//! The schemas come from the types the handlers use; the operations are declared here,
//! one per route, and [`document`] adds to each the roles [`http::ROUTES`] gives it, as its
//! security requirement and as `x-roles`. A test checks that the document's operations
//! and the route table are the same set, and the suite runs schemathesis against the
//! running binary with this document.
//!
//! Answers the handlers build as JSON by hand are described by the `*Doc` types below.

#![allow(dead_code)] // The operations are declarations for the document, never called.

use ferry_shared::openapi::ErrorDoc;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, SecurityRequirement};
use utoipa::{OpenApi, ToSchema};

use crate::config::ApiRole;
use crate::http::{self, PUBLIC};
use crate::loyalty::api::{CardBalances, Results};
use crate::loyalty::{
    AuditEntry, Balance, DeviceKind, LedgerEntry, Outcome, Program, RegisteredDevice, Registration,
    Status, StoreDay,
};
use ferry_shared::{Txn, TxnOp};

/// A program with its id.
#[derive(Serialize, ToSchema)]
pub struct ProgramDoc {
    id: String,
    #[serde(flatten)]
    program: Program,
}

#[derive(Serialize, ToSchema)]
pub struct ProgramsDoc {
    programs: Vec<ProgramDoc>,
}

/// One transaction, or up to 500.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SubmitDoc {
    One(Box<Txn>),
    Batch {
        #[schema(max_items = 500)]
        transactions: Vec<Txn>,
    },
}

#[derive(Serialize, ToSchema)]
pub struct FlaggedDoc {
    flagged: Vec<String>,
    /// The entries that took the flagged cards below zero.
    overdrafts: Vec<crate::loyalty::Overdraft>,
}

#[derive(Serialize, ToSchema)]
pub struct CardTransactionsDoc {
    card: String,
    transactions: Vec<LedgerEntry>,
    /// The `before` of the next page; null on the last.
    next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RegistryDoc {
    devices: Vec<RegisteredDevice>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditDoc {
    entries: Vec<AuditEntry>,
    next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct MeDoc {
    name: String,
    role: ApiRole,
    stores: Vec<String>,
    /// Role `store`: the brands it speaks for (their stores are in `stores`).
    brands: Vec<String>,
    /// `METHOD /path` of every route this caller may call.
    routes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct StoresDoc {
    /// Every store the caller sees: the records, and any store a transaction named.
    stores: Vec<String>,
    /// The store records among them (`PUT /v1/stores/{id}`).
    records: Vec<crate::loyalty::Store>,
}

#[derive(Serialize, ToSchema)]
pub struct StoreLoyaltyDoc {
    store: String,
    days: Vec<StoreDay>,
}

#[derive(Serialize, ToSchema)]
pub struct SignInDoc {
    /// Null without `[http.oidc]`.
    #[schema(value_type = Option<Object>)]
    oidc: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct ExchangeDoc {
    #[schema(max_length = 2048)]
    code: String,
    #[schema(max_length = 2048)]
    code_verifier: String,
    #[schema(max_length = 2048)]
    redirect_uri: String,
}

#[derive(Serialize, ToSchema)]
pub struct SignedInDoc {
    id_token: String,
    name: String,
    role: ApiRole,
    stores: Vec<String>,
}

/// An answer of the dashboards: see the README for its fields.
#[derive(Serialize, ToSchema)]
pub struct DashboardDoc {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    fields: serde_json::Value,
}

// ---- the operations ----

#[utoipa::path(get, path = "/v1/me", tag = "access",
    responses((status = 200, body = MeDoc), (status = 401, body = ErrorDoc)))]
fn me() {}

#[utoipa::path(get, path = "/v1/auth", tag = "access",
    responses((status = 200, body = SignInDoc), (status = 429, description = "too many requests from this address (Retry-After)"),
               (status = 502, body = ErrorDoc)))]
fn auth() {}

#[utoipa::path(post, path = "/v1/auth/token", tag = "access", request_body = ExchangeDoc,
    responses((status = 200, body = SignedInDoc), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 404, body = ErrorDoc),
              (status = 429, description = "too many requests from this address (Retry-After)"),
              (status = 502, body = ErrorDoc)))]
fn auth_token() {}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "access",
    responses((status = 200, description = "this document", body = Object),
              (status = 429, description = "too many requests from this address (Retry-After)")))]
fn openapi() {}

#[utoipa::path(get, path = "/v1/programs", tag = "loyalty",
    responses((status = 200, body = ProgramsDoc), (status = 401, body = ErrorDoc),
              (status = 403, body = ErrorDoc)))]
fn programs() {}

#[utoipa::path(put, path = "/v1/programs/{id}", tag = "loyalty", request_body = Program,
    params(("id" = String, Path, max_length = 128)),
    responses((status = 200, body = ProgramDoc), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc)))]
fn put_program() {}

#[utoipa::path(post, path = "/v1/transactions", tag = "loyalty", request_body = SubmitDoc,
    params(("balances" = Option<bool>, Query, description = "also answer each card's balances")),
    responses((status = 200, body = Results, description = "each transaction's status, in order"),
              (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc),
              (status = 403, body = ErrorDoc), (status = 413, body = ErrorDoc)))]
fn transactions() {}

#[utoipa::path(get, path = "/v1/cards", tag = "loyalty",
    params(("flagged" = bool, Query, description = "must be true: only flagged cards are listed")),
    responses((status = 200, body = FlaggedDoc), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc)))]
fn cards() {}

#[utoipa::path(get, path = "/v1/cards/{card}", tag = "loyalty",
    params(("card" = String, Path, max_length = 128)),
    responses((status = 200, body = CardBalances), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 404, body = ErrorDoc)))]
fn card() {}

#[utoipa::path(get, path = "/v1/cards/{card}/transactions", tag = "loyalty",
    params(("card" = String, Path, max_length = 128),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000),
           ("before" = Option<i64>, Query)),
    responses((status = 200, body = CardTransactionsDoc), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 404, body = ErrorDoc)))]
fn card_transactions() {}

#[utoipa::path(put, path = "/v1/devices/{id}", tag = "registry", request_body = Registration,
    params(("id" = String, Path, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")),
    responses((status = 200, body = RegisteredDevice), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc)))]
fn put_device() {}

#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "registry",
    params(("id" = String, Path, max_length = 64)),
    responses((status = 204, description = "retired"), (status = 401, body = ErrorDoc),
              (status = 403, body = ErrorDoc), (status = 404, body = ErrorDoc)))]
fn retire_device() {}

#[utoipa::path(get, path = "/v1/registry", tag = "registry",
    responses((status = 200, body = RegistryDoc), (status = 401, body = ErrorDoc),
              (status = 403, body = ErrorDoc)))]
fn registry() {}

#[utoipa::path(get, path = "/v1/audit", tag = "access",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000),
           ("before" = Option<i64>, Query)),
    responses((status = 200, body = AuditDoc), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc)))]
fn audit() {}

/// The dashboards' read-only operations: their answers are described in the README.
macro_rules! dashboard {
    ($name:ident, $path:literal $(, ($param:literal, $kind:ident))*) => {
        #[utoipa::path(get, path = $path, tag = "dashboards",
            params($(($param = Option<String>, $kind)),*),
            responses((status = 200, body = DashboardDoc), (status = 400, body = ErrorDoc),
                      (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
                      (status = 404, body = ErrorDoc), (status = 503, body = ErrorDoc)))]
        fn $name() {}
    };
}

dashboard!(devices, "/v1/devices");
dashboard!(device, "/v1/devices/{id}", ("id", Path));
dashboard!(
    readings,
    "/v1/devices/{id}/readings",
    ("id", Path),
    ("metric", Query),
    ("from", Query),
    ("to", Query),
    ("step", Query)
);
dashboard!(alarms, "/v1/alarms");
dashboard!(stations, "/v1/stations");
dashboard!(
    compare,
    "/v1/compare",
    ("metric", Query),
    ("devices", Query),
    ("from", Query),
    ("to", Query),
    ("step", Query)
);
dashboard!(stores, "/v1/stores");
dashboard!(
    store_loyalty,
    "/v1/stores/{id}/loyalty",
    ("id", Path),
    ("from", Query),
    ("to", Query)
);
/// A figures period: `today`, `7d` (the default) or `30d`.
#[derive(Serialize, ToSchema)]
pub enum PeriodDoc {
    #[serde(rename = "today")]
    Today,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
}

/// The period's figures per store, busiest first, with totals.
#[utoipa::path(get, path = "/v1/loyalty", tag = "dashboards",
    params(("period" = Option<PeriodDoc>, Query)),
    responses((status = 200, body = DashboardDoc), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 503, body = ErrorDoc)))]
fn loyalty() {}

/// Sales per store, day and hour, and the busiest hours.
#[utoipa::path(get, path = "/v1/traffic", tag = "dashboards",
    params(("period" = Option<PeriodDoc>, Query)),
    responses((status = 200, body = DashboardDoc), (status = 400, body = ErrorDoc),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 503, body = ErrorDoc)))]
fn traffic() {}

#[utoipa::path(get, path = "/v1/events", tag = "dashboards",
    responses((status = 200, content_type = "text/event-stream",
               description = "Server-Sent Events: reading, device, alarm, resync"),
              (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc)))]
fn events() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry-cloud",
        description = "The loyalty core, the device registry, the dashboards and who may use them. Errors are {\"error\": {\"code\", \"message\"}}."
    ),
    paths(
        me,
        auth,
        auth_token,
        openapi,
        programs,
        put_program,
        transactions,
        cards,
        card,
        card_transactions,
        put_device,
        retire_device,
        registry,
        audit,
        devices,
        device,
        readings,
        alarms,
        events,
        stations,
        compare,
        stores,
        store_loyalty,
        loyalty,
        traffic,
        crate::loyalty::card_api::block,
        crate::loyalty::card_api::unblock,
        crate::loyalty::card_api::review,
        crate::loyalty::card_api::replace,
        crate::loyalty::card_api::merge,
        crate::loyalty::org_api::list_brands,
        crate::loyalty::org_api::show_brand,
        crate::loyalty::org_api::put_brand,
        crate::loyalty::org_api::delete_brand,
        crate::loyalty::org_api::show_store,
        crate::loyalty::org_api::put_store,
        crate::loyalty::org_api::delete_store,
        crate::fleet::api::list_configs,
        crate::fleet::api::show_config,
        crate::fleet::api::put_config,
        crate::fleet::api::create_rollout,
        crate::fleet::api::show_rollout,
        crate::fleet::api::list_rollouts,
        crate::fleet::api::audit_log
    ),
    components(schemas(
        ErrorDoc,
        Txn,
        TxnOp,
        Program,
        Balance,
        CardBalances,
        Outcome,
        Status,
        LedgerEntry,
        Registration,
        DeviceKind,
        RegisteredDevice,
        AuditEntry,
        StoreDay,
        ApiRole,
        PeriodDoc,
        ferry_shared::CardBlock,
        crate::loyalty::Brand,
        crate::loyalty::BrandFields,
        crate::loyalty::Store,
        crate::loyalty::StoreFields,
        crate::loyalty::Moved,
        crate::loyalty::Overdraft,
        crate::loyalty::card_api::Reason,
        crate::loyalty::card_api::Replacement,
        crate::loyalty::card_api::Merger,
        crate::loyalty::card_api::HandedOver,
        crate::loyalty::org_api::Brands,
        crate::fleet::ConfigView,
        crate::fleet::DesiredView,
        crate::fleet::JobView,
        crate::fleet::RolloutView,
        crate::fleet::api::NewRollout,
        crate::fleet::api::FleetAudit
    ))
)]
struct CloudApi;

/// The document, each operation with the roles that may call it.
pub fn document() -> Document {
    let mut doc = CloudApi::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "a configured token, or a signed-in user's JWT; the roles of each \
                     operation are in its x-roles",
                ))
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in item_operations(item) {
            if PUBLIC.iter().any(|(m, p)| m == method && p == path) {
                continue;
            }
            let roles: Vec<&str> = http::allowed(method, path)
                .iter()
                .map(|r| r.name())
                .collect();
            op.security = Some(vec![SecurityRequirement::new(
                "bearer",
                roles.iter().map(|r| r.to_string()),
            )]);
            let extensions = op.extensions.get_or_insert_with(Default::default);
            extensions.insert("x-roles".into(), serde_json::json!(roles));
        }
    }
    doc
}

/// The operations of one path, with their methods.
fn item_operations(
    item: &mut utoipa::openapi::PathItem,
) -> Vec<(
    &'static axum::http::Method,
    &mut utoipa::openapi::path::Operation,
)> {
    use axum::http::Method;
    static GET: Method = Method::GET;
    static PUT: Method = Method::PUT;
    static POST: Method = Method::POST;
    static DELETE: Method = Method::DELETE;
    [
        (&GET, item.get.as_mut()),
        (&PUT, item.put.as_mut()),
        (&POST, item.post.as_mut()),
        (&DELETE, item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

/// The document as the API serves it and `docs/openapi/cloud.json` holds it.
pub fn json() -> String {
    document().to_pretty_json().unwrap_or_default()
}

/// [`json`] rendered once: the route is open to anyone, and building the document for each
/// of many clients would cost the CPU every other request needs.
pub fn served() -> &'static str {
    static JSON: std::sync::LazyLock<String> = std::sync::LazyLock::new(json);
    JSON.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ROUTES;

    #[test]
    fn the_document_and_the_route_table_are_the_same_set() {
        let mut doc = document();
        let mut documented = Vec::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in item_operations(item) {
                documented.push((method.to_string(), path.clone()));
                let public = PUBLIC.iter().any(|(m, p)| m == method && p == path);
                assert_eq!(
                    op.security.is_none(),
                    public,
                    "{method} {path}: a token unless public"
                );
            }
        }
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), (*p).to_owned()))
            .chain(PUBLIC.iter().map(|(m, p)| (m.to_string(), (*p).to_owned())))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }

    #[test]
    fn the_schemas_carry_the_trust_boundarys_limits() {
        use ferry_shared::limits::{MAX_AMOUNT_MINOR, MAX_QTY, MAX_TEXT_LEN, MAX_TX_ID_LEN};
        let doc: serde_json::Value = serde_json::from_str(&json()).expect("json");
        let txn = &doc["components"]["schemas"]["Txn"]["properties"];
        assert_eq!(txn["qty"]["maximum"], serde_json::json!(MAX_QTY), "{txn}");
        assert_eq!(
            txn["amount_minor"]["maximum"],
            serde_json::json!(MAX_AMOUNT_MINOR)
        );
        assert_eq!(txn["card"]["maxLength"], serde_json::json!(MAX_TEXT_LEN));
        assert_eq!(txn["tx_id"]["maxLength"], serde_json::json!(MAX_TX_ID_LEN));
        assert_eq!(
            doc["paths"]["/v1/programs/{id}"]["put"]["x-roles"],
            serde_json::json!(["admin"])
        );
    }

    #[test]
    fn the_committed_copy_is_current() {
        let committed = include_str!("../../docs/openapi/cloud.json");
        let now: serde_json::Value = serde_json::from_str(&json()).expect("json");
        let then: serde_json::Value = serde_json::from_str(committed).expect("committed json");
        assert!(
            now == then,
            "docs/openapi/cloud.json is stale: run `cargo xtask openapi`"
        );
    }
}
