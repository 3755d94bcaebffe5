//! One error type for the cloud's APIs: `{"error": {"code", "message"}}` (README: loyalty core).
//! 4xx answers say why; 5xx answers log the cause and say little.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A bearer token that was checked and refused (an expired JWT, say), with why.
    #[error("{0}")]
    Refused(String),
    /// A known caller whose role may not do this; the message names the role needed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The request is well formed but the ledger's state refuses it (a brand with stores
    /// cannot go); the message says what stands in the way.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    TooLarge(String),
    /// The database cannot be reached or refused the work: worth retrying.
    #[error("the database is unavailable; retry")]
    Unavailable(#[source] anyhow::Error),
    /// The sign-in provider did not answer as it should; the message says how.
    #[error("the sign-in provider: {0}")]
    Provider(String),
    /// This process was not configured for the call.
    #[error("{0}")]
    NotConfigured(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Unauthorized(_) | Self::Refused(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Invalid { code, .. } => (StatusCode::BAD_REQUEST, *code),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, *code),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, *code),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Unavailable(cause) => {
                tracing::error!(error = format!("{cause:#}"), "database unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::NotConfigured(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_configured"),
            Self::Provider(problem) => {
                tracing::warn!(problem = %problem, "the sign-in provider failed");
                (StatusCode::BAD_GATEWAY, "provider_unavailable")
            }
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "API request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let body = json!({"error": {"code": code, "message": self.to_string()}});
        (status, Json(body)).into_response()
    }
}
