//! MQTT connection settings for IoT Core or any broker.
//!
//! aws-iot-device-sdk-rust builds the options: it reads the CA, certificate and key files
//! and normalises EC keys (SEC1 to PKCS#8) as AWS-issued keys need. Ferry then adds what the
//! SDK lacks, ALPN for port 443, and drives the event loop itself (see `driver`).

use std::time::Duration;

use aws_iot_device_sdk_rust::AWSIoTAsyncClient;
use aws_iot_device_sdk_rust::settings::{AWSIoTSettings, MQTTMaxPacketSize, MQTTOptionsOverrides};
use ferry_shared::limits::MAX_PAYLOAD_BYTES;
use rumqttc::{AsyncClient, EventLoop, LastWill, QoS, TlsConfiguration, Transport};

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

pub async fn client(
    cfg: &AgentConfig,
    will_payload: Vec<u8>,
) -> Result<(AsyncClient, EventLoop), ConnectError> {
    let broker = cfg.mqtt.broker()?;
    let status_topic =
        ferry_shared::Topic::new(cfg.device_id.clone(), ferry_shared::Stream::Status).to_string();
    let max_packet = MAX_PAYLOAD_BYTES + PACKET_OVERHEAD;
    let overrides = MQTTOptionsOverrides {
        port: Some(broker.port),
        // Always a fresh session: the spool is the outbox, and after every ConnAck we resend
        // all that is unacknowledged ourselves. A resumed session would have rumqttc resend
        // too, and break the pairing of packet ids with records.
        clean_session: Some(true),
        keep_alive: Some(Duration::from_secs(cfg.mqtt.keep_alive_s)),
        max_packet_size: Some(MQTTMaxPacketSize::new(max_packet, max_packet)),
        request_channel_capacity: None,
        pending_throttle: None,
        inflight: Some(cfg.mqtt.max_inflight.saturating_add(STATUS_SLOTS)),
        last_will: Some(LastWill::new(
            status_topic,
            will_payload,
            QoS::AtLeastOnce,
            true,
        )),
        conn_timeout: Some(10),
        transport: (!broker.tls).then_some(Transport::Tcp),
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
    let (iot, (mut eventloop, _unused_broadcast)) = AWSIoTAsyncClient::new(settings)
        .await
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    let alpn = cfg.mqtt.alpn_protocols(broker.port);
    if !alpn.is_empty()
        && let Transport::Tls(TlsConfiguration::Simple {
            ca, client_auth, ..
        }) = eventloop.mqtt_options.transport()
    {
        let alpn = Some(alpn.into_iter().map(String::into_bytes).collect());
        eventloop
            .mqtt_options
            .set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca,
                alpn,
                client_auth,
            }));
    }
    Ok((iot.get_client().await, eventloop))
}
