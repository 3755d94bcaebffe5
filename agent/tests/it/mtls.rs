//! Mutual TLS with certificates made at test time: the right client certificate is
//! accepted; a wrong one is refused while the agent keeps spooling without loss.

use std::time::Duration;

use ferry_tests::broker::Mosquitto;
use ferry_tests::certs::TestPki;
use ferry_tests::collector::Collector;
use ferry_tests::wait_until;

use crate::{FAST, agent, simulator};

fn tls_url(port: u16) -> String {
    format!("mqtts://127.0.0.1:{port}")
}

fn tls_lines(ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n{FAST}",
        ca.display(),
        cert.display(),
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_the_right_certificate_and_refuses_a_wrong_one() {
    let pki = TestPki::new("tls-1");
    let broker = Mosquitto::start_tls(&pki);
    let collector = Collector::start_tls(broker.port, &pki).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. A certificate from another CA: refused, while records are spooled.
    let (rogue_cert, rogue_key) = pki.rogue_client("tls-1");
    let mut agent = agent(
        dir.path(),
        "tls-1",
        &tls_url(broker.port),
        &tls_lines(&pki.ca, &rogue_cert, &rogue_key),
        &simulator("weather", 0, 2_000),
    );
    agent.start();
    wait_until(Duration::from_secs(30), "records spooled", || {
        agent.status_u64("last_seq") == 2_000
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        agent.status_u64("pending"),
        2_000,
        "nothing was delivered with a rogue certificate"
    );
    assert!(collector.seen().seqs_of("tls-1").is_empty());
    assert!(
        agent.log().contains("mqtt connection lost"),
        "refusals are logged:\n{}",
        agent.log()
    );
    assert!(agent.is_running(), "a refused certificate is not fatal");
    assert_eq!(agent.terminate(), Some(0));

    // 2. The right certificate, same spool: everything arrives.
    let mut agent = crate::agent(
        dir.path(),
        "tls-1",
        &tls_url(broker.port),
        &tls_lines(&pki.ca, &pki.client_cert, &pki.client_key),
        "",
    );
    agent.start();
    wait_until(Duration::from_secs(30), "drain over mTLS", || {
        agent.status_u64("pending") == 0
    })
    .await;
    wait_until(Duration::from_secs(10), "all 2000 seqs", || {
        collector.seen().seqs_of("tls-1").len() == 2_000
    })
    .await;
    assert_eq!(agent.terminate(), Some(0));
    assert!(!agent.log().contains("private"), "no key material in logs");
}
