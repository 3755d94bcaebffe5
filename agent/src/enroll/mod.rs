//! `ferry-agent enroll`: AWS IoT fleet provisioning by claim. A device that ships with a
//! shared claim certificate asks IoT Core for a certificate of its own, then registers
//! itself as a thing through a provisioning template, and writes the result where its
//! config says.
//!
//! By default the key is made here and only a CSR is sent (`create-from-csr`): the private
//! key never leaves the device. `KeyOrigin::Aws` uses `certificates/create` instead, for
//! templates or policies that require it; the key then comes back over the connection.

mod exchange;
mod identity;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_shared::DeviceId;
use rumqttc::{AsyncClient, MqttOptions, TlsConfiguration, Transport};
use serde::Deserialize;

use exchange::Exchange;
use identity::Target;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("config key {key}: {problem}")]
    Config { key: String, problem: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("claim: {0}")]
    Claim(String),
    #[error("mqtt: {0}")]
    Mqtt(String),
    #[error("no answer on {topic}/accepted or /rejected within {secs} s")]
    Timeout { topic: String, secs: u64 },
    #[error("IoT Core rejected {topic}: {status} {code}: {message}")]
    Rejected {
        topic: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("an answer that is not what IoT Core sends: {0}")]
    Answer(String),
    #[error("making the device's key and CSR: {0}")]
    Key(#[from] rcgen::Error),
}

/// Where the device's private key is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Here, sending IoT Core a CSR.
    Device,
    /// By IoT Core, which sends it back with the certificate.
    Aws,
}

#[derive(Debug)]
pub struct EnrollOptions {
    pub config: PathBuf,
    pub claim_cert: PathBuf,
    pub claim_key: PathBuf,
    pub template: String,
    /// The template's `SerialNumber` parameter.
    pub serial: String,
    /// The template's `Store` parameter, when the template takes one.
    pub store: Option<String>,
    pub key_origin: KeyOrigin,
    /// For each answer.
    pub timeout: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The identity was in place; nothing was asked or written.
    AlreadyEnrolled { device: String },
    Enrolled {
        thing: String,
        certificate_id: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateAnswer {
    certificate_id: String,
    certificate_pem: String,
    certificate_ownership_token: String,
    /// Only from `certificates/create`.
    private_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProvisionAnswer {
    thing_name: String,
}

pub async fn enroll(opts: &EnrollOptions) -> Result<Outcome, EnrollError> {
    let target = Target::read(&opts.config)?;
    if let Some(device) = target.enrolled() {
        return Ok(Outcome::AlreadyEnrolled {
            device: device.to_owned(),
        });
    }
    check_names(opts)?;
    let mut exchange = Exchange::new_connected(&target, opts)?;
    let outcome = provision(&mut exchange, opts).await;
    exchange.close().await;
    let (thing, answer, key_pem) = outcome?;
    DeviceId::new(thing.clone()).map_err(|e| {
        EnrollError::Answer(format!(
            "thing name {thing:?} cannot be a Ferry device id ({e}); change the template's ThingName"
        ))
    })?;
    target.install(&thing, &answer.certificate_pem, &key_pem)?;
    Ok(Outcome::Enrolled {
        thing,
        certificate_id: answer.certificate_id,
    })
}

/// The two requests: a certificate, then the thing. Returns the thing name, the
/// certificate and the key's PEM.
async fn provision(
    exchange: &mut Exchange,
    opts: &EnrollOptions,
) -> Result<(String, CertificateAnswer, String), EnrollError> {
    let (answer, key_pem) = match opts.key_origin {
        KeyOrigin::Device => {
            let key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, opts.serial.as_str());
            let csr = params.serialize_request(&key)?.pem()?;
            let answer: CertificateAnswer = exchange
                .ask(
                    "$aws/certificates/create-from-csr/json",
                    &serde_json::json!({ "certificateSigningRequest": csr }),
                )
                .await?;
            (answer, key.serialize_pem())
        }
        KeyOrigin::Aws => {
            let mut answer: CertificateAnswer = exchange
                .ask("$aws/certificates/create/json", &serde_json::json!({}))
                .await?;
            let key = answer.private_key.take().ok_or_else(|| {
                EnrollError::Answer("certificates/create answered without privateKey".into())
            })?;
            (answer, key)
        }
    };
    let mut parameters = serde_json::json!({ "SerialNumber": opts.serial });
    if let Some(store) = &opts.store {
        parameters["Store"] = store.as_str().into();
    }
    let provisioned: ProvisionAnswer = exchange
        .ask(
            &format!(
                "$aws/provisioning-templates/{}/provision/json",
                opts.template
            ),
            &serde_json::json!({
                "certificateOwnershipToken": answer.certificate_ownership_token,
                "parameters": parameters,
            }),
        )
        .await?;
    Ok((provisioned.thing_name, answer, key_pem))
}

/// The template's name goes into a topic and the serial into the thing's name: IoT Core
/// allows `[0-9A-Za-z_-]` in both, the name 1 to 36 long; the serial follows the rule the
/// stack's pre-provisioning hook applies, said here before anything is sent.
fn check_names(opts: &EnrollOptions) -> Result<(), EnrollError> {
    let template = &opts.template;
    let ok = (1..=36).contains(&template.len())
        && template
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(EnrollError::Claim(format!(
            "--template {template:?}: must be 1 to 36 of A-Z a-z 0-9 _ -"
        )));
    }
    ferry_shared::ids::check_serial(&opts.serial)
        .map_err(|e| EnrollError::Claim(format!("--serial: {e}")))
}

impl Exchange {
    /// Connects with the claim certificate to the endpoint of the device's config.
    fn new_connected(target: &Target, opts: &EnrollOptions) -> Result<Self, EnrollError> {
        let broker = ferry_shared::config_env::BrokerAddr::parse(&target.url).map_err(|p| {
            EnrollError::Config {
                key: "mqtt.url".into(),
                problem: p,
            }
        })?;
        let read = |what: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| EnrollError::Claim(format!("{what} {}: {e}", path.display())))
        };
        let ca = std::fs::read(&target.ca_file).map_err(|source| EnrollError::Io {
            path: target.ca_file.clone(),
            source,
        })?;
        let cert = read("--claim-cert", &opts.claim_cert)?;
        let key = read("--claim-key", &opts.claim_key)?;
        // The same ALPN as the agent offers: the config's, else IoT Core's on port 443.
        let alpn = crate::config::alpn_protocols(target.alpn.as_deref(), broker.port);
        let alpn = (!alpn.is_empty()).then(|| alpn.into_iter().map(String::into_bytes).collect());
        let mut options = MqttOptions::new(
            format!("ferry-enroll-{}", opts.serial),
            broker.host,
            broker.port,
        );
        options
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(128 * 1024, 128 * 1024);
        ferry_shared::tls::use_ring();
        options.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn,
            client_auth: Some((cert, key)),
        }));
        let (client, eventloop) = AsyncClient::new(options, 16);
        Ok(Self::new(client, eventloop, opts.timeout))
    }
}

/// The device's serial number: a Raspberry Pi's (in `/proc/cpuinfo`), else the machine id.
pub fn default_serial() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let pi = cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "Serial").then(|| value.trim().to_owned())
    });
    pi.or_else(|| {
        std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|id| id.trim().to_owned())
    })
    .filter(|s| !s.is_empty())
}
