//! Integration tests of the real `ferry-agent` binary against a real Mosquitto.
//! One test binary (to keep link time low); one module per behaviour.

mod check;
mod clock;
mod crash;
mod enroll;
mod faults;
mod guard;
mod hostile;
mod link;
mod mtls;
mod outage;
mod pacing;
mod pos_crash;
mod power_cut;
mod remote_config;
mod serial;
mod slow_clients;
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

/// Drains `data_dir`'s spool with a stock agent that has no sources (in `dir/drain`), and
/// checks that every seq from 1 to the spool's last reached `collector`; returns the last.
pub async fn drain_and_check_every_seq(
    dir: &Path,
    data_dir: &Path,
    device: &str,
    broker_url: &str,
    collector: &ferry_tests::collector::Collector,
) -> u64 {
    use std::time::Duration;
    let drain_dir = dir.join("drain");
    std::fs::create_dir_all(&drain_dir).expect("drain dir");
    let mut drain = AgentProc::new(
        BIN,
        &drain_dir,
        &format!(
            "device_id = \"{device}\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{broker_url}\"\n{FAST}\n",
            data_dir.display()
        ),
    );
    drain.start();
    ferry_tests::wait_until(Duration::from_secs(60), "the drain", || {
        drain.status_u64("pending") == 0
    })
    .await;
    let last = drain.status_u64("last_seq");
    ferry_tests::wait_until(
        Duration::from_secs(30),
        "every seq at the subscriber",
        || collector.seen().seqs_of(device).len() as u64 >= last,
    )
    .await;
    let seqs = collector.seen().seqs_of(device);
    assert_eq!(seqs.len() as u64, last, "a gap in 1..={last}");
    assert_eq!(
        (seqs.first().copied(), seqs.last().copied()),
        (Some(1), Some(last))
    );
    drain.terminate();
    last
}
