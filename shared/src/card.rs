//! What the `cards` topic says of a card besides its balances (README: card lifecycle): the
//! ledger's and the till's one type for a blocked card.

use serde::{Deserialize, Serialize};

/// A card a person blocked (lost, stolen, replaced or merged into another). The ledger
/// rejects its transactions with `card_blocked`, and a till that has heard refuses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardBlock {
    pub reason: String,
    /// The card that took its balances, when it was replaced or merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    pub blocked_at: String,
}
