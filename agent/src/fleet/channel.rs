//! Where fleet documents travel: Ferry's retained topics on any broker, or on AWS IoT Core
//! the named shadow `ferry-config` and IoT Jobs, whose topics and payloads are IoT Core's.

use ferry_shared::DeviceId;
use ferry_shared::fleet::{
    self, Artifact, DesiredConfig, JobDocument, JobStatus, ReportedConfig, SHADOW_META,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

use super::Outgoing;

/// `[mqtt] fleet_topics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetTopics {
    /// `aws` when the broker's host is IoT Core's (`*.amazonaws.com`), else `ferry`.
    #[default]
    Auto,
    /// `ferry/v1/{device}/config` and `.../jobs`, retained.
    Ferry,
    /// The named shadow `ferry-config` and IoT Jobs.
    Aws,
}

/// What a message on one of the channel's topics means.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Desired(DesiredConfig),
    Job(JobDocument),
    /// The shadow changed: ask for the whole document.
    AskAgain,
    Nothing,
}

#[derive(Debug, Clone)]
pub enum Channel {
    Ferry { device: DeviceId },
    Aws { thing: DeviceId },
}

impl Channel {
    pub fn new(topics: FleetTopics, host: &str, device: DeviceId) -> Self {
        let aws = match topics {
            FleetTopics::Auto => fleet::is_iot_core(host),
            FleetTopics::Ferry => false,
            FleetTopics::Aws => true,
        };
        if aws {
            Self::Aws { thing: device }
        } else {
            Self::Ferry { device }
        }
    }

    fn shadow(thing: &DeviceId, rest: &str) -> String {
        fleet::shadow_topic(thing.as_str(), rest)
    }

    fn jobs(thing: &DeviceId, rest: &str) -> String {
        format!("$aws/things/{thing}/jobs/{rest}")
    }

    pub fn subscriptions(&self) -> Vec<String> {
        match self {
            Self::Ferry { device } => vec![fleet::config_topic(device), fleet::jobs_topic(device)],
            // ferry-cloud's rollouts arrive retained on Ferry's jobs topic there too.
            Self::Aws { thing } => vec![
                Self::shadow(thing, "get/accepted"),
                Self::shadow(thing, "update/delta"),
                Self::jobs(thing, "notify-next"),
                Self::jobs(thing, "$next/get/accepted"),
                fleet::jobs_topic(thing),
            ],
        }
    }

    /// What to ask for on every connection: retained topics need nothing, IoT Core's
    /// services are asked.
    pub fn on_connect(&self) -> Vec<Outgoing> {
        match self {
            Self::Ferry { .. } => Vec::new(),
            Self::Aws { thing } => vec![
                ask(Self::shadow(thing, "get")),
                ask(Self::jobs(thing, "$next/get")),
            ],
        }
    }

    /// Asks for the whole shadow again, after a delta (IoT Core only; retained topics
    /// always carry the whole document).
    pub fn ask_shadow(&self) -> Option<Outgoing> {
        match self {
            Self::Aws { thing } => Some(ask(Self::shadow(thing, "get"))),
            Self::Ferry { .. } => None,
        }
    }

    pub fn parse(&self, topic: &str, payload: &[u8]) -> Result<Incoming, String> {
        let device = match self {
            Self::Ferry { device } | Self::Aws { thing: device } => device,
        };
        // A retained message is cleared with an empty one.
        if topic == fleet::jobs_topic(device) {
            if payload.is_empty() {
                return Ok(Incoming::Nothing);
            }
            return serde_json::from_slice(payload)
                .map(Incoming::Job)
                .map_err(|e| format!("job: {e}"));
        }
        match self {
            Self::Ferry { device } => {
                if topic == fleet::config_topic(device) && !payload.is_empty() {
                    serde_json::from_slice(payload)
                        .map(Incoming::Desired)
                        .map_err(|e| format!("desired config: {e}"))
                } else {
                    Ok(Incoming::Nothing)
                }
            }
            Self::Aws { thing } => {
                if topic == Self::shadow(thing, "get/accepted") {
                    shadow_desired(payload)
                } else if topic == Self::shadow(thing, "update/delta") {
                    Ok(Incoming::AskAgain)
                } else if topic == Self::jobs(thing, "notify-next")
                    || topic == Self::jobs(thing, "$next/get/accepted")
                {
                    next_job(payload)
                } else {
                    Ok(Incoming::Nothing)
                }
            }
        }
    }

