//! ferry-agent: reads sources into a durable SQLite spool and drains it over MQTT.
//!
//! [`run`] wires the parts: sources append to the [`spool::Spool`]; the [`uplink`] drains it.
//! Nothing in between holds records in memory: the spool is the only queue.

pub mod cards;
pub mod check;
pub mod clock;
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
/// restarted. A new desired configuration is applied in place where it can be
/// ([`needs_rebuild`]); otherwise the pipeline is rebuilt in the process: sources, uplink
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
            None => {
                info!("agent stopped");
                return Ok(Stopped::Shutdown);
            }
            Some(Action::Reconfigure) => {
                info!("restarting the pipeline with the new configuration")
            }
            Some(Action::Updated) => return Ok(Stopped::Updated),
            Some(Action::TrialFailed) => return Ok(Stopped::TrialFailed),
        }
    }
}

/// One run of sources, uplink and spool, until shutdown, a fleet action, or a new desired
/// configuration that the running pipeline cannot take in place.
async fn run_pipeline(
    cfg: AgentConfig,
    file: &ConfigFile,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<Action>> {
    clock::configure(&cfg.clock.synced_by);
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
    let source_metrics = Arc::new(sources::SourceMetrics::default());
    let mut sources = Sources::start(&cfg, &spool, &source_metrics, &shutdown)?;
    let metrics = Arc::new(uplink::UplinkMetrics::default());
    // Stops with the sources, before the uplink: it takes transactions as they do.
    let pos_stop = shutdown.child_token();
    let mut pos = None;
    if let Some(p) = &cfg.pos_api {
        let listener = tokio::net::TcpListener::bind(p.listen)
            .await
            .with_context(|| format!("pos_api.listen: cannot listen on {}", p.listen))?;
        info!(listen = %p.listen, "POS API listening");
        let state = pos_api::PosState {
            device: cfg.device_id.clone(),
            spool: spool.clone(),
            token: Arc::new(pos_api::Token::new(p.token()?)),
            uplink: metrics.clone(),
            sources: source_metrics.clone(),
            answers: Arc::default(),
            cards: cards.clone(),
            redemptions: Arc::default(),
        };
        pos = Some(tokio::spawn(pos_api::serve(
            listener,
            state,
            pos_stop.clone(),
        )));
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
    let tell_fleet = fleet_link.events.clone();
    let (mqtt_tx, mqtt_rx) = tokio::sync::watch::channel(cfg.mqtt.clone());
    let uplink_stop = uplink::Shutdown::default();
    let mut running = cfg.clone();
    let mut uplink = tokio::spawn(uplink::run(
        cfg,
        spool.clone(),
        cards,
        metrics,
        fleet_link,
        mqtt_rx,
        uplink_stop.clone(),
    ));

    // The uplink runs until we stop it, after the sources; if it ends first, that is the
    // error to report.
    let mut action = None;
    let ended_early = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            Some(a) = actions.recv() => {
                if a == Action::Reconfigure {
                    let wanted = fleet::effective_config(file)?;
                    if !needs_rebuild(&running, &wanted) {
                        sources = reconfigure_in_place(&running, &wanted, sources, &spool, &source_metrics, &shutdown, &mqtt_tx).await?;
                        running = wanted;
                        // Now it runs: the fleet answers the document.
                        let _ = tell_fleet.try_send(fleet::FleetIn::ConfigApplied);
                        continue;
                    }
                }
                action = Some(a);
                break None;
            }
            joined = &mut uplink => break Some(joined),
        }
    };
    fleet_stop.cancel();
    pos_stop.cancel();
    sources.stop().await;
    if let Some(pos) = pos {
        match pos.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = format!("{e:#}"), "POS API failed"),
            Err(e) => error!(error = %e, "POS API task panicked"),
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

/// Whether `wanted` needs the pipeline rebuilt: the envelope builder's gzip level, the MQTT
/// client's in-flight window and the spool writer's cap are fixed for their lifetime;
/// sources, pacing, the status interval and the log level change in place.
fn needs_rebuild(running: &AgentConfig, wanted: &AgentConfig) -> bool {
    running.mqtt.gzip_level() != wanted.mqtt.gzip_level()
        || running.mqtt.max_inflight != wanted.mqtt.max_inflight
        || running.spool.max_bytes != wanted.spool.max_bytes
}

/// Applies what changed: sources are stopped (their last appends committed) and started
/// anew on the same spool, so seqs go on without a gap; the uplink re-paces itself.
async fn reconfigure_in_place(
    running: &AgentConfig,
    wanted: &AgentConfig,
    sources: Sources,
    spool: &Spool,
    metrics: &Arc<sources::SourceMetrics>,
    shutdown: &CancellationToken,
    mqtt: &tokio::sync::watch::Sender<config::MqttConfig>,
) -> anyhow::Result<Sources> {
    logging::set_level(&wanted.log_level);
    mqtt.send_replace(wanted.mqtt.clone());
    if running.sources == wanted.sources {
        info!("new configuration applied in place");
        return Ok(sources);
    }
    sources.stop().await;
    let started = Sources::start(wanted, spool, metrics, shutdown)?;
    info!(
        sources = wanted.sources.len(),
        "new configuration applied in place; sources restarted"
    );
    Ok(started)
}

/// The running sources, which a new configuration replaces without touching the rest.
struct Sources {
    set: tokio::task::JoinSet<anyhow::Result<()>>,
    stop: CancellationToken,
}

impl Sources {
    fn start(
        cfg: &AgentConfig,
        spool: &Spool,
        metrics: &Arc<sources::SourceMetrics>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let stop = shutdown.child_token();
        let set = sources::spawn_all(&cfg.sources, &cfg.device_id, spool, metrics, &stop)?;
        Ok(Self { set, stop })
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while let Some(joined) = self.set.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(error = format!("{e:#}"), "source failed"),
                Err(e) => error!(error = %e, "source task panicked"),
            }
        }
    }
}
