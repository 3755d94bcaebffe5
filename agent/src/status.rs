//! `ferry-agent status`: its JSON object, read from the spool while `run` may be running.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::clock::ClockStatus;
use crate::config::AgentConfig;
use crate::spool::{Spool, SpoolError, SpoolReader, SpoolStatus};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentStatus {
    pub device_id: String,
    #[serde(flatten)]
    pub spool: SpoolStatus,
    /// Payload bytes per second the link carried when `run` last measured it (from
    /// PUBACKs); absent before the first measure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_bytes_per_s: Option<u64>,
    /// When that was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_measured_at: Option<String>,
    /// Whether `run` believes the wall clock, and what it flagged; absent before `run`
    /// first said.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockStatus>,
}

impl AgentStatus {
    pub fn new(device_id: String, spool: SpoolStatus, run: RunStatus) -> Self {
        let (link_bytes_per_s, link_measured_at) = match run.link {
            Some(l) => (Some(l.link_bytes_per_s), Some(l.link_measured_at)),
            None => (None, None),
        };
        Self {
            device_id,
            spool,
            link_bytes_per_s,
            link_measured_at,
            clock: run.clock,
        }
    }
}

/// What the uplink measured of the link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Payload bytes per second the broker acknowledged, at best over the last seconds.
    pub link_bytes_per_s: u64,
    pub link_measured_at: String,
}

impl LinkStatus {
    pub fn measured(bytes_per_s: u64) -> Self {
        Self {
            link_bytes_per_s: bytes_per_s,
            link_measured_at: ferry_shared::Timestamp::now().to_string(),
        }
    }
}

/// `{data_dir}/run.json`: what `run` knows that the spool does not hold, written with each
/// status message for `status` to read. A hint for people, not state: it is written
/// without an fsync, and a missing or torn file reads as nothing known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub link: Option<LinkStatus>,
    pub clock: Option<ClockStatus>,
}

const RUN_FILE: &str = "run.json";

impl RunStatus {
    /// This process's figures, with the link's measure when there is one.
    pub fn now(link_bytes_per_s: Option<u64>) -> Self {
        Self {
            link: link_bytes_per_s.map(LinkStatus::measured),
            clock: Some(crate::clock::status()),
        }
    }

    /// Replaces the file whole (a rename), so a reader never sees half of it.
    pub fn save(&self, data_dir: &Path) {
        let tmp = data_dir.join("run.json.tmp");
        let written = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, data_dir.join(RUN_FILE)));
        if let Err(e) = written {
            tracing::debug!(error = %e, "run status not saved");
        }
    }

    pub fn load(data_dir: &Path) -> Self {
        std::fs::read(data_dir.join(RUN_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }
}

pub fn read(cfg: &AgentConfig) -> Result<AgentStatus, SpoolError> {
    let reader = SpoolReader::open(&Spool::path_in(&cfg.data_dir))?;
    Ok(AgentStatus::new(
        cfg.device_id.to_string(),
        reader.status()?,
        RunStatus::load(&cfg.data_dir),
    ))
}
