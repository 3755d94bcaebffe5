//! The fleet's MQTT connection, as `{mqtt.client_id}-fleet` with a session of its own:
//! publishes desired documents and jobs retained, and keeps the devices' answers.
//!
//! Every stored desired document and every job not yet answered is published again on
//! each connection: they are retained, so this changes nothing at the broker when it had
//! them, and puts back what a crash between the store's commit and the publish lost.

use std::time::Duration;

use ferry_shared::DeviceId;
use ferry_shared::fleet::{self, Answer, JobStatus, ReportedConfig};
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::store::{self, FleetStore};
use crate::config::MqttConfig;

/// One retained message to publish.
#[derive(Debug, Clone)]
pub struct Retained {
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Clone)]
pub struct Link {
    client: AsyncClient,
}

impl Link {
    pub async fn publish(&self, message: Retained) -> anyhow::Result<()> {
        self.client
            .publish(message.topic, QoS::AtLeastOnce, true, message.payload)
            .await?;
        Ok(())
    }
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
    let (client, mut eventloop) = crate::ingest::mqtt::client(&own)?;
    let link = Link {
        client: client.clone(),
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
                    for filter in [
                        fleet::REPORTED_FILTER,
                        fleet::JOB_STATUS_FILTER,
                        "ferry/v1/+/status",
                    ] {
                        if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                            warn!(error = %e, filter, "fleet subscription not queued");
                        }
                    }
                    match store.run(everything_outstanding).await {
                        Ok(all) => {
                            for m in all {
                                let _ = client
                                    .publish(m.topic, QoS::AtLeastOnce, true, m.payload)
                                    .await;
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
    if let Some(device) = topic
        .strip_prefix(ferry_shared::topic::TOPIC_PREFIX)
        .and_then(|t| t.strip_suffix("/status"))
        .filter(|d| !d.contains('/'))
    {
        if DeviceId::new(device).is_ok() && !payload.is_empty() {
            store::saw_device(conn, device)?;
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

/// Every desired document, and the job document of every job no device has answered.
fn everything_outstanding(conn: &mut rusqlite::Connection) -> rusqlite::Result<Vec<Retained>> {
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
            out.push(desired_message(&id, version, config));
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

pub fn desired_message(
    device: &DeviceId,
    version: u64,
    config: serde_json::Map<String, Value>,
) -> Retained {
    let doc = fleet::DesiredConfig { version, config };
    Retained {
        topic: fleet::config_topic(device),
        payload: serde_json::to_vec(&doc).unwrap_or_default(),
    }
}

pub fn job_message(device: &DeviceId, job_id: &str, version: &str, artifacts: &Value) -> Retained {
    let doc = serde_json::json!({"job_id": job_id, "version": version, "artifacts": artifacts});
    Retained {
        topic: fleet::jobs_topic(device),
        payload: serde_json::to_vec(&doc).unwrap_or_default(),
    }
}
