//! Fleet operations on the device: the desired configuration and update jobs.
//!
//! One task per run of the pipeline, beside the uplink, which stays the only MQTT user: it
//! subscribes to the [`channel`]'s topics, passes their messages and its connection events
//! here, and publishes what this task hands back. Decisions that need the pipeline rebuilt
//! (a new configuration, a new binary in place, a failed trial) go to `run` as an
//! [`Action`]; everything they rest on is on disk first, so a crash at any point is
//! answered by the next start.

pub mod channel;
pub mod desired;

use std::time::{Duration, SystemTime};

use ferry_shared::fleet::{DesiredConfig, ReportedConfig};
use serde_json::Map;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{AgentConfig, ConfigFile};
use crate::update::{self, Failure, JobStep, Updater};
use channel::{Channel, Incoming};
use desired::DesiredStore;

/// From the uplink, and from `run`.
#[derive(Debug)]
pub enum FleetIn {
    Connected,
    /// The broker acknowledged this connection's first status message.
    StatusDelivered,
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    /// The stored desired document now runs, applied in place.
    ConfigApplied,
}

/// To the uplink: publish this at QoS 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// To `run`.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// A new desired configuration is stored: apply it, in place where it can be, else by
    /// rebuilding the pipeline.
    Reconfigure,
    /// A new binary is in place: exit so the service manager starts it.
    Updated,
    /// This binary did not pass its trial in time: exit so the guard rolls it back.
    TrialFailed,
}

/// A download's end: its job, and the signed version with the verified bytes, or why not.
type DownloadEnd = (
    String,
    Result<(String, update::download::Verified), Failure>,
);

/// The uplink's side.
pub struct FleetLink {
    pub subscriptions: Vec<String>,
    pub events: mpsc::Sender<FleetIn>,
    pub outgoing: mpsc::Receiver<Outgoing>,
}

/// The configuration to run: the file with the stored desired document laid over it, or
/// the file alone when that document no longer fits it (the file was edited since).
pub fn effective_config(file: &ConfigFile) -> anyhow::Result<AgentConfig> {
    let cfg = file.parse()?;
    let store = DesiredStore::open(&cfg.data_dir)?;
    let Some(desired) = store.desired() else {
        return Ok(cfg);
    };
    match desired::apply(file, &desired.config) {
        Ok(merged) => Ok(merged),
        Err(e) => {
            error!(version = desired.version, error = %e, "the stored desired configuration no longer applies to the config file; running the file alone");
            Ok(cfg)
        }
    }
}

struct Fleet {
    file: ConfigFile,
    channel: Channel,
    store: DesiredStore,
    updater: Updater,
    out: mpsc::Sender<Outgoing>,
    actions: mpsc::Sender<Action>,
    downloads: JoinSet<DownloadEnd>,
    stop_downloads: CancellationToken,
    /// The newest job that arrived while another update was under way.
    later: Option<ferry_shared::fleet::JobDocument>,
}

/// Starts the fleet task for one run of the pipeline.
pub fn start(
    cfg: &AgentConfig,
    file: &ConfigFile,
    spool_readable_by: u32,
    actions: mpsc::Sender<Action>,
    stop: CancellationToken,
) -> anyhow::Result<(FleetLink, tokio::task::JoinHandle<()>)> {
    let broker = cfg.mqtt.broker()?;
    let channel = Channel::new(cfg.mqtt.fleet_topics, &broker.host, cfg.device_id.clone());
    let updater = Updater::open(cfg)?;
    updater.dir().set_spool_readable_by(spool_readable_by)?;
    let (events_tx, events) = mpsc::channel(64);
    let (out, outgoing) = mpsc::channel(64);
    let fleet = Fleet {
        file: file.clone(),
        store: DesiredStore::open(&cfg.data_dir)?,
        channel: channel.clone(),
        updater,
        out,
        actions,
        downloads: JoinSet::new(),
        stop_downloads: CancellationToken::new(),
        later: None,
    };
    let link = FleetLink {
        subscriptions: channel.subscriptions(),
        events: events_tx,
        outgoing,
    };
    Ok((link, tokio::spawn(fleet.run(events, stop))))
}

