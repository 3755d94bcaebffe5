//! `ferry-cloud sign` (README: updates): the release key, and the `artifacts` entry of a
//! rollout for a binary, signed with it.

use std::path::Path;

use anyhow::Context;
use ferry_shared::fleet::Artifact;
use ferry_shared::signing::{Sha256, SigningKey};

/// Makes a key in `out` (mode 0600; an existing file is never overwritten) and returns the
/// public key, for the agents' `[update] public_key`.
pub fn keygen(out: &Path) -> anyhow::Result<String> {
    let (key, stored) = SigningKey::generate()?;
    crate::certs::write_new(out, &format!("{stored}\n"), true)?;
    Ok(key.public_key())
}

/// Signs `binary` with the key in `key` and describes it as served from `url`.
pub fn artifact(key: &Path, binary: &Path, url: &str) -> anyhow::Result<Artifact> {
    let text =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let key = SigningKey::parse(&text).with_context(|| key.display().to_string())?;
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    Ok(Artifact {
        url: url.to_owned(),
        sha256: Sha256::hex_of(&bytes),
        size: bytes.len() as u64,
        signature: key.sign(&bytes),
    })
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
        let a = artifact(&key, &bin, "https://example.invalid/ferry-agent").expect("signed");
        assert_eq!(a.size, 8);
        assert_eq!(a.sha256, Sha256::hex_of(b"a binary"));
        let verifier = PublicKey::parse(&public).expect("public");
        assert_eq!(verifier.verify(b"a binary", &a.signature), Ok(()));
    }
}
