//! One rustls crypto provider for every process: ring (it cross-compiles with a Debian
//! cross gcc alone).
//!
//! rumqttc, reqwest and the OIDC client build their rustls configs from the process-wide
//! default. rustls picks one by itself only when a build compiles exactly one provider, and
//! a workspace build compiles two (ferry-cloud's Delta crates bring aws-lc-rs), so every
//! place about to let a library build a config calls this first.
//!
//! It also checks TLS files for `check` ([`check_pem_files`]).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Makes ring the process's default provider. A second call, or one after another
/// provider was installed, changes nothing.
pub fn use_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Checks what an `[mqtt]` section's TLS files hold, before a connection would find out:
/// the CA file and the certificate file parse as PEM certificates, the key file as a PEM
/// private key that no other user may read. Returns the key at fault and why.
pub fn check_pem_files(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
) -> Result<(), (&'static str, String)> {
    certificates("mqtt.ca_file", ca_file)?;
    certificates("mqtt.cert_file", cert_file)?;
    private_key("mqtt.key_file", key_file)
}

fn certificates(key: &'static str, path: &Path) -> Result<(), (&'static str, String)> {
    let pem = read(key, path)?;
    let count = CertificateDer::pem_slice_iter(&pem)
        .try_fold(0, |n, cert| cert.map(|_| n + 1))
        .map_err(|e| (key, format!("{}: {e}", path.display())))?;
    if count == 0 {
        return Err((key, format!("{} holds no PEM certificate", path.display())));
    }
    Ok(())
}

/// The file's bytes; unreadable (absent, or not this user's) is said as such.
fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, (&'static str, String)> {
    std::fs::read(path).map_err(|e| (key, format!("cannot read {}: {e}", path.display())))
}

/// Group read is allowed (`root:ferry 0640` is how the packages ship `/etc/ferry`); access
/// for every user is not, nor writes by the group.
fn private_key(key: &'static str, path: &Path) -> Result<(), (&'static str, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| (key, format!("{}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o027 != 0 {
        return Err((
            key,
            format!(
                "{} has mode {:o}; a private key must not be readable by every user nor writable by its group (chmod 600)",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    PrivateKeyDer::from_pem_slice(&read(key, path)?).map_err(|e| {
        (
            key,
            format!("{} holds no PEM private key: {e}", path.display()),
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A self-signed certificate and its key, PEM, made now: nothing secret is committed.
    fn identity() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["ferry-test".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn pem_files_are_checked_and_the_key_at_fault_is_named() {
        let dir = std::env::temp_dir().join(format!("ferry-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert_pem, key_pem) = identity();
        let ca = write(&dir, "ca.pem", &cert_pem, 0o644);
        let cert = write(&dir, "cert.pem", &cert_pem, 0o644);
        let key = write(&dir, "key.pem", &key_pem, 0o640);
        assert_eq!(check_pem_files(&ca, &cert, &key), Ok(()));

        let open_key = write(&dir, "open.pem", &key_pem, 0o644);
        let err = check_pem_files(&ca, &cert, &open_key).expect_err("world-readable key");
        assert_eq!(err.0, "mqtt.key_file");
        assert!(err.1.contains("644"), "{}", err.1);

        let not_a_key = write(&dir, "nokey.pem", &cert_pem, 0o600);
        assert_eq!(
            check_pem_files(&ca, &cert, &not_a_key).map_err(|e| e.0),
            Err("mqtt.key_file")
        );
        let empty = write(&dir, "empty.pem", "nothing here\n", 0o644);
        assert_eq!(
            check_pem_files(&ca, &empty, &key).map_err(|e| e.0),
            Err("mqtt.cert_file")
        );
        assert_eq!(
            check_pem_files(&dir.join("missing.pem"), &cert, &key).map_err(|e| e.0),
            Err("mqtt.ca_file")
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
