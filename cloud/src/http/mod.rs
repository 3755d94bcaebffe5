//! The cloud's HTTP side: `/healthz` and Prometheus `/metrics`, open to scrapers like the
//! agent's; how the page signs a user in (`/v1/auth`), open too; and the APIs of the roles
//! this process runs, each route open to the callers whose role the table of [`access`]
//! names.

mod access;
mod error;
pub mod oidc;

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::routing::get;
use axum::{Json, Router};
pub use ferry_shared::http_server::PerClient;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use access::{Caller, Credentials, PUBLIC, ROUTES, allowed};
pub use error::ApiError;

/// A role's counters, as Prometheus text. The roles register theirs, so this layer knows
/// none of them.
pub trait RenderMetrics: Send + Sync {
    fn render(&self, out: &mut String);
}

/// What `/metrics` reports: the counters of the roles this process runs, in the order
/// they were registered.
#[derive(Clone, Default)]
pub struct Metrics(Vec<Arc<dyn RenderMetrics>>);

impl Metrics {
    pub fn register(&mut self, role: Arc<dyn RenderMetrics>) {
        self.0.push(role);
    }
}

/// `apis` are the roles' routes, if any; they all sit behind `credentials` and the route
/// table, with `/v1/me`. `public` routes (the dashboard page, which holds no data) do not.
pub fn router(
    credentials: Arc<Credentials>,
    metrics: Metrics,
    apis: Option<Router>,
    public: Option<Router>,
    limiter: &PerClient,
) -> Router {
    let mut open = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(render_metrics).with_state(metrics))
        .fallback(|| async { ApiError::not_found("not_found", "no such route") });
    if let Some(public) = public {
        open = open.merge(public);
    }
    // Open to anyone and doing work per call (the provider's, for a token): a budget per
    // client address, 429 beyond it.
    open = open.merge(
        Router::new()
            .route("/v1/auth", get(sign_in))
            .route("/v1/auth/token", axum::routing::post(exchange))
            .with_state(credentials.oidc())
            .route_layer(axum::middleware::from_fn_with_state(
                limiter.clone(),
                PerClient::limit,
            )),
    );
    match apis {
        // axum refuses a route layer on a router without routes, so only here.
        Some(apis) => open.merge(apis.route("/v1/me", get(me)).route_layer(
            axum::middleware::from_fn_with_state(credentials, access::authorize),
        )),
        None => open,
    }
}

/// How the page signs a user in: `{"oidc": null}` without a provider.
async fn sign_in(State(oidc): State<Option<Arc<oidc::Oidc>>>) -> Result<Json<Value>, ApiError> {
    let Some(oidc) = oidc else {
        return Ok(Json(json!({ "oidc": null })));
    };
    let sign_in = oidc
        .sign_in()
        .await
        .map_err(|e| ApiError::Provider(e.to_string()))?;
    Ok(Json(json!({ "oidc": sign_in })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    code: String,
    code_verifier: String,
    redirect_uri: String,
}

/// The page's authorization code for the user's ID token, checked.
/// Three fields of at most 2 KiB each, and their JSON.
const EXCHANGE_MAX_BYTES: usize = 8 * 1024;

async fn exchange(
    State(oidc): State<Option<Arc<oidc::Oidc>>>,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    // Refused before a byte of the body is read: this route is open to anyone.
    let oidc = oidc.ok_or_else(|| ApiError::not_found("not_found", "no [http.oidc] here"))?;
    let body = axum::body::to_bytes(body, EXCHANGE_MAX_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge(format!("at most {EXCHANGE_MAX_BYTES} bytes")))?;
    let ask: Exchange = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("invalid_request", e.to_string()))?;
    // What goes to the provider is bounded like any other input.
    if [&ask.code, &ask.code_verifier, &ask.redirect_uri]
        .iter()
        .any(|v| v.is_empty() || v.len() > 2048)
    {
        return Err(ApiError::invalid(
            "invalid_request",
            "each field: 1 to 2048 bytes",
        ));
    }
    let (token, user) = oidc
        .exchange(&ask.code, &ask.code_verifier, &ask.redirect_uri)
        .await
        .map_err(|e| match e {
            oidc::OidcError::Fetch(problem) => ApiError::Provider(problem),
            oidc::OidcError::NoRole(_) => ApiError::Forbidden(e.to_string()),
            other => ApiError::Refused(other.to_string()),
        })?;
    Ok(Json(json!({
        "id_token": token,
        "name": user.name,
        "role": user.role,
        "stores": user.stores,
        "brands": user.brands,
    })))
}

/// Who the token is: what a page needs to show only what its caller may use.
async fn me(Extension(caller): Extension<Caller>) -> Json<Value> {
    let routes: Vec<Value> = ROUTES
        .iter()
        .filter(|(_, _, roles)| roles.contains(&caller.role))
        .map(|(method, path, _)| json!(format!("{method} {path}")))
        .collect();
    Json(json!({
        "name": caller.name,
        "role": caller.role,
        "stores": caller.stores,
        "brands": caller.brands,
        "routes": routes,
    }))
}

async fn render_metrics(State(metrics): State<Metrics>) -> String {
    let mut out = String::new();
    for role in &metrics.0 {
        role.render(&mut out);
    }
    out
}

/// Serves until `shutdown`, with header-read and idle timeouts and a connection cap, then
/// finishes what is in flight for a few seconds at most (`ferry_shared::http_server`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    ferry_shared::http_server::serve(listener, app, Default::default(), shutdown).await;
    Ok(())
}
