//! The fleet's MQTT connection, as `{mqtt.client_id}-fleet` with a session of its own:
//! publishes desired documents and jobs retained, and keeps the devices' answers. On AWS IoT
//! Core (a `*.amazonaws.com` broker) a desired document goes to the device's named shadow
//! `ferry-config` instead, with the version beside the settings, and the answers are read
//! from the shadow's `update/documents`; jobs go retained on Ferry's topic, which agents
//! there read too.
//!
//! Every stored desired document and every job not yet answered is published again on
//! each connection: they are retained, so this changes nothing at the broker when it had
//! them, and puts back what a crash between the store's commit and the publish lost.

use std::time::Duration;

use ferry_shared::fleet::{self, Answer, JobStatus, ReportedConfig};
use ferry_shared::{DeviceId, Stream, Topic};
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::store::{self, FleetStore};
use crate::config::MqttConfig;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

#[derive(Clone)]
pub struct Link {
    client: AsyncClient,
    /// The broker is IoT Core: desired documents go to the shadow.
    aws: bool,
}

impl Link {
    pub async fn publish_desired(
        &self,
        device: &DeviceId,
        version: u64,
        config: serde_json::Map<String, Value>,
    ) -> anyhow::Result<()> {
        publish(
            &self.client,
            desired_messages(self.aws, device, version, config),
        )
        .await
    }

    pub async fn publish_job(
        &self,
        device: &DeviceId,
        job_id: &str,
        version: &str,
        artifacts: &Value,
    ) -> anyhow::Result<()> {
        publish(
            &self.client,
            vec![job_message(device, job_id, version, artifacts)],
        )
        .await
    }
}

async fn publish(client: &AsyncClient, messages: Vec<Message>) -> anyhow::Result<()> {
    for m in messages {
        client
            .publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload)
            .await?;
    }
    Ok(())
}

