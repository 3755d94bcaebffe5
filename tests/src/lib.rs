//! Test harness for Ferry's integration and end-to-end tests: real processes on loopback.
//!
//! - [`broker::Mosquitto`]: a real Mosquitto on a random 127.0.0.1 port, plain or mTLS.
//! - [`certs::TestPki`]: a CA, server and client certificates made at test time.
//! - [`collector::Collector`]: a subscriber that decodes every envelope and keeps what it saw.
//! - [`agent::AgentProc`]: a `ferry-agent` process to start, SIGKILL, SIGTERM and query.
//! - [`devices`]: envelopes as agents build them, published at QoS 1; [`lake`]: reads a
//!   lake folder back.
//! - [`cloud`]: a `ferry-cloud ingest` process with its config and metrics; [`loyalty`]: a
//!   `ferry-cloud loyalty` process and its API; [`bins`]: Ferry's binaries for the
//!   end-to-end suite.
//! - [`curated`]: the curated lake read back by delta-rs and DuckDB; `compact --once`.
//! - [`postgres::Postgres`]: a real PostgreSQL server from `initdb`, on a random port.
//! - [`s3::S3Server`]: a real S3-protocol server (s3s-fs) in-process, to stop and resume.
//! - [`fleet`]: retained fleet topics watched and published, an artifact server, the
//!   unit's start loop with the update guard, and a second agent build to update to.
//! - [`netns::Link`]: a veth link of the test's own into a network namespace for the agent,
//!   to cap with a token bucket or silence (packets dropped, no RST).
//! - [`powercut::PowerCutFs`]: a FUSE filesystem that keeps only what was fsynced when
//!   the power is cut (LazyFS's model), for the power-cut tests.
//! - [`oidc::Provider`]: an OpenID Connect provider (discovery, JWKS, code flow with PKCE)
//!   with keys made at test time.
//!
//! Nothing here is skipped silently: a missing binary fails the test with what to install.

pub mod agent;
pub mod bins;
pub mod bridge;
pub mod broker;
pub mod certs;
pub mod cloud;
pub mod collector;
pub mod curated;
pub mod devices;
pub mod fleet;
pub mod http;
pub mod lake;
pub mod loyalty;
pub mod netns;
pub mod oidc;
pub mod postgres;
pub mod powercut;
pub mod process;
pub mod provisioning;
pub mod s3;
pub mod webdriver;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1, and never handed out before in this
/// process: tests that run in parallel each start several servers, and the kernel readily
/// gives a just-released port to the next `bind(0)`.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub async fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
