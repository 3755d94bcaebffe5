//! Builds envelopes from the spool: transactions first, as many records as fit in one
//! payload of at most 128 KiB, gzipped when that is smaller.

use ferry_shared::limits::MAX_PAYLOAD_BYTES;
use ferry_shared::{
    Compression, DeviceId, EnvelopeWriter, SpoolId, Stream, Timestamp, Topic, encode,
};
use tracing::error;

use crate::spool::{AckRange, Class, PendingRow, SpoolError, SpoolReader};

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
    level: u32,
    /// Highest seq already put in an envelope on this connection, per class.
    cursor: [u64; 2],
    /// Raw JSON bytes per payload byte, learnt from the last envelope.
    ratio: f64,
}

impl Batcher {
    pub fn new(reader: SpoolReader, device: DeviceId, spool: SpoolId, gzip_level: u32) -> Self {
        Self {
            reader,
            device,
            spool,
            level: gzip_level,
            cursor: [0; 2],
            ratio: 4.0,
        }
    }

    /// Starts again from the oldest unacknowledged record (after a reconnect).
    pub fn rewind(&mut self) {
        self.cursor = [0; 2];
    }

    /// The next envelope, or `None` when everything has been sent on this connection.
    pub fn next(&mut self) -> Result<Option<Batch>, SpoolError> {
        for class in Class::DRAIN_ORDER {
            let raw_target =
                ((MAX_PAYLOAD_BYTES as f64 * self.ratio * TARGET_FILL) as usize).min(MAX_RAW_BYTES);
            let mut rows =
                self.reader
                    .pending(class, self.cursor[class as usize], MAX_ROWS, raw_target)?;
            while let Some(last) = rows.last().map(|r| r.seq) {
                let json = self.envelope_json(&rows);
                let payload = encode(json.as_bytes(), Compression::Auto(self.level));
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
                            first: rows[0].seq,
                            last,
                        },
                        count: rows.len(),
                    }));
                }
                if rows.len() == 1 {
                    // Cannot happen for records the spool accepted (16 KiB each at most);
                    // skip it rather than stall the whole spool behind it. It stays spooled.
                    error!(
                        seq = last,
                        bytes = payload.len(),
                        "record too large for any envelope; skipped"
                    );
                    self.cursor[class as usize] = last;
                    rows.clear();
                    continue;
                }
                let keep = (rows.len() as f64 * MAX_PAYLOAD_BYTES as f64 * TARGET_FILL
                    / payload.len() as f64) as usize;
                rows.truncate(keep.clamp(1, rows.len() - 1));
            }
        }
        Ok(None)
    }

    fn envelope_json(&self, rows: &[PendingRow]) -> String {
        let mut w = EnvelopeWriter::new(&self.device, &self.spool, Timestamp::now());
        for row in rows {
            w.push(row.seq, &row.json);
        }
        w.finish()
    }
}
