//! The built-in generator for demos, tests and benchmarks (README: agent configuration).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use ferry_shared::{DeviceId, RecordBody, TxId, Txn, TxnOp};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{SimulatorConfig, SimulatorProfile};
use crate::spool::{NewRecord, Spool, SpoolError};

/// Records per append when `interval_ms = 0`: enough to amortise the group commit.
const FAST_BATCH: u64 = 500;

pub struct Simulator {
    cfg: SimulatorConfig,
    device: DeviceId,
    /// Distinguishes two simulators of one agent in their output.
    index: usize,
    /// Makes tx_ids unique across runs of the process, as the envelope format requires.
    run_id: String,
    made: u64,
    /// Stamps this simulator gave each card and has not yet redeemed: a card redeems a
    /// coffee once it has ten here, which its ledger balance (at least this) covers.
    stamps: HashMap<String, u64>,
}

impl Simulator {
    pub fn new(cfg: SimulatorConfig, device: DeviceId, index: usize) -> Self {
        Self {
            cfg,
            device,
            index,
            run_id: ulid::Ulid::new().to_string(),
            made: 0,
            stamps: HashMap::new(),
        }
    }

    pub async fn run(mut self, spool: Spool, shutdown: CancellationToken) -> anyhow::Result<()> {
        let batch = if self.cfg.interval_ms == 0 {
            FAST_BATCH
        } else {
            1
        };
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.interval_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.remaining() > 0 {
            if self.cfg.interval_ms > 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
            let n = batch.min(self.remaining());
            let records = (self.made..self.made + n)
                .map(|i| self.next_record(i))
                .collect::<anyhow::Result<Vec<_>>>()?;
            match spool.append(records).await {
                Ok(_) => self.made += n,
                Err(SpoolError::Closed) => {
                    return Err(SpoolError::Closed)
                        .context("simulator could not append to the spool");
                }
                // Full of transactions, or a failed commit (disk full): nothing was stored,
                // so try the same records again rather than give up.
                Err(e) => {
                    warn!(error = %e, "simulator: append refused; retrying in 1 s");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        info!(
            source = self.index,
            records = self.made,
            "simulator finished"
        );
        Ok(())
    }

    fn remaining(&self) -> u64 {
        if self.cfg.count == 0 {
            u64::MAX
        } else {
            self.cfg.count - self.made.min(self.cfg.count)
        }
    }

    fn next_record(&mut self, n: u64) -> anyhow::Result<NewRecord> {
        let body = match self.cfg.profile {
            SimulatorProfile::Weather => weather(n),
            SimulatorProfile::Pos => RecordBody::Txn(self.sale(n)?),
        };
        Ok(NewRecord::new(&crate::clock::record(body))?)
    }

    /// The `n`th till transaction. Every third is the regular [`REGULAR`] (the first one
    /// too, so that a new user's first look at that card finds it), the others come from a
    /// pool of returning cards; every fourth is a purchase that earns points, the others
    /// stamp a coffee, and a card with ten stamps from this till redeems one.
    fn sale(&mut self, n: u64) -> anyhow::Result<Txn> {
        let mut rng = rand::rng();
        let card = if n.is_multiple_of(3) {
            REGULAR.to_owned()
        } else {
            format!("C-{:04}", rng.random_range(2..=CARDS))
        };
        let receipt = format!("R-{}-{n:06}", self.index);
        let tx_id = TxId::new(format!("{}:{}:{receipt}", self.device, self.run_id))?;
        let stamps = self.stamps.entry(card.clone()).or_default();
        let (op, program, qty) = if *stamps >= STAMPS_PER_COFFEE {
            *stamps -= STAMPS_PER_COFFEE;
            (TxnOp::Redeem, "coffee", Some(1))
        } else if n % 4 == 3 {
            (TxnOp::Earn, "points", None)
        } else {
            *stamps += 1;
            (TxnOp::Stamp, "coffee", Some(1))
        };
        let earn = op == TxnOp::Earn;
        Ok(Txn {
            tx_id,
            op,
            program: program.into(),
            card,
            store: format!("S-{}", self.device),
            qty,
            amount_minor: earn.then(|| rng.random_range(150..2500)),
            currency: earn.then(|| "EUR".into()),
            receipt: Some(receipt),
            reverses: None,
            offline: false,
            staff: None,
        })
    }
}

/// The card a simulated till sees most, first of all.
pub const REGULAR: &str = "C-0001";
/// Simulated cards are `C-0001` to this.
const CARDS: u32 = 60;
/// What `ferry-cloud dev`'s coffee program asks for a reward.
const STAMPS_PER_COFFEE: u64 = 10;

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn weather(n: u64) -> RecordBody {
    let mut rng = rand::rng();
    let day = (n as f64 / 600.0).sin();
    RecordBody::Reading {
        sensor: "bme280".into(),
        metrics: [
            (
                "temperature_c".to_owned(),
                round1(12.0 + 6.0 * day + rng.random_range(-0.3..0.3)),
            ),
            (
                "humidity_pct".to_owned(),
                round1(60.0 - 15.0 * day + rng.random_range(-1.0..1.0)),
            ),
            (
                "pressure_hpa".to_owned(),
                round1(1013.0 + rng.random_range(-2.0..2.0)),
            ),
        ]
        .into(),
    }
}
