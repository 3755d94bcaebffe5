//! Integration tests of the real `ferry-agent` binary against a real Mosquitto.
//! One test binary (to keep link time low); one module per behaviour.

mod check;
mod crash;
mod enroll;
mod faults;
mod hostile;
mod mtls;
mod outage;
mod pacing;
mod pos_crash;
mod remote_config;
mod serial;
mod spool_full;
mod update;

use std::path::Path;

use ferry_tests::agent::AgentProc;

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry-agent");

/// An agent config: `mqtt_extra` lines go into `[mqtt]`, `rest` after it.
pub fn agent(dir: &Path, device: &str, url: &str, mqtt_extra: &str, rest: &str) -> AgentProc {
    let config = format!(
        "device_id = \"{device}\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{url}\"\n{mqtt_extra}\n{rest}\n",
        dir.join("data").display()
    );
    AgentProc::new(BIN, dir, &config)
}

pub fn simulator(profile: &str, interval_ms: u64, count: u64) -> String {
    format!(
        "[[sources]]\ntype = \"simulator\"\nprofile = \"{profile}\"\ninterval_ms = {interval_ms}\ncount = {count}\n"
    )
}

/// Quotas far above what the tests need, where pacing is not under test.
pub const FAST: &str = "publishes_per_s = 10000\nbytes_per_s = 1000000000";
