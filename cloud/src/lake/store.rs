//! Where lake objects go: S3 (any S3-protocol server) or a local folder. The one operation is
//! `put_once`: write an object under a key unless one is already there, so that writing a
//! sealed batch again after a crash adds nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;

use crate::config::{LakeConfig, LakeRoot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// An object was at the key already: this batch was written before a crash.
    AlreadyThere,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lake folder {path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("S3 put of {key}: {message}")]
    S3 { key: String, message: String },
}

pub enum LakeStore {
    Local(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
}

impl std::fmt::Debug for LakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(root) => write!(f, "LakeStore::Local({})", root.display()),
            Self::S3 { bucket, prefix, .. } => write!(f, "LakeStore::S3(s3://{bucket}/{prefix})"),
        }
    }
}

/// How to reach S3 (or a server that speaks it): the `[lake]` settings of that name.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
}

impl S3Settings {
    pub fn of(cfg: &LakeConfig) -> Self {
        Self {
            endpoint: cfg.s3_endpoint.clone(),
            region: cfg.s3_region.clone(),
            force_path_style: cfg.s3_force_path_style,
        }
    }
}

/// An S3 client with credentials from the standard AWS chain.
pub async fn s3_client(settings: &S3Settings) -> aws_sdk_s3::Client {
    // One TLS stack in the process: rustls with ring, as the MQTT side uses.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let s3 = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(settings.force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

impl LakeStore {
    pub async fn from_config(cfg: &LakeConfig) -> anyhow::Result<Self> {
        Ok(match cfg.root()? {
            LakeRoot::Local(root) => {
                sweep_temporaries(&root);
                Self::Local(root)
            }
            LakeRoot::S3 { bucket, prefix } => Self::S3 {
                client: s3_client(&S3Settings::of(cfg)).await,
                bucket,
                prefix,
            },
        })
    }

    pub async fn put_once(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, StoreError> {
        match self {
            Self::Local(root) => {
                let root = root.clone();
                let key = key.to_owned();
                tokio::task::spawn_blocking(move || put_local(&root, &key, &bytes))
                    .await
                    .map_err(|e| StoreError::Local {
                        path: PathBuf::new(),
                        source: std::io::Error::other(e),
                    })?
            }
            Self::S3 {
                client,
                bucket,
                prefix,
            } => {
                let full = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}/{key}")
                };
                let sent = client
                    .put_object()
                    .bucket(bucket)
                    .key(&full)
                    .if_none_match("*")
                    .content_type("application/x-ndjson")
                    .body(ByteStream::from(bytes))
                    .send()
                    .await;
                match sent {
                    Ok(_) => Ok(PutOutcome::Written),
                    Err(e) if e.code() == Some("PreconditionFailed") => {
                        Ok(PutOutcome::AlreadyThere)
                    }
                    Err(e) => Err(StoreError::S3 {
                        key: full,
                        message: match e.code() {
                            Some(code) => format!("{code}: {}", e.message().unwrap_or_default()),
                            None => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
                        },
                    }),
                }
            }
        }
    }
}

/// Writes to a temporary name, fsyncs, and links it into place: `link` fails when the
/// name exists, which is `If-None-Match: *` for a folder, and a reader never sees half an
/// object. The folder is fsynced so the name survives a power cut.
fn put_local(root: &Path, key: &str, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
    let path = root.join(key);
    let err = |source| StoreError::Local {
        path: path.clone(),
        source,
    };
    let dir = path.parent().unwrap_or(root);
    ferry_shared::durable_dir::create_dir_all(dir).map_err(err)?;
    if path.exists() {
        return Ok(PutOutcome::AlreadyThere);
    }
    // Removed on every way out, so a full disk does not leave one per failed write.
    let mut tmp = Temporary::new_in(dir).map_err(err)?;
    tmp.file.write_all(bytes).map_err(err)?;
    tmp.file.sync_all().map_err(err)?;
    let outcome = match std::fs::hard_link(&tmp.path, &path) {
        Ok(()) => PutOutcome::Written,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => PutOutcome::AlreadyThere,
        Err(e) => return Err(err(e)),
    };
    drop(tmp);
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(outcome)
}

const TEMPORARY_PREFIX: &str = ".tmp-";

/// A new file beside the object, named so that lake readers skip it (`.` prefix), and
/// removed when dropped.
struct Temporary {
    path: PathBuf,
    file: std::fs::File,
}

impl Temporary {
    fn new_in(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(format!("{TEMPORARY_PREFIX}{}", ulid::Ulid::new()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Self { path, file })
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes what a crash between a temporary's creation and its removal left, anywhere
/// under the lake folder.
fn sweep_temporaries(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            sweep_temporaries(&path);
        } else if entry
            .file_name()
            .to_string_lossy()
            .starts_with(TEMPORARY_PREFIX)
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_put_is_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = "raw/type=reading/dt=2026-11-22/hour=09/x-000000000001.ndjson.gz";
        assert_eq!(
            put_local(dir.path(), key, b"one").ok(),
            Some(PutOutcome::Written)
        );
        assert_eq!(
            put_local(dir.path(), key, b"two").ok(),
            Some(PutOutcome::AlreadyThere)
        );
        assert_eq!(std::fs::read(dir.path().join(key)).expect("read"), b"one");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(key).parent().expect("dir"))
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn temporaries_are_removed_on_failure_and_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("raw/type=reading/dt=2026-11-22/hour=09");
        ferry_shared::durable_dir::create_dir_all(&part).expect("dir");
        // A crash's leftover, found at start.
        std::fs::write(part.join(".tmp-01LEFTOVER"), b"half").expect("write");
        sweep_temporaries(dir.path());
        // A write that fails half way drops its temporary, which removes it.
        let half = Temporary::new_in(&part).expect("temporary");
        assert!(half.path.exists());
        drop(half);
        let left: Vec<_> = std::fs::read_dir(&part)
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
