//! Bearer-token check, in constant time. The token never reaches a log: `Token` has no
//! `Display`, and its `Debug` is redacted.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, PosState};

pub struct Token(String);

impl Token {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// Compares without an early exit, so the time taken says nothing about how much of a
    /// guess was right. (The length is not secret: tokens are configured, not derived.)
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

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
