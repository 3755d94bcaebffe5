//! Hard limits of the wire, shared by the agent and the cloud.

/// Largest payload on the wire, after compression: AWS IoT Core's message size limit.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// Largest single record, as JSON. Well under [`MAX_PAYLOAD_BYTES`], so that every record
/// that is accepted into a spool fits into some envelope however badly it compresses; and
/// small enough that one record cannot weigh on a dashboard or a ledger row.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// Largest status message (the retained `status` topic), as received.
pub const MAX_STATUS_BYTES: usize = 4 * 1024;

/// Most metrics in one reading: each is a series of its own on the dashboards.
pub const MAX_METRICS: usize = 64;

/// Largest `qty` of one transaction: stamps, points or rewards. A till that means more
/// sends more transactions; far beyond it is a typo or an attack, and never a wrap.
pub const MAX_QTY: u64 = 10_000;

/// Largest `amount_minor` of one transaction: 10 million in major units (1e9 minor
/// units), past any basket, far from where points arithmetic could overflow.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000;

/// The earliest timestamp that moves state (dashboards, alarms): before it, a device's
/// clock is unset.
pub const EARLIEST_STATE_TS_MS: i64 = 946_684_800_000; // 2000-01-01T00:00:00Z

/// How far ahead of the receiver's clock a timestamp may be and still move state.
pub const MAX_CLOCK_AHEAD_MS: i64 = 24 * 3600 * 1000;

/// Whether a device's `ts` may move state at a receiver whose clock reads `now_ms`:
/// between 2000-01-01 and one day ahead. Outside, the record is still kept (the lake has
/// it, flagged `ts_suspect`), but it moves no latest value, rollup or alarm.
pub fn ts_drives_state(ts_ms: i64, now_ms: i64) -> bool {
    (EARLIEST_STATE_TS_MS..=now_ms.saturating_add(MAX_CLOCK_AHEAD_MS)).contains(&ts_ms)
}

/// Most JSON the agent puts into one envelope before compression (plus at most one
/// record's overshoot): with [`MAX_PAYLOAD_BYTES`] it bounds an envelope's memory however
/// well its records compress.
pub const MAX_ENVELOPE_JSON_BYTES: usize = 1024 * 1024;

/// Largest payload after gunzip. Guards receivers against decompression bombs: four times
/// the agent's own largest envelope ([`MAX_ENVELOPE_JSON_BYTES`] and one record), so a
/// third-party device that batches a little differently still fits.
pub const MAX_DECOMPRESSED_BYTES: usize = 4 * MAX_ENVELOPE_JSON_BYTES;

/// The only envelope version this crate reads and writes.
pub const ENVELOPE_VERSION: u32 = 1;

/// Longest device id (also the IoT thing name and MQTT client id).
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Longest `tx_id`.
pub const MAX_TX_ID_LEN: usize = 128;

/// Longest free-text field (sensor, reader, card, program, store, message, ...).
pub const MAX_TEXT_LEN: usize = 256;
