//! The scheduled job that lets points lapse after their program's `expiry_days`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{LedgerPool, LoyaltyMetrics};

/// Runs at start and then every `every`, until `shutdown`. A failed run is logged and
/// tried again at the next tick: lapsing late loses nothing.
pub async fn run_expiry(
    pool: Arc<LedgerPool>,
    metrics: Arc<LoyaltyMetrics>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pool.run(|l| l.expire(chrono::Utc::now())).await {
            Ok(0) => {}
            Ok(points) => {
                metrics
                    .points_lapsed
                    .fetch_add(points.unsigned_abs(), Ordering::Relaxed);
                info!(points, "points lapsed under their programs' expiry_days");
            }
            Err(e) => warn!(error = %e, "point expiry failed; trying again at the next run"),
        }
    }
}
