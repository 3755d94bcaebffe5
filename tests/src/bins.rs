//! Ferry's own binaries for tests outside their packages (the end-to-end suite), found
//! beside the test executable in the target directory.
//!
//! This package cannot depend on binaries, so cargo does not build them for it; `cargo test
//! --workspace` (the README's command) does, before any test runs. Building them from here
//! would not do: a nested `cargo build -p ferry-cloud` unifies features differently, and
//! each run would rebuild half the dependency tree. So a missing or stale binary fails the
//! test, saying what to run.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The path of workspace binary `name` (`ferry-agent`, `ferry-cloud`), of the same profile
/// as the running test; it must be newer than every source it is built from.
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/{profile}/deps/{test}-{hash} -> target/{profile}/{name}
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/{profile}/deps")
        .join(name);
    let fix = "run `cargo test --workspace` (or `cargo build --workspace --bins` first)";
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {fix}", bin.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let package = name.trim_start_matches("ferry-");
    for dir in [package, "shared"] {
        if let Some((source, _)) = newest(&root.join(dir).join("src"))
            .into_iter()
            .chain(newest(&root.join(dir).join("migrations")))
            .find(|(_, t)| *t > built)
        {
            panic!(
                "{} is older than {}: {fix}",
                bin.display(),
                source.display()
            );
        }
    }
    bin
}

/// The most recently modified file under `dir`.
fn newest(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut best: Option<(PathBuf, SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (path, t))
        };
        if let Some((p, t)) = candidate
            && best.as_ref().is_none_or(|(_, b)| t > *b)
        {
            best = Some((p, t));
        }
    }
    best
}
