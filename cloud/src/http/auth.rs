//! `Authorization: Bearer TOKEN` on every API call; `ferry_shared::Token` compares in
//! constant time and never prints itself.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use ferry_shared::Token;

use super::ApiError;

pub async fn require_token(
    State(token): State<Arc<Token>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(header) if token.matches_header(header) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::Unauthorized("wrong token")),
        None => Err(ApiError::Unauthorized(
            "missing Authorization: Bearer TOKEN",
        )),
    }
}
