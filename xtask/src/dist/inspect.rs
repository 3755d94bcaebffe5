//! The checks of one package, as a user would receive it.

use std::path::Path;
use std::process::Command;

use super::{Arch, Package, dpkg_deb, file_name, output, tempdir};
use crate::prereqs;

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

/// Every check of one package; the first failure is the error, naming the package.
pub fn inspect(deb: &Path, package: &Package, arch: &Arch, version: &str) -> Result<(), String> {
    let name = file_name(deb);
    let named = |problem: String| format!("{name}: {problem}");
    fields(deb, package, arch, version).map_err(named)?;
    let files = files(deb, package).map_err(named)?;
    scripts(deb, package).map_err(named)?;
    let tree = tempdir(&format!("x-{}-{}", package.name, arch.deb))?;
    output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
    let (machine, glibc) = binary(&tree, package, arch).map_err(named)?;
    verify_unit(
        &tree,
        &format!("usr/lib/systemd/system/{}.service", package.name),
    )
    .map_err(named)?;
    let _ = std::fs::remove_dir_all(&tree);
    println!(
        "checked {name}: fields, {files} files and modes, conffile, scripts, ELF {machine:#x}, libc only (GLIBC_{}.{}), unit",
        glibc.0, glibc.1
    );
    Ok(())
}

fn fields(deb: &Path, package: &Package, arch: &Arch, version: &str) -> Result<(), String> {
    let depends = format!(
        "libc6 (>= {}.{}), libgcc-s1",
        GLIBC_DEPENDS.0, GLIBC_DEPENDS.1
    );
    for (key, expected) in [
        ("Package", package.name),
        ("Version", version),
        ("Architecture", arch.deb),
        ("Depends", &depends),
    ] {
        let got = dpkg_deb(&["--field", key], deb)?;
        if got.trim() != expected {
            return Err(format!("{key} is {:?}, not {expected:?}", got.trim()));
        }
    }
    Ok(())
}

/// The file list, with modes and owners: nothing missing, nothing else; the config the one
/// conffile. Returns how many files there are.
fn files(deb: &Path, package: &Package) -> Result<usize, String> {
    let config = format!("./etc/ferry/{}.toml", package.config);
    let doc = format!("./usr/share/doc/{}/", package.name);
    let mut expected = vec![
        (format!("./usr/bin/{}", package.name), "-rwxr-xr-x"),
        (
            format!("./usr/lib/systemd/system/{}.service", package.name),
            "-rw-r--r--",
        ),
        (
            format!("./usr/lib/sysusers.d/{}.conf", package.name),
            "-rw-r--r--",
        ),
        (config.clone(), "-rw-r-----"),
        (format!("{doc}README.md"), "-rw-r--r--"),
    ];
    expected.extend(package.extra.iter().map(|(p, m)| ((*p).to_owned(), *m)));
    // `-rw-r--r-- root/root 1234 2026-01-01 00:00 ./path`; cargo-deb writes owners as 0/0.
    let listing = dpkg_deb(&["--contents"], deb)?;
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((*f.first()?, *f.get(1)?, *f.last()?))
        })
        .collect();
    for (path, mode) in &expected {
        match entries.iter().find(|(_, _, p)| p == path) {
            None => return Err(format!("{path} is missing")),
            Some((m, owner, _)) if m != mode || !["root/root", "0/0"].contains(owner) => {
                return Err(format!("{path} is {m} {owner}, not {mode} root/root"));
            }
            Some(_) => {}
        }
    }
    let extra: Vec<&str> = entries
        .iter()
        .map(|(_, _, p)| *p)
        .filter(|p| !expected.iter().any(|(e, _)| e == p) && !p.starts_with(&doc))
        .collect();
    if !extra.is_empty() {
        return Err(format!("unexpected files: {extra:?}"));
    }
    let conffiles = dpkg_deb(&["--info", "conffiles"], deb)?;
    if conffiles.trim() != &config[1..] {
        return Err(format!(
            "conffiles are {:?}, not {}",
            conffiles.trim(),
            &config[1..]
        ));
    }
    Ok(entries.len())
}

/// The maintainer scripts are there and parse (`sh -n`).
fn scripts(deb: &Path, package: &Package) -> Result<(), String> {
    let dir = tempdir(&format!("script-{}", package.name))?;
    for script in ["postinst", "prerm", "postrm"] {
        let text = dpkg_deb(&["--info", script], deb).map_err(|e| format!("no {script}: {e}"))?;
        let path = dir.join(script);
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        output(Command::new("sh").arg("-n").arg(&path)).map_err(|e| format!("{script}: {e}"))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The unpacked binary: its ELF machine, and the libraries and newest glibc symbol version
/// it needs. Returns the machine and that version.
fn binary(tree: &Path, package: &Package, arch: &Arch) -> Result<(u16, (u32, u32)), String> {
    let binary = format!("usr/bin/{}", package.name);
    let bin = tree.join(&binary);
    let head = std::fs::read(&bin).map_err(|e| format!("{binary}: {e}"))?;
    if head.get(..4) != Some(b"\x7fELF") || head.len() < 20 {
        return Err(format!("{binary} is not an ELF file"));
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if machine != arch.elf_machine {
        return Err(format!(
            "{binary} is for ELF machine {machine:#x}, not {:#x} ({})",
            arch.elf_machine, arch.deb
        ));
    }
    let dynamic = output(Command::new("readelf").arg("-d").arg(&bin))?;
    for lib in dynamic.lines().filter_map(|l| {
        l.contains("(NEEDED)")
            .then(|| l.split('[').nth(1)?.split(']').next())
            .flatten()
    }) {
        if !ALLOWED_LIBRARIES.contains(&lib) {
            return Err(format!("{binary} needs {lib}, beyond libc"));
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
        .ok_or_else(|| format!("{binary} names no GLIBC_ version"))?;
    if newest > GLIBC_DEPENDS {
        return Err(format!(
            "{binary} needs GLIBC_{}.{}, newer than the libc6 (>= {}.{}) it depends on",
            newest.0, newest.1, GLIBC_DEPENDS.0, GLIBC_DEPENDS.1
        ));
    }
    Ok((machine, newest))
}

/// `systemd-analyze verify` where systemd is installed; said, not skipped silently, where
/// it is not. The unit names /usr/bin/..., /usr/lib/ferry/... and the agent's updatable copy
/// in /var/lib/ferry/bin/, which this machine lacks, so a copy pointing at the unpacked files
/// is verified. Anything it says (an unknown key, say) is a failure.
fn verify_unit(tree: &Path, unit: &str) -> Result<(), String> {
    if prereqs::on_path("systemd-analyze").is_none() {
        println!("note: systemd-analyze is not installed; {unit} was not verified");
        return Ok(());
    }
    let text = std::fs::read_to_string(tree.join(unit)).map_err(|e| format!("{unit}: {e}"))?;
    let usr_bin = std::fs::canonicalize(tree.join("usr/bin")).map_err(|e| e.to_string())?;
    let usr_lib = std::fs::canonicalize(tree.join("usr/lib")).map_err(|e| e.to_string())?;
    let copy = tree.join(file_name(Path::new(unit)));
    std::fs::write(
        &copy,
        text.replace("/var/lib/ferry/bin/", "/usr/bin/")
            .replace("/usr/bin/", &format!("{}/", usr_bin.display()))
            .replace("/usr/lib/ferry/", &format!("{}/ferry/", usr_lib.display())),
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