/// Connects and starts the task that keeps answers; returns the handle to publish with.
pub fn start(
    cfg: &MqttConfig,
    store: FleetStore,
    shutdown: CancellationToken,
) -> anyhow::Result<(Link, tokio::task::JoinHandle<()>)> {
    let mut own = cfg.clone();
    // Its own session: the ingest's id would end the ingest's.
    own.client_id = format!("{}-fleet", cfg.client_id);
    own.share_group = None;
    let aws = fleet::is_iot_core(&cfg.broker()?.host);
    let (client, mut eventloop) = crate::ingest::mqtt::client(&own)?;
    let link = Link {
        client: client.clone(),
        aws,
    };
    let task = tokio::spawn(async move {
        loop {
            let polled = tokio::select! {
                polled = eventloop.poll() => polled,
                _ = shutdown.cancelled() => {
                    let _ = client.try_disconnect();
                    return;
                }
            };
            match polled {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let answers = if aws {
                        fleet::SHADOW_DOCUMENTS_FILTER
                    } else {
                        fleet::REPORTED_FILTER
                    };
                    for filter in [answers, fleet::JOB_STATUS_FILTER, "ferry/v1/+/status"] {
                        if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                            warn!(error = %e, filter, "fleet subscription not queued");
                        }
                    }
                    match store
                        .run(move |conn| everything_outstanding(conn, aws))
                        .await
                    {
                        Ok(all) => {
                            if let Err(e) = publish(&client, all).await {
                                debug!(error = %e, "fleet documents not queued; again on the next connection");
                            }
                        }
                        Err(e) => warn!(error = format!("{e:#}"), "cannot read the fleet store"),
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let (topic, payload) = (p.topic.clone(), p.payload.to_vec());
                    match store.run(move |conn| keep(conn, &topic, &payload)).await {
                        // Acknowledged once it is stored.
                        Ok(()) => {
                            let _ = client.ack(&p).await;
                        }
                        Err(e) => {
                            warn!(error = format!("{e:#}"), topic = %p.topic, "fleet answer not stored; it comes again")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "fleet connection lost");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    });
    Ok((link, task))
}

/// Stores what a device said; anything unreadable is logged and dropped (it is the
/// device's to say again).
fn keep(conn: &mut rusqlite::Connection, topic: &str, payload: &[u8]) -> rusqlite::Result<()> {
    if let Ok(t) = Topic::parse(topic)
        && t.stream == Stream::Status
    {
        if !payload.is_empty() {
            store::saw_device(conn, t.device.as_str())?;
        }
        return Ok(());
    }
    match Answer::parse(topic) {
        Some(Answer::Reported(device)) => match serde_json::from_slice::<ReportedConfig>(payload) {
            Ok(answer) => store::put_reported(conn, device.as_str(), &answer),
            Err(e) => {
                warn!(%topic, error = %e, "unreadable configuration answer");
                Ok(())
            }
        },
        Some(Answer::ShadowDocuments(device)) => match shadow_answer(payload) {
            Some(answer) => store::put_reported(conn, device.as_str(), &answer),
            None => Ok(()),
        },
        Some(Answer::JobStatus { device, job_id }) => {
            match serde_json::from_slice::<JobStatus>(payload) {
                Ok(status) => {
                    store::put_job_status(conn, &job_id, device.as_str(), &status).map(|_| ())
                }
                Err(e) => {
                    warn!(%topic, error = %e, "unreadable job status");
                    Ok(())
                }
            }
        }
        None => Ok(()),
    }
}

/// The device's answer in a shadow's `update/documents`: `current.state.reported.ferry`;
/// `None` when the update was not the device's answer.
fn shadow_answer(payload: &[u8]) -> Option<ReportedConfig> {
    let doc: Value = serde_json::from_slice(payload).ok()?;
    let answer = doc.pointer(&format!("/current/state/reported/{}", fleet::SHADOW_META))?;
    serde_json::from_value(answer.clone()).ok()
}

/// Every desired document, and the job document of every job no device has answered.
fn everything_outstanding(
    conn: &mut rusqlite::Connection,
    aws: bool,
) -> rusqlite::Result<Vec<Message>> {
    let mut out = Vec::new();
    let mut stmt =
        conn.prepare("SELECT device, version, desired FROM device_config WHERE version > 0")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?.unsigned_abs(),
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (device, version, desired) = row?;
        if let (Ok(id), Ok(config)) = (DeviceId::new(&device), serde_json::from_str(&desired)) {
            out.extend(desired_messages(aws, &id, version, config));
        }
    }
    let mut stmt = conn.prepare(
        "SELECT j.device, j.job_id, r.version, r.artifacts FROM jobs j JOIN rollouts r ON r.id = j.rollout
         WHERE j.status = 'QUEUED'",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (device, job_id, version, artifacts) = row?;
        if let (Ok(id), Ok(artifacts)) = (DeviceId::new(&device), serde_json::from_str(&artifacts))
        {
            out.push(job_message(&id, &job_id, &version, &artifacts));
        }
    }
    Ok(out)
}

/// A desired document: retained on Ferry's topic, or on IoT Core the shadow's desired state
/// cleared and set whole (an update merges keys, so one left out would otherwise stay),
/// with the version under [`fleet::SHADOW_META`].
fn desired_messages(
    aws: bool,
    device: &DeviceId,
    version: u64,
    mut config: serde_json::Map<String, Value>,
) -> Vec<Message> {
    if !aws {
        let doc = fleet::DesiredConfig { version, config };
        return vec![Message {
            topic: fleet::config_topic(device),
            payload: serde_json::to_vec(&doc).unwrap_or_default(),
            retain: true,
        }];
    }
    config.insert(
        fleet::SHADOW_META.into(),
        serde_json::json!({"version": version}),
    );
    let update = fleet::shadow_topic(device.as_str(), "update");
    [
        serde_json::json!({"state": {"desired": null}}),
        serde_json::json!({"state": {"desired": config}}),
    ]
    .into_iter()
    .map(|doc| Message {
        topic: update.clone(),
        payload: serde_json::to_vec(&doc).unwrap_or_default(),
        retain: false,
    })
    .collect()
}

fn job_message(device: &DeviceId, job_id: &str, version: &str, artifacts: &Value) -> Message {
    let doc = serde_json::json!({"job_id": job_id, "version": version, "artifacts": artifacts});
    Message {
        topic: fleet::jobs_topic(device),
        payload: serde_json::to_vec(&doc).unwrap_or_default(),
        retain: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shadow service's documents, as IoT Core documents them.
    #[test]
    fn on_iot_core_the_desired_state_is_replaced_whole_and_answers_come_from_reported() {
        let dev = DeviceId::new("ws-001").expect("id");
        let config: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"log_level": "debug"}"#).expect("json");
        let ferry = desired_messages(false, &dev, 3, config.clone());
        assert_eq!(ferry.len(), 1);
        assert!(ferry[0].retain && ferry[0].topic == "ferry/v1/ws-001/config");
        let aws = desired_messages(true, &dev, 3, config);
        assert_eq!(aws.len(), 2);
        assert!(
            aws.iter()
                .all(|m| !m.retain
                    && m.topic == "$aws/things/ws-001/shadow/name/ferry-config/update")
        );
        let set: Value = serde_json::from_slice(&aws[1].payload).expect("json");
        assert_eq!(set["state"]["desired"]["ferry"]["version"], 3);
        assert_eq!(set["state"]["desired"]["log_level"], "debug");

        let documents = br#"{"previous": null, "current": {"state": {"desired": {},
            "reported": {"log_level": "debug", "ferry": {"version": 3, "applied_at": "2026-12-02T00:00:00.000Z"}}},
            "metadata": {}, "version": 9}, "timestamp": 1}"#;
        let answer = shadow_answer(documents).expect("an answer");
        assert_eq!((answer.version, answer.error), (3, None));
        assert_eq!(
            shadow_answer(br#"{"current": {"state": {"desired": {"a": 1}}}}"#),
            None,
            "the cloud's own update is no answer"
        );
    }
}
