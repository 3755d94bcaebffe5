//! The conformance suite's scenarios for the organisation and the card lifecycle, run on
//! SQLite and PostgreSQL by `ledger::conformance_on_sqlite_and_postgres`.

use ferry_cloud::loyalty::lifecycle::{self, Handover};
use ferry_cloud::loyalty::org::{BrandFields, StoreFields};
use ferry_cloud::loyalty::{DeviceKind, Ledger, LedgerError, Registration, Status};
use ferry_shared::{TxId, TxnOp};

use crate::ledger::{Open, balance, from, txn, with_programs};

fn store(brand: &str, tz: &str) -> StoreFields {
    StoreFields {
        name: "Bean There Mitte".into(),
        brand: brand.into(),
        time_zone: tz.into(),
        currency: "EUR".into(),
    }
}

fn refused(result: Result<impl std::fmt::Debug, LedgerError>) -> &'static str {
    match result {
        Err(LedgerError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Brands and stores are records; a till is registered at a store record only; a
/// transaction for a store that is no record is held, and applies once the store exists.
pub fn stores_are_records_and_others_are_held(open: &Open) {
    let mut l = with_programs(open);
    assert_eq!(
        refused(l.put_store("B-01", &store("nobody", "Europe/Berlin"))),
        "unknown_brand"
    );
    l.put_brand(
        "bean",
        &BrandFields {
            name: "Bean There".into(),
        },
    )
    .expect("brand");
    l.put_store("B-01", &store("bean", "Europe/Berlin"))
        .expect("store");
    let got = l.store("B-01").expect("store").expect("a record");
    assert_eq!(
        (
            got.brand.as_str(),
            got.time_zone.as_str(),
            got.currency.as_str()
        ),
        ("bean", "Europe/Berlin", "EUR")
    );
    assert_eq!(
        l.brand_stores(&["bean".into()]).expect("brand stores"),
        vec!["B-01".to_owned()]
    );
    // Renamed in place; its creation time stays.
    let mut renamed = store("bean", "Europe/Berlin");
    renamed.name = "Bean There Kreuzberg".into();
    l.put_store("B-01", &renamed).expect("store");
    let again = l.store("B-01").expect("store").expect("a record");
    assert_eq!(
        (again.name.as_str(), &again.created_at),
        ("Bean There Kreuzberg", &got.created_at)
    );

    // A till names a store record, or is not registered.
    let till = |store: &str| Registration {
        kind: DeviceKind::Till,
        store: Some(store.into()),
    };
    assert_eq!(
        refused(l.put_device("pos-b", &till("B-404"))),
        "unknown_store"
    );
    assert!(l.device("pos-b").expect("device").is_none());

    // Held for a store that is no record, from a till or by hand; applied once it is.
    l.put_device("pos-b", &till("B-01")).expect("register");
    let mut at_new_store = txn("pos-b:1", TxnOp::Stamp, "coffee", Some(1));
    at_new_store.store = "B-02".into();
    l.put_device("pos-c", &till("B-01")).expect("register");
    let mut by_hand = txn("hand-1", TxnOp::Stamp, "coffee", Some(1));
    by_hand.store = "B-02".into();
    by_hand.card = "C-B".into();
    let got = l.apply(&[by_hand.clone()]).expect("apply");
    assert_eq!(
        (got[0].status, got[0].reason),
        (Status::Held, Some("unknown_store"))
    );
    assert_eq!(
        balance(&mut l, "C-B", "coffee").0,
        0,
        "nothing applied while held"
    );
    l.put_store("B-02", &store("bean", "Asia/Tokyo"))
        .expect("store");
    let got = l.apply(&[by_hand]).expect("apply");
    assert_eq!(got[0].status, Status::Applied);
    // The till's store moved to B-02: its held transaction applies there.
    let held = l
        .apply_submitted(&[from("pos-b", at_new_store.clone())])
        .expect("apply");
    assert_eq!(
        held[0].reason,
        Some("store_mismatch"),
        "the till is at B-01"
    );
    l.put_device("pos-b", &till("B-02")).expect("move the till");
    let got = l
        .apply_submitted(&[from("pos-b", at_new_store)])
        .expect("apply");
    assert_eq!(got[0].status, Status::Applied);

    // A store with an active till, or a brand with stores, stays.
    assert_eq!(refused(l.delete_store("B-01")), "store_in_use");
    assert_eq!(refused(l.delete_brand("bean")), "brand_in_use");
    assert!(l.retire_device("pos-c").expect("retire"));
    assert!(l.delete_store("B-01").expect("delete"));
    assert!(!l.delete_store("B-01").expect("delete"), "gone already");
    // Its history stays; a new transaction for it is held.
    let mut late = txn("hand-2", TxnOp::Stamp, "coffee", Some(1));
    late.store = "B-01".into();
    let got = l.apply(&[late]).expect("apply");
    assert_eq!(got[0].reason, Some("unknown_store"));
    let brands = l.brands().expect("brands");
    assert!(
        brands
            .iter()
            .any(|b| b.id == "bean" && b.name == "Bean There"),
        "{brands:?}"
    );
}

/// A ledger from before stores were records: its stores become records of brand `default`
/// at the next open, so nothing that applied is held after the upgrade; once only.
pub fn an_older_ledgers_stores_become_records_once(open: &Open) {
    let mut l = open();
    // The state an older ferry-cloud left: no stores, no schema step, a till and a ledger
    // entry that name stores.
    let older = "DELETE FROM stores; DELETE FROM brands; DELETE FROM schema_steps;
        INSERT INTO devices (id, kind, store, registered_at)
            VALUES ('pos-old', 'till', 'S-old-till', '2026-01-01T00:00:00.000Z');
        INSERT INTO ledger (tx_id, content, card, program, store, op, delta, offline, applied_at)
            VALUES ('old-1', '{}', 'C-1', 'coffee', 'S-old-sale', 'stamp', 1, FALSE,
                    '2026-01-01T00:00:00.000Z');";
    match &mut l {
        Ledger::Sqlite(c) => c
            .execute_batch(&older.replace("FALSE", "0"))
            .expect("older state"),
        Ledger::Postgres(c, _) => c.batch_execute(older).expect("older state"),
    }
    drop(l);
    let mut l = open();
    let stores: Vec<String> = l
        .store_records()
        .expect("stores")
        .into_iter()
        .map(|s| {
            assert_eq!(
                (s.brand.as_str(), s.time_zone.as_str(), s.currency.as_str()),
                ("default", "UTC", "XXX")
            );
            s.id
        })
        .collect();
    assert_eq!(stores, ["S-old-sale", "S-old-till"]);
    // Once: a store deleted afterwards is not brought back by the next open.
    assert!(l.delete_store("S-old-sale").expect("delete"));
    drop(l);
    let mut l = open();
    assert!(l.store("S-old-sale").expect("store").is_none());
    assert!(l.store("S-old-till").expect("store").is_some());
}

fn run<T>(
    l: &mut Ledger,
    step: impl FnMut(&mut dyn ferry_cloud::loyalty::LedgerTx) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    l.audited(step, |_| None)
}

/// Block, unblock, replace, merge and review: each moves exactly what it says, and a
/// blocked card's transactions are rejected.
pub fn cards_are_blocked_replaced_merged_and_reviewed(open: &Open) {
    let mut l = with_programs(open);
    let programs: Vec<String> = l
        .programs()
        .expect("programs")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut earn = txn("e-1", TxnOp::Earn, "points", None);
    earn.amount_minor = Some(120_000);
    let got = l
        .apply(&[txn("s-1", TxnOp::Stamp, "coffee", Some(4)), earn])
        .expect("apply");
    assert!(got.iter().all(|o| o.status == Status::Applied), "{got:?}");
    assert_eq!(
        refused(run(&mut l, |tx| lifecycle::block(tx, "C-404", "lost"))),
        "unknown_card"
    );

    // Blocked: rejected from a till and by hand; an admin may still reverse.
    run(&mut l, |tx| lifecycle::block(tx, "C-1", "reported lost")).expect("block");
    assert_eq!(
        refused(run(&mut l, |tx| lifecycle::block(tx, "C-1", "again"))),
        "already_blocked"
    );
    let block = l.card_block("C-1").expect("block").expect("blocked");
    assert_eq!(
        (block.reason.as_str(), block.successor),
        ("reported lost", None)
    );
    let got = l
        .apply(&[txn("s-2", TxnOp::Stamp, "coffee", Some(1))])
        .expect("apply");
    assert_eq!(
        (got[0].status, got[0].reason),
        (Status::Rejected, Some("card_blocked"))
    );
    let mut undo = txn("r-1", TxnOp::Reverse, "coffee", None);
    undo.reverses = Some(TxId::new("s-1").expect("id"));
    let mut store_undo = undo.clone();
    store_undo.tx_id = TxId::new("r-2").expect("id");
    let got = l
        .apply_submitted(&[ferry_cloud::loyalty::Submitted {
            txn: store_undo,
            device: None,
            admin: false,
        }])
        .expect("apply");
    assert_eq!(
        got[0].reason,
        Some("card_blocked"),
        "only an admin reverses on a blocked card"
    );
    assert_eq!(l.apply(&[undo]).expect("apply")[0].status, Status::Applied);
    assert_eq!(balance(&mut l, "C-1", "coffee").0, 0);
    run(&mut l, |tx| lifecycle::unblock(tx, "C-1")).expect("unblock");
    assert_eq!(
        refused(run(&mut l, |tx| lifecycle::unblock(tx, "C-1"))),
        "not_blocked"
    );
    assert_eq!(
        l.apply(&[txn("s-3", TxnOp::Stamp, "coffee", Some(3))])
            .expect("apply")[0]
            .status,
        Status::Applied
    );

    // Replace: a new card takes every balance; the old one is blocked and points to it.
    let mut other = txn("s-other", TxnOp::Stamp, "coffee", Some(2));
    other.card = "C-2".into();
    l.apply(&[other]).expect("apply");
    assert_eq!(
        refused(run(&mut l, |tx| lifecycle::hand_over(
            tx,
            &programs,
            "C-1",
            "C-2",
            Handover::Replace,
            "lost"
        ))),
        "card_in_use"
    );
    let moved = run(&mut l, |tx| {
        lifecycle::hand_over(tx, &programs, "C-1", "C-9", Handover::Replace, "lost")
    })
    .expect("replace");
    assert_eq!(
        moved.moved,
        vec![("coffee".to_owned(), 3), ("points".to_owned(), 1200)]
    );
    assert_eq!(
        (
            balance(&mut l, "C-1", "coffee").0,
            balance(&mut l, "C-1", "points").0
        ),
        (0, 0)
    );
    assert_eq!(
        (
            balance(&mut l, "C-9", "coffee").0,
            balance(&mut l, "C-9", "points").0
        ),
        (3, 1200)
    );
    let old = l.card_block("C-1").expect("block").expect("blocked");
    assert_eq!(old.successor.as_deref(), Some("C-9"));
    assert_eq!(
        refused(run(&mut l, |tx| lifecycle::unblock(tx, "C-1"))),
        "card_replaced"
    );
    assert_eq!(
        refused(run(&mut l, |tx| lifecycle::hand_over(
            tx,
            &programs,
            "C-1",
            "C-8",
            Handover::Replace,
            "again"
        ))),
        "card_replaced"
    );
    let history = l.card_entries("C-9", 10, None).expect("entries");
    assert!(
        history
            .iter()
            .all(|e| e.op == "transfer" && e.content["from"] == "C-1"),
        "the new card's history names the old: {history:?}"
    );
    // Not even an admin undoes one side of a transfer: the balance would count twice.
    let mut undo_transfer = txn("r-t", TxnOp::Reverse, "coffee", None);
    undo_transfer.card = "C-9".into();
    undo_transfer.program = history[0].program.clone();
    undo_transfer.reverses = Some(TxId::new(history[0].tx_id.as_str()).expect("id"));
    assert_eq!(
        l.apply(&[undo_transfer]).expect("apply")[0].reason,
        Some("transfer_entry")
    );
    let mut on_old = txn("s-4", TxnOp::Stamp, "coffee", Some(1));
    on_old.offline = true;
    assert_eq!(
        l.apply(&[on_old]).expect("apply")[0].reason,
        Some("card_blocked")
    );

    // Merge: a card in use takes another's balances.
    assert_eq!(
        refused(run(&mut l, |tx| lifecycle::hand_over(
            tx,
            &programs,
            "C-9",
            "C-404",
            Handover::Merge,
            "dup"
        ))),
        "unknown_card"
    );
    run(&mut l, |tx| {
        lifecycle::hand_over(tx, &programs, "C-2", "C-9", Handover::Merge, "one customer")
    })
    .expect("merge");
    assert_eq!(
        (
            balance(&mut l, "C-9", "coffee").0,
            balance(&mut l, "C-2", "coffee").0
        ),
        (5, 0)
    );
    assert_eq!(
        refused(run(&mut l, |tx| lifecycle::hand_over(
            tx,
            &programs,
            "C-9",
            "C-2",
            Handover::Merge,
            "back"
        ))),
        "card_blocked"
    );

    // An offline overdraft flags the card and names the cashier; a review clears it.
    let mut redeem = txn("pos-9:r", TxnOp::Redeem, "coffee", Some(1));
    redeem.card = "C-9".into();
    redeem.offline = true;
    redeem.staff = Some("anna".into());
    assert_eq!(
        l.apply(&[redeem]).expect("apply")[0].status,
        Status::Applied
    );
    assert_eq!(balance(&mut l, "C-9", "coffee"), (-5, 0, true));
    let overdrafts = l.overdrafts("C-9").expect("overdrafts");
    assert_eq!(overdrafts.len(), 1, "{overdrafts:?}");
    assert_eq!(
        (
            overdrafts[0].tx_id.as_str(),
            overdrafts[0].staff.as_deref(),
            overdrafts[0].balance_after
        ),
        ("pos-9:r", Some("anna"), -5)
    );
    let entry = &l.card_entries("C-9", 1, None).expect("entries")[0];
    assert_eq!(
        entry.staff.as_deref(),
        Some("anna"),
        "the history shows the cashier"
    );
    assert!(
        l.flagged_cards()
            .expect("flagged")
            .contains(&"C-9".to_owned())
    );
    run(&mut l, |tx| lifecycle::review(tx, "C-9")).expect("review");
    assert!(
        !l.flagged_cards()
            .expect("flagged")
            .contains(&"C-9".to_owned())
    );
    assert_eq!(
        refused(run(&mut l, |tx| lifecycle::review(tx, "C-9"))),
        "not_flagged"
    );
    assert!(l.overdrafts("C-9").expect("overdrafts").is_empty());
}
