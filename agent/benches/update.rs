//! What an update costs the device beside the plain file work it cannot avoid: the
//! download over HTTP (loopback), the checks (size, SHA-256 against the signed manifest)
//! and the install (copy, fsync, `--version` of the new binary, link, trial file, rename),
//! each against the baseline of reading the artifact and writing it back with an fsync, in
//! the same run.
//!
//!     cargo bench -p ferry-agent --bench update [-- MIB]

use std::io::Write;
use std::time::{Duration, Instant};

use ferry_agent::update::download;
use ferry_agent::update::install::install;
use ferry_agent::update::state::{Trial, UpdateDir};
use ferry_tests::fleet::{ArtifactServer, Serve};

const ROUNDS: usize = 5;

/// The best of `ROUNDS` runs of `f`: the machine is shared, the minimum is the cost.
fn best(mut f: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(16);
    // A script that says its version and exits before the shell reads the noise after it:
    // the install runs the new binary's `--version`.
    let mut bytes = b"#!/bin/sh\necho 'ferry-agent 2.0.0'\nexit 0\n".to_vec();
    bytes.extend((0..mib * 1024 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("artifact");
    std::fs::write(&source, &bytes).expect("artifact");
    let server = ArtifactServer::start();
    server.put("a", bytes.clone(), Serve::Whole);
    let manifest = ferry_tests::fleet::manifest(&bytes, "2.0.0");

    let baseline = best(|| {
        let read = std::fs::read(&source).expect("read");
        let mut out = std::fs::File::create(dir.path().join("copy")).expect("create");
        out.write_all(&read).expect("write");
        out.sync_all().expect("fsync");
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let part = dir.path().join("a.part");
    let fetch = best(|| {
        let _ = std::fs::remove_file(&part);
        runtime
            .block_on(download::fetch(
                &server.url("a"),
                manifest.size,
                &part,
                &tokio_util::sync::CancellationToken::new(),
            ))
            .expect("download");
    });
    let verify = best(|| {
        download::verify(&part, &manifest).expect("verifies");
    });
    let state = UpdateDir::open(dir.path()).expect("update dir");
    let binary = dir.path().join("ferry-agent");
    let trial = Trial {
        job: "bench".into(),
        version: "2.0.0".into(),
        previous_version: "1".into(),
        started: 0,
        trial_s: 120,
        previous_spool_format: 4,
    };
    // The install writes the bytes the check verified; only the install is timed.
    let verified = download::verify(&part, &manifest).expect("verifies");
    let install_time = (0..ROUNDS)
        .map(|_| {
            std::fs::write(&binary, b"old").expect("old binary");
            let t = Instant::now();
            install(&verified, &binary, &trial, &state).expect("install");
            t.elapsed()
        })
        .min()
        .unwrap_or_default();

    let mbs = |d: Duration| mib as f64 / d.as_secs_f64();
    println!(
        "update of a {mib} MiB artifact, best of {ROUNDS} (MiB/s, and time against the baseline)"
    );
    println!(
        "baseline: read + write + fsync   {:>8.0} MiB/s  1.00",
        mbs(baseline)
    );
    for (name, d) in [
        ("download (HTTP, loopback)", fetch),
        ("verify (size, SHA-256)", verify),
        ("install (copy, fsync, --version, rename)", install_time),
    ] {
        println!(
            "{name:<32} {:>8.0} MiB/s  {:.2}",
            mbs(d),
            d.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
