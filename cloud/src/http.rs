//! The cloud's HTTP side: `/healthz` and Prometheus `/metrics`, open to scrapers like the
//! agent's; the loyalty and dashboard APIs, which need the token, join them here.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::ingest::IngestMetrics;

#[derive(Clone)]
pub struct HttpState {
    pub ingest: Arc<IngestMetrics>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> String {
    let mut out = String::new();
    state.ingest.render(&mut out);
    out
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
