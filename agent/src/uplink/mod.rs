//! The uplink: drains the spool to the broker over MQTT, QoS 1, and deletes records only on
//! their PUBACK.
//!
//! Three tasks and a thread: the `driver` owns rumqttc's event loop; `ahead`'s thread builds
//! the next envelopes (`Batcher`) while this module's loop decides when to publish them
//! (`Pacer`) and what each PubAck acknowledges (`Tracker`); an acker applies
//! acknowledgements to the spool so that a slow commit never stalls the loop.

mod ahead;
mod batcher;
mod connect;
mod driver;
mod link;
mod pacer;
mod tracker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, LastWill, QoS};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cards::CardCache;
use crate::config::AgentConfig;
use crate::fleet::{FleetIn, FleetLink};
use crate::spool::{AckRange, Spool};
use ahead::{Ahead, Next};
use batcher::{Batch, Batcher};
use driver::DriverEvent;
use link::Link;
use pacer::Pacer;
use tracker::{Carries, Tracker};

/// How long a clean shutdown may spend delivering what is still pending.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub use connect::{ConnectError, client};

/// How the uplink is stopped: `token`, and whether the pipeline is being rebuilt (a new
/// configuration), when what is pending is sent by the next uplink rather than waited for.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub token: CancellationToken,
    pub rebuild: Arc<std::sync::atomic::AtomicBool>,
}

/// Counters for logs and, later, `/metrics`.
#[derive(Debug, Default)]
pub struct UplinkMetrics {
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub publishes: AtomicU64,
    pub payload_bytes: AtomicU64,
    pub records_acked: AtomicU64,
    /// What the link carries, in payload bytes per second; 0 until measured.
    pub link_bytes_per_s: AtomicU64,
}

/// The retained message on `ferry/v1/{device}/status`; the will sends it with `online: false`.
#[derive(Debug, Serialize)]
struct StatusMessage<'a> {
    online: bool,
    device: &'a str,
    agent_version: &'static str,
    /// Absent in the will, which the broker sends long after it was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    /// What the link carries, in payload bytes per second, once measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    link_bytes_per_s: Option<u64>,
    #[serde(flatten)]
    spool: Option<crate::spool::SpoolStatus>,
    /// Absent in the will.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    clock: Option<crate::clock::ClockStatus>,
}

impl<'a> StatusMessage<'a> {
    fn new(online: bool, device: &'a str, spool: Option<crate::spool::SpoolStatus>) -> Self {
        Self {
            online,
            device,
            agent_version: crate::VERSION,
            at: online.then(|| ferry_shared::Timestamp::now().to_string()),
            link_bytes_per_s: None,
            clock: online.then(crate::clock::status),
            spool,
        }
    }

    fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

struct Uplink {
    cfg: AgentConfig,
    client: AsyncClient,
    spool: Spool,
    tracker: Tracker,
    pacer: Pacer,
    link: Link,
    /// The envelope size the builder aims for, from `link`.
    envelope_target: Arc<AtomicUsize>,
    ahead: Ahead,
    /// The next envelope to publish, waiting for the pacer, the in-flight window or room in
    /// rumqttc's request channel.
    stashed: Option<Batch>,
    connected: bool,
    /// Nothing left to send on this connection until the spool grows or we reconnect.
    drained: bool,
    acks: mpsc::Sender<AckRange>,
    metrics: Arc<UplinkMetrics>,
    status_topic: String,
    /// The cloud's balances for this device's cards arrive here.
    cards_topic: String,
    cards: CardCache,
    fleet: FleetLink,
    /// This connection's first status message is not yet acknowledged.
    status_pending: bool,
}

pub async fn run(
    cfg: AgentConfig,
    spool: Spool,
    cards: CardCache,
    metrics: Arc<UplinkMetrics>,
    fleet: FleetLink,
    mut settings: tokio::sync::watch::Receiver<crate::config::MqttConfig>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let topic = |stream| ferry_shared::Topic::new(cfg.device_id.clone(), stream).to_string();
    let status_topic = topic(ferry_shared::Stream::Status);
    let cards_topic = topic(ferry_shared::Stream::Cards);
    let will = LastWill::new(
        status_topic.clone(),
        StatusMessage::new(false, cfg.device_id.as_str(), None).to_vec(),
        QoS::AtLeastOnce,
        true,
    );
    let (client, eventloop) = connect::client(&cfg, Some(will)).await?;
    let (events_tx, mut events) = mpsc::channel(256);
    let driver_stop = CancellationToken::new();
    let driver = tokio::spawn(driver::run(eventloop, events_tx, driver_stop.clone()));
    let (acks, ack_rx) = mpsc::channel(1024);
    let acker = tokio::spawn(run_acker(spool.clone(), ack_rx, metrics.clone()));

    let link = Link::default();
    let envelope_target = Arc::new(AtomicUsize::new(link.envelope()));
    let batcher = Batcher::new(
        spool.reader().context("opening the spool for reading")?,
        cfg.device_id.clone(),
        spool.id().clone(),
        cfg.mqtt.gzip_level(),
        envelope_target.clone(),
    );
    let ahead = Ahead::start(batcher, spool.last_seq()).context("starting the envelope builder")?;
    let mut up = Uplink {
        pacer: Pacer::new(cfg.mqtt.publishes_per_s, cfg.mqtt.bytes_per_s),
        cfg,
        client,
        spool,
        tracker: Tracker::default(),
        link,
        envelope_target,
        ahead,
        stashed: None,
        connected: false,
        drained: false,
        acks,
        metrics,
        status_topic,
        cards_topic,
        cards,
        fleet,
        status_pending: false,
    };
    let mut appended = up.spool.last_seq();
    // The first status goes out on ConnAck; the interval only refreshes it.
    let period = Duration::from_secs(up.cfg.mqtt.status_interval_s);
    let mut status_every = tokio::time::interval_at(Instant::now() + period, period);
    let mut retry_stash = Instant::now();
    // Set at shutdown, when the sources have stopped already: until then, what they appended
    // last is still sent and its PUBACKs awaited, so a clean stop of a connected agent leaves
    // nothing behind that it could have delivered.
    let mut grace: Option<Instant> = None;

    let failure = loop {
        if let Some(deadline) = grace {
            let idle = up.drained && up.stashed.is_none() && up.tracker.in_flight() == 0;
            if idle || !up.connected || Instant::now() >= deadline {
                break None;
            }
        }
        let can_send = up.connected
            && up
                .stashed
                .as_ref()
                .is_some_and(|b| up.link.has_room(b.payload.len()))
            && up.tracker.in_flight() < usize::from(up.cfg.mqtt.max_inflight);
        tokio::select! {
            _ = shutdown.token.cancelled(), if grace.is_none() => {
                let allowed = if shutdown.rebuild.load(Ordering::Relaxed) {
                    Duration::ZERO
                } else {
                    SHUTDOWN_GRACE
                };
                grace = Some(Instant::now() + allowed);
                debug!(drained = up.drained, stashed = up.stashed.is_some(), in_flight = up.tracker.in_flight(), "stopping: delivering what is pending");
            }
            _ = sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => {}
            event = events.recv() => match event {
                Some(event) => up.on_event(event),
                None => break Some(anyhow::anyhow!("mqtt driver stopped unexpectedly")),
            },
            next = up.ahead.next(), if up.connected && up.stashed.is_none() && !up.drained => {
                match next {
                    Ok(Next::Batch(batch)) => up.stashed = Some(batch),
                    // A drain that raced an append does not count: the builder is reading
                    // those records already. The last seq is marked seen here, or
                    // `changed()` would fire for an append the builder had read, and the
                    // uplink would wait on a builder with nothing to build until the next
                    // append (at shutdown, out the whole grace).
                    Ok(Next::Drained { seen }) => {
                        up.drained = seen == *appended.borrow_and_update();
                    }
                    Err(e) => break Some(anyhow::Error::new(e).context("reading the spool")),
                }
            }
            _ = sleep_until(up.pacer.ready_at().max(retry_stash)), if can_send => {
                if !up.publish_stashed() {
                    // rumqttc's channel is full: give its event loop a moment.
                    retry_stash = Instant::now() + Duration::from_millis(5);
                }
            }
            changed = appended.changed(), if up.drained && up.connected => {
                if changed.is_err() {
                    break Some(anyhow::anyhow!("spool writer stopped"));
                }
                up.drained = false;
            }
            // Offline too: `ferry-agent status` on a station that never connected still
            // says what the clock and the link are.
            _ = status_every.tick() => {
                if up.connected {
                    up.publish_status(true);
                } else {
                    up.save_run_status(up.link.rate().map(|r| r as u64));
                }
            }
            // A desired configuration re-paces the connection in place; a new gzip level
            // or in-flight window takes a new pipeline (`needs_rebuild`).
            Ok(()) = settings.changed() => {
                let m = settings.borrow_and_update().clone();
                up.pacer = Pacer::new(m.publishes_per_s, m.bytes_per_s);
                if m.status_interval_s != up.cfg.mqtt.status_interval_s {
                    let period = Duration::from_secs(m.status_interval_s);
                    status_every = tokio::time::interval_at(Instant::now() + period, period);
                }
                info!(publishes_per_s = m.publishes_per_s, bytes_per_s = m.bytes_per_s, "uplink re-paced");
                up.cfg.mqtt = m;
            }
            Some(out) = up.fleet.outgoing.recv(), if up.connected => {
                match up.client.try_publish(&out.topic, QoS::AtLeastOnce, out.retain, out.payload) {
                    Ok(()) => up.tracker.requested(Carries::Other, 0),
                    // The fleet says it again on the next connection.
                    Err(e) => debug!(error = %e, topic = %out.topic, "fleet message not published"),
                }
            }
        }
    };

    up.shut_down(driver, driver_stop).await;
    let Uplink {
        ahead,
        metrics,
        acks,
        ..
    } = up;
    ahead.stop().await;
    let m = &metrics;
    info!(
        connects = m.connects.load(Ordering::Relaxed),
        disconnects = m.disconnects.load(Ordering::Relaxed),
        publishes = m.publishes.load(Ordering::Relaxed),
        payload_bytes = m.payload_bytes.load(Ordering::Relaxed),
        records_acked = m.records_acked.load(Ordering::Relaxed),
        "uplink stopped"
    );
    drop(acks);
    if acker.await.is_err() {
        error!("spool acker panicked");
    }
    failure.map_or(Ok(()), Err)
}

impl Uplink {
    fn on_event(&mut self, event: DriverEvent) {
        match event {
            DriverEvent::Connected => {
                self.connected = true;
                self.drained = false;
                self.tracker.reset();
                self.link.reset();
                self.stashed = None;
                self.ahead.rewind();
                self.metrics.connects.fetch_add(1, Ordering::Relaxed);
                info!(device = %self.cfg.device_id, "mqtt connected; resending everything unacknowledged");
                // A clean session forgets subscriptions: ask again on every connection.
                for topic in std::iter::once(&self.cards_topic).chain(&self.fleet.subscriptions) {
                    if let Err(e) = self.client.try_subscribe(topic, QoS::AtLeastOnce) {
                        warn!(error = %e, %topic, "subscription not queued");
                    }
                }
                self.status_pending = true;
                self.publish_status(true);
                self.tell_fleet(FleetIn::Connected);
            }
            DriverEvent::Published(pkid) => {
                if let Some(bytes) = self.tracker.published(pkid) {
                    self.link.published(pkid, bytes as u64);
                }
            }
            DriverEvent::PubAck(pkid) => match self.tracker.acked(pkid) {
                Some(Carries::Records(range)) => {
                    self.link.acked(pkid);
                    self.envelope_target
                        .store(self.link.envelope(), Ordering::Relaxed);
                    if let Some(rate) = self.link.rate() {
                        self.metrics
                            .link_bytes_per_s
                            .store(rate as u64, Ordering::Relaxed);
                    }
                    if self.acks.try_send(range).is_err() {
                        // The records stay spooled and go again after the next reconnect.
                        warn!(
                            first = range.first,
                            last = range.last,
                            "ack queue full; records will be resent"
                        );
                    }
                }
                Some(Carries::Status) if self.status_pending => {
                    self.status_pending = false;
                    self.tell_fleet(FleetIn::StatusDelivered);
                }
                _ => {}
            },
            DriverEvent::Message(p) if p.topic == self.cards_topic => {
                let cards = self.cards.clone();
                tokio::task::spawn_blocking(move || match cards.remember(&p.payload) {
                    Ok(card) => debug!(card, "card balances from the cloud"),
                    Err(e) => warn!(error = %e, "card balances message ignored"),
                });
            }
            DriverEvent::Message(p) if self.fleet.subscriptions.contains(&p.topic) => {
                self.tell_fleet(FleetIn::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                });
            }
            DriverEvent::Message(p) => debug!(topic = %p.topic, "ignoring message"),
            DriverEvent::Disconnected { error, resume } => {
                if self.connected {
                    self.metrics.disconnects.fetch_add(1, Ordering::Relaxed);
                }
                debug!(%error, "uplink paused until reconnect");
                self.connected = false;
                self.tracker.reset();
                self.link.reset();
                self.stashed = None;
                let _ = resume.send(());
            }
        }
    }

