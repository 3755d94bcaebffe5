//! MQTT connection settings for IoT Core or any broker.
//!
//! aws-iot-device-sdk-rust builds the options: it reads the CA, certificate and key files
//! and normalises EC keys (SEC1 to PKCS#8) as AWS-issued keys need. Ferry then adds what the
//! SDK lacks, ALPN for port 443, and drives the event loop itself (see `driver`).

use std::time::Duration;

use aws_iot_device_sdk_rust::AWSIoTAsyncClient;
use aws_iot_device_sdk_rust::settings::{AWSIoTSettings, MQTTOptionsOverrides};
use ferry_shared::limits::MAX_PAYLOAD_BYTES;
use rumqttc::{AsyncClient, EventLoop, LastWill, MqttOptions, TlsConfiguration, Transport};

use crate::config::AgentConfig;

/// Room for the fixed header, the topic and the packet id around a full payload.
const PACKET_OVERHEAD: usize = 1024;

/// Slots in rumqttc's inflight table beyond our own window, so that status messages never
/// wait behind a full window of envelopes.
const STATUS_SLOTS: u16 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("mqtt settings: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("loading TLS material: {0}")]
    Tls(String),
}

/// Requests rumqttc may queue before its event loop takes them; the uplink never has more
/// than its window outstanding, so this only absorbs bursts of status messages.
const REQUEST_CHANNEL: usize = 64;

/// `will` is the retained offline status the broker publishes if we vanish (none for
/// `check --connect`, which is not the running agent).
pub async fn client(
    cfg: &AgentConfig,
    will: Option<LastWill>,
) -> Result<(AsyncClient, EventLoop), ConnectError> {
    let broker = cfg.mqtt.broker()?;
    // rumqttc sizes its inflight table when the event loop is made, so this one must be set
    // up front; the rest is applied to the event loop's options below, for both paths.
    let inflight = cfg.mqtt.max_inflight.saturating_add(STATUS_SLOTS);
    let (client, mut eventloop) = if broker.tls {
        let overrides = MQTTOptionsOverrides {
            port: Some(broker.port),
            inflight: Some(inflight),
            ..Default::default()
        };
        let path = |p: &Option<std::path::PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let settings = AWSIoTSettings::new(
            cfg.device_id.to_string(),
            path(&cfg.mqtt.ca_file),
            path(&cfg.mqtt.cert_file),
            path(&cfg.mqtt.key_file),
            broker.host.clone(),
            Some(overrides),
        );
        ferry_shared::tls::use_ring();
        let (iot, (eventloop, _unused_broadcast)) = AWSIoTAsyncClient::new(settings)
            .await
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        (iot.get_client().await, eventloop)
    } else {
        // Not through the SDK: it reads the certificate files even when told the transport
        // is plain TCP.
        let mut options =
            MqttOptions::new(cfg.device_id.to_string(), broker.host.clone(), broker.port);
        options.set_inflight(inflight);
        AsyncClient::new(options, REQUEST_CHANNEL)
    };

    let max_packet = MAX_PAYLOAD_BYTES + PACKET_OVERHEAD;
    let options = &mut eventloop.mqtt_options;
    // Always a fresh session: the spool is the outbox, and after every ConnAck we resend all
    // that is unacknowledged ourselves. A resumed session would have rumqttc resend too, and
    // break the pairing of packet ids with records.
    options
        .set_clean_session(true)
        .set_keep_alive(Duration::from_secs(cfg.mqtt.keep_alive_s))
        .set_max_packet_size(max_packet, max_packet);
    if let Some(will) = will {
        options.set_last_will(will);
    }
    let alpn = cfg.mqtt.alpn_protocols(broker.port);
    if !alpn.is_empty()
        && let Transport::Tls(TlsConfiguration::Simple {
            ca, client_auth, ..
        }) = options.transport()
    {
        let alpn = Some(alpn.into_iter().map(String::into_bytes).collect());
        options.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn,
            client_auth,
        }));
    }
    // rumqttc bounds every socket flush by this. On a slow link one full envelope may take
    // many seconds to leave, and a flush cut short drops the connection and resends all that
    // is unacknowledged; so flushes get as long as the keep-alive, within which a silent link
    // is noticed anyway. The driver bounds connect attempts itself.
    eventloop
        .network_options
        .set_connection_timeout(cfg.mqtt.keep_alive_s);
    Ok((client, eventloop))
}
