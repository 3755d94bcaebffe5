//! MQTT topics: `ferry/v1/{device_id}/{stream}` (README: MQTT topics).

use std::fmt;

use crate::ids::DeviceId;

pub const TOPIC_PREFIX: &str = "ferry/v1/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Envelopes of `reading`, `scan` and `event` records.
    Telemetry,
    /// Envelopes of `txn` records; drained before telemetry.
    Transactions,
    /// Retained online/offline and spool figures; the will says offline.
    Status,
    /// Cloud to device: a card's balances.
    Cards,
}

impl Stream {
    pub const ALL: [Stream; 4] = [
        Self::Telemetry,
        Self::Transactions,
        Self::Status,
        Self::Cards,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::Transactions => "transactions",
            Self::Status => "status",
            Self::Cards => "cards",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    pub device: DeviceId,
    pub stream: Stream,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic does not start with {TOPIC_PREFIX}")]
    Prefix,
    #[error("topic has no device level")]
    Shape,
    #[error("topic's device level is invalid: {0}")]
    Device(#[from] crate::ids::IdError),
    #[error("unknown stream {0:?}")]
    Stream(String),
}

impl Topic {
    pub fn new(device: DeviceId, stream: Stream) -> Self {
        Self { device, stream }
    }

    /// Parses a concrete topic (no wildcards, no `$share/` prefix).
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        let rest = s.strip_prefix(TOPIC_PREFIX).ok_or(TopicError::Prefix)?;
        let (device, stream) = rest.split_once('/').ok_or(TopicError::Shape)?;
        let stream = Stream::ALL
            .into_iter()
            .find(|k| k.as_str() == stream)
            .ok_or_else(|| TopicError::Stream(stream.to_owned()))?;
        Ok(Self {
            device: DeviceId::new(device)?,
            stream,
        })
    }

    /// The subscription filter for one stream of every device.
    pub fn filter_all(stream: Stream) -> String {
        format!("{TOPIC_PREFIX}+/{}", stream.as_str())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOPIC_PREFIX}{}/{}", self.device, self.stream.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse() {
        let t = Topic::new(DeviceId::new("ws-001").expect("id"), Stream::Telemetry);
        assert_eq!(t.to_string(), "ferry/v1/ws-001/telemetry");
        assert_eq!(Topic::parse(&t.to_string()), Ok(t));
        assert_eq!(
            Topic::filter_all(Stream::Transactions),
            "ferry/v1/+/transactions"
        );
    }

    #[test]
    fn parse_rejects() {
        let cases = [
            ("other/v1/ws/telemetry", TopicError::Prefix),
            ("ferry/v1/ws-001", TopicError::Shape),
            ("ferry/v1/ws-001/nope", TopicError::Stream("nope".into())),
            (
                "ferry/v1/ws-001/telemetry/x",
                TopicError::Stream("telemetry/x".into()),
            ),
        ];
        for (topic, want) in cases {
            assert_eq!(Topic::parse(topic), Err(want), "{topic}");
        }
        assert!(matches!(
            Topic::parse("ferry/v1/a b/status"),
            Err(TopicError::Device(_))
        ));
    }
}
