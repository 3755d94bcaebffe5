//! The ledger's conformance suite: the same scenarios on SQLite and on a real PostgreSQL
//! that the test starts (`initdb` + `postgres` on a random port).
//!
//! Its 8 writers load the disk and both cores for a minute; like every test of this binary
//! it holds `beside_others`, so no ingest test shares that minute.

use std::collections::BTreeMap;

use ferry_cloud::loyalty::{
    AuditRecord, DeviceKind, Ledger, LedgerError, Program, Registration, Status, Submitted,
};
use ferry_shared::{TxId, Txn, TxnOp};
use ferry_tests::postgres::Postgres;

/// Opens connections to one fresh database.
pub(crate) type Open = Box<dyn Fn() -> Ledger + Send + Sync>;

/// A named check of one store.
type Scenario = (&'static str, fn(&Open));

fn sqlite_db(dir: &tempfile::TempDir, name: &str) -> Open {
    let url = format!(
        "sqlite://{}",
        dir.path().join(format!("{name}.db")).display()
    );
    Box::new(move || Ledger::open(&url).expect("open SQLite ledger"))
}

fn postgres_db(pg: &Postgres, name: &str) -> Open {
    let url = pg.database(name);
    Box::new(move || Ledger::open(&url).expect("open PostgreSQL ledger"))
}

/// Runs every scenario on both stores.
#[test]
fn conformance_on_sqlite_and_postgres() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start();
    let scenarios: [Scenario; 13] = [
        (
            "organisation",
            crate::ledger_org::stores_are_records_and_others_are_held,
        ),
        (
            "migration",
            crate::ledger_org::an_older_ledgers_stores_become_records_once,
        ),
        (
            "lifecycle",
            crate::ledger_org::cards_are_blocked_replaced_merged_and_reviewed,
        ),
        ("registry", the_registry_admits_only_tills_at_their_store),
        ("bounds", out_of_range_is_rejected_not_wrapped),
        ("idempotency", idempotency_and_rules_table),
        ("one_batch", the_rules_table_in_one_batch),
        ("expiry", points_lapse_oldest_first),
        ("points", points_from_amounts_and_rewards_available),
        (
            "concurrency",
            concurrent_replays_apply_each_transaction_once,
        ),
        ("programs", programs_are_listed_and_updated),
        ("figures", the_dashboards_figures),
        ("audit", a_write_and_its_audit_row_commit_together),
    ];
    for (name, scenario) in scenarios {
        scenario(&sqlite_db(&dir, name));
        scenario(&postgres_db(&pg, name));
    }
}

pub(crate) fn from(device: &str, txn: Txn) -> Submitted {
    Submitted {
        txn,
        device: Some(device.into()),
        admin: false,
    }
}