    /// The answer to a desired configuration. On IoT Core the shadow's reported state
    /// mirrors what runs, so that its delta is empty once a document is applied and says
    /// what is not when it was refused.
    pub fn report_config(&self, answer: &ReportedConfig, running: &Map<String, Value>) -> Outgoing {
        match self {
            Self::Ferry { device } => Outgoing {
                topic: fleet::config_reported_topic(device),
                payload: serde_json::to_vec(answer).unwrap_or_default(),
                retain: true,
            },
            Self::Aws { thing } => {
                let mut reported = running.clone();
                reported.insert(SHADOW_META.into(), json!(answer));
                Outgoing {
                    topic: Self::shadow(thing, "update"),
                    payload: serde_json::to_vec(&json!({"state": {"reported": reported}}))
                        .unwrap_or_default(),
                    retain: false,
                }
            }
        }
    }

    /// The job's status; on IoT Core both to IoT Jobs and, for ferry-cloud's rollouts, to
    /// Ferry's status topic: a job is known to one of the two, and the other ignores it.
    pub fn report_job(&self, job: &str, status: &JobStatus) -> Vec<Outgoing> {
        let device = match self {
            Self::Ferry { device } | Self::Aws { thing: device } => device,
        };
        let ferry = Outgoing {
            topic: fleet::job_status_topic(device, job),
            payload: serde_json::to_vec(status).unwrap_or_default(),
            retain: true,
        };
        match self {
            Self::Ferry { .. } => vec![ferry],
            Self::Aws { thing } => {
                // IoT Jobs takes string details only.
                let mut details = BTreeMap::new();
                details.insert("running", status.running.clone());
                if let Some(reason) = &status.reason {
                    details.insert("reason", reason.clone());
                }
                if let Some(detail) = &status.detail {
                    details.insert("detail", detail.chars().take(1000).collect());
                }
                let iot_jobs = Outgoing {
                    topic: Self::jobs(thing, &format!("{job}/update")),
                    payload: serde_json::to_vec(
                        &json!({"status": status.status.as_str(), "statusDetails": details}),
                    )
                    .unwrap_or_default(),
                    retain: false,
                };
                vec![iot_jobs, ferry]
            }
        }
    }
}

fn ask(topic: String) -> Outgoing {
    Outgoing {
        topic,
        payload: b"{}".to_vec(),
        retain: false,
    }
}

fn shadow_desired(payload: &[u8]) -> Result<Incoming, String> {
    #[derive(Deserialize)]
    struct Shadow {
        version: u64,
        #[serde(default)]
        state: State,
    }
    #[derive(Deserialize, Default)]
    struct State {
        desired: Option<Map<String, Value>>,
    }
    let shadow: Shadow =
        serde_json::from_slice(payload).map_err(|e| format!("shadow document: {e}"))?;
    let Some(mut config) = shadow.state.desired else {
        return Ok(Incoming::Nothing);
    };
    // ferry-cloud puts its own version beside the settings; without it (a document set by
    // other means) the shadow's version numbers the document.
    let version = config
        .remove(SHADOW_META)
        .and_then(|meta| meta.get("version").and_then(Value::as_u64))
        .unwrap_or(shadow.version);
    Ok(Incoming::Desired(DesiredConfig { version, config }))
}

