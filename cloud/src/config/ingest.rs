//! `[ingest]`: how the ingest admits messages.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Messages admitted into the journal in one transaction (one fsync).
    #[serde(default = "admit_batch")]
    pub admit_batch: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            admit_batch: admit_batch(),
        }
    }
}

fn admit_batch() -> usize {
    64
}