/// Each step: a transaction from a device, the status and reason it must get.
fn the_registry_admits_only_tills_at_their_store(open: &Open) {
    let mut l = with_programs(open);
    let till = Registration {
        kind: DeviceKind::Till,
        store: Some("S-01".into()),
    };
    let stamp = |id: &str| txn(id, TxnOp::Stamp, "coffee", Some(1));
    // Not registered yet: held, not applied, not final.
    let held = l
        .apply_submitted(&[from("pos-1", stamp("pos-1:a"))])
        .expect("apply");
    assert_eq!(
        (held[0].status, held[0].reason),
        (Status::Held, Some("unregistered_device"))
    );
    assert_eq!(balance(&mut l, "C-1", "coffee").0, 0);
    l.put_device("pos-1", &till).expect("register");
    l.put_device(
        "ws-1",
        &Registration {
            kind: DeviceKind::Station,
            store: None,
        },
    )
    .expect("register");
    // An applied transaction of another store, for the reversal below.
    let mut elsewhere = stamp("S-99:x");
    elsewhere.store = "S-99".into();
    assert_eq!(
        l.apply(&[elsewhere]).expect("apply")[0].status,
        Status::Applied
    );
    let mut other_store = stamp("pos-1:b");
    other_store.store = "S-02".into();
    let mut reversal = txn("pos-1:r", TxnOp::Reverse, "coffee", None);
    reversal.reverses = Some(TxId::new("S-99:x").expect("id"));
    let steps: Vec<(Submitted, Status, Option<&str>)> = vec![
        (from("pos-1", stamp("pos-1:a")), Status::Applied, None),
        (from("pos-1", stamp("pos-1:a")), Status::Duplicate, None),
        (
            from("pos-1", other_store),
            Status::Rejected,
            Some("store_mismatch"),
        ),
        (
            from("pos-1", stamp("pos-2:c")),
            Status::Rejected,
            Some("foreign_tx_id"),
        ),
        (
            from("pos-1", stamp("pos-1x:c")),
            Status::Rejected,
            Some("foreign_tx_id"),
        ),
        (
            from("ws-1", stamp("ws-1:d")),
            Status::Rejected,
            Some("not_a_till"),
        ),
        (
            from("pos-1", reversal),
            Status::Rejected,
            Some("reversal_other_store"),
        ),
    ];
    for (i, (submitted, status, reason)) in steps.into_iter().enumerate() {
        let got = l.apply_submitted(&[submitted]).expect("apply");
        assert_eq!((got[0].status, got[0].reason), (status, reason), "step {i}");
    }
    assert!(
        l.held_counts().expect("held").is_empty(),
        "applied once registered, it is held no more"
    );
    assert_eq!(balance(&mut l, "C-1", "coffee").0, 2, "S-99:x and pos-1:a");
    // Retired: refused from now on; listed with when.
    assert!(l.retire_device("pos-1").expect("retire"));
    let got = l
        .apply_submitted(&[from("pos-1", stamp("pos-1:e"))])
        .expect("apply");
    assert_eq!(got[0].reason, Some("retired_device"));
    assert!(!l.retire_device("pos-404").expect("retire"));
    let listed = l.devices().expect("devices");
    assert_eq!(listed.len(), 2);
    assert!(listed[0].retired_at.is_some() && listed[0].store.as_deref() == Some("S-01"));
    // Registered again, it is active again.
    l.put_device("pos-1", &till).expect("register");
    assert!(
        l.device("pos-1")
            .expect("device")
            .is_some_and(|d| d.retired_at.is_none())
    );
}

/// Amounts and quantities past the limits are refused, never wrapped, and nothing moves.
fn out_of_range_is_rejected_not_wrapped(open: &Open) {
    let mut l = with_programs(open);
    let mut earn = txn("big-earn", TxnOp::Earn, "points", None);
    earn.amount_minor = Some(i64::MAX);
    let mut redeem = txn("big-redeem", TxnOp::Redeem, "coffee", Some(u64::MAX));
    redeem.offline = true;
    let got = l
        .apply(&[
            txn("big-stamp", TxnOp::Stamp, "coffee", Some(i64::MAX as u64)),
            redeem,
            earn,
        ])
        .expect("apply");
    for o in &got {
        assert_eq!(
            (o.status, o.reason),
            (Status::Rejected, Some("invalid")),
            "{o:?}"
        );
    }
    assert_eq!(balance(&mut l, "C-1", "coffee").0, 0);
    assert_eq!(balance(&mut l, "C-1", "points").0, 0);
}

pub(crate) fn with_programs(open: &Open) -> Ledger {
    let mut l = open();
    crate::test_stores(&mut l);
    l.put_program(
        "coffee",
        &Program::Stamps {
            stamps_per_reward: 10,
            reward: "free coffee".into(),
        },
    )
    .expect("program");
    l.put_program(
        "points",
        &Program::Points {
            points_per_currency_unit: 1.0,
            reward: "voucher".into(),
            reward_cost: 500,
            expiry_days: None,
        },
    )
    .expect("program");
    l
}

pub(crate) fn txn(id: &str, op: TxnOp, program: &str, qty: Option<u64>) -> Txn {
    Txn {
        tx_id: TxId::new(id).expect("id"),
        op,
        program: program.into(),
        card: "C-1".into(),
        store: "S-01".into(),
        qty,
        amount_minor: None,
        currency: None,
        receipt: None,
        reverses: None,
        offline: false,
        staff: None,
    }
}

pub(crate) fn balance(l: &mut Ledger, card: &str, program: &str) -> (i64, i64, bool) {
    l.balances(card)
        .expect("balances")
        .into_iter()
        .find(|b| b.program == program)
        .map_or((0, 0, false), |b| {
            (b.balance, b.rewards_available, b.flagged)
        })
}

