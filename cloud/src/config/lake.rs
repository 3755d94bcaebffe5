//! `[lake]`: where raw records land, and how they are batched.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// `s3://bucket/prefix` or a local folder.
    pub root: String,
    pub s3_endpoint: Option<String>,
    #[serde(default)]
    pub s3_force_path_style: bool,
    pub s3_region: Option<String>,
    /// A partition is flushed when its gzipped size reaches this.
    #[serde(default = "flush_bytes")]
    pub flush_bytes: usize,
    /// ...or when its oldest record has waited this long.
    #[serde(default = "flush_interval_s")]
    pub flush_interval_s: u64,
    /// Partitions open at once; beyond it the oldest is flushed early.
    #[serde(default = "max_open_partitions")]
    pub max_open_partitions: usize,
    /// Gzipped bytes held in open partitions, all together; beyond it the largest is
    /// flushed early.
    #[serde(default = "max_buffer_bytes")]
    pub max_buffer_bytes: usize,
    /// `all` compacts the raw layer into the curated tables every this many seconds; unset,
    /// it does not (run `ferry-cloud compact` instead, or in one place only).
    pub compact_interval_s: Option<u64>,
    /// A day with raw objects older than this and not compacted is overdue (a metric).
    #[serde(default = "compact_lag_alert_s")]
    pub compact_lag_alert_s: u64,
    /// A curated day is written in files of about this size; a smaller day in one file.
    #[serde(default = "curated_file_bytes")]
    pub curated_file_bytes: u64,
    /// Curated files a compaction replaced are deleted (VACUUM) after this many days, so a
    /// reader of an older table version still finds them until then.
    #[serde(default = "curated_retention_days")]
    pub curated_retention_days: u64,
}

/// Where the lake lives, parsed from `lake.root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeRoot {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl LakeConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        self.root()?;
        if self.flush_bytes < 1024 {
            return Err(invalid("lake.flush_bytes", "must be at least 1024"));
        }
        if self.flush_interval_s == 0 {
            return Err(invalid("lake.flush_interval_s", "must be at least 1"));
        }
        if self.max_open_partitions == 0 {
            return Err(invalid("lake.max_open_partitions", "must be at least 1"));
        }
        if self.compact_interval_s == Some(0) {
            return Err(invalid("lake.compact_interval_s", "must be at least 1"));
        }
        if self.curated_file_bytes < 1024 * 1024 {
            return Err(invalid(
                "lake.curated_file_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if self.curated_retention_days == 0 {
            return Err(invalid(
                "lake.curated_retention_days",
                "must be at least 1: readers of the version before a compaction need its files",
            ));
        }
        if self.max_buffer_bytes < self.flush_bytes {
            return Err(invalid(
                "lake.max_buffer_bytes",
                "must be at least lake.flush_bytes",
            ));
        }
        Ok(())
    }

    pub fn root(&self) -> Result<LakeRoot, ConfigError> {
        match self.root.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid(
                        "lake.root",
                        "s3:// needs a bucket: s3://BUCKET/PREFIX",
                    ));
                }
                Ok(LakeRoot::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                })
            }
            None if self.root.contains("://") => Err(invalid(
                "lake.root",
                "must be s3://BUCKET/PREFIX or a local folder",
            )),
            None if self.root.is_empty() => Err(invalid("lake.root", "must not be empty")),
            None => Ok(LakeRoot::Local(PathBuf::from(&self.root))),
        }
    }
}

fn flush_bytes() -> usize {
    8 * 1024 * 1024
}

fn flush_interval_s() -> u64 {
    60
}

fn max_open_partitions() -> usize {
    64
}

fn compact_lag_alert_s() -> u64 {
    6 * 3600
}

fn curated_file_bytes() -> u64 {
    128 * 1024 * 1024
}

fn curated_retention_days() -> u64 {
    7
}

fn max_buffer_bytes() -> usize {
    64 * 1024 * 1024
}
