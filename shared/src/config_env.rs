//! Any config key can be overridden from the environment, as `FERRY_` plus the
//! key path joined with `__`. The agent and the cloud read their TOML through this one rule,
//! and check their MQTT settings the same way.

use std::path::PathBuf;

/// Parses TOML `text`, applies `FERRY_*` overrides from `env`, and deserialises the result.
pub fn parse<T: serde::de::DeserializeOwned>(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, String> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| format!("not valid TOML: {e}"))?;
    apply(&mut table, env)?;
    // Deserialising from text (not from the Value) keeps toml's messages, which quote the
    // offending line and so name the key.
    let merged = toml::to_string(&table).map_err(|e| e.to_string())?;
    toml::from_str(&merged).map_err(|e| e.to_string())
}

/// With `mqtts://`, the CA, certificate and key files are required and must be readable.
/// Returns the key at fault and why.
pub fn check_tls_files(
    ca_file: &Option<PathBuf>,
    cert_file: &Option<PathBuf>,
    key_file: &Option<PathBuf>,
) -> Result<(), (&'static str, String)> {
    for (key, value) in [
        ("mqtt.ca_file", ca_file),
        ("mqtt.cert_file", cert_file),
        ("mqtt.key_file", key_file),
    ] {
        match value {
            None => return Err((key, "required when mqtt.url is mqtts://".into())),
            Some(p) if !p.is_file() => {
                return Err((key, format!("{} is not a readable file", p.display())));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `FERRY_MQTT__URL=...` sets `mqtt.url`. A value takes the type of the key it replaces in
/// the file; a key the file lacks gets a TOML literal when the value parses as one (a number
/// or boolean), else a string.
pub fn apply(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), String> {
    for (name, raw) in env {
        let Some(path) = name.strip_prefix("FERRY_") else {
            continue;
        };
        if path == "LOG" {
            continue;
        }
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        let (last, parents) = keys.split_last().ok_or_else(|| invalid_env(&name))?;
        let mut node = &mut *table;
        for key in parents {
            let child = node
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = child.as_table_mut().ok_or_else(|| invalid_env(&name))?;
        }
        let value = match node.get(last) {
            Some(toml::Value::String(_)) => toml::Value::String(raw),
            _ if looks_literal(&raw) => toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw)),
            _ => toml::Value::String(raw),
        };
        node.insert(last.clone(), value);
    }
    Ok(())
}

fn looks_literal(raw: &str) -> bool {
    raw == "true" || raw == "false" || raw.parse::<f64>().is_ok()
}

fn invalid_env(name: &str) -> String {
    format!("environment override {name} does not name a config key")
}

/// Where and how to reach a broker, parsed from `mqtt://HOST:PORT` (plain TCP) or
/// `mqtts://HOST:PORT` (TLS); the port defaults to 1883 or 8883.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerAddr {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err("must start with mqtt:// or mqtts://".into());
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("port {port:?} is not a number"))?;
                (host, port)
            }
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains('/') {
            return Err("needs a host, like mqtts://HOST:8883".into());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}
