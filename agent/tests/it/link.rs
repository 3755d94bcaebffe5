//! The agent behind a link of the test's own (`ferry_tests::netns::Link`): a network
//! namespace joined to the broker's by a veth pair, capped with a token bucket or silenced
//! (packets dropped, no RST), as a station on GPRS or behind a dead 3G modem would be.
//!
//! Where the kernel refuses namespaces (not root, or a sandbox without them) each test says
//! so on its output and returns; everywhere CI runs it runs.

use std::time::{Duration, Instant};

use ferry_tests::agent::AgentProc;
use ferry_tests::bridge::Bridge;
use ferry_tests::collector::Collector;
use ferry_tests::netns::Link;
use ferry_tests::wait_until;

use crate::{BIN, simulator};

fn agent_behind(
    link: &Link,
    dir: &std::path::Path,
    device: &str,
    port: u16,
    sources: &str,
) -> AgentProc {
    let config = format!(
        "device_id = \"{device}\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://{}:{port}\"\n\
         status_interval_s = 5\n{sources}",
        dir.join("data").display(),
        link.host_ip
    );
    AgentProc::wrapped(&link.exec_prefix(), BIN, dir, &config)
}

const BACKLOG: u64 = 100_000;

/// Spools a backlog of 100,000 readings while the link is silent, then lets it drain over a
/// link capped at `kbit`: the payload must arrive at no less than 0.8 of the link's rate,
/// with no reconnect and under 1 % resent, and the agent must report what it measured.
async fn drain_over(kbit: u32) {
    let test = format!("drain at {kbit} kbit/s");
    let Some(link) = Link::or_skip(&test) else {
        return;
    };
    link.cap(kbit).expect("tc tbf");
    link.silence().expect("silence");
    let broker = link.broker();
    let collector = Collector::start(broker.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let device = format!("slow-{kbit}");
    let mut agent = agent_behind(
        &link,
        dir.path(),
        &device,
        broker.port,
        &simulator("weather", 0, BACKLOG),
    );
    agent.start();
    wait_until(
        Duration::from_secs(120),
        "the backlog to be spooled",
        || agent.status()["last_seq"].as_u64() == Some(BACKLOG),
    )
    .await;
    let spooled = agent.status();
    // Connect attempts into the silent link failed until now; what counts is after.
    let log_from = agent.log().len();
    link.restore().expect("restore");
    let restored = Instant::now();

    let rate = f64::from(kbit) * 1000.0 / 8.0;
    // The link's own time for the backlog, at 9 bytes a reading, four times over.
    let allowed = Duration::from_secs_f64(BACKLOG as f64 * 9.0 / rate * 4.0 + 60.0);
    wait_until(allowed, "every reading over the slow link", || {
        collector.seen().seqs_of(&device).len() as u64 == BACKLOG
    })
    .await;
    let arrivals = collector.seen().arrivals.clone();
    let (first, last) = (&arrivals[0], &arrivals[arrivals.len() - 1]);
    let span = (last.at - first.at).as_secs_f64();
    // The first envelope's bytes crossed before the span began.
    let bytes: usize = arrivals.iter().skip(1).map(|a| a.bytes).sum();
    let records: usize = arrivals.iter().map(|a| a.records).sum();
    let resent = records as u64 - BACKLOG;
    let ratio = bytes as f64 / span / rate;
    let log = agent.log()[log_from..].to_owned();
    let connects = log.matches("mqtt connected").count();
    let lost = log.matches("mqtt connection lost").count();
    // Once more after the drain: the status file is written with each status message.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let measured = agent.status()["link_bytes_per_s"].as_u64();
    println!(
        "{test}: {BACKLOG} readings ({} pending bytes) in {span:.1} s after the first \
         arrival ({:.1} s after the link returned), {} envelopes, {bytes} payload bytes: \
         {ratio:.2} of the link's rate; {resent} resent; {connects} connect(s); link measured \
         at {measured:?} B/s against {rate} B/s",
        spooled["pending_bytes"],
        (last.at - restored).as_secs_f64(),
        arrivals.len(),
    );
    assert!(
        ratio >= 0.8,
        "{test}: payload at {ratio:.2} of the link's rate"
    );
    assert_eq!(
        (connects, lost),
        (1, 0),
        "{test}: one connection, never lost:\n{log}"
    );
    assert!(
        (resent as f64) < BACKLOG as f64 * 0.01,
        "{test}: {resent} records resent"
    );
    let measured = measured.expect("status reports link_bytes_per_s") as f64;
    // Read after the drain, when the last samples may be of a nearly idle link: it must be
    // there, and printed above; the drain's own ratio is the measure of the window.
    assert!(
        measured > 0.0,
        "{test}: measured {measured} B/s on a {rate} B/s link"
    );
    assert_eq!(agent.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_at_the_rate_of_a_32_kbit_link() {
    drain_over(32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_at_the_rate_of_a_64_kbit_link() {
    drain_over(64).await;
}

/// The first measure: a link fast enough that the old fixed window drained too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_at_the_rate_of_a_256_kbit_link() {
    drain_over(256).await;
}

/// The link goes silent for 90 s mid-flow: the agent notices within its keep-alive,
/// resumes within seconds of the link's return (not after a grown back-off), and every
/// record arrives. A Mosquitto bridge at its defaults goes through the same silence beside
/// it, fed as fast (20 messages a second), and its figures are printed beside the agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_noticed_and_resumed_within_seconds() {
    let test = "silent link";
    let Some(link) = Link::or_skip(test) else {
        return;
    };
    let broker = link.broker();
    let collector = Collector::start(broker.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let device = "silent-1";
    let mut agent = agent_behind(
        &link,
        dir.path(),
        device,
        broker.port,
        &simulator("weather", 50, 0),
    );
    agent.start();
    wait_until(Duration::from_secs(30), "first records", || {
        collector.seen().seqs_of(device).len() > 40
    })
    .await;
    let mut bridge = Bridge::start(&link, broker.port, dir.path(), Duration::from_millis(50)).await;
    wait_until(
        Duration::from_secs(30),
        "the bridge's first messages",
        || bridge.arrivals().len() > 40,
    )
    .await;

    link.silence().expect("silence");
    let silenced = Instant::now();
    let mut noticed = None;
    while silenced.elapsed() < Duration::from_secs(90) {
        if noticed.is_none() && agent.log().contains("mqtt connection lost") {
            noticed = Some(silenced.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let arrived_before = collector.seen().arrivals.len();
    let bridged_before = bridge.arrivals().len();
    link.restore().expect("restore");
    let restored = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "a delivery after the link returned",
        || collector.seen().arrivals.len() > arrived_before,
    )
    .await;
    let resumed = collector.seen().arrivals[arrived_before].at - restored;
    println!(
        "{test}: noticed {:.1} s into a 90 s silence; first delivery {:.2} s after the link returned",
        noticed.map_or(f64::NAN, |d| d.as_secs_f64()),
        resumed.as_secs_f64()
    );
    bridge_figures(test, &mut bridge, bridged_before, restored).await;
    let noticed = noticed.expect("the agent noticed the silent link during it");
    assert!(
        noticed <= Duration::from_secs(2 * 30 + 5),
        "{test}: noticed only after {noticed:?}, beyond two keep-alives"
    );
    // A connect attempt under way when the link returns waits for its next SYN
    // retransmission (up to 4 s apart by then); never a back-off of up to 30 s.
    assert!(
        resumed <= Duration::from_secs(8),
        "{test}: the first delivery came {resumed:?} after the link returned"
    );

    assert_eq!(agent.terminate(), Some(0));
    let last_seq = agent.status_u64("last_seq");
    wait_until(Duration::from_secs(30), "every seq", || {
        collector.seen().seqs_of(device).len() as u64 == last_seq
    })
    .await;
    let seqs = collector.seen().seqs_of(device);
    assert_eq!((seqs.first(), seqs.last()), (Some(&1), Some(&last_seq)));
}

/// The bridge's side of the same silence: when its first message came after the link
/// returned, and how many of those fed to it never arrived. Printed, not asserted: it is
/// the peer measured, not Ferry.
async fn bridge_figures(test: &str, bridge: &mut Bridge, before: usize, restored: Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while bridge.arrivals().len() <= before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = bridge.arrivals().get(before).map(|(_, at)| *at - restored);
    let sent = bridge.stop_feeding();
    // Until nothing more arrives for 5 s (at most a minute): its queue drained.
    let mut last = (bridge.arrivals().len(), Instant::now());
    while last.1.elapsed() < Duration::from_secs(5) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = bridge.arrivals().len();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let arrivals = bridge.arrivals();
    let distinct: std::collections::BTreeSet<u64> = arrivals.iter().map(|(n, _)| *n).collect();
    println!(
        "{test}: Mosquitto bridge at its defaults, same silence: first delivery {} after the \
         link returned; {} of {sent} messages never arrived ({} deliveries)",
        resumed.map_or("none within 60 s".to_owned(), |d| format!(
            "{:.2} s",
            d.as_secs_f64()
        )),
        sent.saturating_sub(distinct.len() as u64),
        arrivals.len()
    );
}
