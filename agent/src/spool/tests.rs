use ferry_shared::record::Unsequenced;
use ferry_shared::{RecordBody, Timestamp, TxId, Txn, TxnOp};

use super::*;

fn reading(i: u64) -> NewRecord {
    let body = RecordBody::Reading {
        sensor: "s".into(),
        metrics: [("t".to_owned(), i as f64)].into(),
    };
    NewRecord::new(&Unsequenced::new(Timestamp::now(), body)).expect("valid")
}

/// A key with one request; [`Keyed::request`] is opaque to the spool.
fn key(key: &str) -> Keyed {
    Keyed {
        key: key.into(),
        request: r#"{"op":"stamp"}"#.into(),
    }
}

fn txn(i: u64) -> NewRecord {
    let body = RecordBody::Txn(Txn {
        tx_id: TxId::new(format!("t-{i}")).expect("id"),
        op: TxnOp::Stamp,
        program: "coffee".into(),
        card: "C-1".into(),
        store: "S-1".into(),
        qty: Some(1),
        amount_minor: None,
        currency: None,
        receipt: Some("x".repeat(200)),
        reverses: None,
        offline: false,
        staff: None,
    });
    NewRecord::new(&Unsequenced::new(Timestamp::now(), body)).expect("valid")
}

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn seqs_are_gap_free_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, writer) = Spool::open(dir.path(), 64 * MIB).expect("open");
    let id = spool.id().clone();
    let a = spool
        .append((0..10).map(reading).collect())
        .await
        .expect("append");
    let b = spool.append(vec![txn(1)]).await.expect("append");
    assert_eq!((a.first, a.last, b.first, b.last), (1, 10, 11, 11));
    let deleted = spool
        .ack(AckRange {
            class: Class::Telemetry,
            first: 1,
            last: 11,
            held: None,
        })
        .await
        .expect("ack");
    assert_eq!(
        deleted, 10,
        "the txn inside the range is of the other class"
    );
    drop(spool);
    writer.join();

    let (spool, writer) = Spool::open(dir.path(), 64 * MIB).expect("reopen");
    assert_eq!(spool.id(), &id, "spool id is kept with the database");
    let c = spool.append(vec![reading(0)]).await.expect("append");
    assert_eq!(c.first, 12, "seq continues after acked rows were deleted");
    let status = spool.reader().expect("reader").status().expect("status");
    assert_eq!(
        (status.last_seq, status.pending, status.pending_transactions),
        (12, 2, 1)
    );
    drop(spool);
    writer.join();
}

#[tokio::test]
async fn transactions_drain_first_in_seq_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, writer) = Spool::open(dir.path(), 64 * MIB).expect("open");
    spool
        .append(vec![reading(1), txn(1), reading(2), txn(2)])
        .await
        .expect("append");
    let r = spool.reader().expect("reader");
    let seqs = |class| {
        r.pending(class, 0, 10, usize::MAX)
            .expect("pending")
            .iter()
            .map(|p| p.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(Class::Transaction), vec![2, 4]);
    assert_eq!(seqs(Class::Telemetry), vec![1, 3]);
    assert_eq!(Class::DRAIN_ORDER[0], Class::Transaction);
    drop(spool);
    writer.join();
}

#[tokio::test]
async fn over_cap_evicts_oldest_telemetry_and_never_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, writer) = Spool::open(dir.path(), MIB).expect("open");
    // The class of every seq, in order, as a model of what the spool must keep.
    let mut classes = Vec::new();
    for round in 0..100u64 {
        spool
            .append((0..200).map(|i| reading(round * 200 + i)).collect())
            .await
            .expect("append");
        classes.extend([Class::Telemetry; 200]);
        if round % 4 == 0 {
            spool.append(vec![txn(round)]).await.expect("txn fits");
            classes.push(Class::Transaction);
        }
    }
    let r = spool.reader().expect("reader");
    let status = r.status().expect("status");
    let seqs_of = |class| {
        (1..)
            .zip(&classes)
            .filter(|(_, c)| **c == class)
            .map(|(s, _)| s)
            .collect::<Vec<u64>>()
    };
    let pending = |class| {
        r.pending(class, 0, 100_000, usize::MAX)
            .expect("pending")
            .iter()
            .map(|p| p.seq)
            .collect::<Vec<_>>()
    };

    assert!(status.pending_bytes <= MIB, "{status:?}");
    assert!(status.evicted_total > 0, "{status:?}");
    assert_eq!(
        pending(Class::Transaction),
        seqs_of(Class::Transaction),
        "no transaction evicted"
    );
    let telemetry = seqs_of(Class::Telemetry);
    assert_eq!(
        pending(Class::Telemetry),
        telemetry[status.evicted_total as usize..],
        "oldest evicted first"
    );
    assert_eq!(status.pending + status.evicted_total, status.last_seq);
    drop(spool);
    writer.join();
}

