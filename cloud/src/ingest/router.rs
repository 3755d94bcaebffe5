//! The loyalty router: drains the journal's durable `routes` queue into the loyalty API,
//! and sends each card's new balances back to the devices that used it.
//!
//! - Routes are read in id order, up to `loyalty.batch` at a time, through a read-only
//!   connection of their own ([`QueueReader`]); only the pipeline deletes them, after this
//!   task reports the ledger's answers ([`RouteReport`]), in the same journal transaction
//!   that makes any reject line for `errors/` durable. A crash between the answer and that
//!   commit sends the batch again, and the ledger answers `duplicate`.
//! - 5xx, timeouts and refused connections are retried with jittered exponential backoff,
//!   as is anything else that is not an answer per transaction (a wrong token, say): a
//!   transaction leaves the queue only with the ledger's word on it.
//! - A transaction the ledger `rejected` is final: it goes to `errors/` with reason
//!   `loyalty_{reason}` and is counted.
//! - One poison transaction never blocks the queue: a batch the ledger fails on (500, not
//!   the 503 of an unreachable database) is halved until the failing transaction is alone;
//!   failing alone [`POISON_TRIES`] times, it goes to `errors/` with reason
//!   `loyalty_failed`, and the others go on.
//! - Each transaction goes with the device it came from, so the ledger applies it only for
//!   a registered till at its own store. One from a device not registered yet is `held`:
//!   it stays queued (`ferry_ingest_routes_held`), and the router sends the queue again
//!   from its start every [`HELD_RETRY`], so it applies once the till is registered.
//! - Card balances go to `ferry/v1/{device}/cards` (QoS 1), for every device whose
//!   transaction for that card was applied or recognised.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_shared::{Stream, Timestamp, Topic, Txn};
use rumqttc::{AsyncClient, QoS};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::IngestMetrics;
use super::journal::QueueReader;
use crate::config::LoyaltyConfig;
use crate::lake::{Line, reject_line};
use crate::loyalty::{CardBalances, Status};

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long the router sleeps with nothing queued, should it miss a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the backlog alert repeats while it holds.
const ALERT_EVERY: Duration = Duration::from_secs(60);
/// How often held transactions are sent again.
pub const HELD_RETRY: Duration = Duration::from_secs(5);
/// How often the ledger may fail on one transaction alone before it is set aside.
pub const POISON_TRIES: u32 = 3;

/// The ledger's answers for one batch, for the pipeline to make durable.
#[derive(Debug)]
pub struct RouteReport {
    /// Every route the ledger answered (applied, duplicate or rejected).
    pub answered: Vec<i64>,
    /// Lines for `errors/`: one per rejected transaction.
    pub rejects: Vec<Line>,
}

/// A queued transaction: its lake line, which names its device.
struct Route {
    id: i64,
    device: String,
    txn: Option<Txn>,
    body: String,
}

#[derive(Debug, Deserialize)]
struct Answer {
    results: Vec<Judged>,
    #[serde(default)]
    cards: Vec<CardBalances>,
}

/// One result of `POST /v1/transactions`.
#[derive(Debug, Deserialize)]
struct Judged {
    status: Status,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("loyalty API unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("loyalty API answered {status}: {body}")]
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("loyalty API answered {got} results for {sent} transactions")]
    Count { got: usize, sent: usize },
}

impl SendError {
    /// The ledger failed on the batch itself, not for want of its database.
    fn is_internal(&self) -> bool {
        matches!(self, Self::Status { status, .. } if *status == reqwest::StatusCode::INTERNAL_SERVER_ERROR)
    }
}

pub struct Router {
    cfg: LoyaltyConfig,
    http: reqwest::Client,
    /// Behind a lock only so that the router is `Sync`: this task alone uses it.
    queue: std::sync::Mutex<QueueReader>,
    mqtt: AsyncClient,
    report: mpsc::UnboundedSender<RouteReport>,
    metrics: Arc<IngestMetrics>,
    last_alert: Option<Instant>,
}

