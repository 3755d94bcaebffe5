//! The cloud's HTTP side: `/healthz` and Prometheus `/metrics`, open to scrapers like the
//! agent's, and the APIs of the roles this process runs, behind the token.

mod access;
mod error;
pub mod oidc;

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use access::{Caller, Credentials, ROUTES, allowed};
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
) -> Router {
    let mut open = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(render_metrics).with_state(metrics))
        .fallback(|| async { ApiError::not_found("not_found", "no such route") });
    if let Some(public) = public {
        open = open.merge(public);
    }
    match apis {
        // axum refuses a route layer on a router without routes, so only here.
        Some(apis) => open.merge(apis.route("/v1/me", get(me)).route_layer(
            axum::middleware::from_fn_with_state(credentials, access::authorize),
        )),
        None => open,
    }
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
