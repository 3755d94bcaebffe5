//! Loyalty arithmetic that both the till's offline check and the ledger do, written once,
//! so that a till refuses exactly what the ledger would charge; and checked, so that no
//! input wraps a balance.

/// What redeeming `qty` rewards costs, in the program's unit (stamps or points); `None`
/// when it does not fit.
pub fn redemption_cost(qty: u64, reward_cost: i64) -> Option<i64> {
    i64::try_from(qty).ok()?.checked_mul(reward_cost)
}

/// Whole points for `amount_minor` (hundredths of the currency unit) at `per_unit` points
/// per unit, rounded down; `None` when the result is not a sane number of points.
pub fn points_for_amount(amount_minor: i64, per_unit: f64) -> Option<i64> {
    let points = ((amount_minor as f64 / 100.0) * per_unit).floor();
    // f64 holds every integer below 2^53 exactly; past it a cast would round or saturate.
    (points.is_finite() && (0.0..=MAX_EXACT).contains(&points)).then_some(points as i64)
}

const MAX_EXACT: f64 = 9_007_199_254_740_991.0; // 2^53 - 1

/// `balance + delta`, or `None` when it leaves i64.
pub fn next_balance(balance: i64, delta: i64) -> Option<i64> {
    balance.checked_add(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_never_wraps() {
        assert_eq!(redemption_cost(5, 100), Some(500));
        assert_eq!(redemption_cost(u64::MAX, 1), None);
        assert_eq!(redemption_cost(i64::MAX as u64, 2), None);
        assert_eq!(points_for_amount(450, 1.0), Some(4));
        assert_eq!(points_for_amount(i64::MAX, 1e300), None);
        assert_eq!(points_for_amount(100, f64::NAN), None);
        assert_eq!(points_for_amount(-100, 1.0), None);
        assert_eq!(next_balance(i64::MAX, 1), None);
        assert_eq!(next_balance(-5, 3), Some(-2));
    }
}
