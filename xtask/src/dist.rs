//! `cargo xtask dist`: the Debian packages, built with cargo-deb from release builds (the
//! cross ones with Debian's cross gcc), then checked as a user would receive them: the
//! control fields, the file list and modes, the conffiles, the binary's ELF machine, the
//! libraries and glibc it needs, the unit; and, for amd64, installed into a throwaway root
//! with its maintainer scripts, run, checked and purged.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, cargo_linked, prereqs, sh};

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
    arches: &'static [&'static Arch],
}

const PACKAGES: [Package; 2] = [
    Package {
        name: "ferry-agent",
        config: "agent",
        arches: &[&AMD64, &ARM64, &ARMHF],
    },
    Package {
        name: "ferry-cloud",
        config: "cloud",
        arches: &[&AMD64, &ARM64],
    },
];

/// The shared libraries a packaged binary may need: glibc's and the unwinder.
const ALLOWED_LIBRARIES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux-armhf.so.3",
];

/// The `libc6 (>= ...)` of the packages' `Depends` (agent/Cargo.toml, cloud/Cargo.toml).
const GLIBC_DEPENDS: (u32, u32) = (2, 34);

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
        inspect(&deb, package, arch, &version)?;
        made.push((package, arch, deb));
    }
    let amd64 = |name: &str| {
        made.iter()
            .find(|(p, a, _)| p.name == name && a.deb == "amd64")
            .map(|(_, _, deb)| deb.clone())
    };
    if let (Some(agent), Some(cloud)) = (amd64("ferry-agent"), amd64("ferry-cloud")) {
        install_and_purge(&agent, &cloud)?;
    }
    println!("packages in {}:", out.display());
    for (_, _, deb) in &made {
        let size = std::fs::metadata(deb).map(|m| m.len()).unwrap_or(0);
        println!("  {} ({:.1} MiB)", file_name(deb), size as f64 / 1048576.0);
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
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

/// Every check of one package; the first failure is the error, naming the package.
fn inspect(deb: &Path, package: &Package, arch: &Arch, version: &str) -> Result<(), String> {
    let name = file_name(deb);
    let fail = |problem: String| format!("{name}: {problem}");
    let field = |f: &str| -> Result<String, String> {
        Ok(dpkg_deb(&["--field", f], deb)?.trim().to_owned())
    };
    for (key, expected) in [
        ("Package", package.name.to_owned()),
        ("Version", version.to_owned()),
        ("Architecture", arch.deb.to_owned()),
        (
            "Depends",
            format!(
                "libc6 (>= {}.{}), libgcc-s1",
                GLIBC_DEPENDS.0, GLIBC_DEPENDS.1
            ),
        ),
    ] {
        let got = field(key)?;
        if got != expected {
            return Err(fail(format!("{key} is {got:?}, not {expected:?}")));
        }
    }

    // The file list, with modes and owners: nothing missing, nothing else.
    let config = format!("./etc/ferry/{}.toml", package.config);
    let binary = format!("./usr/bin/{}", package.name);
    let unit = format!("./usr/lib/systemd/system/{}.service", package.name);
    let expected: [(&str, &str); 5] = [
        (&binary, "-rwxr-xr-x"),
        (&unit, "-rw-r--r--"),
        (
            &format!("./usr/lib/sysusers.d/{}.conf", package.name),
            "-rw-r--r--",
        ),
        (&config, "-rw-r-----"),
        (
            &format!("./usr/share/doc/{}/README.md", package.name),
            "-rw-r--r--",
        ),
    ];
    let listing = dpkg_deb(&["--contents"], deb)?;
    let files: Vec<(String, String, String)> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.to_string(),
                f.last()?.to_string(),
            ))
        })
        .collect();
    for (path, mode) in expected {
        match files.iter().find(|(_, _, p)| p == path) {
            None => return Err(fail(format!("{path} is missing"))),
            Some((m, owner, _)) if m != mode || !["root/root", "0/0"].contains(&owner.as_str()) => {
                return Err(fail(format!("{path} is {m} {owner}, not {mode} root/root")));
            }
            Some(_) => {}
        }
    }
    let extra: Vec<&str> = files
        .iter()
        .map(|(_, _, p)| p.as_str())
        .filter(|p| !expected.iter().any(|(e, _)| e == p))
        .filter(|p| !p.starts_with(&format!("./usr/share/doc/{}/", package.name)))
        .collect();
    if !extra.is_empty() {
        return Err(fail(format!("unexpected files: {extra:?}")));
    }
    let conffiles = dpkg_deb(&["--info", "conffiles"], deb)?;
    if conffiles.trim() != config.trim_start_matches('.') {
        return Err(fail(format!(
            "conffiles are {:?}, not {}",
            conffiles.trim(),
            &config[1..]
        )));
    }
    for script in ["postinst", "prerm", "postrm"] {
        let text =
            dpkg_deb(&["--info", script], deb).map_err(|e| fail(format!("no {script}: {e}")))?;
        let dir = tempdir(&format!("script-{}", package.name))?;
        let path = dir.join(script);
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        output(Command::new("sh").arg("-n").arg(&path))
            .map_err(|e| fail(format!("{script}: {e}")))?;
        let _ = std::fs::remove_dir_all(&dir);
    }

    // The binary itself.
    let tree = tempdir(&format!("x-{}-{}", package.name, arch.deb))?;
    output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
    let bin = tree.join(&binary[2..]);
    let head = std::fs::read(&bin).map_err(|e| fail(format!("{binary}: {e}")))?;
    if head.get(..4) != Some(b"\x7fELF") {
        return Err(fail(format!("{binary} is not an ELF file")));
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if machine != arch.elf_machine {
        return Err(fail(format!(
            "{binary} is for ELF machine {machine:#x}, not {:#x} ({})",
            arch.elf_machine, arch.deb
        )));
    }
    let dynamic = output(Command::new("readelf").arg("-d").arg(&bin))?;
    for lib in dynamic.lines().filter_map(|l| {
        l.contains("(NEEDED)")
            .then(|| l.split('[').nth(1)?.split(']').next())
            .flatten()
    }) {
        if !ALLOWED_LIBRARIES.contains(&lib) {
            return Err(fail(format!("{binary} needs {lib}, beyond libc")));
        }
    }
    let versions = output(Command::new("readelf").arg("-V").arg(&bin))?;
    let newest = versions
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .ok_or_else(|| fail(format!("{binary} names no GLIBC_ version")))?;
    if newest > GLIBC_DEPENDS {
        return Err(fail(format!(
            "{binary} needs GLIBC_{}.{}, newer than the libc6 (>= {}.{}) it depends on",
            newest.0, newest.1, GLIBC_DEPENDS.0, GLIBC_DEPENDS.1
        )));
    }
    verify_unit(&tree, &unit[2..]).map_err(fail)?;
    let _ = std::fs::remove_dir_all(&tree);
    println!(
        "checked {name}: fields, {} files and modes, conffile, scripts, ELF {:#x}, libc only (GLIBC_{}.{}), unit",
        expected.len(),
        machine,
        newest.0,
        newest.1
    );
    Ok(())
}