/// One step of the rules table.
type Step = (Txn, Status, Option<&'static str>, i64);

/// Each step: a transaction, the outcome it must get, and the coffee balance after it.
fn rules_table() -> Vec<Step> {
    let stamp = |id: &str, qty| txn(id, TxnOp::Stamp, "coffee", Some(qty));
    let mut redeem_offline = txn("r-off", TxnOp::Redeem, "coffee", Some(2));
    redeem_offline.offline = true;
    let mut reverse = txn("rev-1", TxnOp::Reverse, "coffee", None);
    reverse.reverses = Some(TxId::new("s-1").expect("id"));
    let mut reverse_again = reverse.clone();
    reverse_again.tx_id = TxId::new("rev-2").expect("id");
    let mut reverse_other_card = reverse.clone();
    reverse_other_card.tx_id = TxId::new("rev-3").expect("id");
    reverse_other_card.card = "C-2".into();
    reverse_other_card.reverses = Some(TxId::new("s-2").expect("id"));
    let mut reverse_nothing = reverse.clone();
    reverse_nothing.tx_id = TxId::new("rev-4").expect("id");
    reverse_nothing.reverses = Some(TxId::new("never-sent").expect("id"));
    vec![
        (stamp("s-1", 3), Status::Applied, None, 3),
        (stamp("s-1", 3), Status::Duplicate, None, 3),
        (stamp("s-1", 4), Status::Rejected, Some("conflict"), 3),
        (stamp("s-2", 8), Status::Applied, None, 11),
        (
            txn("r-1", TxnOp::Redeem, "coffee", Some(2)),
            Status::Rejected,
            Some("insufficient_balance"),
            11,
        ),
        (
            txn("r-2", TxnOp::Redeem, "coffee", Some(1)),
            Status::Applied,
            None,
            1,
        ),
        (
            txn("r-2", TxnOp::Redeem, "coffee", Some(1)),
            Status::Duplicate,
            None,
            1,
        ),
        (redeem_offline.clone(), Status::Applied, None, -19),
        (redeem_offline, Status::Duplicate, None, -19),
        (reverse.clone(), Status::Applied, None, -22),
        (reverse, Status::Duplicate, None, -22),
        (
            reverse_again,
            Status::Rejected,
            Some("already_reversed"),
            -22,
        ),
        (
            reverse_other_card,
            Status::Rejected,
            Some("reversal_mismatch"),
            -22,
        ),
        (
            reverse_nothing,
            Status::Rejected,
            Some("unknown_reversed"),
            -22,
        ),
        (
            txn("e-1", TxnOp::Earn, "coffee", Some(5)),
            Status::Rejected,
            Some("wrong_program_kind"),
            -22,
        ),
        (
            txn("x-1", TxnOp::Stamp, "tea", Some(1)),
            Status::Rejected,
            Some("unknown_program"),
            -22,
        ),
        (
            txn("z-1", TxnOp::Stamp, "coffee", Some(0)),
            Status::Rejected,
            Some("invalid"),
            -22,
        ),
    ]
}

fn idempotency_and_rules_table(open: &Open) {
    let mut l = with_programs(open);
    for (i, (t, status, reason, after)) in rules_table().into_iter().enumerate() {
        let got = l.apply(std::slice::from_ref(&t)).expect("apply").remove(0);
        assert_eq!(
            (got.status, got.reason),
            (status, reason),
            "step {i}: {}",
            t.tx_id
        );
        assert_eq!(balance(&mut l, "C-1", "coffee").0, after, "step {i}");
    }
    assert!(
        balance(&mut l, "C-1", "coffee").2,
        "a negative balance flags the card"
    );
    // Judged again once its program exists: rejections are not recorded.
    l.put_program(
        "tea",
        &Program::Stamps {
            stamps_per_reward: 5,
            reward: "tea".into(),
        },
    )
    .expect("program");
    let again = l
        .apply(&[txn("x-1", TxnOp::Stamp, "tea", Some(1))])
        .expect("apply");
    assert_eq!(again[0].status, Status::Applied);
}

/// The rules table as one batch: a batch is judged transaction by transaction, each seeing
/// what the ones before it did (PostgreSQL answers from rows it read once, SQLite asks
/// each time), so every outcome, the balance and the ledger's entries match the table
/// applied one transaction at a time.
fn the_rules_table_in_one_batch(open: &Open) {
    let steps = rules_table();
    let txns: Vec<Txn> = steps.iter().map(|s| s.0.clone()).collect();
    let mut l = with_programs(open);
    let got = l.apply(&txns).expect("apply");
    for (i, ((t, status, reason, _), got)) in steps.iter().zip(&got).enumerate() {
        assert_eq!(got.tx_id, t.tx_id.as_str(), "step {i}");
        assert_eq!(
            (got.status, got.reason),
            (*status, *reason),
            "step {i}: {}",
            t.tx_id
        );
    }
    let last = steps.last().map_or(0, |s| s.3);
    assert_eq!(balance(&mut l, "C-1", "coffee"), (last, 0, true));
    let entries = l.card_entries("C-1", 100, None).expect("entries");
    let summary: Vec<(String, i64, Option<String>)> = entries
        .iter()
        .rev()
        .map(|e| (e.tx_id.clone(), e.delta, e.reversed_by.clone()))
        .collect();
    let reversed =
        |id: &str, delta, by: Option<&str>| (id.to_owned(), delta, by.map(str::to_owned));
    assert_eq!(
        summary,
        [
            reversed("s-1", 3, Some("rev-1")),
            reversed("s-2", 8, None),
            reversed("r-2", -10, None),
            reversed("r-off", -20, None),
            reversed("rev-1", -3, None),
        ],
        "the ledger in the batch's order, the reversal marked on its target"
    );
}

fn points_from_amounts_and_rewards_available(open: &Open) {
    let mut l = with_programs(open);
    let mut earn = txn("e-1", TxnOp::Earn, "points", None);
    earn.amount_minor = Some(123_456);
    let out = l
        .apply(&[earn, txn("e-2", TxnOp::Earn, "points", Some(10))])
        .expect("apply");
    assert!(out.iter().all(|o| o.status == Status::Applied), "{out:?}");
    assert_eq!(balance(&mut l, "C-1", "points"), (1244, 2, false));
    let stamps = l
        .apply(&[txn("s-1", TxnOp::Stamp, "coffee", Some(25))])
        .expect("apply");
    assert_eq!(stamps[0].status, Status::Applied);
    assert_eq!(balance(&mut l, "C-1", "coffee"), (25, 2, false));
}

/// Points lapse `expiry_days` after they were earned, oldest spent first; a rerun lapses
/// nothing more, and a reversed redemption gives back points that may lapse in turn.
fn points_lapse_oldest_first(open: &Open) {
    let mut l = open();
    crate::test_stores(&mut l);
    l.put_program(
        "miles",
        &Program::Points {
            points_per_currency_unit: 1.0,
            reward: "lounge".into(),
            reward_cost: 40,
            expiry_days: Some(30),
        },
    )
    .expect("program");
    let pause = || std::thread::sleep(std::time::Duration::from_millis(15));
    let apply = |l: &mut Ledger, t: Txn| {
        let out = l.apply(&[t]).expect("apply");
        assert_eq!(out[0].status, Status::Applied, "{out:?}");
    };
    apply(&mut l, txn("m-1", TxnOp::Earn, "miles", Some(100)));
    pause();
    let t1 = chrono::Utc::now();
    pause();
    apply(&mut l, txn("m-2", TxnOp::Earn, "miles", Some(50)));
    apply(&mut l, txn("m-3", TxnOp::Redeem, "miles", Some(1)));
    assert_eq!(balance(&mut l, "C-1", "miles").0, 110);
    let days = chrono::Duration::days;

    assert_eq!(
        l.expire(t1 + days(29)).expect("expire"),
        0,
        "nothing is old yet"
    );
    // m-1 (100) is past; 40 of it was spent, so 60 lapse, and m-2's 50 stay.
    assert_eq!(l.expire(t1 + days(30)).expect("expire"), 60);
    assert_eq!(balance(&mut l, "C-1", "miles").0, 50);
    assert_eq!(
        l.expire(t1 + days(30)).expect("expire"),
        0,
        "a rerun lapses nothing"
    );

    // The redemption is refunded: its 40 points came from m-1, which has lapsed.
    let mut refund = txn("m-4", TxnOp::Reverse, "miles", None);
    refund.reverses = Some(TxId::new("m-3").expect("id"));
    apply(&mut l, refund);
    assert_eq!(balance(&mut l, "C-1", "miles").0, 90);
    assert_eq!(l.expire(t1 + days(30)).expect("expire"), 40);
    assert_eq!(
        l.expire(t1 + days(31)).expect("expire"),
        50,
        "then m-2 lapses"
    );
    assert_eq!(balance(&mut l, "C-1", "miles"), (0, 0, false));

    let entries = l.card_entries("C-1", 100, None).expect("entries");
    let ops: Vec<&str> = entries.iter().map(|e| e.op.as_str()).collect();
    assert_eq!(
        ops,
        [
            "expire", "expire", "reverse", "expire", "redeem", "earn", "earn"
        ],
        "newest first"
    );
    let page = l
        .card_entries("C-1", 2, Some(entries[1].seq))
        .expect("page");
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].seq, entries[2].seq, "before= pages on");
}

