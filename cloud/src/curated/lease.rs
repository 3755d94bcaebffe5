//! One compactor per lake at a time.
//!
//! Delta's own rule already keeps the log whole: a version is written "create only if
//! absent", so of two commits of the same version one fails. The lease keeps two compactors
//! from doing the same work and from failing each other's commits:
//!
//! - in a folder, an OS lock on `curated/.lease`, which the kernel drops with the process
//!   however it ends;
//! - on S3, the object `curated/_lease.json`, created with `If-None-Match: *` and renewed
//!   with `If-Match` on its ETag before every commit. A holder that dies leaves it to
//!   expire; a compactor that finds it expired replaces it with `If-Match` on the ETag it
//!   read, so of two that find it so, one wins.

use std::io::{Read, Seek, Write};
use std::time::Duration;

use deltalake::logstore::ObjectStoreRef;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::CompactError;
use super::store::Lake;

/// How long an S3 lease lasts without renewal. Renewed right before each commit: a
/// compactor whose lease expired and was taken over meanwhile makes no commit.
pub const TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    owner: String,
    expires_at_ms: i64,
}

#[derive(Debug)]
pub enum Lease {
    /// Held for its lock, which closing the file releases.
    Folder { _lock: std::fs::File },
    S3 {
        store: ObjectStoreRef,
        path: Path,
        owner: String,
        e_tag: Option<String>,
    },
}

fn owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}/pid {}/{}", std::process::id(), ulid::Ulid::new())
}

fn held(by: &str) -> CompactError {
    CompactError::LeaseHeld(by.to_owned())
}

impl Lease {
    pub async fn acquire(lake: &Lake) -> Result<Self, CompactError> {
        match &lake.folder {
            Some(folder) => Self::lock_folder(&folder.join("curated")),
            None => Self::claim_object(lake).await,
        }
    }

    fn lock_folder(dir: &std::path::Path) -> Result<Self, CompactError> {
        let io = |what: &str, source| CompactError::Io {
            what: format!("{what} {}/.lease", dir.display()),
            source,
        };
        ferry_shared::durable_dir::create_dir_all(dir).map_err(|e| io("creating", e))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(".lease"))
            .map_err(|e| io("opening", e))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(|e| io("writing", e))?;
                file.rewind().map_err(|e| io("writing", e))?;
                file.write_all(owner().as_bytes())
                    .map_err(|e| io("writing", e))?;
                Ok(Self::Folder { _lock: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut by = String::new();
                let _ = file.read_to_string(&mut by);
                Err(held(by.trim()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io("locking", e)),
        }
    }

    async fn claim_object(lake: &Lake) -> Result<Self, CompactError> {
        let path = lake.path("curated/_lease.json");
        let owner = owner();
        let mut lease = Self::S3 {
            store: lake.store.clone(),
            path: path.clone(),
            owner: owner.clone(),
            e_tag: None,
        };
        match lease.put(PutMode::Create).await {
            Ok(()) => return lease.confirm().await,
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let (holder, e_tag) = read(&lake.store, &path).await?;
        if holder.expires_at_ms > now_ms() {
            return Err(held(&holder.owner));
        }
        match lease
            .put(PutMode::Update(UpdateVersion {
                e_tag,
                version: None,
            }))
            .await
        {
            Ok(()) => lease.confirm().await,
            Err(object_store::Error::Precondition { .. }) => Err(held("another compactor")),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the lease back: a store that checks preconditions loosely still lets only
    /// the last writer go on.
    async fn confirm(self) -> Result<Self, CompactError> {
        if let Self::S3 {
            store, path, owner, ..
        } = &self
        {
            let (holder, _) = read(store, path).await?;
            if &holder.owner != owner {
                return Err(held(&holder.owner));
            }
        }
        Ok(self)
    }

    async fn put(&mut self, mode: PutMode) -> Result<(), object_store::Error> {
        let Self::S3 {
            store,
            path,
            owner,
            e_tag,
        } = self
        else {
            return Ok(());
        };
        let body = serde_json::to_vec(&Holder {
            owner: owner.clone(),
            expires_at_ms: now_ms() + TTL.as_millis() as i64,
        })
        .map_err(|e| object_store::Error::Generic {
            store: "lease",
            source: Box::new(e),
        })?;
        let put = store
            .put_opts(
                path,
                PutPayload::from(body),
                PutOptions {
                    mode,
                    ..Default::default()
                },
            )
            .await?;
        *e_tag = put.e_tag;
        Ok(())
    }

    /// Extends an S3 lease before a commit; fails if another compactor took it over.
    pub async fn renew(&mut self) -> Result<(), CompactError> {
        let Self::S3 { e_tag, .. } = self else {
            return Ok(());
        };
        let version = UpdateVersion {
            e_tag: e_tag.clone(),
            version: None,
        };
        match self.put(PutMode::Update(version)).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::Precondition { .. }) => Err(CompactError::Lease(
                "the lease expired and another compactor took it; this round stops before its next commit".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Lets the next compactor start at once rather than after the expiry; a lease that
    /// another compactor took over meanwhile stays its own.
    pub async fn release(self) {
        let Self::S3 {
            store, path, owner, ..
        } = &self
        else {
            return;
        };
        let still_ours = read(store, path)
            .await
            .is_ok_and(|(holder, _)| &holder.owner == owner);
        if still_ours && let Err(e) = store.delete(path).await {
            tracing::warn!(error = %e, "could not remove the compactor's lease; it expires by itself");
        }
    }
}

/// The lease object's holder and ETag.
async fn read(
    store: &ObjectStoreRef,
    path: &Path,
) -> Result<(Holder, Option<String>), CompactError> {
    let found = store.get(path).await?;
    let e_tag = found.meta.e_tag.clone();
    let holder = serde_json::from_slice(&found.bytes().await?)
        .map_err(|e| CompactError::Lease(format!("{path} is not a lease: {e}")))?;
    Ok((holder, e_tag))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
