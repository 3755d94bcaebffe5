//! Ledger throughput: transactions/s at batch sizes 1 and 100, on SQLite and on
//! PostgreSQL, with one writer and with four on different cards.
//!
//!     cargo bench -p ferry-cloud --bench ledger          # 20,000 transactions per case
//!
//! - Stamps over 1,000 cards, each batch one database transaction (`Ledger::apply`),
//!   committed durably: SQLite in WAL with `synchronous=FULL`, PostgreSQL with `fsync=on`
//!   and `synchronous_commit=on`.
//! - Baselines in the same run: SQLite for PostgreSQL (the goal is a ratio to it), and
//!   pgbench (`-c 1 -n`) running, per stamp, the statements a ledger that asks one question
//!   per statement needs: the advisory lock, the balance, duplicate and program lookups,
//!   the card, balance and ledger writes (100 of those between one BEGIN and COMMIT for
//!   batches of 100). Ferry's PostgreSQL path is set-based, so beating it is the point.
//! - Four writers: four threads, each with its own connection and its own quarter of the
//!   cards, applying batches of 100 at once.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use ferry_cloud::loyalty::{BrandFields, Ledger, Program, Status, StoreFields};
use ferry_shared::{TxId, Txn, TxnOp};
use ferry_tests::postgres::Postgres;

const CARDS: usize = 1_000;

fn stamps(prefix: &str, n: usize) -> Vec<Txn> {
    (0..n)
        .map(|i| Txn {
            tx_id: TxId::new(format!("{prefix}-{i}")).expect("tx id"),
            op: TxnOp::Stamp,
            program: "coffee".into(),
            card: format!("C-{}", (i * 7919) % CARDS),
            store: "S-01".into(),
            qty: Some(1),
            amount_minor: None,
            currency: None,
            receipt: Some(format!("R-{i}")),
            reverses: None,
            offline: false,
            staff: None,
        })
        .collect()
}

fn ledger(url: &str) -> Ledger {
    let mut l = Ledger::open(url).expect("open ledger");
    l.put_brand(
        "bench",
        &BrandFields {
            name: "Bench".into(),
        },
    )
    .expect("brand");
    l.put_store(
        "S-01",
        &StoreFields {
            name: "Bench store".into(),
            brand: "bench".into(),
            time_zone: "UTC".into(),
            currency: "EUR".into(),
        },
    )
    .expect("store");
    l.put_program(
        "coffee",
        &Program::Stamps {
            stamps_per_reward: 10,
            reward: "free coffee".into(),
        },
    )
    .expect("program");
    l
}

/// Transactions/s applying `total` stamps in batches of `batch`.
fn ferry(url: &str, prefix: &str, total: usize, batch: usize) -> f64 {
    let mut l = ledger(url);
    let txns = stamps(prefix, total);
    let start = Instant::now();
    for chunk in txns.chunks(batch) {
        let outcomes = l.apply(chunk).expect("apply");
        assert!(outcomes.iter().all(|o| o.status == Status::Applied));
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Transactions/s of `writers` threads applying `total` stamps between them in batches of
/// `batch`, each on its own connection and its own cards.
fn ferry_writers(url: &str, prefix: &str, total: usize, batch: usize, writers: usize) -> f64 {
    drop(ledger(url));
    let per_writer = total / writers;
    let work: Vec<(Ledger, Vec<Txn>)> = (0..writers)
        .map(|w| {
            let txns = stamps(&format!("{prefix}-w{w}"), per_writer)
                .into_iter()
                .map(|mut t| {
                    // Writer w takes the cards whose number is w modulo `writers`.
                    let n: usize = t.card[2..].parse().expect("card number");
                    t.card = format!("C-{}", n - n % writers + w);
                    t
                })
                .collect();
            (Ledger::open(url).expect("open ledger"), txns)
        })
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (mut l, txns) in work {
            s.spawn(move || {
                for chunk in txns.chunks(batch) {
                    let outcomes = l.apply(chunk).expect("apply");
                    assert!(outcomes.iter().all(|o| o.status == Status::Applied));
                }
            });
        }
    });
    (per_writer * writers) as f64 / start.elapsed().as_secs_f64()
}

/// One stamp, as `apply` runs it, in pgbench's script language.
fn pgbench_stamp(i: usize) -> String {
    format!(
        r#"\set card{i} random(0, {max})
\set id{i} random(1, 9000000000000000)
SELECT pg_advisory_xact_lock(hashtextextended('C-' || :card{i} || chr(31) || 'coffee', 0));
SELECT balance FROM balances WHERE card = 'C-' || :card{i} AND program = 'coffee';
SELECT content FROM ledger WHERE tx_id = 'pgb-' || :id{i};
SELECT body FROM programs WHERE id = 'coffee';
INSERT INTO cards (card, created_at) VALUES ('C-' || :card{i}, now()::text) ON CONFLICT (card) DO NOTHING;
INSERT INTO balances (card, program, balance, flagged) VALUES ('C-' || :card{i}, 'coffee', 1, false) ON CONFLICT (card, program) DO UPDATE SET balance = balances.balance + 1, flagged = balances.flagged OR excluded.flagged;
INSERT INTO ledger (tx_id, content, card, program, store, op, delta, offline, applied_at) VALUES ('pgb-' || :id{i}, '{{"tx_id":"pgb","op":"stamp","program":"coffee","card":"C","store":"S-01","qty":1,"receipt":"R"}}', 'C-' || :card{i}, 'coffee', 'S-01', 'stamp', 1, false, now()::text);
"#,
        max = CARDS - 1
    )
}

/// Transactions/s of pgbench running `total` stamps in batches of `batch`.
fn pgbench(pg: &Postgres, db: &str, dir: &Path, total: usize, batch: usize) -> f64 {
    let script = dir.join(format!("stamp-{batch}.sql"));
    let mut text = String::from("BEGIN;\n");
    for i in 0..batch {
        text.push_str(&pgbench_stamp(i));
    }
    text.push_str("COMMIT;\n");
    std::fs::write(&script, text).expect("pgbench script");
    let out = Command::new(pg.bin("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "ferry"])
        .args(["-n", "-c", "1", "-t", &(total / batch).to_string(), "-f"])
        .arg(&script)
        .arg(db)
        .output()
        .expect("running pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tps: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {stdout}"));
    tps * batch as f64
}

fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start_durable();
    let sqlite = |name: &str| {
        format!(
            "sqlite://{}",
            dir.path().join(format!("{name}.db")).display()
        )
    };
    println!("ledger benchmark: {total} stamps per case over {CARDS} cards\n");
    println!(
        "| writers | batch | SQLite tx/s | PostgreSQL tx/s | PostgreSQL / SQLite | pgbench tx/s | PostgreSQL / pgbench |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for batch in [1, 100] {
        // Fewer single-transaction commits: each is a flush of its own.
        let n = if batch == 1 { total / 4 } else { total };
        let s = ferry(&sqlite(&format!("b{batch}")), "s", n, batch);
        let db = format!("bench_{batch}");
        let p = ferry(&pg.database(&db), "p", n, batch);
        let baseline = pgbench(&pg, &db, dir.path(), n, batch);
        println!(
            "| 1 | {batch} | {s:.0} | {p:.0} | {:.2} | {baseline:.0} | {:.2} |",
            p / s,
            p / baseline
        );
    }
    let s = ferry_writers(&sqlite("w4"), "s", total, 100, 4);
    let p = ferry_writers(&pg.database("bench_w4"), "p", total, 100, 4);
    println!("| 4 | 100 | {s:.0} | {p:.0} | {:.2} | | |", p / s);
}
