//! With a low configured quota the observed publish rate stays within it.

use std::time::Duration;

use ferry_shared::Stream;
use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;

use crate::{agent, simulator};

const QUOTA: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_stay_within_the_configured_quota() {
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // 400 readings/s: far more than 20 envelopes/s would carry one at a time, so the pacer,
    // not the source, sets the pace.
    let mut agent = agent(
        dir.path(),
        "pace-1",
        &broker.url(),
        &format!("publishes_per_s = {QUOTA}"),
        &simulator("weather", 2, 0),
    );
    agent.start();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log());

    let seen = collector.seen();
    let times: Vec<_> = seen
        .arrivals
        .iter()
        .filter(|a| a.stream == Stream::Telemetry)
        .map(|a| a.at)
        .collect();
    assert!(
        times.len() >= 30,
        "enough publishes to judge the pace: {}",
        times.len()
    );
    // In any window of one second, at most QUOTA publishes (+1 for the window's edges).
    let worst = times
        .iter()
        .enumerate()
        .map(|(i, start)| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        worst <= QUOTA + 1,
        "{worst} publishes within one second, quota {QUOTA}"
    );
    let span = times[times.len() - 1]
        .duration_since(times[0])
        .as_secs_f64();
    let rate = (times.len() - 1) as f64 / span;
    assert!(
        rate <= QUOTA as f64 * 1.05,
        "average {rate:.1}/s over {span:.1} s, quota {QUOTA}/s"
    );
}
