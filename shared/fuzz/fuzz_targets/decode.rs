#![no_main]
//! Any byte string is either a valid envelope or a typed refusal, never a panic; and a
//! valid envelope survives a serialise/decode round trip unchanged.

use ferry_shared::{DeviceId, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let device = DeviceId::new("ws-001").expect("static id");
    if let Ok(env) = decode(data, &device) {
        let json = serde_json::to_vec(&env).expect("valid envelopes serialise");
        assert_eq!(decode(&json, &device).expect("and decode again"), env);
    }
});