/// `systemd-analyze verify` where systemd is installed; said, not skipped silently, where
/// it is not. The unit names /usr/bin/..., which this machine lacks, so a copy pointing at
/// the unpacked binary is verified. Anything it says (an unknown key, say) is a failure.
fn verify_unit(tree: &Path, unit: &str) -> Result<(), String> {
    if prereqs::on_path("systemd-analyze").is_none() {
        println!("note: systemd-analyze is not installed; {unit} was not verified");
        return Ok(());
    }
    let text = std::fs::read_to_string(tree.join(unit)).map_err(|e| format!("{unit}: {e}"))?;
    let usr_bin = std::fs::canonicalize(tree.join("usr/bin")).map_err(|e| e.to_string())?;
    let copy = tree.join(file_name(Path::new(unit)));
    std::fs::write(
        &copy,
        text.replace("/usr/bin/", &format!("{}/", usr_bin.display())),
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .map_err(|e| format!("systemd-analyze: {e}"))?;
    let said = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !said.trim().is_empty() {
        return Err(format!("systemd-analyze verify {unit}: {}", said.trim()));
    }
    Ok(())
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

/// Installs both amd64 packages into a throwaway root with dpkg itself, running their
/// maintainer scripts chroot-less (`DPKG_ROOT`), checks what they made, runs the binaries'
/// `--version` and `check` (an unedited example is refused; an edited one passes), then
/// purges them and checks that they are gone.
fn install_and_purge(agent: &Path, cloud: &Path) -> Result<(), String> {
    let root = tempdir("root")?;
    let fail = |problem: String| format!("installing into {}: {problem}", root.display());
    for dir in [
        "etc",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "usr/bin",
        "var/lib/ferry",
    ] {
        std::fs::create_dir_all(root.join(dir)).map_err(|e| e.to_string())?;
    }
    for (file, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
    ] {
        std::fs::write(root.join(file), text).map_err(|e| e.to_string())?;
    }
    let dpkg = |args: &[&str]| -> Result<String, String> {
        output(
            Command::new("dpkg")
                .arg(format!("--root={}", root.display()))
                .args([
                    "--force-script-chrootless",
                    "--force-depends",
                    "--log=/dev/null",
                ])
                .args(args),
        )
    };
    let said = dpkg(&[
        "-i",
        &agent.display().to_string(),
        &cloud.display().to_string(),
    ])?;
    if !said.contains("ferry-agent check --config /etc/ferry/agent.toml --connect") {
        return Err(fail(format!(
            "postinst did not say what to do next: {said}"
        )));
    }

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).map_err(|e| e.to_string())?;
    let group = std::fs::read_to_string(root.join("etc/group")).map_err(|e| e.to_string())?;
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("ferry:x:")?.split(':').next()?.parse().ok())
        .ok_or_else(|| fail(format!("no ferry group: {group}")))?;
    if !passwd.lines().any(|l| l.starts_with("ferry:")) {
        return Err(fail(format!("no ferry user: {passwd}")));
    }
    for (path, mode) in [
        ("etc/ferry", 0o750),
        ("etc/ferry/agent.toml", 0o640),
        ("etc/ferry/cloud.toml", 0o640),
    ] {
        let meta = std::fs::metadata(root.join(path)).map_err(|e| fail(format!("{path}: {e}")))?;
        let got = meta.permissions().mode() & 0o7777;
        if got != mode || meta.uid() != 0 || meta.gid() != gid {
            return Err(fail(format!(
                "/{path} is {got:o} {}:{}, not {mode:o} 0:{gid}",
                meta.uid(),
                meta.gid()
            )));
        }
    }

    for (name, config) in [("ferry-agent", "agent"), ("ferry-cloud", "cloud")] {
        let bin = root.join("usr/bin").join(name);
        let version = output(Command::new(&bin).arg("--version"))?;
        if !version.starts_with(name) {
            return Err(fail(format!("{name} --version said {version:?}")));
        }
        let example = root.join(format!("etc/ferry/{config}.toml"));
        let unedited = Command::new(&bin)
            .args(["check", "--config"])
            .arg(&example)
            .output()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&unedited.stderr);
        if unedited.status.success() || !err.contains("CHANGE-ME") {
            return Err(fail(format!(
                "{name} check passed the unedited example: {err}"
            )));
        }
        let edited = root.join(format!("etc/ferry/{config}-edited.toml"));
        std::fs::write(&edited, edit(&root, &example)?).map_err(|e| e.to_string())?;
        output(Command::new(&bin).args(["check", "--config"]).arg(&edited))
            .map_err(|e| fail(format!("{name} check of the edited example: {e}")))?;
        std::fs::remove_file(&edited).map_err(|e| e.to_string())?;
    }

    for token in ["admin.token", "loyalty.token"] {
        std::fs::remove_file(root.join("etc/ferry").join(token)).map_err(|e| e.to_string())?;
    }
    dpkg(&["--purge", "ferry-agent", "ferry-cloud"])?;
    for gone in ["usr/bin/ferry-agent", "usr/bin/ferry-cloud", "etc/ferry"] {
        if root.join(gone).exists() {
            return Err(fail(format!("/{gone} is still there after the purge")));
        }
    }
    std::fs::remove_dir_all(&root).map_err(|e| e.to_string())?;
    println!("installed, checked and purged both amd64 packages in a throwaway root");
    Ok(())
}

/// The example as an administrator would edit it, for a plain local broker, with every
/// path inside `root` and the token files it names written there.
fn edit(root: &Path, example: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(example).map_err(|e| e.to_string())?;
    let inside = |p: &str| root.join(p.trim_start_matches('/')).display().to_string();
    let mut edited = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let line = match key {
            "device_id" => "device_id = \"pi-0001\"".to_owned(),
            "url" if line.contains("mqtts://") => "url = \"mqtt://127.0.0.1:1883\"".to_owned(),
            "ca_file" | "cert_file" | "key_file" => continue,
            "root" => format!("root = \"{}\"", inside("/var/lib/ferry/lake")),
            "s3_region" => continue,
            _ => line
                .replace("/etc/ferry/", &format!("{}/", inside("/etc/ferry")))
                .replace("/var/lib/ferry", &inside("/var/lib/ferry")),
        };
        edited.push_str(&line);
        edited.push('\n');
    }
    for token in ["admin.token", "loyalty.token"] {
        std::fs::write(
            root.join("etc/ferry").join(token),
            "a-long-random-token-for-the-package-test\n",
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(edited)
}
