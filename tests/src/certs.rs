//! Certificates made at test time, so that nothing secret is ever committed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A CA, a server certificate for 127.0.0.1, and a client certificate for one device.
pub struct TestPki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    ca_key_pem: String,
}

struct Authority {
    cert: Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    Authority { cert, key }
}

fn leaf(ca: &Authority, common_name: &str, server: bool) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if server {
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into().expect("dns name")),
        ];
    }
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("leaf certificate");
    (cert, key)
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("writing a certificate file");
    path
}

impl TestPki {
    /// A fresh CA with a server certificate and a client certificate for `device`.
    pub fn new(device: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for certificates");
        let ca = authority("Ferry test CA");
        let (server, server_key) = leaf(&ca, "127.0.0.1", true);
        let (client, client_key) = leaf(&ca, device, false);
        let d = dir.path();
        Self {
            ca: write(d, "ca.pem", &ca.cert.pem()),
            server_cert: write(d, "server.pem", &server.pem()),
            server_key: write(d, "server.key", &server_key.serialize_pem()),
            client_cert: write(d, "client.pem", &client.pem()),
            client_key: write(d, "client.key", &client_key.serialize_pem()),
            ca_key_pem: ca.key.serialize_pem(),
            _dir: dir,
        }
    }

    /// A client certificate and key for `device` from another CA, which the broker must refuse.
    pub fn rogue_client(&self, device: &str) -> (PathBuf, PathBuf) {
        let rogue = authority("Rogue CA");
        let (cert, key) = leaf(&rogue, device, false);
        let d = self.ca.parent().expect("pki dir");
        (
            write(d, "rogue.pem", &cert.pem()),
            write(d, "rogue.key", &key.serialize_pem()),
        )
    }
}

/// What IoT Core does with a device's certificate request, with this PKI's CA: the
/// certificates it issues are ones the test broker accepts.
pub struct CaSigner {
    ca: Authority,
}

impl TestPki {
    pub fn signer(&self) -> CaSigner {
        let ca_pem = std::fs::read_to_string(&self.ca).expect("reading the test CA");
        let key = KeyPair::from_pem(&self.ca_key_pem).expect("the test CA's key");
        let params = CertificateParams::from_ca_cert_pem(&ca_pem).expect("the test CA");
        // Re-signing the same parameters gives a certificate with the same subject and key,
        // which is all that issuing needs of it.
        let cert = params.self_signed(&key).expect("the test CA");
        CaSigner {
            ca: Authority { cert, key },
        }
    }
}

impl CaSigner {
    /// A certificate for the CSR's key, or why the CSR is not one.
    pub fn sign_csr(&self, csr_pem: &str) -> Result<String, String> {
        let csr =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| e.to_string())?;
        csr.signed_by(&self.ca.cert, &self.ca.key)
            .map(|c| c.pem())
            .map_err(|e| e.to_string())
    }

    /// A certificate and its key, both made here (`certificates/create`).
    pub fn issue(&self, common_name: &str) -> (String, String) {
        let (cert, key) = leaf(&self.ca, common_name, false);
        (cert.pem(), key.serialize_pem())
    }
}
