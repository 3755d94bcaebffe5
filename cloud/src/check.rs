//! `ferry-cloud check`: what a role would refuse, found before it starts (the packaged unit
//! runs it as `ExecStartPre`), each problem with the key that holds it.

use std::path::Path;
use std::time::Duration;

use crate::config::{CloudConfig, ConfigError, Role, redact_password};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config key {key}: {problem}")]
    Key { key: &'static str, problem: String },
    #[error("mqtt.url: {0}")]
    Connect(String),
}

/// Checks the config at `path` for `role`: its keys and the sections the role needs, the
/// TLS files and the data directory; with `connect`, one connection to the broker.
///
/// The connection's client id is `mqtt.client_id` plus `-check`, with a clean session:
/// under the ingest's own id it would end the running ingest's persistent session.
pub async fn check(path: &Path, role: Role, connect: bool) -> Result<Vec<String>, CheckError> {
    let cfg = CloudConfig::load(path)?;
    cfg.check_role(role)?;
    let mut findings = vec![format!(
        "config {}: fit for `{}`",
        path.display(),
        role.name()
    )];
    let dir = ferry_shared::config_env::check_data_dir(&cfg.data_dir).map_err(|problem| {
        CheckError::Key {
            key: "data_dir",
            problem,
        }
    })?;
    findings.push(format!("data_dir {dir}"));
    if let Some(lake) = &cfg.lake {
        findings.push(format!("lake {}", lake.root));
    }
    if let Some(database) = cfg.loyalty.as_ref().and_then(|l| l.database.as_deref()) {
        findings.push(format!(
            "ledger {}",
            redact_password(Some(database)).unwrap_or_default()
        ));
    }
    if let Some(http) = &cfg.http {
        findings.push(format!("http on {}", http.listen));
    }
    let Some(mqtt) = &cfg.mqtt else {
        return Ok(findings);
    };
    let broker = mqtt.broker()?;
    if let (true, Some(ca), Some(cert), Some(key)) =
        (broker.tls, &mqtt.ca_file, &mqtt.cert_file, &mqtt.key_file)
    {
        ferry_shared::tls::check_pem_files(ca, cert, key)
            .map_err(|(key, problem)| CheckError::Key { key, problem })?;
        findings.push("TLS files: CA, certificate and private key read".into());
    }
    if connect {
        let mut probe = mqtt.clone();
        probe.client_id = format!("{}-check", mqtt.client_id);
        let (client, mut eventloop) = crate::ingest::mqtt_client(&probe)
            .map_err(|e| CheckError::Connect(format!("{e:#}")))?;
        eventloop.mqtt_options.set_clean_session(true);
        let took = ferry_shared::mqtt_probe::connect_once(&client, &mut eventloop, CONNECT_TIMEOUT)
            .await
            .map_err(CheckError::Connect)?;
        findings.push(format!(
            "connected to {}:{} as {} in {} ms",
            broker.host,
            broker.port,
            probe.client_id,
            took.as_millis()
        ));
    }
    Ok(findings)
}
