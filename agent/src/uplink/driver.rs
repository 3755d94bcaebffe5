//! Drives rumqttc's `EventLoop` in a task of its own and turns what it yields into the
//! few events the uplink acts on.
//!
//! rumqttc forgets everything on a reconnect without a session, emits no "reconnected"
//! event, and loops hot if polled again at once after an error. So: every error is a
//! `Disconnected` that the uplink must answer before anything else happens; then requests
//! that were still queued are purged, the driver backs off with jitter, and only then
//! reconnects. The uplink therefore never has a publish of an old connection in flight when
//! it sees the next `ConnAck`.
//!
//! Two timeouts that rumqttc keeps as one are split here. rumqttc bounds both the connect
//! and every socket flush by its connection timeout; on a slow link a flush of a large
//! packet legitimately takes longer than a connect should, so rumqttc's is set to the
//! keep-alive (`connect`), and a connect attempt is bounded by [`CONNECT_TIMEOUT`] here.
//!
//! After a network failure the back-off grows to [`BACKOFF_MAX`], cut short once the
//! broker's port answers a bare probe (`ferry_shared::mqtt_probe::port_answers`).

use std::time::Duration;

use ferry_shared::mqtt_probe::{PROBE_EVERY, is_network_failure, port_answers};
use rumqttc::{ConnectionError, Event, EventLoop, Incoming, Outgoing};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A TCP and TLS handshake and a CONNACK: a few round trips, even on a GPRS-class link.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum DriverEvent {
    /// A new connection, always with a fresh session.
    Connected,
    /// The request sent `n` publishes ago went out with this packet id.
    Published(u16),
    PubAck(u16),
    Message(rumqttc::Publish),
    /// The connection is gone; reply once nothing more will be published until `Connected`.
    Disconnected {
        error: String,
        resume: oneshot::Sender<()>,
    },
}

pub async fn run(
    mut eventloop: EventLoop,
    events: mpsc::Sender<DriverEvent>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut connected = false;
    loop {
        let polled = tokio::select! {
            polled = poll(&mut eventloop, connected) => polled,
            // Without this the driver would keep reconnecting after the uplink has gone.
            _ = events.closed() => return,
        };
        let event = match polled {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                failures = 0;
                connected = true;
                DriverEvent::Connected
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => DriverEvent::Published(pkid),
            Ok(Event::Incoming(Incoming::PubAck(ack))) => DriverEvent::PubAck(ack.pkid),
            Ok(Event::Incoming(Incoming::Publish(p))) => DriverEvent::Message(p),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                debug!("mqtt disconnect sent");
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                let connected_before = std::mem::replace(&mut connected, false);
                let (resume, resumed) = oneshot::channel();
                let error = e.to_string();
                if events
                    .send(DriverEvent::Disconnected { error, resume })
                    .await
                    .is_err()
                    || resumed.await.is_err()
                {
                    return;
                }
                // Requests queued before the uplink heard of the disconnect belong to the
                // old connection; the uplink will resend their records from the spool.
                eventloop.clean();
                eventloop.pending.clear();
                let delay = backoff(failures);
                failures = failures.saturating_add(1);
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "mqtt connection lost");
                let network = is_network_failure(&e, connected_before);
                let broker = eventloop.mqtt_options.broker_address();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    () = port_answers(&broker), if network && delay > PROBE_EVERY => {
                        info!(host = %broker.0, port = broker.1, "the broker's port answers again; reconnecting now");
                        failures = 0;
                    }
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// One turn of the event loop; a connect attempt is bounded by [`CONNECT_TIMEOUT`] here,
/// while rumqttc's own timeout (the keep-alive) bounds flushes.
async fn poll(eventloop: &mut EventLoop, connected: bool) -> Result<Event, ConnectionError> {
    if connected {
        return eventloop.poll().await;
    }
    tokio::time::timeout(CONNECT_TIMEOUT, eventloop.poll())
        .await
        .unwrap_or(Err(ConnectionError::NetworkTimeout))
}

/// Stays above IoT Core's one CONNECT per second per client id.
fn backoff(failures: u32) -> Duration {
    ferry_shared::backoff::jittered(BACKOFF_MIN, BACKOFF_MAX, failures)
}
