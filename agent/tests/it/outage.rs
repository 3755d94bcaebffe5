//! The broker goes away for over 10 s mid-run; the agent keeps spooling, reconnects by
//! itself, and nothing is lost.

use std::time::{Duration, Instant};

use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use ferry_tests::wait_until;

use crate::{FAST, agent, simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing_and_agent_reconnects() {
    let mut broker = Mosquitto::start();
    let collector = Collector::start(broker.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // 20 readings/s for the whole test, plus transactions.
    let sources = format!(
        "{}{}",
        simulator("weather", 50, 0),
        simulator("pos", 200, 0)
    );
    let mut agent = agent(dir.path(), "outage-1", &broker.url(), FAST, &sources);
    agent.start();

    wait_until(Duration::from_secs(20), "first records", || {
        collector.seen().seqs_of("outage-1").len() > 20
    })
    .await;
    broker.stop();
    let down_at = Instant::now();
    let before = agent.status_u64("last_seq");
    tokio::time::sleep(Duration::from_secs(11)).await;
    let during = agent.status();
    assert!(
        during["last_seq"].as_u64() > Some(before),
        "the agent kept spooling: {during}"
    );
    assert!(
        during["pending"].as_u64() > Some(0),
        "records wait in the spool: {during}"
    );
    assert!(down_at.elapsed() >= Duration::from_secs(10));
    broker.resume();

    wait_until(
        Duration::from_secs(60),
        "the backlog to drain after the outage",
        || agent.status_u64("pending") < 5,
    )
    .await;
    assert_eq!(agent.terminate(), Some(0));
    let last_seq = agent.status_u64("last_seq");
    assert_eq!(
        agent.status_u64("pending"),
        0,
        "a clean shutdown delivers what is pending while connected: {}",
        agent.status()
    );
    wait_until(Duration::from_secs(20), "every seq", || {
        collector.seen().seqs_of("outage-1").len() as u64 == last_seq
    })
    .await;
    let seqs = collector.seen().seqs_of("outage-1");
    assert_eq!((seqs.first(), seqs.last()), (Some(&1), Some(&last_seq)));
    assert!(
        agent.log().contains("mqtt connection lost"),
        "the agent saw the outage"
    );
    assert!(
        agent.log().matches("mqtt connected").count() >= 2,
        "and reconnected by itself"
    );
    let status = collector
        .seen()
        .status
        .get("outage-1")
        .cloned()
        .expect("a retained status");
    assert_eq!(
        status["online"], false,
        "clean shutdown says offline: {status}"
    );
}