    /// Publishes the stashed envelope. Returns false when rumqttc had no room for it.
    fn publish_stashed(&mut self) -> bool {
        let Some(batch) = self.stashed.take() else {
            return true;
        };
        if let Err(_full) =
            self.client
                .try_publish(&batch.topic, QoS::AtLeastOnce, false, batch.payload.clone())
        {
            self.stashed = Some(batch);
            return false;
        }
        self.tracker
            .requested(Carries::Records(batch.records), batch.payload.len());
        self.pacer.sent(batch.payload.len());
        self.metrics.publishes.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .payload_bytes
            .fetch_add(batch.payload.len() as u64, Ordering::Relaxed);
        debug!(
            records = batch.count,
            bytes = batch.payload.len(),
            "envelope published"
        );
        true
    }

    fn save_run_status(&self, link_bytes_per_s: Option<u64>) {
        crate::status::RunStatus::now(link_bytes_per_s).save(&self.cfg.data_dir);
    }

    fn publish_status(&mut self, online: bool) {
        let figures = Some(self.spool.status());
        let mut message = StatusMessage::new(online, self.cfg.device_id.as_str(), figures);
        message.link_bytes_per_s = self.link.rate().map(|r| r as u64);
        if online {
            self.save_run_status(message.link_bytes_per_s);
        }
        let payload = message.to_vec();
        match self
            .client
            .try_publish(&self.status_topic, QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => self.tracker.requested(Carries::Status, 0),
            Err(e) => debug!(error = %e, "status not published this time"),
        }
    }

