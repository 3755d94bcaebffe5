//! What both APIs' OpenAPI documents share: the error body every 4xx and 5xx answer
//! carries.

use serde::Serialize;
use utoipa::ToSchema;

/// `{"error": {"code", "message"}}`, every error's body.
#[derive(Serialize, ToSchema)]
pub struct ErrorDoc {
    error: ErrorDetailDoc,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetailDoc {
    /// Stable, for programs: `unauthorized`, `invalid_field`, ... (README).
    code: String,
    /// For people.
    message: String,
}
