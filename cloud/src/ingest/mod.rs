//! `ferry-cloud ingest`: from MQTT to the data lake, every record once.
//!
//! Three tasks and the journal between them:
//! - `mqtt::consume` drives the persistent MQTT session and hands each publish over;
//! - the pipeline (here) decodes a group of messages, admits their new records into the
//!   [`Journal`] in one transaction, and only then acknowledges them to the broker; it feeds
//!   the records to the [`Batcher`] and, when a partition is due, seals it in the journal
//!   (fixing its object key) before handing it to
//! - the uploader, which writes it to the lake with `put_once`, retrying until it is there,
//!   and reports back so the pipeline can drop its lines from the journal.
//!
//! When the lake is down, sealed batches queue (two at most) and the pipeline waits for
//! room, so it stops taking messages and the broker keeps them: backpressure with bounded
//! memory, and nothing acknowledged that is not durable.
//!
//! With `[loyalty]`, transactions are also queued in the journal for the [`router`], which
//! posts them to the loyalty core and reports the answers back here, where they are made
//! durable (the queue entry gone, any reject line for `errors/` in its place).
//!
//! With `[dashboard]`, readings, status messages and device activity are queued in the
//! journal for the [`hot`] writer, which feeds the dashboards' hot store and reports back
//! here, where the entries leave the queue.

mod decode;
mod hot;
mod journal;
mod metrics;
pub(crate) mod mqtt;
mod router;
mod seen;

/// The ingest's MQTT client, for `check --connect`.
pub use mqtt::client as mqtt_client;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_shared::Timestamp;
use rumqttc::AsyncClient;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use decode::admission;
pub use journal::{Admission, Journal, QueueReader, Queues};
pub use metrics::IngestMetrics;

use crate::config::IngestSetup;
use crate::lake::{Batcher, LakeStore, Limits, PutOutcome, Ready, gzip_lines};
use hot::{HotReport, HotWriter};
use mqtt::Incoming;
use router::{RouteReport, Router};

/// Sealed batches waiting for the uploader; the pipeline waits beyond this.
const UPLOAD_QUEUE: usize = 2;
/// How long a stop waits for the last batches to reach the lake. What misses it stays
/// sealed in the journal and is written at the next start.
const FINAL_FLUSH: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// A sealed batch on its way to the lake.
#[derive(Debug)]
struct Upload {
    batch: i64,
    key: String,
    records: u64,
    oldest: Instant,
    bytes: Vec<u8>,
}

