//! Integration tests of the real `ferry-cloud` binary against a real Mosquitto, a real
//! S3-protocol server (s3s-fs, driven by the ingest's aws-sdk-s3 client) and a real
//! PostgreSQL: the ingest, the ledger's conformance suite, the loyalty and dashboard APIs.
//! One test binary (one link on 2 cores), one module per behaviour.

mod bad_input;
mod check;
mod crash;
mod curated;
mod dashboard_api;
mod enroll;
mod fleet;
mod hostile;
mod hot;
mod layout;
mod ledger;
mod ledger_org;
mod link;
mod loyalty_api;
mod oidc;
mod outage;
mod poison;
mod power_cut;
mod roles;
mod round_trip;
mod shared_subscription;
mod slow_clients;

use std::path::Path;

pub use ferry_tests::cloud::{BUCKET, Ingest, Lake, assert_exactly_once, metric, spool_id};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferry-cloud");

/// Brand `test` and the suite's stores (UTC, EUR), on a ledger opened directly.
pub fn test_stores(l: &mut ferry_cloud::loyalty::Ledger) {
    use ferry_cloud::loyalty::{BrandFields, StoreFields};
    l.put_brand(
        "test",
        &BrandFields {
            name: "Test brand".into(),
        },
    )
    .expect("brand");
    for store in ferry_tests::loyalty::TEST_STORES {
        l.put_store(
            store,
            &StoreFields {
                name: format!("Store {store}"),
                brand: "test".into(),
                time_zone: "UTC".into(),
                currency: "EUR".into(),
            },
        )
        .expect("store");
    }
}

static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Held for the whole of each ingest test: they run one at a time, and beside no other
/// test. Each starts a broker, an S3 server and an ingest, and loads two cores on its own.
/// (What once looked like a stall under that load was a test publishing before the
/// ingest's first subscription, which the broker drops; the tests now wait for
/// `wait_subscribed`.)
pub async fn one_at_a_time() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write().await
}

/// Held by the ledger's and the APIs' tests (synchronous ones): they run beside each other
/// but never beside an ingest test.
pub fn beside_others() -> tokio::sync::RwLockReadGuard<'static, ()> {
    LOAD.blocking_read()
}

/// An ingest under test, on `broker_port`; `lake_extra` lines go into `[lake]`.
pub fn ingest(dir: &Path, broker_port: u16, lake: Lake, lake_extra: &str) -> Ingest {
    ferry_tests::cloud::ingest(BIN, dir, broker_port, lake, lake_extra)
}

/// A broker, an S3 server, and two ingests in one share group (`ingest`) writing to it,
/// started and subscribed; their client ids are `{name}-0` and `{name}-1`.
pub struct ShareGroup {
    pub broker: ferry_tests::broker::Mosquitto,
    pub s3: ferry_tests::s3::S3Server,
    pub dirs: [tempfile::TempDir; 2],
    pub ingests: Vec<Ingest>,
}

pub async fn share_group(name: &str) -> ShareGroup {
    let broker = ferry_tests::broker::Mosquitto::start();
    let s3 = ferry_tests::s3::S3Server::start(BUCKET);
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut ingests = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut member = ingest(dir.path(), broker.port, Lake::S3(&s3), "");
        member
            .proc
            .env("FERRY_MQTT__CLIENT_ID", format!("{name}-{i}"))
            .env("FERRY_MQTT__SHARE_GROUP", "ingest");
        member.proc.start();
        ingests.push(member);
    }
    for member in &ingests {
        member.wait_subscribed().await;
    }
    ShareGroup {
        broker,
        s3,
        dirs,
        ingests,
    }
}

/// What most tests start with: a broker, an S3 server with the bucket, and a running ingest
/// writing to it (`lake_extra` goes into `[lake]`).
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub broker: ferry_tests::broker::Mosquitto,
    pub s3: ferry_tests::s3::S3Server,
    pub ingest: Ingest,
}

pub async fn s3_stack(lake_extra: &str) -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = ferry_tests::broker::Mosquitto::start();
    let s3 = ferry_tests::s3::S3Server::start(BUCKET);
    let mut ingest = ingest(dir.path(), broker.port, Lake::S3(&s3), lake_extra);
    ingest.proc.start();
    ingest.wait_subscribed().await;
    Stack {
        dir,
        broker,
        s3,
        ingest,
    }
}
