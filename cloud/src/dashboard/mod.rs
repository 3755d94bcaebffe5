//! `ferry-cloud dashboard`: devices, live readings, loyalty figures and alarms, from the
//! hot store the ingest feeds (and the ledger, when this process can reach it).
//!
//! The hot store itself, which the ingest writes, is [`crate::hot`].
//!
//! - [`api`]: the JSON API behind the token; the panels' answers are in [`stations`]
//!   (tiles and comparisons, with [`units`] from metric names) and [`figures`] (loyalty and
//!   traffic from the ledger);
//! - [`events`]: one task that watches the hot store and fans news out as Server-Sent Events;
//! - [`page`]: the web page and its assets, embedded in the binary;
//! - [`retention`]: the job that drops raw readings and rollups past their retention.

mod api;
mod events;
mod figures;
mod page;
pub mod query;
mod retention;
mod stations;
mod units;

use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DashboardConfig;
use crate::hot::HotPool;
use crate::loyalty::LedgerPool;

/// The dashboard role's routes: `api` goes behind the token, `page` (the web page and its
/// assets, which hold no data) does not.
pub struct Routes {
    pub api: Router,
    pub page: Router,
}

/// Opens the hot store, starts the retention job and the event feed on `tasks`, and
/// returns the routes. `ledger` gives the loyalty figures; without it they answer 503.
pub async fn start(
    cfg: DashboardConfig,
    ledger: Option<Arc<LedgerPool>>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<Routes> {
    let url = cfg.database.clone();
    let hot = tokio::task::spawn_blocking(move || HotPool::open(&url, HotPool::size_for(&url)))
        .await?
        .map_err(|e| anyhow::anyhow!("dashboard.database: cannot open the hot store: {e}"))?;
    let cfg = Arc::new(cfg);
    tasks.spawn(retention::run(hot.clone(), cfg.clone(), shutdown.clone()));
    let feed = events::Feed::new();
    tasks.spawn(events::watch(
        hot.clone(),
        cfg.clone(),
        feed.clone(),
        shutdown.clone(),
    ));
    Ok(Routes {
        api: api::routes(api::DashboardApi {
            hot,
            ledger,
            cfg,
            feed,
            shutdown,
        }),
        page: page::routes(),
    })
}
