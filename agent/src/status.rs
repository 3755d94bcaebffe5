//! `ferry-agent status`: its JSON object, read from the spool while `run` may be running.

use serde::Serialize;

use crate::config::AgentConfig;
use crate::spool::{Spool, SpoolError, SpoolReader, SpoolStatus};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentStatus {
    pub device_id: String,
    #[serde(flatten)]
    pub spool: SpoolStatus,
}

pub fn read(cfg: &AgentConfig) -> Result<AgentStatus, SpoolError> {
    let reader = SpoolReader::open(&Spool::path_in(&cfg.data_dir))?;
    Ok(AgentStatus {
        device_id: cfg.device_id.to_string(),
        spool: reader.status()?,
    })
}
