//! ferry-cloud: what devices publish, carried into the data lake, the loyalty core and the
//! dashboards.
//!
//! - [`ingest`]: the MQTT consumer, its journal, the pipeline to the lake, and the router to
//!   the loyalty core;
//! - [`lake`]: lake lines, gzip batching, and the S3 or local-folder store;
//! - [`curated`]: `ferry-cloud compact`, the raw layer into Delta Lake tables, each record
//!   once;
//! - [`loyalty`]: the exactly-once ledger and its API;
//! - [`hot`]: the dashboards' hot store (recent readings, rollups, device state, alarms),
//!   which the ingest feeds;
//! - [`dashboard`]: the dashboards' API, event feed and page over the hot store and the
//!   ledger;
//! - [`fleet`]: each device's desired configuration and rollouts of signed updates;
//! - [`db`]: opening a SQLite or PostgreSQL database, and one interface over both;
//! - [`pool`]: a few blocking database connections for async callers;
//! - [`config`]: the cloud's configuration (README);
//! - [`http`]: `/healthz`, `/metrics` and the APIs behind the tokens and the role table;
//! - [`certs`]: `ferry-cloud certs`, a small fleet's CA and certificates;
//! - [`enroll`]: `ferry-cloud enroll`, the allow-list the stack's enrollment hook reads;
//! - [`sign`]: `ferry-cloud sign`, the release key and signed manifests for rollouts;
//! - [`dev`]: `ferry-cloud dev`, the whole pipeline on one machine.

pub mod certs;
pub mod check;
pub mod config;
pub mod curated;
pub mod dashboard;
pub(crate) mod db;
pub mod dev;
pub mod enroll;
pub mod fleet;
pub mod hot;
pub mod http;
pub mod ingest;
pub(crate) mod lake;
pub mod loyalty;
pub mod openapi;
pub mod pool;
pub mod sign;

#[cfg(test)]
mod layers;
