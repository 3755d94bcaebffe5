//! The retention job: raw readings past `raw_retention_days` and rollups (and cleared
//! alarms) past `rollup_retention_days` leave the hot store, every `retention_interval_s`.

use std::sync::Arc;
use std::time::Duration;

use ferry_shared::Timestamp;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::DashboardConfig;
use crate::hot::HotPool;

pub async fn run(hot: Arc<HotPool>, cfg: Arc<DashboardConfig>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(cfg.retention_interval_s));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let (raw_keep, rollup_keep) = (cfg.raw_keep_ms(), cfg.rollup_keep_ms());
        let now = Timestamp::now().unix_millis();
        match hot
            .run(move |store| store.retain(now, raw_keep, rollup_keep))
            .await
        {
            Ok((0, 0)) => {}
            Ok((raw, rollups)) => info!(raw, rollups, "hot store retention dropped old rows"),
            Err(e) => warn!(error = %e, "hot store retention failed; trying again next time"),
        }
    }
}