#[tokio::test]
async fn transactions_beyond_the_cap_are_refused_not_evicted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, writer) = Spool::open(dir.path(), MIB).expect("open");
    let mut accepted = 0u64;
    let full = loop {
        match spool.append(vec![txn(accepted)]).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100_000, "never refused");
    };
    assert!(matches!(full, SpoolError::Full { .. }), "{full}");
    let status = spool.reader().expect("reader").status().expect("status");
    assert_eq!(status.pending_transactions, accepted);
    assert_eq!(status.last_seq, accepted, "a refused append takes no seq");
    // Telemetry still flows, evicting itself.
    spool
        .append(vec![reading(1)])
        .await
        .expect("telemetry still accepted");
    drop(spool);
    writer.join();
}

#[tokio::test]
async fn corrupt_database_is_quarantined_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = Spool::path_in(dir.path());
    std::fs::write(&path, vec![0x42; 8192]).expect("write garbage");
    let (spool, writer) = Spool::open(dir.path(), MIB).expect("opens a new spool");
    assert_eq!(
        spool.append(vec![reading(1)]).await.expect("append").first,
        1
    );
    let quarantined: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(
        std::fs::read(quarantined[0].path()).expect("read"),
        vec![0x42; 8192]
    );
    drop(spool);
    writer.join();
}

#[test]
fn pragmas_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = schema::open_writer(&Spool::path_in(dir.path())).expect("open");
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("pragma");
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .expect("pragma");
    assert_eq!((mode.as_str(), sync), ("wal", 2));
}

#[tokio::test]
async fn status_reads_while_the_writer_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, writer) = Spool::open(dir.path(), 64 * MIB).expect("open");
    spool
        .append((0..100).map(reading).collect())
        .await
        .expect("append");
    let other = SpoolReader::open(&Spool::path_in(dir.path())).expect("second reader");
    assert_eq!(other.status().expect("status").pending, 100);
    assert!(matches!(
        SpoolReader::open(&dir.path().join("nope.db")),
        Err(SpoolError::Missing(_))
    ));
    drop(spool);
    writer.join();
}

#[tokio::test]
async fn idempotency_key_appends_once_even_when_sent_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, writer) = Spool::open(dir.path(), 64 * MIB).expect("open");
    // 16 concurrent submissions of one key land in one or a few group commits.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move {
                spool
                    .append_once(key("k-1"), format!("t-{i}"), txn(i))
                    .await
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut replayed = Vec::new();
    for t in tasks {
        match t.await.expect("task").expect("append_once") {
            Once::Accepted { seq } => accepted.push(seq),
            Once::Replayed { tx_id, seq } => replayed.push((tx_id, seq)),
            other => panic!("the same request under one key: {other:?}"),
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one submission appended");
    let seq = accepted[0];
    assert_eq!(replayed.len(), 15);
    let first_tx_id = &replayed[0].0;
    assert!(
        replayed.iter().all(|(t, s)| t == first_tx_id && *s == seq),
        "{replayed:?}"
    );
    assert_eq!(
        spool
            .reader()
            .expect("reader")
            .status()
            .expect("status")
            .last_seq,
        1
    );

    // The key outlives the record's acknowledgement and a restart.
    spool
        .ack(AckRange {
            class: Class::Transaction,
            first: 1,
            last: 1,
            held: None,
        })
        .await
        .expect("ack");
    drop(spool);
    writer.join();
    let (spool, writer) = Spool::open(dir.path(), 64 * MIB).expect("reopen");
    let again = spool
        .append_once(key("k-1"), "t-99".into(), txn(99))
        .await
        .expect("append_once");
    assert_eq!(
        again,
        Once::Replayed {
            tx_id: first_tx_id.clone(),
            seq
        }
    );
    let other = spool
        .append_once(key("k-2"), "t-2".into(), txn(2))
        .await
        .expect("append_once");
    assert_eq!(other, Once::Accepted { seq: 2 });
    drop(spool);
    writer.join();
}

#[tokio::test]
async fn a_refused_key_is_not_remembered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, writer) = Spool::open(dir.path(), MIB).expect("open");
    let mut n = 0;
    while spool.append(vec![txn(n)]).await.is_ok() {
        n += 1;
    }
    let refused = spool
        .append_once(key("late"), "t-late".into(), txn(n + 1))
        .await;
    assert!(
        matches!(refused, Err(SpoolError::Full { .. })),
        "{refused:?}"
    );
    spool
        .ack(AckRange {
            class: Class::Transaction,
            first: 1,
            last: 10,
            held: None,
        })
        .await
        .expect("ack");
    let retried = spool
        .append_once(key("late"), "t-late".into(), txn(n + 1))
        .await
        .expect("room again");
    assert!(matches!(retried, Once::Accepted { .. }), "{retried:?}");
    drop(spool);
    writer.join();
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, writer) = Spool::open(dir.path(), 64 * MIB).expect("open");
    let first = spool
        .append_once(key("k-1"), "t-1".into(), txn(1))
        .await
        .expect("append_once");
    assert_eq!(first, Once::Accepted { seq: 1 });
    let mut other = key("k-1");
    other.request = r#"{"op":"earn"}"#.into();
    let refused = spool
        .append_once(other.clone(), "t-2".into(), txn(2))
        .await
        .expect("append_once");
    assert_eq!(
        refused,
        Once::Mismatch {
            tx_id: "t-1".into()
        }
    );
    let reader = spool.reader().expect("reader");
    assert_eq!(reader.status().expect("status").last_seq, 1);
    assert_eq!(
        reader.idempotency_key(&other).expect("lookup"),
        Some(Once::Mismatch {
            tx_id: "t-1".into()
        })
    );
    drop(spool);
    writer.join();
}

