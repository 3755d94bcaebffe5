//! Fleet operations (README: remote configuration, updates): each device's desired
//! configuration and the rollouts of signed updates, over Ferry's retained topics.
//!
//! - [`store`]: `{data_dir}/fleet.db`, the desired documents, the devices' answers, the
//!   rollouts and their jobs;
//! - [`link`]: the MQTT connection that publishes and keeps the answers;
//! - [`api`]: `PUT`/`GET /v1/devices/{id}/config`, `POST`/`GET /v1/rollouts`.
//!
//! Runs with the dashboard role when `[mqtt]` is configured; without it its routes answer
//! 503.

pub mod api;
mod link;
mod store;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::CloudConfig;

pub use store::{ConfigView, DesiredView, JobView, RolloutView};

/// Opens the store, connects, and returns the routes; without `[mqtt]`, routes that say
/// so (503).
pub fn start(
    cfg: &CloudConfig,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<axum::Router> {
    let Some(mqtt) = &cfg.mqtt else {
        return Ok(api::unconfigured());
    };
    let store = store::FleetStore::open(&cfg.data_dir)?;
    let (link, task) = link::start(mqtt, store.clone(), shutdown)?;
    tasks.spawn(async move {
        let _ = task.await;
    });
    Ok(api::routes(api::FleetApi { store, link }))
}
