//! `ferry-cloud certs`: the certificates a small fleet needs on a self-hosted Mosquitto
//! (`deploy/mosquitto/`): a CA, the broker's server certificate, and a client certificate
//! per device (and one for the ingest) whose common name is its identity, which the
//! broker's ACL turns into the topics it may use.
//!
//! The CA's key stays in the folder (`ca.key`, readable by its owner only); keep that
//! folder off the broker. Private keys are written 0600 and never printed.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(
        "{0} exists already and is not overwritten: a new key would orphan what the old one signed or is trusted for"
    )]
    Exists(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

/// The CA's common name: a client certificate's issuer must name it exactly.
const CA_NAME: &str = "Ferry fleet CA";
/// How long a certificate is valid: ten years, as a fleet's devices live long.
const VALID_DAYS: i64 = 3650;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `text` to `path`, readable by its owner only when `private`; never over an
/// existing file.
pub(crate) fn write_new(path: &Path, text: &str, private: bool) -> Result<(), CertsError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertsError::Exists(path.to_owned())
            } else {
                io(path)(e)
            }
        })?;
    file.write_all(text.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALID_DAYS);
}

fn ca_params() -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params);
    Ok(params)
}

/// The CA, from its key: the certificate object rcgen signs with carries the same name
/// and key as `ca.pem`, which is all a verifier checks.
fn authority(dir: &Path) -> Result<(Certificate, KeyPair), CertsError> {
    let path = dir.join("ca.key");
    let pem = std::fs::read_to_string(&path).map_err(io(&path))?;
    let key = KeyPair::from_pem(&pem)?;
    let cert = ca_params()?.self_signed(&key)?;
    Ok((cert, key))
}

/// `certs init`: a CA and the broker's server certificate for `server_names` (host names
/// or IP addresses; the first is its common name), in `dir`.
pub fn init(dir: &Path, server_names: &[String]) -> Result<Vec<PathBuf>, CertsError> {
    let first = server_names
        .first()
        .ok_or_else(|| CertsError::Invalid("give the broker's name: --server-name HOST".into()))?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_key_path = dir.join("ca.key");
    if ca_key_path.exists() {
        return Err(CertsError::Exists(ca_key_path));
    }
    let ca_key = KeyPair::generate()?;
    let ca = ca_params()?.self_signed(&ca_key)?;
    write_new(&ca_key_path, &ca_key.serialize_pem(), true)?;
    write_new(&dir.join("ca.pem"), &ca.pem(), false)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, first);
    params.subject_alt_names = server_names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.clone().try_into().map_err(|_| {
                CertsError::Invalid(format!("--server-name {name:?} is not a host name"))
            })?)),
        })
        .collect::<Result<_, CertsError>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params);
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    write_new(&dir.join("server.key"), &key.serialize_pem(), true)?;
    write_new(&dir.join("server.pem"), &cert.pem(), false)?;
    Ok(vec![dir.join("ca.pem"), dir.join("server.pem")])
}

/// `certs client`: a client certificate per name (a device id, or the ingest's name) in
/// `dir/clients/`, signed by the CA that `init` made in `dir`.
pub fn clients(dir: &Path, names: &[String]) -> Result<Vec<PathBuf>, CertsError> {
    if names.is_empty() {
        return Err(CertsError::Invalid("give at least one device id".into()));
    }
    for name in names {
        ferry_shared::DeviceId::new(name).map_err(|e| {
            CertsError::Invalid(format!(
                "{name:?}: {e} (it becomes the broker username, and so the device's topics)"
            ))
        })?;
    }
    let (ca, ca_key) = authority(dir)?;
    let out = dir.join("clients");
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let mut made = Vec::new();
    for name in names {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params);
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        write_new(&out.join(format!("{name}.key")), &key.serialize_pem(), true)?;
        let pem = out.join(format!("{name}.pem"));
        write_new(&pem, &cert.pem(), false)?;
        made.push(pem);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_pki_with_private_keys_and_no_overwrites() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("dir");
        let made = init(dir.path(), &["127.0.0.1".into(), "broker.local".into()]).expect("init");
        assert_eq!(made.len(), 2);
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
        assert_eq!(mode(&dir.path().join("server.key")), 0o600);
        assert!(matches!(
            init(dir.path(), &["x".into()]),
            Err(CertsError::Exists(_))
        ));
        let made = clients(dir.path(), &["ws-1".into(), "ferry-ingest".into()]).expect("clients");
        assert_eq!(made.len(), 2);
        assert_eq!(mode(&dir.path().join("clients/ws-1.key")), 0o600);
        assert!(matches!(
            clients(dir.path(), &["ws-1".into()]),
            Err(CertsError::Exists(_))
        ));
        assert!(matches!(
            clients(dir.path(), &["a/b".into()]),
            Err(CertsError::Invalid(_))
        ));
        assert!(matches!(
            clients(dir.path(), &["ws+".into()]),
            Err(CertsError::Invalid(_))
        ));
    }
}
