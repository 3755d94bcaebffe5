//! ferry-cloud: what devices publish, carried into the data lake (and, to come, the loyalty
//! core and dashboards).
//!
//! - [`ingest`]: the MQTT consumer, its journal, and the pipeline to the lake;
//! - [`lake`]: lake lines, gzip batching, and the S3 or local-folder store;
//! - [`config`]: CONTRACT §2b;
//! - [`http`]: `/healthz` and `/metrics`.

pub mod config;
pub mod http;
pub mod ingest;
pub mod lake;
pub mod loyalty;
