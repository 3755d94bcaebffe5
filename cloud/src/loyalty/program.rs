//! Loyalty programs (README: loyalty core): what a stamp or a point is worth, and what a reward costs.

use serde::{Deserialize, Serialize};

/// Points lapse after at most ten years; beyond, date arithmetic would leave the calendar.
pub const MAX_EXPIRY_DAYS: u32 = 3650;
/// Points per currency unit, at most: more is a typo, and would overflow points.
pub const MAX_POINTS_PER_UNIT: f64 = 10_000.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Program {
    /// `stamps_per_reward` stamps make one reward.
    Stamps {
        stamps_per_reward: u32,
        reward: String,
    },
    /// Points earned at `points_per_currency_unit` per major currency unit (amounts are in
    /// minor units, taken as hundredths); a reward costs `reward_cost` points. Points older
    /// than `expiry_days` lapse, when set.
    Points {
        points_per_currency_unit: f64,
        reward: String,
        reward_cost: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expiry_days: Option<u32>,
    },
}

impl Program {
    /// The problem with this program, naming the field.
    pub fn check(&self) -> Result<(), String> {
        let reward = match self {
            Self::Stamps {
                stamps_per_reward,
                reward,
            } => {
                if *stamps_per_reward == 0 {
                    return Err("stamps_per_reward: must be at least 1".into());
                }
                reward
            }
            Self::Points {
                points_per_currency_unit,
                reward,
                reward_cost,
                expiry_days,
            } => {
                if !(points_per_currency_unit.is_finite()
                    && *points_per_currency_unit > 0.0
                    && *points_per_currency_unit <= MAX_POINTS_PER_UNIT)
                {
                    return Err(format!(
                        "points_per_currency_unit: must be a number above 0, at most {MAX_POINTS_PER_UNIT}"
                    ));
                }
                if *reward_cost == 0 {
                    return Err("reward_cost: must be at least 1".into());
                }
                if let Some(days) = expiry_days
                    && !(1..=MAX_EXPIRY_DAYS).contains(days)
                {
                    return Err(format!("expiry_days: must be 1 to {MAX_EXPIRY_DAYS}"));
                }
                reward
            }
        };
        if reward.is_empty() || reward.len() > 256 {
            return Err("reward: must be 1 to 256 bytes".into());
        }
        Ok(())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stamps { .. } => "stamps",
            Self::Points { .. } => "points",
        }
    }

    /// What one reward costs in the program's unit.
    pub fn reward_cost(&self) -> i64 {
        match self {
            Self::Stamps {
                stamps_per_reward, ..
            } => i64::from(*stamps_per_reward),
            Self::Points { reward_cost, .. } => i64::from(*reward_cost),
        }
    }

    /// Points for an amount in minor units: whole points, rounded down; `None` for a stamps
    /// program, or when the points would be out of range.
    pub fn points_for(&self, amount_minor: i64) -> Option<i64> {
        match self {
            Self::Points {
                points_per_currency_unit,
                ..
            } => ferry_shared::rules::points_for_amount(amount_minor, *points_per_currency_unit),
            Self::Stamps { .. } => None,
        }
    }
}
