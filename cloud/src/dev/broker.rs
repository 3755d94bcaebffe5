//! The embedded MQTT broker of `ferry-cloud dev`: rumqttd in this process, plain TCP on
//! 127.0.0.1, persistent sessions kept in memory (enough for a demo; a real deployment uses
//! IoT Core or Mosquitto).

use anyhow::Context;

/// Starts the broker on `127.0.0.1:port`, on threads of its own until the process exits.
/// Not probed here (a probe that connects and leaves makes rumqttd log an error): the
/// caller waits for the ingest to subscribe, which says the broker is up.
pub fn start(port: u16) -> anyhow::Result<()> {
    // Envelopes are at most 128 KiB (README: envelopes); the agents keep 100 in flight.
    let config = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "ferry-dev"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 200
    dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&config).context("embedded broker config")?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the embedded MQTT broker stopped");
            }
        })
        .context("starting the embedded broker's thread")?;
    Ok(())
}