fn programs_are_listed_and_updated(open: &Open) {
    let mut l = with_programs(open);
    let updated = Program::Stamps {
        stamps_per_reward: 8,
        reward: "free coffee".into(),
    };
    l.put_program("coffee", &updated).expect("update");
    let programs = l.programs().expect("programs");
    assert_eq!(programs.len(), 2);
    assert_eq!(programs[0], ("coffee".to_owned(), updated));
}

/// 8 writers, each with its own connection, replay the same 10,000 transactions in
/// different orders: every one is applied once, the balances are exact, and no writer
/// sees a deadlock or serialization error.
fn concurrent_replays_apply_each_transaction_once(open: &Open) {
    drop(with_programs(open));
    let all: Vec<Txn> = (0..10_000u64)
        .map(|i| {
            let mut t = match i % 3 {
                0 => txn(&format!("t-{i}"), TxnOp::Stamp, "coffee", Some(1 + i % 3)),
                1 => txn(&format!("t-{i}"), TxnOp::Earn, "points", Some(1 + i % 50)),
                _ => {
                    let mut r = txn(&format!("t-{i}"), TxnOp::Redeem, "coffee", Some(1));
                    r.offline = true;
                    r
                }
            };
            t.card = format!("C-{}", i % 50);
            t
        })
        .collect();
    let mut expected = BTreeMap::<(String, String), i64>::new();
    for t in &all {
        let delta = match t.op {
            TxnOp::Redeem => -10,
            _ => t.qty.unwrap_or(0) as i64,
        };
        *expected
            .entry((t.card.clone(), t.program.clone()))
            .or_insert(0) += delta;
    }
    let applied: usize = std::thread::scope(|s| {
        let writers: Vec<_> = (0..8usize)
            .map(|w| {
                let mut order = all.clone();
                // A different order per writer: rotated, and reversed for odd writers.
                let shift = (w * 1_237) % order.len();
                order.rotate_left(shift);
                if w % 2 == 1 {
                    order.reverse();
                }
                s.spawn(move || {
                    let mut l = open();
                    let mut applied = 0;
                    for batch in order.chunks(100) {
                        for o in l.apply(batch).expect("no deadlock or serialization error") {
                            assert_ne!(o.status, Status::Rejected, "{o:?}");
                            applied += usize::from(o.status == Status::Applied);
                        }
                    }
                    applied
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().expect("writer")).sum()
    });
    assert_eq!(
        applied,
        all.len(),
        "each transaction applied exactly once in all"
    );
    let mut l = open();
    for ((card, program), want) in expected {
        assert_eq!(balance(&mut l, &card, &program).0, want, "{card} {program}");
    }
}

/// The dashboards' questions of the ledger, answered alike by both databases: per store
/// and day, cards that came, and sales per hour.
fn the_dashboards_figures(open: &Open) {
    let mut l = with_programs(open);
    let at = |id: &str, op, program: &str, qty, card: &str, store: &str| Txn {
        card: card.into(),
        store: store.into(),
        offline: op == TxnOp::Redeem,
        ..txn(id, op, program, qty)
    };
    let outcomes = l
        .apply(&[
            at("f1", TxnOp::Stamp, "coffee", Some(4), "C-1", "S-01"),
            at("f2", TxnOp::Stamp, "coffee", Some(1), "C-2", "S-01"),
            at("f3", TxnOp::Earn, "points", Some(30), "C-1", "S-01"),
            at("f4", TxnOp::Redeem, "coffee", Some(1), "C-1", "S-01"),
            at("f5", TxnOp::Stamp, "coffee", Some(2), "C-1", "S-02"),
        ])
        .expect("apply");
    assert!(
        outcomes.iter().all(|o| o.status == Status::Applied),
        "{outcomes:?}"
    );
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (
        today.to_string(),
        today.succ_opt().expect("tomorrow").to_string(),
    );

    let days = l.days("", &from, &to).expect("days");
    let s01 = &days.iter().find(|(s, _)| s == "S-01").expect("S-01").1;
    assert_eq!(
        (
            s01.stamps_issued,
            s01.points_issued,
            s01.rewards_redeemed,
            s01.overdrafts_flagged,
            s01.transactions
        ),
        (5, 30, 1, 1, 4),
        "C-1 had 4 stamps and redeemed 10: one overdraft; {days:?}"
    );
    let s02 = l.store_days("S-02", &from, &to).expect("store days");
    assert_eq!(
        (s02.len(), s02[0].stamps_issued, s02[0].transactions),
        (1, 2, 1)
    );
    assert!(
        l.days("", "2000-01-01", "2000-01-02")
            .expect("days")
            .is_empty()
    );

    let cards = l.card_counts("", &from, &to).expect("cards");
    let count = |store: &str| {
        cards
            .iter()
            .find(|c| c.store == store)
            .map(|c| (c.active_cards, c.returning_cards))
    };
    assert_eq!(count("S-01"), Some((2, 0)), "{cards:?}");
    assert_eq!(count("S-02"), Some((1, 0)), "{cards:?}");
    assert_eq!(
        count(""),
        Some((2, 0)),
        "C-1 counts once over both: {cards:?}"
    );
    let only = l.card_counts("S-02", &from, &to).expect("cards");
    assert_eq!(
        only.iter()
            .find(|c| c.store.is_empty())
            .map(|c| c.active_cards),
        Some(1)
    );
    let quiet = l
        .card_counts("", "2000-01-01", "2000-01-02")
        .expect("cards");
    assert_eq!(
        quiet.len(),
        1,
        "the overall row, even when quiet: {quiet:?}"
    );
    assert_eq!((quiet[0].active_cards, quiet[0].returning_cards), (0, 0));

    let hours = l.hours("", &from, &to).expect("hours");
    let sales: i64 = hours.iter().map(|h| h.transactions).sum();
    assert_eq!(sales, 5, "{hours:?}");
    assert!(
        hours
            .iter()
            .all(|h| (0..24).contains(&h.hour) && h.day == from),
        "{hours:?}"
    );
}

/// `Ledger::audited`: a write that fails leaves no audit row; one that succeeds leaves
/// exactly one, with what the caller said.
fn a_write_and_its_audit_row_commit_together(open: &Open) {
    let mut l = with_programs(open);
    let record = |target: &str| AuditRecord {
        who: "ops".into(),
        role: "operator",
        action: "put_device",
        target: target.into(),
        detail: serde_json::json!({"kind": "station"}),
        request_id: "01JD3W6Q3X8F2M7C9K4N5P6R8T".into(),
    };
    let failed: Result<(), LedgerError> = l.audited(
        |_tx| Err(LedgerError::Row("the write failed".into())),
        |_| Some(record("never")),
    );
    assert!(failed.is_err());
    assert!(
        l.audit_log(10, None).expect("log").is_empty(),
        "no row for a failed write"
    );
    l.audited(|_tx| Ok(()), |_| Some(record("ws-1")))
        .expect("audited");
    l.audited(|_tx| Ok(()), |_: &()| None)
        .expect("nothing to record");
    let log = l.audit_log(10, None).expect("log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0].who.as_str(), log[0].target.as_str(), &log[0].detail),
        ("ops", "ws-1", &serde_json::json!({"kind": "station"}))
    );
}