fn next_job(payload: &[u8]) -> Result<Incoming, String> {
    #[derive(Deserialize)]
    struct Next {
        execution: Option<Execution>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Execution {
        job_id: String,
        job_document: Document,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Document {
        version: String,
        artifacts: BTreeMap<String, Artifact>,
    }
    let next: Next = serde_json::from_slice(payload).map_err(|e| format!("job execution: {e}"))?;
    Ok(match next.execution {
        Some(e) => Incoming::Job(JobDocument {
            job_id: e.job_id,
            version: e.job_document.version,
            artifacts: e.job_document.artifacts,
        }),
        None => Incoming::Nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::fleet::JobState;

    fn aws() -> Channel {
        Channel::new(
            FleetTopics::Auto,
            "abc-ats.iot.eu-west-1.amazonaws.com",
            DeviceId::new("ws-001").expect("id"),
        )
    }

    #[test]
    fn iot_core_is_recognised_by_its_host_unless_told() {
        let dev = DeviceId::new("ws-001").expect("id");
        assert!(matches!(aws(), Channel::Aws { .. }));
        assert!(matches!(
            Channel::new(FleetTopics::Auto, "broker.local", dev.clone()),
            Channel::Ferry { .. }
        ));
        assert!(matches!(
            Channel::new(FleetTopics::Aws, "broker.local", dev),
            Channel::Aws { .. }
        ));
    }

    /// Payloads as IoT Core's shadow and jobs services document them.
    #[test]
    fn shadow_and_jobs_payloads_are_read_as_iot_core_sends_them() {
        let c = aws();
        let topics = c.subscriptions();
        let got = c
            .parse(
                &topics[0],
                br#"{"state":{"desired":{"log_level":"debug"},"reported":{"log_level":"info"}},
                     "metadata":{},"version":7,"timestamp":1}"#,
            )
            .expect("shadow");
        let Incoming::Desired(d) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            (d.version, d.config["log_level"].as_str()),
            (7, Some("debug"))
        );
        assert_eq!(
            c.parse(&topics[1], br#"{"version":8,"state":{"log_level":"warn"}}"#),
            Ok(Incoming::AskAgain)
        );
        let job = c
            .parse(
                &topics[2],
                br#"{"timestamp":1,"execution":{"jobId":"r1-ws-001","status":"QUEUED","queuedAt":1,
                     "versionNumber":1,"executionNumber":1,"jobDocument":{"version":"0.2.0",
                     "artifacts":{"arm64":{"url":"https://x/a","manifest":"{}","signature":"s"}}}}}"#,
            )
            .expect("job");
        let Incoming::Job(j) = job else {
            panic!("{job:?}")
        };
        assert_eq!(
            (j.job_id.as_str(), j.version.as_str()),
            ("r1-ws-001", "0.2.0")
        );
        assert_eq!(
            c.parse(&topics[3], br#"{"timestamp":1}"#),
            Ok(Incoming::Nothing)
        );

        let status = JobStatus {
            status: JobState::Failed,
            reason: Some("rolled_back".into()),
            detail: None,
            running: "0.1.0".into(),
            at: "t".into(),
        };
        let out = c.report_job("r1-ws-001", &status);
        assert_eq!(out[0].topic, "$aws/things/ws-001/jobs/r1-ws-001/update");
        let body: Value = serde_json::from_slice(&out[0].payload).expect("json");
        assert_eq!(body["status"], "FAILED");
        assert_eq!(body["statusDetails"]["reason"], "rolled_back");
        assert!(!out[0].retain, "IoT Core refuses retained $aws publishes");
        assert_eq!(out[1].topic, "ferry/v1/ws-001/jobs/r1-ws-001/status");

        // ferry-cloud's version rides beside the settings and is taken out of them.
        let got = c
            .parse(
                &topics[0],
                br#"{"state":{"desired":{"log_level":"warn","ferry":{"version":12}}},"version":40}"#,
            )
            .expect("shadow");
        let Incoming::Desired(d) = got else {
            panic!("{got:?}")
        };
        assert_eq!(d.version, 12);
        assert!(!d.config.contains_key("ferry"), "{:?}", d.config);
        // And ferry-cloud's rollouts reach a device on IoT Core.
        assert_eq!(topics[4], "ferry/v1/ws-001/jobs");
    }
}
