//! What the test suite and CI need besides Rust, in one list: how each is found, and the
//! package that brings it. README's "needs" paragraph is generated from this list (and a
//! test checks that it still is).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sh;

/// Where a prerequisite comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Debian packages, installed together with `apt-get install`.
    Apt(&'static [&'static str]),
    /// A Python package, with `pip install`.
    Pip(&'static str),
    /// A Rust target, with `rustup target add`.
    Rustup(&'static str),
    /// A cargo subcommand, with `cargo install --locked`.
    Cargo(&'static str),
}

/// How to tell that a prerequisite is already there.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// Any of these files exists.
    AnyFile(&'static [&'static str]),
    /// This command is on the PATH.
    Command(&'static str),
    /// `python3 -c "import NAME"` succeeds.
    PythonModule(&'static str),
    /// PostgreSQL's server binaries, in `PG_BIN` or `/usr/lib/postgresql/*/bin`.
    PostgresServer,
    /// `rustup target list --installed` lists it.
    RustTarget(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Prereq {
    pub name: &'static str,
    /// What in the suite needs it, for README and for the line printed while installing.
    pub why: &'static str,
    pub probe: Probe,
    pub source: Source,
}

/// Needed by `cargo xtask test`.
pub const TEST: &[Prereq] = &[
    Prereq {
        name: "mosquitto",
        why: "the MQTT broker of the integration and end-to-end tests",
        probe: Probe::AnyFile(&[
            "/usr/sbin/mosquitto",
            "/usr/local/sbin/mosquitto",
            "/usr/bin/mosquitto",
        ]),
        source: Source::Apt(&["mosquitto"]),
    },
    Prereq {
        name: "PostgreSQL server binaries",
        why: "the ledger's and hot store's tests on a real PostgreSQL (or set PG_BIN)",
        probe: Probe::PostgresServer,
        source: Source::Apt(&["postgresql"]),
    },
    Prereq {
        name: "chromium and chromedriver",
        why: "the dashboard's browser test",
        probe: Probe::AnyFile(&["/usr/bin/chromedriver"]),
        source: Source::Apt(&["chromium", "chromium-driver"]),
    },
    Prereq {
        name: "duckdb (Python)",
        why: "reading the lake back as an analyst would",
        probe: Probe::PythonModule("duckdb"),
        source: Source::Pip("duckdb"),
    },
    Prereq {
        name: "deltalake (Python)",
        why: "reading the curated Delta tables back with delta-rs, as Spark and Athena would",
        probe: Probe::PythonModule("deltalake"),
        source: Source::Pip("deltalake"),
    },
    Prereq {
        name: "cfn-lint (Python)",
        why: "reading the stack's template, whose enrollment hook the allow-list test runs",
        probe: Probe::PythonModule("cfnlint"),
        source: Source::Pip("cfn-lint"),
    },
    Prereq {
        name: "schemathesis",
        why: "fuzzing both APIs from their OpenAPI documents",
        probe: Probe::Command("schemathesis"),
        source: Source::Pip("schemathesis"),
    },
    Prereq {
        name: "fuse3",
        why: "the power-cut filesystem (FUSE; fusermount3 mounts it where the tests are not root)",
        probe: Probe::AnyFile(&["/usr/bin/fusermount3", "/bin/fusermount3"]),
        source: Source::Apt(&["fuse3"]),
    },
    Prereq {
        name: "mosquitto_pub",
        why: "a Mosquitto bridge fed beside the agent in the silent-link test, and the drain bench's baseline",
        probe: Probe::Command("mosquitto_pub"),
        source: Source::Apt(&["mosquitto-clients"]),
    },
    Prereq {
        name: "libfaketime",
        why: "the agent's clock test, whose wall clock starts in 1970 and steps while it runs",
        probe: Probe::AnyFile(&[
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        ]),
        source: Source::Apt(&["faketime"]),
    },
    Prereq {
        name: "strace",
        why: "the agent's fault test, which makes fsync fail",
        probe: Probe::AnyFile(&["/usr/bin/strace"]),
        source: Source::Apt(&["strace"]),
    },
    Prereq {
        name: "ip and tc (iproute2)",
        why: "the agent's link tests: a network namespace, a veth pair, a token-bucket cap",
        probe: Probe::AnyFile(&["/usr/sbin/tc", "/sbin/tc"]),
        source: Source::Apt(&["iproute2"]),
    },
    Prereq {
        name: "openssl (the command)",
        why: "RSA keys for the signed-in users' tests, made at test time (ferry links no OpenSSL)",
        probe: Probe::Command("openssl"),
        source: Source::Apt(&["openssl"]),
    },
    Prereq {
        name: "mold",
        why: "a faster linker for the many test binaries (a plain build works without it)",
        probe: Probe::Command("mold"),
        source: Source::Apt(&["mold"]),
    },
];

/// Needed besides by `cargo xtask dist` (and so by CI).
pub const DIST: &[Prereq] = &[
    Prereq {
        name: "cargo-deb",
        why: "building the Debian packages",
        probe: Probe::Command("cargo-deb"),
        source: Source::Cargo("cargo-deb"),
    },
    Prereq {
        name: "dpkg-deb, readelf and systemd-analyze",
        why: "checking the packages, the binaries in them and their units",
        probe: Probe::Command("systemd-analyze"),
        source: Source::Apt(&["dpkg", "binutils", "systemd"]),
    },
    Prereq {
        name: "cfn-lint",
        why: "linting the CloudFormation stack (deploy/aws/ferry.yaml)",
        probe: Probe::Command("cfn-lint"),
        source: Source::Pip("cfn-lint"),
    },
];

/// Needed besides by `cargo xtask cross` (and so by CI).
pub const CROSS: &[Prereq] = &[
    Prereq {
        name: "aarch64 cross gcc",
        why: "linking the agent for 64-bit Raspberry Pi OS",
        probe: Probe::Command("aarch64-linux-gnu-gcc"),
        source: Source::Apt(&["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]),
    },
    Prereq {
        name: "armv7 cross gcc",
        why: "linking the agent for 32-bit Raspberry Pi OS",
        probe: Probe::Command("arm-linux-gnueabihf-gcc"),
        source: Source::Apt(&["gcc-arm-linux-gnueabihf", "libc6-dev-armhf-cross"]),
    },
    Prereq {
        name: "qemu-user",
        why: "running the aarch64 unit tests on this machine",
        probe: Probe::Command("qemu-aarch64"),
        source: Source::Apt(&["qemu-user"]),
    },
    Prereq {
        name: "Rust target aarch64-unknown-linux-gnu",
        why: "the aarch64 build",
        probe: Probe::RustTarget("aarch64-unknown-linux-gnu"),
        source: Source::Rustup("aarch64-unknown-linux-gnu"),
    },
    Prereq {
        name: "Rust target armv7-unknown-linux-gnueabihf",
        why: "the armv7 build",
        probe: Probe::RustTarget("armv7-unknown-linux-gnueabihf"),
        source: Source::Rustup("armv7-unknown-linux-gnueabihf"),
    },
];

impl Prereq {
    pub fn present(&self) -> bool {
        match self.probe {
            Probe::AnyFile(paths) => paths.iter().any(|p| Path::new(p).exists()),
            Probe::Command(name) => on_path(name).is_some(),
            Probe::PythonModule(module) => Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            Probe::PostgresServer => postgres_bin().is_some(),
            Probe::RustTarget(target) => Command::new("rustup")
                .args(["target", "list", "--installed"])
                .output()
                .is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .any(|l| l == target)
                }),
        }
    }

    /// The command a person would type to install it.
    pub fn install_line(&self) -> String {
        match self.source {
            Source::Apt(pkgs) => format!("apt-get install -y {}", pkgs.join(" ")),
            Source::Pip(pkg) => format!("pip install {pkg}"),
            Source::Rustup(target) => format!("rustup target add {target}"),
            Source::Cargo(krate) => format!("cargo install --locked {krate}"),
        }
    }
}

/// `PG_BIN`, or the newest `/usr/lib/postgresql/*/bin` with `initdb` and `postgres`.
pub fn postgres_bin() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").exists() && dir.join("postgres").exists();
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return usable(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| usable(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Installs what is missing of `list`, saying what and why; `apt-get update` runs once at
/// most. Not root and something missing from apt or pip: an error naming what to install.
pub fn ensure(list: &[Prereq]) -> Result<(), String> {
    let missing: Vec<&Prereq> = list.iter().filter(|p| !p.present()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let needs_root = missing
        .iter()
        .any(|p| !matches!(p.source, Source::Rustup(_) | Source::Cargo(_)));
    if needs_root && !is_root() {
        let lines: Vec<String> = missing
            .iter()
            .map(|p| format!("  {} ({}): {}", p.name, p.why, p.install_line()))
            .collect();
        return Err(format!(
            "missing, and installing them needs root:\n{}",
            lines.join("\n")
        ));
    }
    let mut apt_updated = false;
    for p in missing {
        eprintln!(
            "xtask: installing {} ({}): {}",
            p.name,
            p.why,
            p.install_line()
        );
        match p.source {
            Source::Apt(pkgs) => {
                if !apt_updated {
                    sh::run(Command::new("apt-get").args(["update", "-qq"]))?;
                    apt_updated = true;
                }
                sh::run(
                    Command::new("apt-get")
                        .env("DEBIAN_FRONTEND", "noninteractive")
                        .args(["install", "-y", "-qq"])
                        .args(pkgs),
                )?;
            }
            Source::Pip(pkg) => pip_install(pkg)?,
            Source::Rustup(target) => {
                sh::run(Command::new("rustup").args(["target", "add", target]))?;
            }
            Source::Cargo(krate) => {
                sh::run(Command::new("cargo").args(["install", "--locked", krate]))?;
            }
        }
        if !p.present() {
            return Err(format!(
                "{} is still missing after `{}`",
                p.name,
                p.install_line()
            ));
        }
    }
    Ok(())
}

/// pip, or pip refusing a system Python (PEP 668) and asked again to install anyway: this
/// is a test machine's interpreter, not a distribution's.
fn pip_install(pkg: &str) -> Result<(), String> {
    let plain = Command::new("python3")
        .args(["-m", "pip", "install", "-q", pkg])
        .status()
        .map_err(|e| format!("python3 -m pip: {e}"))?;
    if plain.success() {
        return Ok(());
    }
    sh::run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "-q",
        "--break-system-packages",
        pkg,
    ]))
}

/// README's paragraph on what the tests need, made from [`TEST`], [`CROSS`] and [`DIST`]
/// (`cargo xtask bench` needs nothing more than the tests).
pub fn markdown() -> String {
    let item = |p: &Prereq| format!("- {}: {} (`{}`)\n", p.name, p.why, p.install_line());
    let mut out = String::from(
        "`cargo xtask test` installs what is missing of this list (as root; otherwise it \
         names the command to run), then runs `cargo test --workspace`:\n\n",
    );
    TEST.iter().for_each(|p| out.push_str(&item(p)));
    out.push_str("\n`cargo xtask ci` and `cargo xtask cross` also need:\n\n");
    CROSS.iter().for_each(|p| out.push_str(&item(p)));
    out.push_str(
        "\n`cargo xtask dist` and `cargo xtask lint-aws` (and so `cargo xtask ci`) also need:\n\n",
    );
    DIST.iter().for_each(|p| out.push_str(&item(p)));
    out.push_str("\n`cargo xtask bench` needs nothing more than the tests.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "<!-- prereqs: start (cargo xtask prereqs --markdown) -->\n";
    const END: &str = "<!-- prereqs: end -->";

    #[test]
    fn readme_lists_what_xtask_installs() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find(START)
            .expect("README has the prereqs start marker")
            + START.len();
        let end = readme.find(END).expect("README has the prereqs end marker");
        assert_eq!(
            readme[start..end].trim(),
            markdown().trim(),
            "README's prereqs paragraph is stale: paste `cargo xtask prereqs --markdown` between the markers"
        );
    }
}
