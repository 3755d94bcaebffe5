//! The local HTTP API for POS software (README: POS API), on axum.
//!
//! A transaction is answered 202 only once it is durable in the spool; its idempotency key
//! is stored in the same SQLite transaction (`Spool::append_once`).

mod auth;
mod cards;
mod error;
mod metrics;
pub mod openapi;
mod transactions;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use ferry_shared::DeviceId;
use tokio_util::sync::CancellationToken;

use crate::cards::CardCache;
use crate::sources::SourceMetrics;
use crate::spool::{Spool, SpoolError, SpoolReader};
use crate::uplink::UplinkMetrics;
use ferry_shared::http_server::{self, Limits};

pub use auth::Token;
pub use error::ApiError;

/// What every handler shares: small handles, no locks held across `.await`.
#[derive(Clone)]
pub struct PosState {
    pub device: DeviceId,
    pub spool: Spool,
    pub token: Arc<Token>,
    pub uplink: Arc<UplinkMetrics>,
    pub sources: Arc<SourceMetrics>,
    /// Answers given, by HTTP status, for `/metrics`.
    pub answers: Arc<Mutex<BTreeMap<u16, u64>>>,
    /// The last balances the cloud sent per card.
    pub cards: CardCache,
    /// Held from a redemption's balance check until its record is in the spool, so that
    /// two redemptions at once cannot both spend one balance.
    pub redemptions: Arc<tokio::sync::Mutex<()>>,
}

impl PosState {
    /// Runs `read` on a fresh read-only spool connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&SpoolReader) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let path = Spool::path_in(self.spool.data_dir());
        tokio::task::spawn_blocking(move || read(&SpoolReader::open(&path)?))
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(|e| ApiError::Internal(e.into()))
    }
}

pub fn router(state: PosState) -> Router {
    let authed = Router::new()
        .route("/v1/transactions", post(transactions::submit))
        .route("/v1/cards/{card}", get(cards::show))
        .route("/v1/status", get(metrics::status))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    // Open to anyone on the till's network: a budget per client address (429 beyond it).
    let description = Router::new()
        .route(
            "/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi::served(),
                )
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            http_server::PerClient::open_routes(),
            http_server::PerClient::limit,
        ));
    Router::new()
        .merge(authed)
        .merge(description)
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics::prometheus))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_answers,
        ))
        .with_state(state)
}

/// Serves until `shutdown`, with header-read and idle timeouts and a connection cap, then
/// finishes what is in flight for a few seconds at most (`ferry_shared::http_server`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: PosState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    http_server::serve(listener, router(state), Limits::default(), shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests;
