//! Any config key can be overridden from the environment, as `FERRY_` plus the
//! key path joined with `__`. The agent and the cloud read their TOML through this one rule,
//! and check their MQTT settings the same way.

use std::path::{Path, PathBuf};

/// Parses TOML `text`, applies `FERRY_*` overrides from `env`, and deserialises the result.
pub fn parse<T: serde::de::DeserializeOwned>(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, String> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| format!("not valid TOML: {e}"))?;
    apply(&mut table, env)?;
    if let Some(key) = placeholder_key(&table) {
        return Err(format!(
            "key {key} still holds the example's {PLACEHOLDER} placeholder; set it (or, for \
             an agent's identity, run `ferry-agent enroll`)"
        ));
    }
    // Deserialising from text (not from the Value) keeps toml's messages, which quote the
    // offending line and so name the key.
    let merged = toml::to_string(&table).map_err(|e| e.to_string())?;
    toml::from_str(&merged).map_err(|e| e.to_string())
}

/// What packaged example configs mark for the user to fill in. A config that still holds
/// it anywhere is refused, naming the key, so an unedited example never runs as if it were
/// meant.
pub const PLACEHOLDER: &str = "CHANGE-ME";

/// The first key (`a.b[2].c`) whose string value holds [`PLACEHOLDER`].
pub fn placeholder_key(table: &toml::Table) -> Option<String> {
    fn in_table(table: &toml::Table, prefix: &str) -> Option<String> {
        table.iter().find_map(|(key, value)| {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            in_value(value, path)
        })
    }
    fn in_value(value: &toml::Value, path: String) -> Option<String> {
        match value {
            toml::Value::String(s) if s.contains(PLACEHOLDER) => Some(path),
            toml::Value::Table(t) => in_table(t, &path),
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| in_value(v, format!("{path}[{i}]"))),
            _ => None,
        }
    }
    in_table(table, "")
}

/// For `check`: a data folder must be a folder this user can write, or not exist yet (the
/// service creates it; systemd's `StateDirectory=` makes it before `ExecStartPre`). Returns
/// what was found, or the problem.
pub fn check_data_dir(dir: &Path) -> Result<String, String> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(format!("{}: will be created", dir.display()))
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
        Ok(meta) if !meta.is_dir() => Err(format!("{} is not a directory", dir.display())),
        Ok(_) => {
            let probe = dir.join(format!(".ferry-check-{}", std::process::id()));
            std::fs::write(&probe, b"")
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
            Ok(format!("{}: writable", dir.display()))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Example {
        device_id: String,
        mqtt: toml::Table,
    }

    #[test]
    fn an_unedited_example_is_refused_with_the_key_that_still_holds_the_placeholder() {
        let text = "device_id = \"till-1\"\n[mqtt]\nurl = \"mqtts://CHANGE-ME.iot.eu-west-1.amazonaws.com\"\n";
        let err = parse::<Example>(text, []).expect_err("placeholder");
        assert!(err.contains("key mqtt.url"), "{err}");

        let fixed = text.replace("CHANGE-ME", "abc123-ats");
        assert!(parse::<Example>(&fixed, []).is_ok());
        // An override from the environment fills it in as well.
        let env = [("FERRY_DEVICE_ID".to_owned(), "CHANGE-ME".to_owned())];
        let err = parse::<Example>(&fixed, env).expect_err("placeholder from the environment");
        assert!(err.contains("key device_id"), "{err}");

        let nested: toml::Table = toml::from_str(
            "[[sources]]\npath = \"/dev/ttyUSB0\"\n[[sources]]\npath = \"CHANGE-ME\"\n",
        )
        .expect("toml");
        assert_eq!(placeholder_key(&nested).as_deref(), Some("sources[1].path"));
    }
}
