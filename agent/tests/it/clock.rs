//! A Pi's clock: the agent starts with its wall clock in 1970, then a day behind (what
//! fake-hwclock restores), then right but not yet confirmed, then synchronised, all while
//! it runs (libfaketime, preloaded into the agent alone, with the monotonic clock left
//! real as a kernel leaves it when NTP steps the wall clock).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_shared::Record;
use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use ferry_tests::wait_until;

use crate::{FAST, agent, simulator};

fn libfaketime() -> PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("libfaketime is missing (apt install faketime; cargo xtask prereqs): none of {candidates:?}")
        })
}

/// The wall clock of the agent, as an offset libfaketime reads before every call.
fn set_clock(file: &Path, offset: &str) {
    std::fs::write(file, offset).expect("faketime file");
}

const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, PartialEq)]
enum Era {
    Seventies,
    DayBehind,
    Now,
}

fn era(r: &Record, now_ms: i64) -> Era {
    let ts = r.ts.unix_millis();
    if ts < 20 * 365 * DAY_MS {
        Era::Seventies
    } else if ts < now_ms - DAY_MS / 2 {
        Era::DayBehind
    } else {
        Era::Now
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stamped_before_the_clock_is_synchronised_are_flagged_and_none_after() {
    let lib = libfaketime();
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = dir.path().join("faketime");
    let synced = dir.path().join("synchronized");
    set_clock(&clock, "-20000d");
    let rest = format!(
        "{}[clock]\nsynced_by = \"file:{}\"\n",
        simulator("weather", 50, 0),
        synced.display()
    );
    let extra = format!("{FAST}\nstatus_interval_s = 1");
    let mut agent = agent(dir.path(), "clock-1", &broker.url(), &extra, &rest);
    agent
        .env("LD_PRELOAD", &lib.display().to_string())
        .env("FAKETIME_TIMESTAMP_FILE", &clock.display().to_string())
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    agent.start();

    // Each step of the clock must leave delivery running within seconds: a timer on the
    // wall clock would stall for the decades or the day it stepped.
    let mut seen_before = 0;
    for (step, offset) in ["-20000d", "-1d", "+0"].into_iter().enumerate() {
        set_clock(&clock, offset);
        wait_until(
            Duration::from_secs(15),
            &format!("40 new records after the clock stepped to {offset}"),
            || collector.seen().seqs_of("clock-1").len() >= seen_before + 40,
        )
        .await;
        seen_before = collector.seen().seqs_of("clock-1").len();
        let status = agent.status();
        println!("clock step {step} ({offset}): {seen_before} records so far; status {status}");
        if step == 2 {
            assert_eq!(
                status["clock_synced"], false,
                "right but unconfirmed is not synchronised: {status}"
            );
        }
    }
    std::fs::write(&synced, b"").expect("the synchronised flag");
    wait_until(
        Duration::from_secs(20),
        "the agent to see the clock synchronised",
        || agent.status()["clock_synced"] == true,
    )
    .await;
    let synced_at = collector.seen().seqs_of("clock-1").len();
    wait_until(
        Duration::from_secs(15),
        "40 records after the clock was synchronised",
        || collector.seen().seqs_of("clock-1").len() >= synced_at + 40,
    )
    .await;
    assert_eq!(agent.terminate(), Some(0));

    let status = agent.status();
    let last_seq = status["last_seq"].as_u64().expect("last_seq");
    wait_until(Duration::from_secs(20), "every seq", || {
        collector.seen().seqs_of("clock-1").len() as u64 == last_seq
    })
    .await;
    let seen = collector.seen();
    let seqs = seen.seqs_of("clock-1");
    assert_eq!(
        (seqs.first(), seqs.last(), seqs.len() as u64),
        (Some(&1), Some(&last_seq), last_seq),
        "no seq gap across the clock's steps"
    );
    assert!(seen.conflicts.is_empty(), "{:?}", seen.conflicts);
    let now_ms = ferry_shared::Timestamp::now().unix_millis();
    let records = &seen.records["clock-1"];
    let mut by_seq: Vec<&Record> = records.values().collect();
    by_seq.sort_by_key(|r| r.seq);

    let count = |e: Era, suspect: bool| {
        by_seq
            .iter()
            .filter(|r| era(r, now_ms) == e && r.ts_suspect == suspect)
            .count()
    };
    let table = [
        (
            Era::Seventies,
            count(Era::Seventies, true),
            count(Era::Seventies, false),
        ),
        (
            Era::DayBehind,
            count(Era::DayBehind, true),
            count(Era::DayBehind, false),
        ),
        (Era::Now, count(Era::Now, true), count(Era::Now, false)),
    ];
    for (era, flagged, unflagged) in &table {
        println!("clock: {era:?}: {flagged} records flagged ts_suspect, {unflagged} not");
    }
    assert!(
        table[0].1 >= 40 && table[0].2 == 0,
        "1970: all flagged {table:?}"
    );
    assert!(
        table[1].1 >= 40 && table[1].2 == 0,
        "a day behind: all flagged {table:?}"
    );
    assert!(
        table[2].1 >= 40 && table[2].2 >= 40,
        "right: flagged until the flag file said synchronised, then not {table:?}"
    );
    let first_believed = by_seq
        .iter()
        .position(|r| !r.ts_suspect)
        .expect("a believed record");
    assert!(
        by_seq[first_believed..].iter().all(|r| !r.ts_suspect),
        "once synchronised, nothing after is flagged"
    );
    let flagged = by_seq.iter().filter(|r| r.ts_suspect).count() as u64;
    assert_eq!(
        status["ts_suspect_total"].as_u64(),
        Some(flagged),
        "the status counts what was flagged: {status}"
    );
    assert_eq!(
        status["clock_synced_by"],
        format!("file:{}", synced.display())
    );
    assert!(
        agent.log().contains("the clock is synchronised"),
        "the agent says when it came to believe its clock"
    );
}