pub async fn run(
    cfg: IngestSetup,
    metrics: Arc<IngestMetrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    info!(data_dir = %cfg.data_dir.display(), "opening the ingest journal");
    let queues = Queues {
        routes: cfg.loyalty.is_some(),
        hot: cfg.dashboard.is_some(),
    };
    let journal = Journal::open(&cfg.data_dir, queues)
        .with_context(|| format!("opening the ingest journal in {}", cfg.data_dir.display()))?;
    info!(lake = %cfg.lake.root, "opening the lake");
    let store = Arc::new(LakeStore::from_config(&cfg.lake).await?);
    let limits = Limits {
        flush_bytes: cfg.lake.flush_bytes,
        flush_interval: Duration::from_secs(cfg.lake.flush_interval_s),
        max_open: cfg.lake.max_open_partitions,
        max_buffer: cfg.lake.max_buffer_bytes,
    };
    info!(store = ?store, instance = journal.instance(), "ingest starting");

    let (client, eventloop) = mqtt::client(&cfg.mqtt)?;
    let (admit_tx, mut admit_rx) = mpsc::channel::<Incoming>(4 * cfg.ingest.admit_batch);
    let (upload_tx, upload_rx) = mpsc::channel::<Upload>(UPLOAD_QUEUE);
    let (written_tx, written_rx) = mpsc::unbounded_channel::<(i64, u64)>();
    let tasks = tokio_util::task::TaskTracker::new();
    let consumer_stop = shutdown.child_token();
    tasks.spawn(mqtt::consume(
        client.clone(),
        eventloop,
        mqtt::filters(&cfg.mqtt, queues.hot),
        admit_tx,
        metrics.clone(),
        consumer_stop.clone(),
    ));
    let uploader_stop = CancellationToken::new();
    tasks.spawn(upload(
        store,
        upload_rx,
        written_tx,
        metrics.clone(),
        uploader_stop.clone(),
    ));
    let (routed_tx, routed_rx) = mpsc::unbounded_channel::<RouteReport>();
    let route_wake = Arc::new(Notify::new());
    let drains_stop = CancellationToken::new();
    if let Some(loyalty) = cfg.loyalty.clone() {
        let router = Router::new(
            loyalty,
            cfg.data_dir.clone(),
            client.clone(),
            routed_tx,
            metrics.clone(),
        )?;
        tasks.spawn(router.run(route_wake.clone(), drains_stop.clone()));
    }
    let (hot_tx, hot_rx) = mpsc::unbounded_channel::<HotReport>();
    let hot_wake = Arc::new(Notify::new());
    if let Some(dashboard) = cfg.dashboard.clone() {
        let writer = HotWriter::new(dashboard, cfg.data_dir.clone(), hot_tx, metrics.clone());
        tasks.spawn(writer.run(hot_wake.clone(), drains_stop.clone()));
    }
    tasks.close();

    let mut pipeline = Pipeline {
        journal,
        batcher: Batcher::new(limits),
        client: client.clone(),
        upload_tx,
        written_rx,
        metrics,
        inflight: HashMap::new(),
        routed_rx,
        route_wake,
        hot_rx,
        hot_wake,
        hot: queues.hot,
    };
    let mut outcome = pipeline
        .run(&mut admit_rx, cfg.ingest.admit_batch, &shutdown)
        .await;
    consumer_stop.cancel();
    if outcome.is_ok() {
        outcome = pipeline.finish(&mut admit_rx, FINAL_FLUSH).await;
    }
    uploader_stop.cancel();
    drains_stop.cancel();
    tasks.wait().await;
    // Whatever was admitted and not written stays in the journal for the next start.
    let _ = client.disconnect().await;
    info!("ingest stopped");
    outcome
}

/// The journal, the open partitions, and the batches on their way to the lake.
struct Pipeline {
    journal: Journal,
    batcher: Batcher,
    client: AsyncClient,
    upload_tx: mpsc::Sender<Upload>,
    written_rx: mpsc::UnboundedReceiver<(i64, u64)>,
    metrics: Arc<IngestMetrics>,
    /// Sealed batches not yet written, with when their oldest record arrived.
    inflight: HashMap<i64, Instant>,
    /// The loyalty router's reports; none without `[loyalty]`.
    routed_rx: mpsc::UnboundedReceiver<RouteReport>,
    route_wake: Arc<Notify>,
    /// The hot writer's reports; none without `[dashboard]`.
    hot_rx: mpsc::UnboundedReceiver<HotReport>,
    hot_wake: Arc<Notify>,
    /// Readings and status messages are queued for the hot store.
    hot: bool,
}

