//! ferry-agent: reads sources into a durable SQLite spool and drains it over MQTT.
//!
//! [`run`] wires the parts: sources append to the [`spool::Spool`]; the [`uplink`] drains it.
//! Nothing in between holds records in memory: the spool is the only queue.

pub mod cards;
pub mod check;
pub mod config;
pub mod durable_file;
pub mod enroll;
pub mod fleet;
pub mod logging;
pub mod pos_api;
pub mod sources;
pub mod spool;
pub mod status;
pub mod update;
pub mod uplink;

/// This build's version: `FERRY_VERSION` at build time (for a build made to test updates),
/// else the crate's.
pub const VERSION: &str = match option_env!("FERRY_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use config::{AgentConfig, ConfigFile};
use fleet::Action;
use spool::Spool;

/// Why [`run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to stop.
    Shutdown,
    /// A new binary is in place ([`update::EXIT_UPDATED`]).
    Updated,
    /// This binary is on trial and did not pass it in time.
    TrialFailed,
}

/// Runs the agent from `file` until `shutdown` is cancelled or an update needs the process
/// restarted. A new desired configuration rebuilds the pipeline in place: sources, uplink
/// and spool writer stop in that order, so every accepted record is committed, and start
/// again with the new settings.
pub async fn run(file: ConfigFile, shutdown: CancellationToken) -> anyhow::Result<Stopped> {
    loop {
        let mut cfg = fleet::effective_config(&file)?;
        match update::injected_fault().as_deref() {
            Some("exit") => anyhow::bail!("injected fault: exit at start"),
            Some("no-connect") => cfg.mqtt.url = "mqtt://127.0.0.1:9".into(),
            _ => {}
        }
        logging::set_level(&cfg.log_level);
        match run_pipeline(cfg, &file, shutdown.clone()).await? {
            None => return Ok(Stopped::Shutdown),
            Some(Action::Reconfigure) => {
                info!("restarting the pipeline with the new configuration")
            }
            Some(Action::Updated) => return Ok(Stopped::Updated),
            Some(Action::TrialFailed) => return Ok(Stopped::TrialFailed),
        }
    }
}

/// One run of sources, uplink and spool, until shutdown or a fleet action.
async fn run_pipeline(
    cfg: AgentConfig,
    file: &ConfigFile,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<Action>> {
    let (spool, writer) = Spool::open(&cfg.data_dir, cfg.spool.max_bytes)
        .with_context(|| format!("opening the spool in {}", cfg.data_dir.display()))?;
    let status = spool.status();
    info!(
        device = %cfg.device_id,
        spool = %spool.id(),
        last_seq = status.last_seq,
        pending = status.pending,
        "agent starting"
    );

    let cards = cards::CardCache::open(&cfg.data_dir)
        .with_context(|| format!("opening the card balances in {}", cfg.data_dir.display()))?;
    let sources_stop = shutdown.child_token();
    let source_metrics = Arc::new(sources::SourceMetrics::default());
    let mut sources = sources::spawn_all(
        &cfg.sources,
        &cfg.device_id,
        &spool,
        &source_metrics,
        &sources_stop,
    )?;
    let metrics = Arc::new(uplink::UplinkMetrics::default());
    if let Some(pos) = &cfg.pos_api {
        let listener = tokio::net::TcpListener::bind(pos.listen)
            .await
            .with_context(|| format!("pos_api.listen: cannot listen on {}", pos.listen))?;
        info!(listen = %pos.listen, "POS API listening");
        let state = pos_api::PosState {
            device: cfg.device_id.clone(),
            spool: spool.clone(),
            token: Arc::new(pos_api::Token::new(pos.token()?)),
            uplink: metrics.clone(),
            sources: source_metrics.clone(),
            answers: Arc::default(),
            cards: cards.clone(),
            redemptions: Arc::default(),
        };
        // A source like the others: it stops taking transactions before the uplink stops.
        sources.spawn(pos_api::serve(listener, state, sources_stop.clone()));
    }
    let (actions_tx, mut actions) = tokio::sync::mpsc::channel(4);
    let fleet_stop = CancellationToken::new();
    let (fleet_link, fleet_task) = fleet::start(
        &cfg,
        file,
        spool.readable_by(),
        actions_tx,
        fleet_stop.clone(),
    )?;
    let uplink_stop = uplink::Shutdown::default();
    let mut uplink = tokio::spawn(uplink::run(
        cfg,
        spool.clone(),
        cards,
        metrics,
        fleet_link,
        uplink_stop.clone(),
    ));

    // The uplink runs until we stop it, after the sources; if it ends first, that is the
    // error to report.
    let mut action = None;
    let ended_early = tokio::select! {
        _ = shutdown.cancelled() => None,
        Some(a) = actions.recv() => {
            action = Some(a);
            None
        }
        joined = &mut uplink => Some(joined),
    };
    fleet_stop.cancel();
    sources_stop.cancel();
    while let Some(joined) = sources.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = format!("{e:#}"), "source failed"),
            Err(e) => error!(error = %e, "source task panicked"),
        }
    }
    if action == Some(Action::Reconfigure) {
        uplink_stop
            .rebuild
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    uplink_stop.token.cancel();
    let early = ended_early.is_some();
    let outcome = match ended_early {
        Some(joined) => joined,
        None => uplink.await,
    };
    drop(spool);
    tokio::task::spawn_blocking(move || writer.join()).await?;
    if fleet_task.await.is_err() {
        error!("fleet task panicked");
    }
    info!("pipeline stopped");
    match outcome {
        Ok(Ok(())) if early => Err(anyhow::anyhow!("uplink stopped before shutdown")),
        Ok(result) => result.map(|()| action),
        Err(e) => Err(anyhow::anyhow!("uplink task panicked: {e}")),
    }
}
