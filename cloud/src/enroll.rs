//! `ferry-cloud enroll` (README: deploy to AWS): the allow-list the stack's
//! pre-provisioning hook reads before IoT Core gives a claim certificate's holder an
//! identity. One object per serial, `{prefix}/{serial}.json`:
//! `{"store", "reenroll", "added_at", "enrolled_at"}`. The hook allows a listed serial
//! whose thing does not exist yet, or one marked `reenroll` (and clears the mark), and
//! imposes the listed store.

use anyhow::{Context, bail};
use aws_sdk_s3::primitives::ByteStream;
use ferry_shared::ids::check_serial;
use serde::{Deserialize, Serialize};

pub use crate::lake::S3Settings;
use crate::lake::s3_client;

/// What the allow-list says of one serial. Fields the hook adds are kept as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The store the device enrolls into, whatever it asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The thing exists and may enroll once more (a replaced SD card, a new certificate).
    #[serde(default)]
    pub reenroll: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_at: Option<String>,
    /// When the hook last allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_at: Option<String>,
}

impl Entry {
    /// One line of JSON: the serial and the entry.
    pub fn line(&self, serial: &str) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["serial"] = serial.into();
        v.to_string()
    }
}

pub struct AllowList {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

fn check_store(store: &str) -> anyhow::Result<()> {
    let ok = !store.is_empty()
        && store.len() <= 64
        && store
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        bail!("--store {store:?} must be 1 to 64 of A-Z a-z 0-9 - _ .");
    }
    Ok(())
}

impl AllowList {
    /// `url` is `s3://BUCKET/PREFIX`, the stack's `EnrollmentAllowList` output.
    pub async fn open(url: &str, s3: &S3Settings) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("s3://") else {
            bail!("--list {url:?} must be s3://BUCKET/PREFIX (the stack's EnrollmentAllowList)");
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("--list {url:?} names no bucket");
        }
        Ok(Self {
            client: s3_client(s3).await,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    fn key(&self, serial: &str) -> String {
        if self.prefix.is_empty() {
            format!("{serial}.json")
        } else {
            format!("{}/{serial}.json", self.prefix)
        }
    }

    pub async fn get(&self, serial: &str) -> anyhow::Result<Option<Entry>> {
        check_serial(serial).map_err(anyhow::Error::msg)?;
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(serial))
            .send()
            .await;
        let object = match got {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading the entry of {serial}")));
            }
        };
        let bytes = object.body.collect().await?.into_bytes();
        let entry = serde_json::from_slice(&bytes)
            .with_context(|| format!("the allow-list's entry of {serial} is not valid JSON"))?;
        Ok(Some(entry))
    }

    async fn put(&self, serial: &str, entry: &Entry) -> anyhow::Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(serial))
            .content_type("application/json")
            .body(ByteStream::from(serde_json::to_vec(entry)?))
            .send()
            .await
            .with_context(|| format!("writing the entry of {serial}"))?;
        Ok(())
    }

    /// Lists `serial` (into `store`, if given); an entry already there keeps its marks.
    pub async fn allow(&self, serial: &str, store: Option<&str>) -> anyhow::Result<Entry> {
        check_serial(serial).map_err(anyhow::Error::msg)?;
        if let Some(store) = store {
            check_store(store)?;
        }
        let entry = match self.get(serial).await? {
            Some(old) => Entry {
                store: store.map(str::to_owned).or(old.store),
                ..old
            },
            None => Entry {
                store: store.map(str::to_owned),
                reenroll: false,
                added_at: Some(ferry_shared::Timestamp::now().to_string()),
                enrolled_at: None,
            },
        };
        self.put(serial, &entry).await?;
        Ok(entry)
    }

    /// Lets a listed serial whose thing exists enroll once more.
    pub async fn reenroll(&self, serial: &str) -> anyhow::Result<Entry> {
        let Some(old) = self.get(serial).await? else {
            bail!("{serial} is not on the allow-list: `enroll allow` it first");
        };
        let entry = Entry {
            reenroll: true,
            ..old
        };
        self.put(serial, &entry).await?;
        Ok(entry)
    }

    /// Takes `serial` off the list; whether it was there.
    pub async fn revoke(&self, serial: &str) -> anyhow::Result<bool> {
        let was = self.get(serial).await?.is_some();
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(serial))
            .send()
            .await
            .with_context(|| format!("deleting the entry of {serial}"))?;
        Ok(was)
    }

    /// Every listed serial with its entry, in key order.
    pub async fn list(&self) -> anyhow::Result<Vec<(String, Entry)>> {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.context("listing the allow-list")?;
            for object in page.contents() {
                let Some(serial) = object
                    .key()
                    .and_then(|k| k.strip_prefix(&prefix))
                    .and_then(|k| k.strip_suffix(".json"))
                else {
                    continue;
                };
                // Something else in the folder is not an entry.
                if check_serial(serial).is_err() {
                    continue;
                }
                if let Some(entry) = self.get(serial).await? {
                    out.push((serial.to_owned(), entry));
                }
            }
        }
        Ok(out)
    }
}