    fn tell_fleet(&self, event: FleetIn) {
        // A full queue loses nothing lasting: retained documents come again on the next
        // connection, and the fleet task says its answers again on each.
        if let Err(e) = self.fleet.events.try_send(event) {
            warn!(error = %e, "fleet event dropped");
        }
    }

    /// Says offline (a clean disconnect sends no will), then disconnects, briefly waiting
    /// for the driver to flush both.
    async fn shut_down(
        &mut self,
        mut driver: tokio::task::JoinHandle<()>,
        stop: CancellationToken,
    ) {
        stop.cancel();
        if !self.connected {
            driver.abort();
            return;
        }
        self.publish_status(false);
        let _ = self.client.try_disconnect();
        if tokio::time::timeout(Duration::from_secs(3), &mut driver)
            .await
            .is_err()
        {
            warn!("mqtt driver did not stop within 3 s");
            driver.abort();
        }
    }
}

async fn run_acker(spool: Spool, mut acks: mpsc::Receiver<AckRange>, metrics: Arc<UplinkMetrics>) {
    while let Some(range) = acks.recv().await {
        match spool.ack(range).await {
            Ok(deleted) => {
                metrics.records_acked.fetch_add(deleted, Ordering::Relaxed);
            }
            // Not fatal: the records stay spooled and are resent, which receivers dedupe.
            Err(e) => error!(error = %e, "could not delete acknowledged records"),
        }
    }
}
