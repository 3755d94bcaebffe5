//! The POS API as an OpenAPI 3.1 document, for POS vendors (`GET /v1/openapi.json`,
//! `ferry-agent openapi`, and `docs/openapi/agent.json`, which a test keeps current). The
//! schemas are the handlers' own types; every operation but the open ones needs the token.

#![allow(dead_code)] // The operations are declarations for the document, never called.

use ferry_shared::openapi::ErrorDoc;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, SecurityRequirement};

use super::cards::{CardView, TillBalance};
use super::transactions::{Accepted, PosTransaction};
use crate::spool::SpoolStatus;
use crate::status::AgentStatus;

#[utoipa::path(post, path = "/v1/transactions", tag = "pos", request_body = PosTransaction,
    responses(
        (status = 202, body = Accepted, description = "durable in the spool"),
        (status = 200, body = Accepted, description = "the idempotency key was accepted before for this request"),
        (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc),
        (status = 409, body = ErrorDoc, description = "insufficient_balance, idempotency_mismatch"),
        (status = 503, body = ErrorDoc, description = "storage_error: retry with the same key"),
        (status = 507, body = ErrorDoc, description = "spool_full, disk_full: nothing stored")))]
fn transactions() {}

#[utoipa::path(get, path = "/v1/cards/{card}", tag = "pos",
    params(("card" = String, Path)),
    responses((status = 200, body = CardView), (status = 401, body = ErrorDoc)))]
fn card() {}

#[utoipa::path(get, path = "/v1/status", tag = "pos",
    responses((status = 200, body = AgentStatus), (status = 401, body = ErrorDoc)))]
fn status() {}

#[utoipa::path(get, path = "/healthz", tag = "open",
    responses((status = 200, content_type = "text/plain", body = String)))]
fn healthz() {}

#[utoipa::path(get, path = "/metrics", tag = "open",
    responses((status = 200, content_type = "text/plain", body = String,
               description = "Prometheus text")))]
fn metrics() {}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "open",
    responses((status = 200, description = "this document", body = Object),
              (status = 429, description = "too many requests from this address (Retry-After)")))]
fn openapi() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry-agent POS API",
        description = "Loyalty transactions from the till's POS software, answered once durable on the till, online or not. Errors are {\"error\": {\"code\", \"message\"}}."
    ),
    paths(transactions, card, status, healthz, metrics, openapi),
    components(schemas(
        ErrorDoc,
        PosTransaction,
        Accepted,
        CardView,
        TillBalance,
        AgentStatus,
        SpoolStatus
    ))
)]
struct PosApi;

/// The routes that need no token.
const OPEN: &[&str] = &["/healthz", "/metrics", "/v1/openapi.json"];

pub fn document() -> Document {
    let mut doc = PosApi::openapi();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    for (path, item) in doc.paths.paths.iter_mut() {
        if OPEN.contains(&path.as_str()) {
            continue;
        }
        for op in [item.get.as_mut(), item.post.as_mut()]
            .into_iter()
            .flatten()
        {
            op.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
        }
    }
    doc
}

/// The document as the API serves it and `docs/openapi/agent.json` holds it.
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

    #[test]
    fn the_committed_copy_is_current_and_carries_the_limits() {
        let now: serde_json::Value = serde_json::from_str(&json()).expect("json");
        let committed: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/openapi/agent.json"))
                .expect("committed json");
        assert!(
            now == committed,
            "docs/openapi/agent.json is stale: run `cargo xtask openapi`"
        );
        let txn = &now["components"]["schemas"]["PosTransaction"]["properties"];
        assert_eq!(
            txn["qty"]["maximum"],
            serde_json::json!(ferry_shared::limits::MAX_QTY),
            "{txn}"
        );
        assert_eq!(
            txn["amount_minor"]["maximum"],
            serde_json::json!(ferry_shared::limits::MAX_AMOUNT_MINOR)
        );
        let paths: Vec<&String> = now["paths"].as_object().expect("paths").keys().collect();
        assert_eq!(
            paths,
            [
                "/healthz",
                "/metrics",
                "/v1/cards/{card}",
                "/v1/openapi.json",
                "/v1/status",
                "/v1/transactions"
            ]
        );
    }
}
