//! Remote configuration over Ferry's retained topics on a real Mosquitto: applied without
//! a seq gap, refused with the key named, kept across a reboot without the broker.

use std::time::Duration;

use ferry_shared::DeviceId;
use ferry_shared::fleet;
use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use ferry_tests::fleet::Watcher;
use ferry_tests::wait_until;
use serde_json::json;

use crate::{FAST, agent, simulator};

/// How many records the agent appends in `window`, read from its spool.
async fn appended_in(agent: &ferry_tests::agent::AgentProc, window: Duration) -> u64 {
    let before = agent.status_u64("last_seq");
    tokio::time::sleep(window).await;
    agent.status_u64("last_seq") - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_config_is_applied_without_a_gap_refused_by_key_and_kept_offline() {
    let name = "remote-1";
    let id = DeviceId::new(name).expect("id");
    let mut broker = Mosquitto::start();
    let collector = Collector::start(broker.port).await;
    let watcher = Watcher::start(broker.port, &[&fleet::config_reported_topic(&id)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = agent(
        dir.path(),
        name,
        &broker.url(),
        FAST,
        &simulator("weather", 500, 0),
    );
    // The log level the document sets applies only where FERRY_LOG does not.
    agent.env("FERRY_LOG", "");
    agent.start();
    wait_until(Duration::from_secs(20), "the first records", || {
        collector.seen().seqs_of(name).len() >= 2
    })
    .await;
    let slow = appended_in(&agent, Duration::from_secs(2)).await;
    assert!(slow <= 6, "500 ms apart: {slow} in 2 s");

    // 1. A faster interval, applied in place.
    let faster = json!({"version": 1, "config": {
        "sources": [{"type": "simulator", "profile": "weather", "interval_ms": 20}],
        "mqtt": {"status_interval_s": 5},
        "log_level": "debug"
    }});
    watcher
        .publish_retained(&fleet::config_topic(&id), &faster)
        .await;
    let reported = watcher
        .wait_for(
            &fleet::config_reported_topic(&id),
            Duration::from_secs(30),
            "version 1 applied",
            |v| v["version"] == 1,
        )
        .await;
    assert!(reported["applied_at"].is_string(), "{reported}");
    assert!(reported.get("error").is_none(), "{reported}");
    let fast = appended_in(&agent, Duration::from_secs(2)).await;
    assert!(
        fast >= 30,
        "20 ms apart: only {fast} in 2 s\n{}",
        agent.log()
    );
    assert!(agent.is_running(), "{}", agent.log());
    // Sources and pacing change in place: the connection stays.
    assert!(
        agent.log().contains("sources restarted"),
        "applied in place:\n{}",
        agent.log()
    );
    assert_eq!(
        agent.log().matches("mqtt connected").count(),
        1,
        "{}",
        agent.log()
    );
    assert!(
        agent.log().contains("DEBUG"),
        "log_level applied:\n{}",
        agent.log()
    );

    // 2. Bad documents: refused, key named, the running configuration stays.
    for (version, config, key) in [
        (2, json!({"mqtt": {"gzip_level": 12}}), "mqtt.gzip_level"),
        (3, json!({"device_id": "someone-else"}), "device_id"),
        (
            4,
            json!({"sources": [{"type": "serial", "path": "/dev/ttyUSB0", "format": "kv", "sensor": "t", "baud": 0}]}),
            "sources[0].baud",
        ),
    ] {
        watcher
            .publish_retained(
                &fleet::config_topic(&id),
                &json!({"version": version, "config": config}),
            )
            .await;
        let refused = watcher
            .wait_for(
                &fleet::config_reported_topic(&id),
                Duration::from_secs(30),
                "a refusal",
                |v| v["version"] == version,
            )
            .await;
        let error = refused["error"].as_str().unwrap_or_default();
        assert!(error.contains(key), "version {version}: {refused}");
        assert!(refused.get("applied_at").is_none(), "{refused}");
    }
    let still_fast = appended_in(&agent, Duration::from_secs(2)).await;
    assert!(
        still_fast >= 30,
        "the applied config stays: {still_fast} in 2 s"
    );

    // A new gzip level (this link's is 1) takes a new envelope builder: the pipeline is rebuilt, still with
    // the spool's seqs going on.
    let rebuilt = json!({"version": 5, "config": {
        "sources": [{"type": "simulator", "profile": "weather", "interval_ms": 20}],
        "mqtt": {"gzip_level": 9}
    }});
    watcher
        .publish_retained(&fleet::config_topic(&id), &rebuilt)
        .await;
    let applied = watcher
        .wait_for(
            &fleet::config_reported_topic(&id),
            Duration::from_secs(30),
            "version 5 applied",
            |v| v["version"] == 5,
        )
        .await;
    assert!(applied["applied_at"].is_string(), "{applied}");
    assert!(
        agent.log().contains("restarting the pipeline"),
        "{}",
        agent.log()
    );

    // 3. A reboot with the broker down keeps the last applied document.
    agent.kill9();
    broker.stop();
    agent.start();
    let offline = appended_in(&agent, Duration::from_secs(2)).await;
    assert!(
        offline >= 30,
        "offline reboot runs the stored config: {offline} in 2 s\n{}",
        agent.log()
    );
    broker.resume();

    // Nothing was lost or skipped across the rebuilds, the refusals and the reboot.
    agent.terminate();
    // The drain runs the file alone: the stored document would start the simulator again.
    std::fs::remove_file(dir.path().join("data/fleet/desired.json")).expect("stored document");
    crate::drain_and_check_every_seq(
        dir.path(),
        &dir.path().join("data"),
        name,
        &broker.url(),
        &collector,
    )
    .await;
}