/// The figures the writer keeps (what the uplink's status message carries) agree with a
/// count of the spool after appends, keyed appends, acks whole and partial, eviction and a
/// reopen.
#[tokio::test]
async fn the_writers_figures_agree_with_a_count_of_the_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counted = || {
        SpoolReader::open(&Spool::path_in(dir.path()))
            .expect("reader")
            .status()
            .expect("status")
    };
    let agree = |spool: &Spool, step: &str| {
        let (kept, count) = (spool.status(), counted());
        assert_eq!(
            (kept.last_seq, kept.pending, kept.pending_bytes),
            (count.last_seq, count.pending, count.pending_bytes),
            "{step}"
        );
        assert_eq!(
            (kept.pending_transactions, kept.evicted_total),
            (count.pending_transactions, count.evicted_total),
            "{step}"
        );
        // The same oldest record: ages read a moment apart, so equal within a bound, not
        // exactly (a record appended this millisecond is 0 s old to one and not the other).
        let (a, b) = (kept.oldest_pending_age_s, count.oldest_pending_age_s);
        if count.pending == 0 {
            assert_eq!((a, b), (0.0, 0.0), "{step}");
        } else {
            assert!(
                a >= 0.0 && b >= 0.0 && (a - b).abs() < 1.0,
                "{step}: {a} vs {b}"
            );
        }
    };
    let (spool, writer) = Spool::open(dir.path(), MIB).expect("open");
    agree(&spool, "empty");
    spool
        .append((0..100).map(reading).collect())
        .await
        .expect("append");
    spool
        .append_once(key("k-1"), "t-1".into(), txn(1))
        .await
        .expect("append_once");
    agree(&spool, "appended");
    let range = |class, first, last| AckRange {
        class,
        first,
        last,
        held: None,
    };
    spool
        .ack(range(Class::Telemetry, 1, 10))
        .await
        .expect("ack");
    spool
        .ack(range(Class::Telemetry, 5, 20))
        .await
        .expect("partial ack");
    spool
        .ack(range(Class::Transaction, 1, 101))
        .await
        .expect("ack txn");
    agree(&spool, "acknowledged");
    // Old enough that a writer not keeping the oldest record's time (an age of 0) would
    // fall outside the bound above.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    agree(&spool, "a second later");
    // Over the cap of 1 MiB: the oldest telemetry goes.
    while spool.status().evicted_total == 0 {
        spool
            .append((0..500).map(reading).collect())
            .await
            .expect("append");
    }
    agree(&spool, "evicted");
    drop(spool);
    writer.join();
    let (spool, writer) = Spool::open(dir.path(), MIB).expect("reopen");
    agree(&spool, "reopened");
    drop(spool);
    writer.join();
}