impl Pipeline {
    async fn run(
        &mut self,
        admit_rx: &mut mpsc::Receiver<Incoming>,
        admit_batch: usize,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        self.recover(shutdown).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut group = Vec::with_capacity(admit_batch);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some((batch, records)) = self.written_rx.recv() => self.written(batch, records)?,
                Some(report) = self.routed_rx.recv() => self.routed(report)?,
                Some(report) = self.hot_rx.recv() => self.hot_written(report)?,
                n = admit_rx.recv_many(&mut group, admit_batch) => {
                    if n == 0 {
                        return Ok(());
                    }
                    self.admit(&mut group)?;
                }
                _ = tick.tick() => {}
            }
            for ready in self.batcher.due(Instant::now()) {
                let upload = self.seal(ready)?;
                self.send_upload(upload, shutdown.cancelled()).await?;
            }
            self.show_backlog();
        }
    }

    /// A clean stop: admits what has arrived, seals every open partition and waits, up to
    /// `within`, for the batches to reach the lake, so that a stop leaves nothing in the
    /// journal when the lake is up.
    async fn finish(
        &mut self,
        admit_rx: &mut mpsc::Receiver<Incoming>,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut group = Vec::new();
        while let Ok(message) = admit_rx.try_recv() {
            group.push(message);
        }
        if !group.is_empty() {
            self.admit(&mut group)?;
        }
        for ready in self.batcher.all() {
            let upload = self.seal(ready)?;
            self.send_upload(upload, tokio::time::sleep_until(deadline))
                .await?;
        }
        while !self.inflight.is_empty() {
            tokio::select! {
                Some((batch, records)) = self.written_rx.recv() => self.written(batch, records)?,
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(
                        batches = self.inflight.len(),
                        "the lake did not take the last batches in time; they are sealed in \
                         the journal and are written at the next start"
                    );
                    break;
                }
            }
        }
        Ok(())
    }

    /// A crash may have come between sealing a batch and learning it was written: write it
    /// again, under the same key. Then the unsealed lines go back into open partitions.
    async fn recover(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        self.metrics
            .routes_pending
            .store(self.journal.routes_pending()?, Ordering::Relaxed);
        self.metrics
            .hot_pending
            .store(self.journal.hot_pending()?, Ordering::Relaxed);
        for sealed in self.journal.sealed()? {
            let lines = self.journal.batch_lines(sealed.batch)?;
            let upload = Upload {
                batch: sealed.batch,
                key: sealed.key,
                records: sealed.records,
                oldest: Instant::now(),
                bytes: gzip_lines(lines.iter().map(Vec::as_slice)),
            };
            self.send_upload(upload, shutdown.cancelled()).await?;
        }
        let now_ms = Timestamp::now().unix_millis();
        for chunk in self.journal.unsealed()? {
            let age = Duration::from_millis((now_ms - chunk.first_received_ms).max(0) as u64);
            let oldest = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            self.batcher.add(
                &chunk.partition,
                chunk.id,
                &chunk.lines,
                chunk.records,
                oldest,
            );
        }
        Ok(())
    }

    /// Decodes a group of messages, makes their new records durable, then acknowledges
    /// them.
    fn admit(&mut self, group: &mut Vec<Incoming>) -> anyhow::Result<()> {
        let admissions: Vec<Admission> = group
            .iter()
            .map(|m| decode::admission(&m.publish.topic, &m.publish.payload, m.received, self.hot))
            .collect();
        for a in &admissions {
            if let Admission::Reject { reason, .. } = a {
                self.metrics.reject(reason);
            }
        }
        let received_ms = group
            .iter()
            .map(|m| m.received.unix_millis())
            .min()
            .unwrap_or_default();
        let journal = &mut self.journal;
        let outcome = tokio::task::block_in_place(|| journal.admit(admissions, received_ms))
            .context("ingest journal commit failed; nothing acknowledged")?;
        let m = &self.metrics;
        if outcome.routed > 0 {
            m.routes_pending
                .fetch_add(outcome.routed, Ordering::Relaxed);
            self.route_wake.notify_one();
        }
        if outcome.hot > 0 {
            m.hot_pending.fetch_add(outcome.hot, Ordering::Relaxed);
            self.hot_wake.notify_one();
        }
        m.records_in.fetch_add(outcome.records, Ordering::Relaxed);
        m.duplicates
            .fetch_add(outcome.duplicates, Ordering::Relaxed);
        let now = Instant::now();
        for chunk in &outcome.chunks {
            self.batcher
                .add(&chunk.partition, chunk.id, &chunk.lines, chunk.records, now);
        }
        // Durable: now the broker may forget them.
        for message in group.drain(..) {
            if let Err(e) = self.client.try_ack(&message.publish) {
                // The session keeps the message; it comes again and is recognised as a resend.
                warn!(error = %e, "ack not queued; the broker will redeliver");
            }
            m.unacked.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Makes the ledger's answers durable: answered routes leave the queue, and rejected
    /// ones become lines for `errors/`, which join the open partitions.
    fn routed(&mut self, report: RouteReport) -> anyhow::Result<()> {
        let journal = &mut self.journal;
        let now_ms = Timestamp::now().unix_millis();
        let chunks = tokio::task::block_in_place(|| {
            journal.routed(&report.answered, &report.rejects, now_ms)
        })
        .context("ingest journal commit of routed transactions failed")?;
        let now = Instant::now();
        for chunk in &chunks {
            self.batcher
                .add(&chunk.partition, chunk.id, &chunk.lines, chunk.records, now);
        }
        // Derived, not recounted: admit adds what it queued, this takes off what left.
        let answered = report.answered.len() as u64;
        let _ =
            self.metrics
                .routes_pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(answered))
                });
        Ok(())
    }

    /// The hot store has the entries up to `report.upto`: they leave the journal.
    fn hot_written(&mut self, report: HotReport) -> anyhow::Result<()> {
        let journal = &mut self.journal;
        tokio::task::block_in_place(|| journal.hot_written(report.upto))
            .context("ingest journal commit of hot store progress failed")?;
        let _ = self
            .metrics
            .hot_pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(report.entries))
            });
        Ok(())
    }

    fn seal(&mut self, ready: Ready) -> anyhow::Result<Upload> {
        let journal = &mut self.journal;
        let sealed = tokio::task::block_in_place(|| {
            journal.seal(&ready.partition, &ready.chunk_ids, ready.records)
        })?;
        Ok(Upload {
            batch: sealed.batch,
            key: sealed.key,
            records: ready.records,
            oldest: ready.oldest,
            bytes: ready.bytes,
        })
    }

    /// Queues a batch for the uploader, unless `give_up` comes first (the batch stays
    /// sealed in the journal). While the queue is full (the lake is slow or down), only
    /// written-batch reports are handled, so no new message is taken.
    async fn send_upload(
        &mut self,
        upload: Upload,
        give_up: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        self.inflight.insert(upload.batch, upload.oldest);
        self.show_backlog();
        let send = self.upload_tx.clone().reserve_owned();
        tokio::pin!(send, give_up);
        loop {
            tokio::select! {
                _ = &mut give_up => return Ok(()),
                permit = &mut send => {
                    let permit = permit.map_err(|_| anyhow::anyhow!("the lake uploader stopped"))?;
                    permit.send(upload);
                    return Ok(());
                }
                Some((batch, records)) = self.written_rx.recv() => self.written(batch, records)?,
            }
        }
    }

    fn written(&mut self, batch: i64, records: u64) -> anyhow::Result<()> {
        let journal = &mut self.journal;
        tokio::task::block_in_place(|| journal.written(batch))?;
        self.inflight.remove(&batch);
        self.metrics
            .records_out
            .fetch_add(records, Ordering::Relaxed);
        self.metrics.objects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn show_backlog(&self) {
        let oldest = self
            .inflight
            .values()
            .copied()
            .chain(self.batcher.oldest())
            .min();
        self.metrics.set_oldest_unflushed(oldest);
    }
}

/// Writes each batch until it is in the lake, then reports it.
async fn upload(
    store: Arc<LakeStore>,
    mut queue: mpsc::Receiver<Upload>,
    written: mpsc::UnboundedSender<(i64, u64)>,
    metrics: Arc<IngestMetrics>,
    stop: CancellationToken,
) {
    while let Some(batch) = tokio::select! {
        _ = stop.cancelled() => None,
        b = queue.recv() => b,
    } {
        let mut failures = 0;
        loop {
            match store.put_once(&batch.key, batch.bytes.clone()).await {
                Ok(outcome) => {
                    if outcome == PutOutcome::AlreadyThere {
                        info!(key = %batch.key, "lake object was written before a restart");
                    }
                    break;
                }
                Err(e) => {
                    metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                    if failures == 0 {
                        error!(error = %e, "lake write failed; retrying until it succeeds");
                    }
                    let delay = ferry_shared::backoff::jittered(RETRY_MIN, RETRY_MAX, failures);
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        if written.send((batch.batch, batch.records)).is_err() {
            return;
        }
    }
}
