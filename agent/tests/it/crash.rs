//! SIGKILL at random moments loses nothing: every seq from 1 to last_seq arrives.

use std::time::Duration;

use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use ferry_tests::wait_until;
use rand::Rng;

use crate::{FAST, agent, simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_and_drain_loses_nothing() {
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Each run of the process writes 50k readings and a few hundred transactions.
    let sources = format!(
        "{}{}",
        simulator("weather", 0, 50_000),
        simulator("pos", 2, 300)
    );
    let mut agent = agent(dir.path(), "crash-1", &broker.url(), FAST, &sources);

    let mut rng = rand::rng();
    let mut kills = 0;
    for _ in 0..4 {
        agent.start();
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
        // `status` must work beside a running agent.
        let live = agent.status();
        assert!(live["last_seq"].is_u64(), "{live}");
        assert!(
            agent.is_running(),
            "agent died on its own:\n{}",
            agent.log()
        );
        agent.kill9();
        kills += 1;
    }
    assert!(kills >= 3);

    // The final run only drains, so that `last_seq` stays put while we check.
    drop(agent);
    let mut agent = crate::agent(dir.path(), "crash-1", &broker.url(), FAST, "");
    agent.start();
    wait_until(Duration::from_secs(180), "the final drain", || {
        agent.status_u64("pending") == 0
    })
    .await;
    let last_seq = agent.status_u64("last_seq");
    assert!(last_seq >= 50_000, "simulators wrote {last_seq}");
    wait_until(
        Duration::from_secs(30),
        "every seq at the subscriber",
        || collector.seen().seqs_of("crash-1").len() as u64 == last_seq,
    )
    .await;
    let seen = collector.seen();
    let seqs = seen.seqs_of("crash-1");
    assert_eq!(seqs.first(), Some(&1));
    assert_eq!(
        seqs.last(),
        Some(&last_seq),
        "every seq from 1 to last_seq, no gap"
    );
    assert_eq!(
        seen.spools_of("crash-1"),
        1,
        "SIGKILL never recreated the spool"
    );
    assert!(seen.rejects.is_empty(), "{:?}", seen.rejects);
    assert_eq!(agent.status_u64("evicted_total"), 0);
    drop(seen);
    assert_eq!(agent.terminate(), Some(0), "clean exit on SIGTERM");
}
