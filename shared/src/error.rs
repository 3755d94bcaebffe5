//! Why a payload or record was refused. Receivers branch on the variant; the lake's
//! `errors/` objects carry [`WireError::reason_code`].

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("payload is {bytes} bytes, over the {limit}-byte limit")]
    Oversize { bytes: usize, limit: usize },
    #[error("payload starts with the gzip magic but does not gunzip: {0}")]
    BadGzip(String),
    #[error("payload is not a JSON envelope: {0}")]
    NotJson(String),
    #[error("unknown envelope version {0}")]
    UnknownVersion(String),
    #[error("envelope device {envelope:?} does not match topic device {topic:?}")]
    DeviceMismatch { topic: String, envelope: String },
    #[error("metric {metric:?} is not a finite number")]
    NonFiniteMetric { metric: String },
    #[error("missing field {0}")]
    MissingField(String),
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("record is {bytes} bytes of JSON, over the {limit}-byte record limit")]
    RecordTooLarge { bytes: usize, limit: usize },
}

impl WireError {
    /// A stable, machine-readable reason: the `reason` of lake error lines and the label of
    /// reject metrics.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Oversize { .. } => "oversize",
            Self::BadGzip(_) => "bad_gzip",
            Self::NotJson(_) => "not_json",
            Self::UnknownVersion(_) => "unknown_version",
            Self::DeviceMismatch { .. } => "device_mismatch",
            Self::NonFiniteMetric { .. } => "non_finite_metric",
            Self::MissingField(_) => "missing_field",
            Self::InvalidField { .. } => "invalid_field",
            Self::RecordTooLarge { .. } => "record_too_large",
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// Maps a serde_json failure to the most useful reason. serde_json refuses `NaN` and
    /// `Infinity` (which Python's `json.dumps` emits) as syntax, but the sender's real fault
    /// is a non-finite metric, so that is what we report.
    pub(crate) fn from_json(err: &serde_json::Error, text: &[u8]) -> Self {
        use serde_json::error::Category;
        let msg = err.to_string();
        match err.classify() {
            Category::Data => {
                if let Some(rest) = msg.strip_prefix("missing field `") {
                    let field = rest.split('`').next().unwrap_or_default();
                    return Self::MissingField(field.to_owned());
                }
                Self::InvalidField {
                    field: "envelope".into(),
                    reason: msg,
                }
            }
            Category::Syntax if msg.contains("number out of range") => Self::NonFiniteMetric {
                metric: format!("(unparsed: {msg})"),
            },
            Category::Syntax | Category::Eof | Category::Io => {
                if has_non_finite_token(text) {
                    Self::NonFiniteMetric {
                        metric: format!("(unparsed: {msg})"),
                    }
                } else {
                    Self::NotJson(msg)
                }
            }
        }
    }
}

fn has_non_finite_token(text: &[u8]) -> bool {
    // Only where a JSON value may start, so a string such as "NaN ok" does not count.
    let at_value_start = |i: usize| {
        text[..i]
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b':' | b',' | b'[' | b'-'))
    };
    [&b"NaN"[..], b"Infinity"].iter().any(|token| {
        text.windows(token.len())
            .enumerate()
            .any(|(i, w)| w == *token && at_value_start(i))
    })
}
