//! `cargo xtask`: Ferry's dev tooling, one way to do each thing (`cargo xtask --help`).

mod dist;
mod features;
mod prereqs;
mod sh;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use sh::Timings;

const HELP: &str = "\
cargo xtask COMMAND

  test [-- ARGS]     install what the suite needs (mosquitto, PostgreSQL, chromium,
                     duckdb, mold), then `cargo test --workspace ARGS`
  ci                 what CI runs: test, fmt, clippy, the cross builds, lint-aws, the amd64
                     packages; a timed summary
  cross              the agent's unit tests for aarch64 under qemu, and the armv7 build
  dist [--arch LIST] the Debian packages into target/dist/ (ferry-agent for amd64, arm64,
                     armhf; ferry-cloud for amd64, arm64), each checked; the amd64 ones
                     installed into a throwaway root, run and purged; LIST like amd64,arm64
  lint-aws           cfn-lint and the policy checks on deploy/aws/ferry.yaml
  bench [NAME...]    the benchmarks (all, or those named); see docs/BENCHMARKS.md
  openapi            writes docs/openapi/: the OpenAPI documents of the cloud's API and
                     the agent's POS API, as the binaries print them
  features           checks that the run build and the test build compile shared
                     dependencies with the same features (so one reuses the other)
  prereqs [--markdown | --install]
                     what the suite and CI need and whether it is here; --markdown
                     prints README's paragraph; --install installs what is missing
";

/// Every benchmark: (package, bench target).
const BENCHES: &[(&str, &str)] = &[
    ("ferry-agent", "spool"),
    ("ferry-agent", "drain"),
    ("ferry-agent", "pos"),
    ("ferry-agent", "update"),
    ("ferry-cloud", "ingest"),
    ("ferry-cloud", "ledger"),
    ("ferry-cloud", "dashboard"),
    ("ferry-cloud", "dedup"),
    ("ferry-cloud", "whole"),
    ("ferry-cloud", "compact"),
];

