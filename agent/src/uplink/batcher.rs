//! Builds envelopes from the spool: transactions first, as many records as fit in one
//! payload of about the size the link asks for (`link`), never above 128 KiB, gzipped when
//! that is smaller.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_shared::limits::MAX_PAYLOAD_BYTES;
use ferry_shared::{DeviceId, EnvelopeWriter, Gzipper, SpoolId, Stream, Timestamp, Topic};
use tracing::error;

use crate::spool::{AckRange, Class, Held, SpoolError, SpoolReader};

/// Most records read for one envelope, and most raw JSON built for one: together they bound
/// the memory an envelope takes, however well the records compress.
const MAX_ROWS: usize = 10_000;
const MAX_RAW_BYTES: usize = ferry_shared::limits::MAX_ENVELOPE_JSON_BYTES;

/// Aim a little under the limit, so that a guess from the last ratio rarely overshoots.
const TARGET_FILL: f64 = 0.92;

pub struct Batch {
    pub topic: String,
    pub payload: Vec<u8>,
    pub records: AckRange,
    pub count: usize,
}

pub struct Batcher {
    reader: SpoolReader,
    device: DeviceId,
    spool: SpoolId,
    gzip: Gzipper,
    /// Highest seq already put in an envelope on this connection, per class.
    cursor: [u64; 2],
    /// Raw JSON bytes per payload byte, learnt from the last envelope.
    ratio: f64,
    /// Reused from one envelope to the next: a backlog drain builds thousands of them.
    writer: EnvelopeWriter,
    /// The seq and body length of each record in `writer`.
    rows: Vec<(u64, u64)>,
    /// The payload size to aim for, set by the uplink from what the link carries.
    target: Arc<AtomicUsize>,
}

impl Batcher {
    pub fn new(
        reader: SpoolReader,
        device: DeviceId,
        spool: SpoolId,
        gzip_level: u32,
        target: Arc<AtomicUsize>,
    ) -> Self {
        let writer = EnvelopeWriter::new(&device, &spool, Timestamp::now());
        Self {
            reader,
            device,
            spool,
            gzip: Gzipper::new(gzip_level),
            cursor: [0; 2],
            ratio: 4.0,
            writer,
            rows: Vec::new(),
            target,
        }
    }

    /// Starts again from the oldest unacknowledged record (after a reconnect).
    pub fn rewind(&mut self) {
        self.cursor = [0; 2];
    }

    /// The next envelope, or `None` when everything has been sent on this connection.
    pub fn next(&mut self) -> Result<Option<Batch>, SpoolError> {
        let target = self
            .target
            .load(Ordering::Relaxed)
            .clamp(1, MAX_PAYLOAD_BYTES);
        for class in Class::DRAIN_ORDER {
            let raw_target =
                ((target as f64 * self.ratio * TARGET_FILL) as usize).min(MAX_RAW_BYTES);
            let Self {
                reader,
                writer,
                rows,
                ..
            } = self;
            writer.restart(&self.device, &self.spool, Timestamp::now());
            rows.clear();
            reader.visit_pending(
                class,
                self.cursor[class as usize],
                MAX_ROWS,
                raw_target,
                |seq, json| {
                    writer.push(seq, json);
                    rows.push((seq, json.len() as u64));
                },
            )?;
            while let Some(&(last, _)) = self.rows.last() {
                let json = self.writer.json();
                let payload = self.gzip.auto(json.as_bytes());
                self.ratio = (json.len() as f64 / payload.len() as f64).clamp(1.0, 50.0);
                if payload.len() <= MAX_PAYLOAD_BYTES {
                    self.cursor[class as usize] = last;
                    let stream = match class {
                        Class::Transaction => Stream::Transactions,
                        Class::Telemetry => Stream::Telemetry,
                    };
                    return Ok(Some(Batch {
                        topic: Topic::new(self.device.clone(), stream).to_string(),
                        payload,
                        records: AckRange {
                            class,
                            first: self.rows[0].0,
                            last,
                            held: Some(Held {
                                records: self.rows.len() as u64,
                                bytes: self.rows.iter().map(|&(_, len)| len).sum(),
                            }),
                        },
                        count: self.rows.len(),
                    }));
                }
                if self.rows.len() == 1 {
                    // Cannot happen for records the spool accepted (16 KiB each at most);
                    // skip it rather than stall the whole spool behind it. It stays spooled.
                    error!(
                        seq = last,
                        bytes = payload.len(),
                        "record too large for any envelope; skipped"
                    );
                    self.cursor[class as usize] = last;
                    self.rows.clear();
                    continue;
                }
                // Too large: drop records from the end, in proportion, and compress again.
                let keep = (self.rows.len() as f64 * MAX_PAYLOAD_BYTES as f64 * TARGET_FILL
                    / payload.len() as f64) as usize;
                let keep = keep.clamp(1, self.rows.len() - 1);
                self.rows.truncate(keep);
                self.writer.truncate(keep);
            }
        }
        Ok(None)
    }
}
