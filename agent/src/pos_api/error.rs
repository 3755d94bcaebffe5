//! One error type for the API: 4xx answers say why; 5xx answers log the cause and say little.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// A redemption the till's estimate does not cover: it needs `needed` (qty times the
    /// reward's cost) and the card holds `balance`; `needed` is unknown until the cloud has
    /// sent the card's balances for the program once.
    #[error("{}", insufficient(*balance, *needed))]
    InsufficientBalance { balance: i64, needed: Option<i64> },
    /// The cloud has said the card is blocked (lost, replaced, merged).
    #[error("{}", blocked(reason, successor.as_deref()))]
    CardBlocked {
        reason: String,
        successor: Option<String>,
    },
    /// The idempotency key was used before for a different transaction (`tx_id`): a key
    /// names one request, so the new one is refused rather than answered with the old.
    #[error("idempotency_key was used before for a different transaction ({tx_id}); use a new key")]
    IdempotencyMismatch { tx_id: String },
    #[error("the spool cannot store another transaction")]
    SpoolFull,
    /// The disk is full: nothing was stored; retry once space is freed.
    #[error("the disk is full; nothing was stored")]
    DiskFull,
    /// The storage failed; whether the transaction was stored is unknown until a retry
    /// with the same idempotency key, which gets the stored outcome if it was.
    #[error("the storage failed; retry with the same idempotency_key")]
    Storage,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

fn blocked(reason: &str, successor: Option<&str>) -> String {
    match successor {
        Some(card) => format!("the card is blocked ({reason}); its balances are on card {card}"),
        None => format!("the card is blocked ({reason})"),
    }
}

fn insufficient(balance: i64, needed: Option<i64>) -> String {
    match needed {
        Some(needed) => {
            format!("the redemption needs {needed} and the card's estimated balance is {balance}")
        }
        None => format!(
            "the card's estimated balance is {balance}, and what a reward costs in this program \
             is not known here yet (the cloud has not sent the card's balances for it)"
        ),
    }
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Invalid { code, .. } => (StatusCode::BAD_REQUEST, *code),
            Self::InsufficientBalance { .. } => (StatusCode::CONFLICT, "insufficient_balance"),
            Self::CardBlocked { .. } => (StatusCode::CONFLICT, "card_blocked"),
            Self::IdempotencyMismatch { .. } => (StatusCode::CONFLICT, "idempotency_mismatch"),
            Self::SpoolFull => (StatusCode::INSUFFICIENT_STORAGE, "spool_full"),
            // The spool writer has logged the cause, once per window.
            Self::DiskFull => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            Self::Storage => (StatusCode::SERVICE_UNAVAILABLE, "storage_error"),
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "POS API request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let body = json!({"error": {"code": code, "message": self.to_string()}});
        (status, Json(body)).into_response()
    }
}
