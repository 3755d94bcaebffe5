//! `ferry-agent check`: what `run` would refuse, found before it starts (the packaged unit
//! runs it as `ExecStartPre`), each problem with the key that holds it.

use std::path::Path;
use std::time::Duration;

use crate::config::{AgentConfig, ConfigError, SourceConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config key {key}: {problem}")]
    Key { key: String, problem: String },
    #[error("mqtt.url: {0}")]
    Connect(String),
}

fn at(key: impl Into<String>, problem: impl Into<String>) -> CheckError {
    CheckError::Key {
        key: key.into(),
        problem: problem.into(),
    }
}

/// What a good config looks like: lines for the operator, warnings among them.
pub type Findings = Vec<String>;

/// Checks the config at `path`: its keys, the TLS files and the data directory; with
/// `connect`, one connection to the broker as this device.
///
/// That connection uses the device's client id, so on a device whose agent is running the
/// broker drops the agent's connection once (it reconnects at once and resends).
pub async fn check(path: &Path, connect: bool) -> Result<Findings, CheckError> {
    let cfg = AgentConfig::load(path)?;
    let mut findings = vec![format!(
        "config {}: device {}, broker {}",
        path.display(),
        cfg.device_id,
        cfg.mqtt.url
    )];
    let broker = cfg.mqtt.broker()?;
    if let (true, Some(ca), Some(cert), Some(key)) = (
        broker.tls,
        &cfg.mqtt.ca_file,
        &cfg.mqtt.cert_file,
        &cfg.mqtt.key_file,
    ) {
        ferry_shared::tls::check_pem_files(ca, cert, key).map_err(|(k, p)| at(k, p))?;
        findings.push("TLS files: CA, certificate and private key read".into());
    }
    let dir =
        ferry_shared::config_env::check_data_dir(&cfg.data_dir).map_err(|p| at("data_dir", p))?;
    findings.push(format!("data_dir {dir}"));
    findings.extend(ports(&cfg.sources));
    if connect {
        let (client, mut eventloop) = crate::uplink::client(&cfg, None)
            .await
            .map_err(|e| CheckError::Connect(e.to_string()))?;
        let took = ferry_shared::mqtt_probe::connect_once(&client, &mut eventloop, CONNECT_TIMEOUT)
            .await
            .map_err(CheckError::Connect)?;
        findings.push(format!(
            "connected to {}:{} in {} ms",
            broker.host,
            broker.port,
            took.as_millis()
        ));
    }
    Ok(findings)
}

/// A serial port that is absent now is only a warning: the source waits for it and opens
/// it when it is plugged in.
fn ports(sources: &[SourceConfig]) -> impl Iterator<Item = String> + '_ {
    sources.iter().enumerate().filter_map(|(i, source)| {
        let path = match source {
            SourceConfig::Serial(c) => &c.path,
            SourceConfig::CardReader(c) => &c.path,
            SourceConfig::Simulator(_) => return None,
        };
        (!path.exists()).then(|| {
            format!(
                "warning: sources[{i}].path {} does not exist now; the source waits for it",
                path.display()
            )
        })
    })
}
