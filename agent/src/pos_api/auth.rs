//! Bearer-token check for the POS API; `ferry_shared::Token` compares in constant time.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, PosState};

pub use ferry_shared::Token;

pub async fn require_token(
    State(state): State<PosState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if state.token.matches(token) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::Unauthorized("wrong token")),
        None => Err(ApiError::Unauthorized(
            "missing Authorization: Bearer TOKEN",
        )),
    }
}
