//! The loop both serial sources share: port events in, records out to the spool.
//!
//! A [`LineHandler`] decides what a line becomes; everything else is common: bad lines and
//! lost devices are counted and reported through [`Incidents`], lines that are ready
//! together are appended together, and a refused append is retried, never dropped.

use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_shared::RecordBody;
use ferry_shared::record::Unsequenced;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::incidents::Incidents;
use super::port::{PortEvent, PortReader, PortSpec, Received};
use crate::sources::SourceMetrics;
use crate::spool::{NewRecord, Spool, SpoolError};

/// Most lines gathered into one append.
const MAX_BATCH: usize = 256;

pub trait LineHandler: Send {
    /// What a line becomes: records to append (perhaps none), or why it is refused, as a
    /// stable reason code.
    fn line(&mut self, line: &[u8], at: Received) -> Result<Vec<Unsequenced>, &'static str>;
}

pub struct LineSource<H> {
    pub spec: PortSpec,
    /// How incidents name this source: `serial bme280 on /dev/ttyUSB0`.
    pub what: String,
    pub report_window: Duration,
    pub handler: H,
}

impl<H: LineHandler> LineSource<H> {
    pub async fn run(
        mut self,
        spool: Spool,
        metrics: std::sync::Arc<SourceMetrics>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut port = PortReader::spawn(self.spec.clone(), stop.clone())
            .context("starting the serial reader thread")?;
        let mut incidents = Incidents::new(self.what.clone(), self.report_window);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut bodies = Vec::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                event = port.next() => {
                    let Some(event) = event else { break };
                    self.take(event, &mut bodies, &mut incidents, &metrics);
                    while bodies.len() < MAX_BATCH && let Some(event) = port.try_next() {
                        self.take(event, &mut bodies, &mut incidents, &metrics);
                    }
                }
                _ = tick.tick() => bodies.extend(incidents.tick(Instant::now()).map(stamped_now)),
            }
            append(&spool, &mut bodies, &stop).await?;
        }
        // Lines the thread read before the stop are kept, not thrown away with the channel.
        while let Some(event) = port.try_next() {
            self.take(event, &mut bodies, &mut incidents, &metrics);
        }
        bodies.extend(incidents.flush().map(stamped_now));
        append(&spool, &mut bodies, &stop).await?;
        port.join().await;
        Ok(())
    }

    fn take(
        &mut self,
        event: PortEvent,
        out: &mut Vec<Unsequenced>,
        incidents: &mut Incidents,
        metrics: &SourceMetrics,
    ) {
        let now = Instant::now();
        let (reason, sample): (&'static str, Vec<u8>) = match event {
            PortEvent::Line(line, at) => match self.handler.line(&line, at) {
                Ok(bodies) => {
                    out.extend(bodies);
                    return;
                }
                Err(reason) => (reason, line),
            },
            PortEvent::Overlong(n) => ("overlong", format!("({n} bytes)").into_bytes()),
            PortEvent::Partial(n) => ("partial", format!("({n} bytes)").into_bytes()),
            PortEvent::Opened => return,
            PortEvent::Lost(error) => {
                SourceMetrics::bump(&metrics.port_lost);
                out.extend(
                    incidents
                        .note("device_lost", error.as_bytes(), now)
                        .into_iter()
                        .map(stamped_now),
                );
                return;
            }
        };
        metrics.bad_line(reason);
        out.extend(
            incidents
                .note(reason, &sample, now)
                .into_iter()
                .map(stamped_now),
        );
    }
}

/// A record of something that happens now.
fn stamped_now(body: RecordBody) -> Unsequenced {
    crate::clock::record(body)
}

/// Appends `bodies` and empties it. A refused append (a full spool, a failed commit) is
/// retried every second until it succeeds or the source stops: records are never dropped
/// here, and while this waits the port thread waits too.
async fn append(
    spool: &Spool,
    bodies: &mut Vec<Unsequenced>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    if bodies.is_empty() {
        return Ok(());
    }
    let records = bodies
        .drain(..)
        .filter_map(|record| {
            let record = NewRecord::new(&record);
            // Handlers build only valid records; one that is not is a bug worth a log line,
            // not a reason to drop its neighbours.
            record
                .map_err(|e| warn!(error = %e, "serial source built an invalid record"))
                .ok()
        })
        .collect::<Vec<_>>();
    if records.is_empty() {
        return Ok(());
    }
    loop {
        match spool.append(records.clone()).await {
            Ok(_) => return Ok(()),
            Err(SpoolError::Closed) => {
                return Err(SpoolError::Closed).context("serial source could not append");
            }
            Err(e) => {
                warn!(error = %e, records = records.len(), "serial source: append refused; retrying in 1 s");
                tokio::select! {
                    // At shutdown, one last try already failed; the records are lost with
                    // the process, which the device cannot be told about anyway.
                    _ = stop.cancelled() => return Err(e).context("serial source stopped with records unstored"),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
