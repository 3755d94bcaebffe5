//! Envelopes built ahead of the in-flight window, on a thread of their own.
//!
//! Reading the spool, splicing and compressing an envelope takes milliseconds of CPU; done
//! in the uplink's loop, the loop would stop handling PUBACKs and pacing while it ran. Here
//! the next envelopes are ready when the window opens, a bounded number of them, so memory
//! stays a few payloads whatever the backlog.
//!
//! A reconnect starts a new *generation*: the builder rewinds to the oldest unacknowledged
//! record, and envelopes built for the old connection are dropped unsent.

use tokio::sync::{mpsc, watch};

use super::batcher::{Batch, Batcher};
use crate::spool::SpoolError;

/// Envelopes built and waiting beside the one the loop holds.
const DEPTH: usize = 2;

/// What the builder found.
pub enum Next {
    Batch(Batch),
    /// Nothing left to send on this connection, as of the spool's `last_seq` `seen`.
    Drained {
        seen: u64,
    },
}

struct Built {
    generation: u64,
    next: Result<Next, SpoolError>,
}

pub struct Ahead {
    built: mpsc::Receiver<Built>,
    generation: watch::Sender<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ahead {
    /// Starts the builder; `appended` is the spool's `last_seq`, which wakes it once it has
    /// drained the spool.
    pub fn start(batcher: Batcher, appended: watch::Receiver<u64>) -> std::io::Result<Self> {
        let (tx, built) = mpsc::channel(DEPTH);
        let (generation, control) = watch::channel(0);
        let runtime = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name("uplink-build".into())
            .spawn(move || build(batcher, tx, control, appended, runtime))?;
        Ok(Self {
            built,
            generation,
            thread: Some(thread),
        })
    }

    /// Starts again from the oldest unacknowledged record, for a new connection.
    pub fn rewind(&mut self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// The next envelope for this connection. Cancel-safe.
    pub async fn next(&mut self) -> Result<Next, SpoolError> {
        let current = *self.generation.borrow();
        loop {
            match self.built.recv().await {
                Some(built) if built.generation == current => return built.next,
                Some(_stale) => {}
                None => return Err(SpoolError::Closed),
            }
        }
    }

    /// Stops the builder and waits for it to finish the envelope it is on.
    pub async fn stop(mut self) {
        let thread = self.thread.take();
        // Closing both channels wakes the builder wherever it waits.
        drop(self);
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn build(
    mut batcher: Batcher,
    tx: mpsc::Sender<Built>,
    mut control: watch::Receiver<u64>,
    mut appended: watch::Receiver<u64>,
    runtime: tokio::runtime::Handle,
) {
    let mut generation = *control.borrow_and_update();
    loop {
        let current = *control.borrow_and_update();
        if current != generation {
            batcher.rewind();
            generation = current;
        }
        // Marked seen before reading, so an append during the read wakes the wait below.
        let seen = *appended.borrow_and_update();
        let next = batcher.next().map(|b| match b {
            Some(batch) => Next::Batch(batch),
            None => Next::Drained { seen },
        });
        let (drained, failed) = (matches!(next, Ok(Next::Drained { .. })), next.is_err());
        if tx.blocking_send(Built { generation, next }).is_err() || failed {
            return;
        }
        if drained {
            // Until the spool grows or a new connection starts; either closing means stop.
            let woke = runtime.block_on(async {
                tokio::select! {
                    r = appended.changed() => r.is_ok(),
                    r = control.changed() => r.is_ok(),
                }
            });
            if !woke {
                return;
            }
        }
    }
}
