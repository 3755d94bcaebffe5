//! Asking a broker whether it is there: `check --connect` (one connection, so that a
//! service learns before it starts whether the address, the certificates and the broker's
//! policy let it in), and the bare port probe both MQTT clients back off with.
//!
//! After a network failure a client backs off for up to 30 s, but a link that comes back
//! should not wait that out: while backing off, the agent's uplink and the ingest probe the
//! broker's port with a bare TCP connect (no MQTT CONNECT, so IoT Core's one CONNECT per
//! second per client id is not touched) and reconnect as soon as one succeeds. A broker that
//! refuses the MQTT CONNECT itself, or a TLS failure, gets the full back-off: the port
//! answers, and probing it would only hammer a broker that said no.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Packet};

/// Connects, waits for the broker's ConnAck, and disconnects cleanly (so no will is sent).
/// Returns how long the broker took to accept, or why it did not.
pub async fn connect_once(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let accepted = tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return match ack.code {
                        ConnectReturnCode::Success => Ok(()),
                        code => Err(refused(code)),
                    };
                }
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return Err(refused(code)),
                Err(e) => return Err(format!("cannot connect: {e}")),
            }
        }
    })
    .await
    .map_err(|_| format!("no answer from the broker within {} s", timeout.as_secs()))?;
    accepted?;
    let elapsed = started.elapsed();
    if client.try_disconnect().is_ok() {
        // Until the DISCONNECT is written; the broker then closes, which ends the loop.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }
    Ok(elapsed)
}

/// How often [`port_answers`] probes, and how long one probe may take.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the failure was the network's (a dead or silent link), so that a probe of the
/// port tells when it is back. A connect that reached the broker and was dropped (IoT Core
/// closes the socket on a CONNECT its policy denies) is the broker's word: its port
/// answers, and probing would reconnect every second.
pub fn is_network_failure(e: &ConnectionError, while_connected: bool) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, HostUnreachable, NetworkUnreachable, TimedOut};
    match e {
        ConnectionError::NetworkTimeout => true,
        ConnectionError::Io(io) => {
            while_connected
                || matches!(
                    io.kind(),
                    TimedOut | ConnectionRefused | HostUnreachable | NetworkUnreachable
                )
        }
        ConnectionError::FlushTimeout | ConnectionError::MqttState(_) => while_connected,
        _ => false,
    }
}

/// Returns once a bare TCP connect to `broker` succeeds, at least [`PROBE_EVERY`] from now
/// (IoT Core takes one CONNECT per second per client id).
pub async fn port_answers(broker: &(String, u16)) {
    let mut next = tokio::time::Instant::now() + PROBE_EVERY;
    loop {
        tokio::time::sleep_until(next).await;
        next = tokio::time::Instant::now() + PROBE_EVERY;
        let probe = tokio::net::TcpStream::connect((broker.0.as_str(), broker.1));
        if let Ok(Ok(_stream)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            return;
        }
    }
}

fn refused(code: ConnectReturnCode) -> String {
    format!("the broker refused the connection: {code:?}")
}
