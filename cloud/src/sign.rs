//! `ferry-cloud sign` (README: updates): the release key, and the `artifacts` entry of a
//! rollout for a binary: its manifest, signed with the key.

use std::path::Path;

use anyhow::{Context, bail};
use ferry_shared::fleet::{Artifact, Manifest};
use ferry_shared::signing::{Sha256, SigningKey};

/// Makes a key in `out` (mode 0600; an existing file is never overwritten) and returns the
/// public key, for the agents' `[update] public_key`.
pub fn keygen(out: &Path) -> anyhow::Result<String> {
    let (key, stored) = SigningKey::generate()?;
    crate::certs::write_new(out, &format!("{stored}\n"), true)?;
    Ok(key.public_key())
}

/// What the release manager says of a binary; the rest of its manifest is read from it.
#[derive(Debug, Clone)]
pub struct Release {
    pub version: String,
    /// Debian's name; by default the one the binary's ELF header names.
    pub arch: Option<String>,
    pub min_version: String,
    pub rollback_to: bool,
    pub expires_in_days: u32,
}

/// Debian's name of the machine an ELF binary is built for, from its header.
fn elf_arch(bytes: &[u8]) -> Option<&'static str> {
    if bytes.get(..4) != Some(b"\x7fELF") {
        return None;
    }
    // e_machine, little-endian on every target Ferry builds for.
    match bytes.get(18..20)? {
        [62, 0] => Some("amd64"),
        [183, 0] => Some("arm64"),
        [40, 0] => Some("armhf"),
        _ => None,
    }
}

/// Signs the manifest of `binary` with the key in `key` and describes it as served from
/// `url`.
pub fn artifact(
    key: &Path,
    binary: &Path,
    url: &str,
    release: &Release,
) -> anyhow::Result<Artifact> {
    let text =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let key = SigningKey::parse(&text).with_context(|| key.display().to_string())?;
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let arch = match (release.arch.as_deref(), elf_arch(&bytes)) {
        (Some(given), Some(elf)) if given != elf => {
            bail!(
                "--arch {given}, but {} is built for {elf}",
                binary.display()
            )
        }
        (Some(given), _) => given.to_owned(),
        (None, Some(elf)) => elf.to_owned(),
        (None, None) => bail!(
            "{} is not an ELF binary for amd64, arm64 or armhf: give --arch",
            binary.display()
        ),
    };
    let expires = chrono::Utc::now() + chrono::Duration::days(i64::from(release.expires_in_days));
    let manifest = Manifest {
        version: release.version.clone(),
        arch,
        sha256: Sha256::hex_of(&bytes),
        size: bytes.len() as u64,
        min_version: release.min_version.clone(),
        rollback_to: release.rollback_to,
        expires: expires.into(),
    };
    let text = manifest.to_text();
    // The same checks the devices make of its form.
    Manifest::parse(&text).map_err(anyhow::Error::msg)?;
    let artifact = Artifact {
        url: url.to_owned(),
        signature: key.sign(text.as_bytes()),
        manifest: text,
    };
    artifact
        .check("the artifact", &release.version)
        .map_err(anyhow::Error::msg)?;
    Ok(artifact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::signing::PublicKey;

    #[test]
    fn a_made_key_signs_artifacts_the_agents_verify_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = dir.path().join("release.key");
        let public = keygen(&key).expect("keygen");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(keygen(&key).is_err(), "an existing key is kept");
        let bin = dir.path().join("ferry-agent");
        std::fs::write(&bin, b"a binary").expect("bin");
        let release = Release {
            version: "1.2.0".into(),
            arch: None,
            min_version: "1.0.0".into(),
            rollback_to: false,
            expires_in_days: 30,
        };
        let url = "https://example.invalid/ferry-agent";
        let err = artifact(&key, &bin, url, &release).expect_err("no arch known");
        assert!(err.to_string().contains("--arch"), "{err}");
        let release = Release {
            arch: Some("arm64".into()),
            ..release
        };
        let a = artifact(&key, &bin, url, &release).expect("signed");
        let m = Manifest::parse(&a.manifest).expect("manifest");
        assert_eq!((m.size, m.arch.as_str()), (8, "arm64"));
        assert_eq!(m.sha256, Sha256::hex_of(b"a binary"));
        let verifier = PublicKey::parse(&public).expect("public");
        assert_eq!(verifier.verify(a.manifest.as_bytes(), &a.signature), Ok(()));

        // An ELF header names the machine, and a contradicting --arch is refused.
        let mut elf = b"\x7fELF".to_vec();
        elf.resize(18, 0);
        elf.extend_from_slice(&[62, 0, 1, 0]);
        std::fs::write(&bin, &elf).expect("elf");
        let err = artifact(&key, &bin, url, &release).expect_err("contradiction");
        assert!(err.to_string().contains("built for amd64"), "{err}");
        let a = artifact(
            &key,
            &bin,
            url,
            &Release {
                arch: None,
                ..release
            },
        )
        .expect("signed");
        assert_eq!(Manifest::parse(&a.manifest).expect("m").arch, "amd64");
    }
}