impl Router {
    pub fn new(
        cfg: LoyaltyConfig,
        data_dir: PathBuf,
        mqtt: AsyncClient,
        report: mpsc::UnboundedSender<RouteReport>,
        metrics: Arc<IngestMetrics>,
    ) -> anyhow::Result<Self> {
        ferry_shared::tls::use_ring();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s))
            .connect_timeout(Duration::from_secs(cfg.timeout_s.min(5)))
            .build()?;
        Ok(Self {
            queue: std::sync::Mutex::new(QueueReader::routes(&data_dir)?),
            cfg,
            http,
            mqtt,
            report,
            metrics,
            last_alert: None,
        })
    }

    /// Sends batches until `stop`. `wake` is notified when the pipeline queues routes.
    pub async fn run(mut self, wake: Arc<Notify>, stop: CancellationToken) {
        info!(url = %self.cfg.url, "loyalty router started");
        // Routes up to `cursor` have their answers; the pipeline deletes them when it takes
        // the report, so reads go past them rather than wait for that.
        let mut cursor = 0;
        let mut failures = 0u32;
        // Smaller than `loyalty.batch` while a failing transaction is being isolated.
        let mut limit = self.cfg.batch;
        let mut alone_failures = 0u32;
        let mut last_pass = Instant::now();
        loop {
            let batch = match tokio::task::block_in_place(|| self.next_batch(cursor, limit)) {
                Ok(batch) => batch,
                Err(e) => {
                    error!(error = %e, "reading the route queue failed");
                    Vec::new()
                }
            };
            self.watch_backlog();
            let Some(last) = batch.last().map(|r| r.id) else {
                // Caught up: what was held is still queued behind the cursor. Go over the
                // queue again, now and then, in case its devices have been registered.
                let held = self.metrics.routes_held.load(Ordering::Relaxed);
                if held > 0 && last_pass.elapsed() >= HELD_RETRY {
                    cursor = 0;
                    last_pass = Instant::now();
                    self.metrics.routes_held.store(0, Ordering::Relaxed);
                    continue;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            };
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                sent = self.send(&batch) => sent,
            };
            match outcome {
                Ok(answer) => {
                    failures = 0;
                    alone_failures = 0;
                    limit = self.cfg.batch;
                    if self.answered(&batch, answer).await.is_err() {
                        return; // the pipeline has stopped
                    }
                    cursor = last;
                }
                Err(e) if e.is_internal() && batch.len() > 1 => {
                    warn!(error = %e, size = batch.len(), "the ledger failed on a batch; halving it");
                    limit = batch.len() / 2;
                }
                Err(e) if e.is_internal() && alone_failures + 1 >= POISON_TRIES => {
                    error!(error = %e, "the ledger fails on this transaction alone; it goes to errors/");
                    if self.set_aside(&batch[0]).is_err() {
                        return;
                    }
                    alone_failures = 0;
                    limit = self.cfg.batch;
                    cursor = last;
                }
                Err(e) => {
                    if e.is_internal() {
                        alone_failures += 1;
                    }
                    self.metrics.route_failures.fetch_add(1, Ordering::Relaxed);
                    let delay = ferry_shared::backoff::jittered(RETRY_MIN, RETRY_MAX, failures);
                    warn!(error = %e, failures, retry_in_ms = delay.as_millis() as u64,
                          "routing to the loyalty core failed; the transactions stay queued");
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn next_batch(&self, cursor: i64, limit: usize) -> anyhow::Result<Vec<Route>> {
        let queue = self
            .queue
            .lock()
            .map_err(|_| anyhow::anyhow!("route queue lock poisoned"))?;
        Ok(queue
            .after(cursor, limit)?
            .into_iter()
            .map(|(id, body)| parse_route(id, body))
            .collect())
    }

    async fn send(&self, batch: &[Route]) -> Result<Answer, SendError> {
        // Each route is the transaction's lake line: the record with the device it came
        // from (which the ledger's registry check reads), already serialised, so the
        // request is spliced from them rather than built again.
        let lines: Vec<&str> = batch
            .iter()
            .filter(|r| r.txn.is_some())
            .map(|r| r.body.as_str())
            .collect();
        if lines.is_empty() {
            return Ok(Answer {
                results: Vec::new(),
                cards: Vec::new(),
            });
        }
        let payload = format!("{{\"transactions\":[{}]}}", lines.join(","));
        let url = format!(
            "{}/v1/transactions?balances=true",
            self.cfg.url.trim_end_matches('/')
        );
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.cfg.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(SendError::Status {
                status,
                body: body.chars().take(300).collect(),
            });
        }
        let answer: Answer = response.json().await?;
        if answer.results.len() != lines.len() {
            return Err(SendError::Count {
                got: answer.results.len(),
                sent: lines.len(),
            });
        }
        Ok(answer)
    }

    /// Reports the answers to the pipeline, and sends the balances to the devices.
    async fn answered(&mut self, batch: &[Route], answer: Answer) -> Result<(), ()> {
        let now = Timestamp::now();
        let mut results = answer.results.into_iter();
        let mut report = RouteReport {
            answered: Vec::with_capacity(batch.len()),
            rejects: Vec::new(),
        };
        // Which devices to tell about which card.
        let mut devices_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for route in batch {
            let Some(txn) = &route.txn else {
                report.answered.push(route.id);
                self.reject(&mut report, route, "unroutable", now);
                continue;
            };
            // `send` checked that there is one result per transaction sent.
            let Some(outcome) = results.next() else {
                break;
            };
            if outcome.status == Status::Held {
                // Not answered: it stays queued for the next pass.
                self.metrics.routes_held.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            report.answered.push(route.id);
            match outcome.status {
                Status::Applied | Status::Duplicate => {
                    devices_of
                        .entry(txn.card.as_str())
                        .or_default()
                        .insert(route.device.as_str());
                }
                Status::Rejected => {
                    let reason = outcome.reason.as_deref().unwrap_or("rejected");
                    // The till should hear that the card is blocked, and refuse it.
                    if reason == "card_blocked" {
                        devices_of
                            .entry(txn.card.as_str())
                            .or_default()
                            .insert(route.device.as_str());
                    }
                    self.reject(&mut report, route, reason, now);
                }
                Status::Held => {}
            }
        }
        self.metrics
            .routes_sent
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.report.send(report).map_err(|_| ())?;
        for card in &answer.cards {
            let Ok(payload) = serde_json::to_vec(&serde_json::json!({
                "card": card.card, "balances": card.balances, "blocked": card.blocked,
                "at": now,
            })) else {
                continue;
            };
            for device in devices_of.get(card.card.as_str()).into_iter().flatten() {
                let Ok(device) = ferry_shared::DeviceId::new(*device) else {
                    continue;
                };
                let topic = Topic::new(device, Stream::Cards).to_string();
                // Balances are advice for the till, re-sent after every transaction: a
                // full request queue drops this one rather than stall the ledger's work.
                if let Err(e) =
                    self.mqtt
                        .try_publish(topic, QoS::AtLeastOnce, false, payload.clone())
                {
                    warn!(error = %e, "card balance not published");
                }
            }
        }
        Ok(())
    }

    /// A transaction the ledger keeps failing on: answered, with a line for `errors/`.
    fn set_aside(&self, route: &Route) -> Result<(), ()> {
        let mut report = RouteReport {
            answered: vec![route.id],
            rejects: Vec::new(),
        };
        self.reject(&mut report, route, "failed", Timestamp::now());
        self.report.send(report).map_err(|_| ())
    }

    fn reject(&self, report: &mut RouteReport, route: &Route, reason: &str, now: Timestamp) {
        let reason = format!("loyalty_{reason}");
        let topic = format!("ferry/v1/{}/transactions", route.device);
        report
            .rejects
            .push(reject_line(&topic, &reason, route.body.as_bytes(), now));
        self.metrics.route_rejected(&reason);
    }

    /// Publishes the age of the oldest queued transaction, and warns while it is over
    /// `loyalty.backlog_alert_s`.
    fn watch_backlog(&mut self) {
        let oldest = match self.queue.lock().map(|q| q.oldest()) {
            Ok(Ok(oldest)) => oldest,
            Err(_) => return,
            Ok(Err(e)) => {
                warn!(error = %e, "reading the route queue's age failed");
                return;
            }
        };
        let age_s = oldest
            .and_then(|body| received_at(&body))
            .map_or(0.0, |at| {
                (Timestamp::now().unix_millis() - at.unix_millis()).max(0) as f64 / 1000.0
            });
        self.metrics.set_route_backlog_age(age_s);
        let alert = self.cfg.backlog_alert_s as f64;
        if age_s > alert && self.last_alert.is_none_or(|t| t.elapsed() >= ALERT_EVERY) {
            self.last_alert = Some(Instant::now());
            error!(
                oldest_age_s = age_s as u64,
                threshold_s = self.cfg.backlog_alert_s,
                pending = self.metrics.routes_pending.load(Ordering::Relaxed),
                "ALERT: transactions are waiting for the loyalty core longer than \
                 loyalty.backlog_alert_s"
            );
        }
    }
}

fn parse_route(id: i64, body: String) -> Route {
    let value: Option<Value> = serde_json::from_str(&body).ok();
    let device = value
        .as_ref()
        .and_then(|v| v.get("device"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let txn = value.and_then(|v| serde_json::from_value(v).ok());
    Route {
        id,
        device,
        txn,
        body,
    }
}

fn received_at(body: &str) -> Option<Timestamp> {
    #[derive(Deserialize)]
    struct Arrival {
        received_at: Timestamp,
    }
    serde_json::from_str::<Arrival>(body)
        .ok()
        .map(|a| a.received_at)
}
