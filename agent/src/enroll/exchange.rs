//! Request and answer over IoT Core's reserved topics: subscribe to `{topic}/accepted` and
//! `{topic}/rejected`, publish to `{topic}`, take the first answer.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::EnrollError;

/// IoT Core's answer on a `.../rejected` topic.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub status_code: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

pub struct Exchange {
    client: AsyncClient,
    eventloop: EventLoop,
    timeout: Duration,
}

impl Exchange {
    pub fn new(client: AsyncClient, eventloop: EventLoop, timeout: Duration) -> Self {
        Self {
            client,
            eventloop,
            timeout,
        }
    }

    /// Publishes `request` to `topic` and returns its accepted answer, or the rejection.
    pub async fn ask<A: DeserializeOwned>(
        &mut self,
        topic: &str,
        request: &serde_json::Value,
    ) -> Result<A, EnrollError> {
        let accepted = format!("{topic}/accepted");
        let rejected = format!("{topic}/rejected");
        let step = topic.to_owned();
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange(topic, &accepted, &rejected, request))
            .await
            .map_err(|_| EnrollError::Timeout {
                topic: step,
                secs: timeout.as_secs(),
            })?
    }

    async fn exchange<A: DeserializeOwned>(
        &mut self,
        topic: &str,
        accepted: &str,
        rejected: &str,
        request: &serde_json::Value,
    ) -> Result<A, EnrollError> {
        let mqtt = |e: rumqttc::ClientError| EnrollError::Mqtt(e.to_string());
        // IoT Core answers only to subscriptions that stand when the request arrives.
        self.client
            .subscribe(accepted, QoS::AtLeastOnce)
            .await
            .map_err(mqtt)?;
        self.client
            .subscribe(rejected, QoS::AtLeastOnce)
            .await
            .map_err(mqtt)?;
        let mut subacks = 0;
        while subacks < 2 {
            if let Packet::SubAck(ack) = self.next().await? {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    return Err(EnrollError::Mqtt(format!(
                        "the broker refused a subscription to {topic}/...: check the claim policy"
                    )));
                }
                subacks += 1;
            }
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, false, request.to_string())
            .await
            .map_err(mqtt)?;
        loop {
            let Packet::Publish(answer) = self.next().await? else {
                continue;
            };
            if answer.topic == accepted {
                return serde_json::from_slice(&answer.payload)
                    .map_err(|e| EnrollError::Answer(format!("{accepted}: {e}")));
            }
            if answer.topic == rejected {
                let r: Rejection = serde_json::from_slice(&answer.payload)
                    .map_err(|e| EnrollError::Answer(format!("{rejected}: {e}")))?;
                return Err(EnrollError::Rejected {
                    topic: topic.to_owned(),
                    status: r.status_code.unwrap_or_default(),
                    code: r.error_code.unwrap_or_else(|| "unknown".into()),
                    message: r.error_message.unwrap_or_default(),
                });
            }
        }
    }

    async fn next(&mut self) -> Result<Packet, EnrollError> {
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(packet)) => return Ok(packet),
                Ok(Event::Outgoing(_)) => {}
                Err(e) => return Err(EnrollError::Mqtt(format!("connection: {e}"))),
            }
        }
    }

    /// A clean DISCONNECT, so the claim's session ends now rather than at keep-alive.
    pub async fn close(mut self) {
        if self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while self.eventloop.poll().await.is_ok() {}
            })
            .await;
        }
    }
}
