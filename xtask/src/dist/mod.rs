//! `cargo xtask dist`: the Debian packages, built with cargo-deb from release builds (the
//! cross ones with Debian's cross gcc), then checked as a user would receive them: the
//! control fields, the file list and modes, the conffiles, the binary's ELF machine, the
//! libraries and glibc it needs, the unit; and, for amd64, installed into a throwaway root
//! with its maintainer scripts, run, checked and purged.

mod inspect;
mod install;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, cargo_linked, prereqs, sh, target_dir};

struct Arch {
    /// Debian's name.
    deb: &'static str,
    target: &'static str,
    /// The ELF header's `e_machine`.
    elf_machine: u16,
}

const AMD64: Arch = Arch {
    deb: "amd64",
    target: "x86_64-unknown-linux-gnu",
    elf_machine: 0x3e,
};
const ARM64: Arch = Arch {
    deb: "arm64",
    target: "aarch64-unknown-linux-gnu",
    elf_machine: 0xb7,
};
const ARMHF: Arch = Arch {
    deb: "armhf",
    target: "armv7-unknown-linux-gnueabihf",
    elf_machine: 0x28,
};

struct Package {
    name: &'static str,
    /// `/etc/ferry/{config}.toml`.
    config: &'static str,
    /// Files beyond the binary, the unit, sysusers, the config and the README, with
    /// their modes: `(path, "-rwxr-xr-x")`.
    extra: &'static [(&'static str, &'static str)],
    arches: &'static [&'static Arch],
}

const PACKAGES: [Package; 2] = [
    Package {
        name: "ferry-agent",
        config: "agent",
        extra: &[("./usr/lib/ferry/ferry-update-guard", "-rwxr-xr-x")],
        arches: &[&AMD64, &ARM64, &ARMHF],
    },
    Package {
        name: "ferry-cloud",
        config: "cloud",
        extra: &[],
        arches: &[&AMD64, &ARM64],
    },
];

/// `--arch amd64,arm64` (default: every package's every architecture).
pub fn dist(args: &[String]) -> Result<(), String> {
    let mut wanted: Option<Vec<String>> = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--arch" => {
                let list = iter.next().ok_or("--arch needs a list, like amd64,arm64")?;
                wanted = Some(list.split(',').map(str::to_owned).collect());
            }
            other => return Err(format!("dist: unknown argument {other:?}")),
        }
    }
    let builds: Vec<(&Package, &Arch)> = PACKAGES
        .iter()
        .flat_map(|p| p.arches.iter().map(move |a| (p, *a)))
        .filter(|(_, a)| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == a.deb)))
        .collect();
    if let Some(w) = &wanted
        && let Some(unknown) = w
            .iter()
            .find(|x| !["amd64", "arm64", "armhf"].contains(&x.as_str()))
    {
        return Err(format!(
            "dist: no architecture {unknown:?}: amd64, arm64, armhf"
        ));
    }
    prereqs::ensure(prereqs::DIST)?;
    if builds.iter().any(|(_, a)| a.deb != "amd64") {
        prereqs::ensure(prereqs::CROSS)?;
    }
    let version = workspace_version()?;
    let out = target_dir().join("dist");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    // What a failed run left for inspection: unpacked packages and throwaway roots.
    for entry in std::fs::read_dir(&out).map_err(|e| format!("{}: {e}", out.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if file_name(&path).starts_with('.') && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let mut made = Vec::new();
    for (package, arch) in builds {
        let deb = build(package, arch, &version, &out)?;
        inspect::inspect(&deb, package, arch, &version)?;
        made.push((package, arch, deb));
    }
    let amd64 = |name: &str| {
        made.iter()
            .find(|(p, a, _)| p.name == name && a.deb == "amd64")
            .map(|(_, _, deb)| deb.clone())
    };
    if let (Some(agent), Some(cloud)) = (amd64("ferry-agent"), amd64("ferry-cloud")) {
        install::install_and_purge(&agent, &cloud)?;
    }
    println!("packages in {}:", out.display());
    for (_, _, deb) in &made {
        let size = std::fs::metadata(deb).map(|m| m.len()).unwrap_or(0);
        println!("  {} ({:.1} MiB)", file_name(deb), size as f64 / 1048576.0);
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `[workspace.package] version` of the root Cargo.toml.
fn workspace_version() -> Result<String, String> {
    let text = std::fs::read_to_string("Cargo.toml").map_err(|e| format!("Cargo.toml: {e}"))?;
    let section = text
        .split("[workspace.package]")
        .nth(1)
        .ok_or("Cargo.toml has no [workspace.package]")?;
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "version").then(|| value.trim().trim_matches('"').to_owned())
        })
        .ok_or_else(|| "Cargo.toml: no version in [workspace.package]".into())
}

fn build(package: &Package, arch: &Arch, version: &str, out: &Path) -> Result<PathBuf, String> {
    // mold for the host's link only: under `mold -run` the cross gcc would get it too.
    let mut build = if arch.deb == "amd64" {
        cargo_linked()
    } else {
        cargo()
    };
    sh::run(build.args([
        "build",
        "--release",
        "-p",
        package.name,
        "--target",
        arch.target,
    ]))?;
    let deb = out.join(format!("{}_{version}_{}.deb", package.name, arch.deb));
    sh::run(
        cargo()
            .args([
                "deb",
                "--no-build",
                "--no-strip",
                "-p",
                package.name,
                "--target",
                arch.target,
                "--output",
            ])
            .arg(&deb),
    )?;
    Ok(deb)
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let line = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {line}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{line} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dpkg_deb(args: &[&str], deb: &Path) -> Result<String, String> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.args(&args[..1]).arg(deb).args(&args[1..]);
    output(&mut cmd)
}

fn tempdir(name: &str) -> Result<PathBuf, String> {
    let dir = target_dir()
        .join("dist")
        .join(format!(".{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Absolute: dpkg runs maintainer scripts by path under --root.
    std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}
