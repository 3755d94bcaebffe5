#![no_main]
//! What the loyalty API and the POS API do with a transaction's bytes: parse, validate,
//! then the ledger's arithmetic. Any input is a typed refusal or a bounded result, never a
//! panic or a wrap.

use ferry_shared::limits::{MAX_AMOUNT_MINOR, MAX_QTY};
use ferry_shared::{Txn, rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(txn) = serde_json::from_slice::<Txn>(data) else {
        return;
    };
    if txn.validate().is_err() {
        return;
    }
    let qty = txn.qty.unwrap_or(0);
    assert!(qty <= MAX_QTY);
    for cost in [1, 10, 100, i64::from(u32::MAX)] {
        let charged = rules::redemption_cost(qty, cost).expect("a valid qty always fits");
        assert!(rules::next_balance(i64::MIN / 2, -charged).is_some());
    }
    let amount = txn.amount_minor.unwrap_or(0);
    assert!((0..=MAX_AMOUNT_MINOR).contains(&amount));
    for rate in [0.01, 1.0, 10_000.0] {
        assert!(rules::points_for_amount(amount, rate).is_some());
    }
});
