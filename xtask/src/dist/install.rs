//! The amd64 packages installed with dpkg into a throwaway root, used, and purged.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::{output, tempdir};

/// Installs both amd64 packages into a throwaway root with dpkg itself, running their
/// maintainer scripts chroot-less (`DPKG_ROOT`), checks what they made, runs the binaries'
/// `--version` and `check` (an unedited example is refused; an edited one passes), upgrades
/// the agent over an edited config (which stays as edited), then purges them and checks
/// that they are gone.
pub fn install_and_purge(agent: &Path, cloud: &Path) -> Result<(), String> {
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

    // An upgrade (the same package again: dpkg runs `postinst configure OLD-VERSION`)
    // keeps what the administrator did to the conffile: its text and its mode.
    let config = root.join("etc/ferry/agent.toml");
    let edited = format!(
        "{}# edited by the administrator\n",
        std::fs::read_to_string(&config).map_err(|e| e.to_string())?
    );
    std::fs::write(&config, &edited).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    dpkg(&["-i", &agent.display().to_string()])?;
    let after = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
    let mode = std::fs::metadata(&config)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode()
        & 0o7777;
    if after != edited || mode != 0o600 {
        return Err(fail(format!(
            "an upgrade changed the edited /etc/ferry/agent.toml (mode now {mode:o})"
        )));
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
