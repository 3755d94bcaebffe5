//! ferry-agent: reads sources into a durable SQLite spool and drains it over MQTT.
//!
//! [`run`] wires the parts: sources append to the [`spool::Spool`]; the [`uplink`] drains it.
//! Nothing in between holds records in memory: the spool is the only queue.

pub mod cards;
pub mod check;
pub mod config;
pub mod enroll;
pub mod pos_api;
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
    let uplink_stop = CancellationToken::new();
    let mut uplink = tokio::spawn(uplink::run(
        cfg,
        spool.clone(),
        cards,
        metrics,
        uplink_stop.clone(),
    ));

    // The uplink runs until we stop it, after the sources; if it ends first, that is the
    // error to report.
    let ended_early = tokio::select! {
        _ = shutdown.cancelled() => None,
        joined = &mut uplink => Some(joined),
    };
    sources_stop.cancel();
    while let Some(joined) = sources.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = format!("{e:#}"), "source failed"),
            Err(e) => error!(error = %e, "source task panicked"),
        }
    }
    uplink_stop.cancel();
    let early = ended_early.is_some();
    let outcome = match ended_early {
        Some(joined) => joined,
        None => uplink.await,
    };
    drop(spool);
    tokio::task::spawn_blocking(move || writer.join()).await?;
    info!("agent stopped");
    match outcome {
        Ok(Ok(())) if early => Err(anyhow::anyhow!("uplink stopped before shutdown")),
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("uplink task panicked: {e}")),
    }
}