const CROSS_TARGETS: [&str; 2] = ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("--help", &[][..]),
    };
    let result = match command {
        "test" => test(passthrough(rest)),
        "ci" => ci(),
        "cross" => prereqs::ensure(prereqs::CROSS).and_then(|()| cross(&mut Timings::new())),
        "bench" => bench(rest),
        "dist" => dist::dist(rest),
        "lint-aws" => lint_aws(),
        "features" => features::check(),
        "openapi" => openapi(),
        "prereqs" if rest.iter().any(|a| a == "--install") => prereqs::ensure(prereqs::TEST)
            .and_then(|()| prereqs::ensure(prereqs::CROSS))
            .and_then(|()| prereqs::ensure(prereqs::DIST)),
        "prereqs" => {
            show_prereqs(rest.iter().any(|a| a == "--markdown"));
            Ok(())
        }
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What follows `--`, or everything when there is none.
fn passthrough(args: &[String]) -> &[String] {
    match args.iter().position(|a| a == "--") {
        Some(i) => &args[i + 1..],
        None => args,
    }
}

/// The cargo that runs this xtask.
fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Where cargo builds: `CARGO_TARGET_DIR` (CI sets it), else `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn cargo() -> Command {
    Command::new(cargo_program())
}

/// cargo, linking with mold where it is installed. `mold -run` swaps the linker under the
/// C compiler without changing rustc's flags, so its builds share the cache with plain
/// `cargo build`.
fn cargo_linked() -> Command {
    if let Some(mold) = prereqs::on_path("mold") {
        let mut cmd = Command::new(mold);
        cmd.arg("-run").arg(cargo_program());
        cmd
    } else {
        cargo()
    }
}

fn test(args: &[String]) -> Result<(), String> {
    prereqs::ensure(prereqs::TEST)?;
    sh::run(
        cargo_linked()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(args),
    )
}

fn ci() -> Result<(), String> {
    let mut t = Timings::new();
    t.step("prerequisites", || {
        prereqs::ensure(prereqs::TEST)?;
        prereqs::ensure(prereqs::CROSS)?;
        prereqs::ensure(prereqs::DIST)
    })?;
    t.step("features (run build = test build)", features::check)?;
    let (tested, count) = t.step("test (README: cargo xtask test)", || {
        sh::run_counting(cargo_linked().args(["test", "--workspace", "--no-fail-fast"]))
    });
    let checks = tested
        .and_then(|()| {
            t.step("fmt", || {
                sh::run(cargo().args(["fmt", "--all", "--", "--check"]))
            })
        })
        .and_then(|()| {
            t.step("clippy", || {
                sh::run(cargo_linked().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))
            })
        })
        .and_then(|()| cross(&mut t))
        .and_then(|()| t.step("lint-aws (cfn-lint, policies)", lint_aws))
        // One architecture's packages here (release builds of both binaries); all three
        // with `cargo xtask dist` (docs/BENCHMARKS.md: what each costs).
        .and_then(|()| {
            t.step("dist amd64 (packages, install test)", || {
                dist::dist(&["--arch".into(), "amd64".into()])
            })
        });
    t.print();
    let target = target_dir();
    for name in [
        "dashboard-1920.png",
        "dashboard-390.png",
        "dashboard-failed.png",
    ] {
        let shot = target.join("artifacts").join(name);
        if shot.exists() {
            println!(
                "artifact: a dashboard browser test's screenshot is {}",
                shot.display()
            );
        }
    }
    println!("tests: {} passed, {} failed", count.passed, count.failed);
    checks
}

/// Cross builds with Debian's cross gcc (`.cargo/config.toml` names the linkers and
/// qemu-user as the runner), so `cargo test --target` runs on an x86_64 host.
fn cross(t: &mut Timings) -> Result<(), String> {
    let [aarch64, armv7] = CROSS_TARGETS;
    t.step("aarch64 unit tests (qemu)", || {
        sh::run(cargo().args([
            "test",
            "-p",
            "ferry-shared",
            "-p",
            "ferry-agent",
            "--lib",
            "--target",
            aarch64,
        ]))
    })?;
    t.step("armv7 build", || {
        sh::run(cargo().args(["build", "-p", "ferry-agent", "--target", armv7]))
    })
}

/// cfn-lint (any finding fails, warnings included), then `deploy/aws/check.py`: its
/// self-test, and its checks against the DDL `ferry-cloud lake ddl` prints.
fn lint_aws() -> Result<(), String> {
    const TEMPLATE: &str = "deploy/aws/ferry.yaml";
    prereqs::ensure(prereqs::DIST)?;
    sh::run(Command::new("cfn-lint").arg(TEMPLATE))?;
    // README's run build, which the test build shares (`cargo xtask features`): nothing to
    // compile after the tests. `cargo run -p ferry-cloud` alone resolves other features.
    sh::run(cargo_linked().args(["build", "-q", "-p", "ferry-agent", "-p", "ferry-cloud"]))?;
    let target = target_dir();
    let ddl = Command::new(target.join("debug/ferry-cloud"))
        .args(["lake", "ddl"])
        .output()
        .map_err(|e| format!("cannot run ferry-cloud lake ddl: {e}"))?;
    if !ddl.status.success() {
        return Err(format!(
            "ferry-cloud lake ddl failed: {}",
            String::from_utf8_lossy(&ddl.stderr)
        ));
    }
    let ddl_file = target.join("lake-ddl.sql");
    std::fs::write(&ddl_file, &ddl.stdout).map_err(|e| format!("{}: {e}", ddl_file.display()))?;
    let check = |first: &str| {
        let mut cmd = Command::new("python3");
        cmd.arg("deploy/aws/check.py");
        if !first.is_empty() {
            cmd.arg(first);
        }
        sh::run(cmd.arg(TEMPLATE).arg(&ddl_file))
    };
    check("--self-test")?;
    check("")
}

fn bench(names: &[String]) -> Result<(), String> {
    let (names, extra) = match names.iter().position(|a| a == "--") {
        Some(i) => (&names[..i], &names[i..]),
        None => (names, &[][..]),
    };
    if let Some(unknown) = names.iter().find(|n| !BENCHES.iter().any(|(_, b)| b == n)) {
        let known: Vec<&str> = BENCHES.iter().map(|(_, b)| *b).collect();
        return Err(format!(
            "no benchmark {unknown:?}; there are: {}",
            known.join(", ")
        ));
    }
    // Some start mosquitto or PostgreSQL, as the tests do.
    prereqs::ensure(prereqs::TEST)?;
    let mut t = Timings::new();
    for (package, name) in BENCHES {
        if names.is_empty() || names.iter().any(|n| n == name) {
            t.step(&format!("bench {name}"), || {
                sh::run(
                    cargo_linked()
                        .args(["bench", "-p", package, "--bench", name])
                        .args(extra),
                )
            })?;
        }
    }
    t.print();
    Ok(())
}

/// The API documents, from the binaries (`ferry-cloud openapi`, `ferry-agent openapi`),
/// into `docs/openapi/`; tests in each crate fail when the copies there are stale.
fn openapi() -> Result<(), String> {
    for (package, file) in [("ferry-cloud", "cloud.json"), ("ferry-agent", "agent.json")] {
        let out = cargo()
            .args(["run", "-q", "-p", package, "--", "openapi"])
            .output()
            .map_err(|e| format!("cannot run {package}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{package} openapi failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let path = PathBuf::from("docs/openapi").join(file);
        std::fs::create_dir_all("docs/openapi").map_err(|e| format!("docs/openapi: {e}"))?;
        std::fs::write(&path, &out.stdout).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn show_prereqs(markdown: bool) {
    if markdown {
        print!("{}", prereqs::markdown());
        return;
    }
    for p in prereqs::TEST
        .iter()
        .chain(prereqs::CROSS)
        .chain(prereqs::DIST)
    {
        let state = if p.present() { "ok     " } else { "missing" };
        println!("{state} {:<42} {}", p.name, p.install_line());
    }
}
