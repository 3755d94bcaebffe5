//! `check --connect`: one connection to the broker, so that a service learns before it
//! starts whether the address, the certificates and the broker's policy let it in.

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

fn refused(code: ConnectReturnCode) -> String {
    format!("the broker refused the connection: {code:?}")
}
