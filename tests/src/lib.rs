//! Test harness for Ferry's integration and end-to-end tests: real processes on loopback.
//!
//! - [`broker::Mosquitto`]: a real Mosquitto on a random 127.0.0.1 port, plain or mTLS.
//! - [`certs::TestPki`]: a CA, server and client certificates made at test time.
//! - [`collector::Collector`]: a subscriber that decodes every envelope and keeps what it saw.
//! - [`agent::AgentProc`]: a `ferry-agent` process to start, SIGKILL, SIGTERM and query.
//! - [`devices`]: envelopes as agents build them, published at QoS 1; [`lake`]: reads a
//!   lake folder back.
//! - [`s3::S3Server`]: a real S3-protocol server (s3s-fs) in-process, to stop and resume.
//!
//! Nothing here is skipped silently: a missing binary fails the test with what to install.

pub mod agent;
pub mod broker;
pub mod certs;
pub mod collector;
pub mod devices;
pub mod http;
pub mod lake;
pub mod process;
pub mod s3;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
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
