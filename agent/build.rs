//! Records when this binary was built, the floor of the clock's rule (`src/clock.rs`): a
//! wall clock that reads earlier than that is wrong. `SOURCE_DATE_EPOCH`, when the builder
//! sets it, wins, so a reproducible build stays reproducible.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let built_at = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    // Not `FERRY_`: cargo passes this to the test binaries too, and an agent they start
    // would read a `FERRY_` variable as a config override.
    println!("cargo:rustc-env=BUILT_AT_UNIX_S={built_at}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}
