//! Ferry's own binaries for tests outside their packages (the end-to-end suite): found
//! beside the test executable in the target directory, and built there when missing.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The path of workspace binary `name` (`ferry-agent`, `ferry-cloud`), of the same profile
/// as the running test. `cargo test --workspace` builds both already; a test run of this
/// package alone builds the missing one here, once.
pub fn path(name: &str) -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let exe = std::env::current_exe().expect("the test's own path");
    // target/{profile}/deps/{test}-{hash} -> target/{profile}/{name}
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/{profile}/deps");
    let bin = dir.join(name);
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.exists() {
        let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "--bin", name]);
        if profile == "release" {
            build.arg("--release");
        }
        let status = build
            .status()
            .unwrap_or_else(|e| panic!("building {name} with cargo: {e}"));
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    assert!(
        bin.exists(),
        "{} is missing after building it",
        bin.display()
    );
    bin
}
