//! The lake as the compactor sees it: one object store for the raw objects it reads and the
//! Delta tables it writes, a folder or an S3 bucket, named by `lake.root`.

use std::sync::{Arc, Once};

use deltalake::DeltaTableBuilder;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use url::Url;

use super::CompactError;
use crate::config::{LakeConfig, LakeRoot};

#[derive(Clone)]
pub struct Lake {
    /// The whole folder tree or the whole bucket: Delta resolves a table's URL against it.
    pub store: ObjectStoreRef,
    /// `lake.root` within `store`.
    pub root: Path,
    /// `lake.root` when it is a folder.
    pub folder: Option<std::path::PathBuf>,
    /// `lake.root` as a URL with a trailing slash: `file:///var/lib/ferry/lake/`,
    /// `s3://bucket/prefix/`.
    base: Url,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lake({})", self.base)
    }
}

impl Lake {
    pub fn open(cfg: &LakeConfig) -> Result<Self, CompactError> {
        match cfg
            .root()
            .map_err(|e| CompactError::Config(e.to_string()))?
        {
            LakeRoot::Local(dir) => {
                ferry_shared::durable_dir::create_dir_all(&dir).map_err(|e| CompactError::Io {
                    what: format!("creating the lake folder {}", dir.display()),
                    source: e,
                })?;
                let dir = dir.canonicalize().map_err(|e| CompactError::Io {
                    what: format!("resolving the lake folder {}", dir.display()),
                    source: e,
                })?;
                let base = Url::from_directory_path(&dir).map_err(|()| {
                    CompactError::Config(format!("lake.root {} is not a path", dir.display()))
                })?;
                let root = Path::from_absolute_path(&dir)
                    .map_err(|e| CompactError::Config(format!("lake.root: {e}")))?;
                Ok(Self {
                    store: Arc::new(LocalFileSystem::new()),
                    root,
                    folder: Some(dir),
                    base,
                })
            }
            LakeRoot::S3 { bucket, prefix } => {
                // Credentials, region and the rest from the standard AWS variables and the
                // instance's or task's role, as the ingest's SDK client finds them.
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_virtual_hosted_style_request(!cfg.s3_force_path_style);
                if let Some(region) = &cfg.s3_region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = &cfg.s3_endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let store = builder
                    .build()
                    .map_err(|e| CompactError::Config(format!("lake.root: S3 client: {e}")))?;
                register_s3_log_store();
                let base = if prefix.is_empty() {
                    format!("s3://{bucket}/")
                } else {
                    format!("s3://{bucket}/{prefix}/")
                };
                Ok(Self {
                    store: Arc::new(store),
                    root: Path::from(prefix),
                    folder: None,
                    base: Url::parse(&base)
                        .map_err(|e| CompactError::Config(format!("lake.root: {e}")))?,
                })
            }
        }
    }

    /// `key` (relative to `lake.root`) as a path in the store.
    pub fn path(&self, key: &str) -> Path {
        key.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.root.clone(), |path, part| path.join(part))
    }

    /// The part of `path` under `lake.root`.
    pub fn key<'a>(&self, path: &'a Path) -> &'a str {
        let root = self.root.as_ref();
        let full = path.as_ref();
        full.strip_prefix(root)
            .map_or(full, |rest| rest.trim_start_matches('/'))
    }

    /// Makes files of the table at `table_key` durable on a folder lake: each fsynced, then
    /// every folder from its own up to `lake.root`, where new names live. `files` are
    /// relative to the table, URL-encoded as a Delta log writes them. On S3 a put is
    /// durable when it returns; object_store's local files are never fsynced, and a power
    /// cut took commits the compactor had reported (found by the power-cut test).
    pub async fn make_durable(
        &self,
        table_key: &str,
        files: &[String],
    ) -> Result<(), CompactError> {
        let Some(folder) = self.folder.clone() else {
            return Ok(());
        };
        let table = self
            .base
            .join(&format!("{table_key}/"))
            .map_err(|e| CompactError::Config(format!("table {table_key}: {e}")))?;
        let mut paths = Vec::with_capacity(files.len());
        for file in files {
            let path = table
                .join(file)
                .ok()
                .and_then(|url| url.to_file_path().ok())
                .ok_or_else(|| CompactError::Config(format!("{table_key}: file {file:?}")))?;
            paths.push(path);
        }
        let synced = tokio::task::spawn_blocking(move || sync_within(&folder, &paths))
            .await
            .map_err(|e| CompactError::Io {
                what: "syncing the table's files".into(),
                source: std::io::Error::other(e),
            })?;
        synced.map_err(|(path, source)| CompactError::Io {
            what: format!("fsyncing {}", path.display()),
            source,
        })
    }

    /// A Delta table under `lake.root`, through this lake's store.
    pub fn table(&self, key: &str) -> Result<DeltaTableBuilder, CompactError> {
        let url = self
            .base
            .join(&format!("{key}/"))
            .map_err(|e| CompactError::Config(format!("table {key}: {e}")))?;
        Ok(DeltaTableBuilder::from_url(url.clone())?.with_storage_backend(self.store.clone(), url))
    }
}

/// Each of `files`, then each folder between it and `root` (once), fsynced.
fn sync_within(
    root: &std::path::Path,
    files: &[std::path::PathBuf],
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    let mut folders = std::collections::BTreeSet::new();
    for file in files {
        std::fs::File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|e| (file.clone(), e))?;
        for up in file.ancestors().skip(1) {
            if !up.starts_with(root) {
                break;
            }
            folders.insert(up.to_owned());
        }
    }
    // Deepest first, so a folder's entry is made durable after what is inside it.
    for folder in folders.iter().rev() {
        ferry_shared::durable_dir::sync_dir(folder).map_err(|e| (folder.clone(), e))?;
    }
    Ok(())
}

/// Delta commits a version by writing its log entry with "create only if absent", which
/// S3 supports (`If-None-Match: *`) and object_store's S3 client sends: the default log
/// store is correct there as on a local disk. deltalake knows that log store for `file://`
/// and `memory://` only, unless its own S3 crate is linked, which this build leaves out.
fn register_s3_log_store() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(scheme) = Url::parse("s3://") {
            logstore_factories().insert(scheme, Arc::new(ConditionalPutLogStore));
        }
    });
}

struct ConditionalPutLogStore;

impl LogStoreFactory for ConditionalPutLogStore {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}