impl Fleet {
    async fn run(mut self, mut events: mpsc::Receiver<FleetIn>, stop: CancellationToken) {
        let trial_end = self.updater.trial_deadline().map(|at| {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::Instant::now() + left
        });
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                Some(done) = self.downloads.join_next() => match done {
                    Ok((job, outcome)) => self.downloaded(&job, outcome).await,
                    Err(e) => error!(error = %e, "update download task failed"),
                },
                _ = tokio::time::sleep_until(trial_end.unwrap_or_else(tokio::time::Instant::now)),
                    if trial_end.is_some() && self.updater.trial_deadline().is_some() =>
                {
                    error!("the trial ended before this binary connected and delivered its status");
                    let _ = self.actions.send(Action::TrialFailed).await;
                    break;
                }
            }
        }
        self.stop_downloads.cancel();
        self.downloads.shutdown().await;
    }

    fn send(&self, message: Outgoing) {
        if self.out.try_send(message).is_err() {
            // Said again on the next connection.
            debug!("fleet message not queued");
        }
    }

    fn send_all(&self, messages: Vec<Outgoing>) {
        for m in messages {
            self.send(m);
        }
    }

    fn on_event(&mut self, event: FleetIn) {
        match event {
            FleetIn::Connected => {
                for ask in self.channel.on_connect() {
                    self.send(ask);
                }
                if let Some(answer) = self.store.reported() {
                    self.send(self.channel.report_config(&answer, &self.running()));
                }
                if let Some((job, status)) = self.updater.last() {
                    self.send_all(self.channel.report_job(job, status));
                }
            }
            FleetIn::ConfigApplied => {
                if let Some(answer) = self.store.reported() {
                    self.send(self.channel.report_config(&answer, &self.running()));
                }
            }
            FleetIn::StatusDelivered => match self.updater.passed() {
                Ok(Some((job, status))) => {
                    self.send_all(self.channel.report_job(&job, &status));
                    self.take_up_later();
                }
                Ok(None) => {}
                Err(e) => error!(error = format!("{e:#}"), "cannot record the passed trial"),
            },
            FleetIn::Message { topic, payload } => match self.channel.parse(&topic, &payload) {
                Ok(Incoming::Desired(doc)) => self.on_desired(doc),
                Ok(Incoming::Job(doc)) => self.on_job(doc),
                Ok(Incoming::AskAgain) => {
                    if let Some(ask) = self.channel.ask_shadow() {
                        self.send(ask);
                    }
                }
                Ok(Incoming::Nothing) => {}
                Err(problem) => warn!(%topic, %problem, "fleet message ignored"),
            },
        }
    }

    /// The desired settings this device runs, as last applied.
    fn running(&self) -> Map<String, serde_json::Value> {
        self.store.desired().map(|d| d.config).unwrap_or_default()
    }

    fn on_desired(&mut self, doc: DesiredConfig) {
        let answered = self.store.reported();
        let applied = self.store.desired();
        // Answered already (a retained document comes again on every connection). A
        // document already running under another version is answered, not applied again.
        if answered.as_ref().is_some_and(|a| a.version == doc.version) {
            return;
        }
        let (answer, reconfigure) = match desired::apply(&self.file, &doc.config) {
            Ok(_) => {
                let answer = ReportedConfig {
                    version: doc.version,
                    applied_at: Some(ferry_shared::Timestamp::now().to_string()),
                    error: None,
                };
                let same = applied.as_ref().is_some_and(|d| d.config == doc.config);
                (self.store.applied(&doc, &answer).map(|()| answer), !same)
            }
            Err(problem) => {
                warn!(version = doc.version, %problem, "desired configuration refused; the running one stays");
                let answer = ReportedConfig {
                    version: doc.version,
                    applied_at: None,
                    error: Some(format!("desired config: {problem}")),
                };
                (self.store.refused(&answer).map(|()| answer), false)
            }
        };
        match answer {
            Ok(answer) => {
                self.send(self.channel.report_config(&answer, &self.running()));
                if reconfigure {
                    info!(
                        version = doc.version,
                        "desired configuration stored; applying it"
                    );
                    if self.actions.try_send(Action::Reconfigure).is_err() {
                        warn!("reconfiguration not queued; it applies at the next start");
                    }
                }
            }
            Err(e) => {
                error!(error = %e, "cannot store the desired configuration; it is not applied")
            }
        }
    }

    fn on_job(&mut self, doc: ferry_shared::fleet::JobDocument) {
        match self.updater.on_job(doc) {
            Ok(JobStep::Nothing) => {}
            Ok(JobStep::Later(doc)) => self.later = Some(doc),
            Ok(JobStep::Report(job, status)) => {
                self.send_all(self.channel.report_job(&job, &status))
            }
            Ok(JobStep::Fetch {
                job,
                url,
                manifest,
                part,
            }) => {
                if let Some((job, status)) = self.updater.last() {
                    self.send_all(self.channel.report_job(job, status));
                }
                let stop = self.stop_downloads.clone();
                // Its own task: telemetry keeps flowing while it downloads.
                self.downloads.spawn(async move {
                    let fetched = update::download::fetch(&url, manifest.size, &part, &stop).await;
                    let outcome = match fetched {
                        Ok(()) => tokio::task::spawn_blocking(move || {
                            update::download::verify(&part, &manifest)
                                .map(|verified| (manifest.version, verified))
                        })
                        .await
                        .unwrap_or_else(|e| Err(Failure::new("download_failed", e.to_string()))),
                        Err(f) => Err(f),
                    };
                    (job, outcome)
                });
            }
            Err(e) => error!(error = format!("{e:#}"), "cannot record the job's state"),
        }
    }

    fn take_up_later(&mut self) {
        if let Some(doc) = self.later.take() {
            self.on_job(doc);
        }
    }

    async fn downloaded(
        &mut self,
        job: &str,
        outcome: Result<(String, update::download::Verified), Failure>,
    ) {
        let outcome =
            outcome.and_then(|(version, verified)| self.updater.install(job, &version, &verified));
        match outcome {
            Ok(()) => {
                let _ = self.actions.send(Action::Updated).await;
            }
            // Stopped with the pipeline: the job resumes at the next start.
            Err(f) if f.reason == update::download::STOPPED => {}
            Err(failure) => {
                match self.updater.failed(job, &failure) {
                    Ok(status) => self.send_all(self.channel.report_job(job, &status)),
                    Err(e) => error!(error = format!("{e:#}"), "cannot record the failed job"),
                }
                self.take_up_later();
            }
        }
    }
}
