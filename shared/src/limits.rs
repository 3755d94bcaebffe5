//! Hard limits of the wire, shared by the agent and the cloud.

/// Largest payload on the wire, after compression: AWS IoT Core's message size limit.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// Largest single record, as JSON. Well under [`MAX_PAYLOAD_BYTES`], so that every record
/// that is accepted into a spool fits into some envelope however badly it compresses.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Largest payload after gunzip. Guards receivers against decompression bombs; real
/// envelopes of readings compress about 8:1, so this leaves ample room.
pub const MAX_DECOMPRESSED_BYTES: usize = 16 * 1024 * 1024;

/// The only envelope version this crate reads and writes.
pub const ENVELOPE_VERSION: u32 = 1;

/// Longest device id (also the IoT thing name and MQTT client id).
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Longest `tx_id`.
pub const MAX_TX_ID_LEN: usize = 128;

/// Longest free-text field (sensor, reader, card, program, store, message, ...).
pub const MAX_TEXT_LEN: usize = 256;
