//! The Ferry wire format (README: MQTT topics, envelopes): the only place that knows how records,
//! envelopes and topics look on the wire.
//!
//! Producers build [`Record`]s, check them with [`Record::validate`], and frame them with
//! [`EnvelopeWriter`]; consumers call [`decode`], which detects gzip by its magic bytes,
//! enforces the limits in [`limits`] and validates every record.

pub mod backoff;
pub mod card;
pub mod config_env;
pub mod durable_dir;
pub mod envelope;
pub mod error;
pub mod fleet;
#[cfg(feature = "http-server")]
pub mod http_server;
pub mod ids;
pub mod limits;
pub mod manifest;
#[cfg(feature = "mqtt-probe")]
pub mod mqtt_probe;
pub mod openapi;
pub mod record;
pub mod rules;
pub mod sensor_line;
pub mod signing;
pub mod time;
pub mod tls;
pub mod token;
pub mod topic;

pub use card::CardBlock;
pub use envelope::{Compression, Envelope, EnvelopeWriter, Gzipper, decode, encode};
pub use error::WireError;
pub use ids::{DeviceId, IdError, SpoolId, TxId};
pub use record::{EventLevel, Record, RecordBody, Txn, TxnOp};
pub use time::Timestamp;
pub use token::Token;
pub use topic::{Stream, Topic, TopicError};
