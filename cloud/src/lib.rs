//! ferry-cloud: what devices publish, carried into the data lake and the loyalty core (and,
//! to come, dashboards).
//!
//! - [`ingest`]: the MQTT consumer, its journal, the pipeline to the lake, and the router to
//!   the loyalty core;
//! - [`lake`]: lake lines, gzip batching, and the S3 or local-folder store;
//! - [`loyalty`]: the exactly-once ledger and its API;
//! - [`config`]: CONTRACT §2b;
//! - [`http`]: `/healthz`, `/metrics` and the APIs behind the token;
//! - [`dev`]: `ferry-cloud dev`, the whole pipeline on one machine.

pub mod config;
pub mod dev;
pub mod http;
pub mod ingest;
pub mod lake;
pub mod loyalty;
