//! Where the new identity goes: the config's `device_id`, `mqtt.cert_file` and
//! `mqtt.key_file`, written so that a crash leaves either the old file or the new one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ferry_shared::config_env::PLACEHOLDER;

use super::EnrollError;

const SERVICE_USER: &str = "ferry";

/// What `enroll` needs of the config. It is read leniently: before enrolment the config is
/// not yet one `run` accepts (no certificate, a placeholder `device_id`).
#[derive(Debug)]
pub struct Target {
    pub config: PathBuf,
    pub text: String,
    pub device_id: Option<String>,
    pub url: String,
    /// `mqtt.alpn`, when set.
    pub alpn: Option<Vec<String>>,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

fn key_error(key: &str, problem: impl Into<String>) -> EnrollError {
    EnrollError::Config {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

impl Target {
    pub fn read(config: &Path) -> Result<Self, EnrollError> {
        let text = std::fs::read_to_string(config).map_err(|source| EnrollError::Io {
            path: config.to_owned(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| key_error("(file)", format!("not valid TOML: {e}")))?;
        let mqtt = table
            .get("mqtt")
            .and_then(toml::Value::as_table)
            .ok_or_else(|| key_error("mqtt", "required"))?;
        let string = |key: &str| -> Result<String, EnrollError> {
            mqtt.get(key)
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| key_error(&format!("mqtt.{key}"), "required to enroll"))
        };
        let url = string("url")?;
        if !url.starts_with("mqtts://") || url.contains(PLACEHOLDER) {
            return Err(key_error(
                "mqtt.url",
                "must be the account's IoT Core endpoint, mqtts://...-ats.iot.REGION.amazonaws.com",
            ));
        }
        Ok(Self {
            device_id: table
                .get("device_id")
                .and_then(toml::Value::as_str)
                .filter(|id| !id.contains(PLACEHOLDER))
                .map(str::to_owned),
            url,
            alpn: mqtt
                .get("alpn")
                .and_then(toml::Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(toml::Value::as_str)
                        .map(str::to_owned)
                        .collect()
                }),
            ca_file: string("ca_file")?.into(),
            cert_file: string("cert_file")?.into(),
            key_file: string("key_file")?.into(),
            config: config.to_owned(),
            text,
        })
    }

    /// The device's identity, when it is whole: its certificate, its key and a
    /// `device_id`. Anything less (a run cut short, files without a `device_id`) is
    /// enrolled afresh, and the new key and certificate replace what is there.
    pub fn enrolled(&self) -> Option<&str> {
        let files = self.cert_file.exists() && self.key_file.exists();
        self.device_id.as_deref().filter(|_| files)
    }

    /// Writes the key and the certificate, then `device_id` into the config: the identity
    /// is whole (see [`Target::enrolled`]) only once all three are in place.
    pub fn install(&self, thing: &str, cert_pem: &str, key_pem: &str) -> Result<(), EnrollError> {
        let owner = service_owner();
        write_atomically(&self.key_file, key_pem.as_bytes(), 0o600, owner)?;
        write_atomically(&self.cert_file, cert_pem.as_bytes(), 0o600, owner)?;
        let text = with_device_id(&self.text, thing)?;
        // The config keeps its own mode and owner (root:ferry 0640 as packaged).
        let meta = std::fs::metadata(&self.config).map_err(|source| EnrollError::Io {
            path: self.config.clone(),
            source,
        })?;
        write_atomically(
            &self.config,
            text.as_bytes(),
            meta.mode() & 0o7777,
            Some((meta.uid(), meta.gid())),
        )
    }
}

/// `device_id = "THING"` in place of the config's top-level `device_id` line (or first,
/// when there is none); the result is parsed back to be sure of it.
pub fn with_device_id(text: &str, thing: &str) -> Result<String, EnrollError> {
    let line = format!("device_id = \"{thing}\"");
    let mut lines: Vec<&str> = text.lines().collect();
    let top_level = lines
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .unwrap_or(lines.len());
    let existing = lines[..top_level].iter().position(|l| {
        l.trim_start()
            .strip_prefix("device_id")
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    match existing {
        Some(i) => lines[i] = &line,
        None => lines.insert(0, &line),
    }
    let mut out = lines.join("\n");
    out.push('\n');
    let parsed: toml::Table = toml::from_str(&out)
        .map_err(|e| key_error("device_id", format!("cannot be rewritten in place: {e}")))?;
    if parsed.get("device_id").and_then(toml::Value::as_str) != Some(thing) {
        return Err(key_error(
            "device_id",
            "cannot be rewritten in place; set it by hand",
        ));
    }
    Ok(out)
}

/// The service's user owns its identity: run as root (as the install steps do), the files go
/// to the `ferry` user the packages create, found in `/etc/passwd` (a system user, never in
/// a directory service). Run as anyone else, or with no such user, they stay the caller's.
fn service_owner() -> Option<(u32, u32)> {
    if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != SERVICE_USER {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), EnrollError> {
    crate::durable_file::write(path, bytes, mode, owner).map_err(|source| EnrollError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_identity_counts_as_enrolled() {
        let dir = std::env::temp_dir().join(format!("ferry-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("agent.toml");
        let write_config = |device_id: &str| {
            std::fs::write(
                &config,
                format!(
                    "device_id = \"{device_id}\"\n[mqtt]\nurl = \"mqtts://e:8883\"\nca_file = \"{0}/ca\"\ncert_file = \"{0}/cert\"\nkey_file = \"{0}/key\"\n",
                    dir.display()
                ),
            )
            .expect("config");
            Target::read(&config).expect("read")
        };
        assert_eq!(write_config("ferry-1").enrolled(), None, "no files");
        std::fs::write(dir.join("key"), "k").expect("key");
        assert_eq!(write_config("ferry-1").enrolled(), None, "a key alone");
        std::fs::write(dir.join("cert"), "c").expect("cert");
        assert_eq!(write_config("CHANGE-ME").enrolled(), None, "no device_id");
        assert_eq!(write_config("ferry-1").enrolled(), Some("ferry-1"));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn device_id_is_replaced_in_place_and_comments_stay() {
        let text = "# till at the front\ndevice_id = \"CHANGE-ME\"   # set by enroll\ndata_dir = \"/var/lib/ferry\"\n\n[mqtt]\n# device_id = \"not this\"\nurl = \"mqtts://x:8883\"\n";
        let out = with_device_id(text, "shop-7-till-2").expect("rewritten");
        assert!(out.starts_with("# till at the front\ndevice_id = \"shop-7-till-2\"\ndata_dir"));
        assert!(out.contains("# device_id = \"not this\""));
        let without = "data_dir = \"/d\"\n[mqtt]\nurl = \"mqtts://x\"\n";
        let out = with_device_id(without, "t1").expect("added");
        assert!(out.starts_with("device_id = \"t1\"\n"));
        // A device_id inside a table is not the top-level key: one is added above it.
        let nested = "[mqtt]\ndevice_id = \"x\"\n";
        let out = with_device_id(nested, "t1").expect("added");
        assert!(out.starts_with("device_id = \"t1\"\n[mqtt]\ndevice_id = \"x\""));
    }
}
