//! ferry-agent: reads sources into a durable SQLite spool and drains it over MQTT.
//!
//! [`run`] wires the parts: sources append to the [`spool::Spool`]; the [`uplink`] drains it.
//! Nothing in between holds records in memory: the spool is the only queue.

pub mod config;
pub mod sources;
pub mod spool;
pub mod status;
pub mod uplink;

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use config::AgentConfig;
use spool::Spool;

/// Runs the agent until `shutdown` is cancelled, then stops sources, the uplink and the
/// spool writer in that order, so that every accepted record is committed.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (spool, writer) = Spool::open(&cfg.data_dir, cfg.spool.max_bytes)
        .with_context(|| format!("opening the spool in {}", cfg.data_dir.display()))?;
    let status = spool.reader()?.status()?;
    info!(
        device = %cfg.device_id,
        spool = %spool.id(),
        last_seq = status.last_seq,
        pending = status.pending,
        "agent starting"
    );

    let sources_stop = shutdown.child_token();
    let mut sources = sources::spawn_all(&cfg.sources, &cfg.device_id, &spool, &sources_stop);
    let metrics = Arc::new(uplink::UplinkMetrics::default());
    let uplink = tokio::spawn(uplink::run(cfg, spool.clone(), metrics, shutdown.clone()));

    let mut outcome = Ok(());
    tokio::select! {
        _ = shutdown.cancelled() => {}
        done = uplink_finished(&uplink) => outcome = done,
    }
    sources_stop.cancel();
    while let Some(joined) = sources.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = format!("{e:#}"), "source failed"),
            Err(e) => error!(error = %e, "source task panicked"),
        }
    }
    shutdown.cancel();
    match uplink.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => outcome = outcome.and(Err(e)),
        Err(e) => outcome = outcome.and(Err(anyhow::anyhow!("uplink task panicked: {e}"))),
    }
    drop(spool);
    tokio::task::spawn_blocking(move || writer.join()).await?;
    info!("agent stopped");
    outcome
}

/// Resolves only if the uplink ends on its own, which is an error: it should run until
/// shutdown.
async fn uplink_finished(
    handle: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    while !handle.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(anyhow::anyhow!("uplink stopped before shutdown"))
}
