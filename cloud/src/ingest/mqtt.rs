//! The ingest's MQTT side: a persistent session (clean session off) with manual acks, so
//! the broker keeps every message the ingest has not acknowledged, across its crashes.
//!
//! rumqttc emits no "reconnected" event and may forget subscriptions with the session, so
//! every ConnAck resubscribes. A message is acknowledged only after the journal commit that
//! made it durable (`ingest::run` sends the ack through the client).

use std::time::Duration;

use anyhow::Context;
use ferry_shared::mqtt_probe::{PROBE_EVERY, is_network_failure, port_answers};
use ferry_shared::{Stream, Timestamp, Topic};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::IngestMetrics;
use crate::config::MqttConfig;

/// Largest packet taken from the broker. Above the 128 KiB wire limit on purpose: an
/// oversize payload must reach the ingest to be traced in `errors/`, since refusing the
/// packet would only make the broker resend it forever.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

const MAX_INCOMING_PACKET: usize = 16 * 1024 * 1024;

/// A message as it arrived.
#[derive(Debug)]
pub struct Incoming {
    pub publish: Publish,
    pub received: Timestamp,
}

pub fn client(cfg: &MqttConfig) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let broker = cfg.broker()?;
    let mut opts = MqttOptions::new(&cfg.client_id, &broker.host, broker.port);
    opts.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s))
        .set_max_packet_size(MAX_INCOMING_PACKET, 128 * 1024);
    if broker.tls {
        ferry_shared::tls::use_ring();
        let read = |key: &str, path: &Option<std::path::PathBuf>| {
            let path = path
                .as_ref()
                .with_context(|| format!("{key} is required with mqtts://"))?;
            std::fs::read(path).with_context(|| format!("{key}: reading {}", path.display()))
        };
        opts.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Simple {
                ca: read("mqtt.ca_file", &cfg.ca_file)?,
                alpn: None,
                client_auth: Some((
                    read("mqtt.cert_file", &cfg.cert_file)?,
                    read("mqtt.key_file", &cfg.key_file)?,
                )),
            },
        ));
    }
    Ok(AsyncClient::new(opts, 1024))
}

/// The subscriptions: both data streams of every device, through the share group if any;
/// and, for the hot store, every device's `status`, outside the group: the broker hands
/// retained messages only to plain subscriptions, and every ingest may keep device state.
pub fn filters(cfg: &MqttConfig, status: bool) -> Vec<String> {
    let mut filters: Vec<String> = [Stream::Telemetry, Stream::Transactions]
        .into_iter()
        .map(|stream| match &cfg.share_group {
            Some(group) => format!("$share/{group}/{}", Topic::filter_all(stream)),
            None => Topic::filter_all(stream),
        })
        .collect();
    if status {
        filters.push(Topic::filter_all(Stream::Status));
    }
    filters
}

/// Drives the event loop until `shutdown`, handing every publish to `admit`. When `admit`
/// is full (the journal or the lake is behind) this waits, and so stops taking messages:
/// the broker keeps them.
pub async fn consume(
    client: AsyncClient,
    mut eventloop: EventLoop,
    filters: Vec<String>,
    admit: mpsc::Sender<Incoming>,
    metrics: std::sync::Arc<IngestMetrics>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut subacks = 0;
    let mut connected = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                connected = true;
                info!(session_present = ack.session_present, "ingest connected");
                subacks = 0;
                for filter in &filters {
                    if let Err(e) = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
                        warn!(filter = %filter, error = %e, "subscribe request not queued");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if refused {
                    warn!("the broker refused a subscription; check the ingest's permissions");
                } else {
                    subacks += 1;
                    if subacks == filters.len() {
                        info!("ingest subscribed");
                        metrics
                            .subscribed
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                metrics
                    .unacked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let incoming = Incoming {
                    publish,
                    received: Timestamp::now(),
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    sent = admit.send(incoming) => if sent.is_err() { return },
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics
                    .subscribed
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                warn!(error = %e, failures, "ingest MQTT connection failed; retrying");
                let delay = ferry_shared::backoff::jittered(BACKOFF_MIN, BACKOFF_MAX, failures);
                failures = failures.saturating_add(1);
                // A silent link that returns is seen by a bare probe of the port, not after
                // a back-off grown to 30 s while the broker kept the session's messages.
                let network = is_network_failure(&e, std::mem::replace(&mut connected, false));
                let broker = eventloop.mqtt_options.broker_address();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                    () = port_answers(&broker), if network && delay > PROBE_EVERY => {
                        info!(host = %broker.0, port = broker.1, "the broker's port answers again; reconnecting now");
                        failures = 0;
                    }
                }
            }
        }
    }
}
