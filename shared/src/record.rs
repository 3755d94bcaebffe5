//! Records: what happened on a device, one per spool row (README: envelopes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::ids::TxId;
use crate::limits::{MAX_AMOUNT_MINOR, MAX_METRICS, MAX_QTY, MAX_RECORD_BYTES, MAX_TEXT_LEN};
use crate::time::Timestamp;

/// A record as it travels inside an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub ts: Timestamp,
    /// The device's clock was not yet believable when it stamped `ts` (README: clocks).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ts_suspect: bool,
    #[serde(flatten)]
    pub body: RecordBody,
}

/// Everything of a record but its `seq`, which only the spool assigns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unsequenced {
    pub ts: Timestamp,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ts_suspect: bool,
    #[serde(flatten)]
    pub body: RecordBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordBody {
    Reading {
        sensor: String,
        /// Metric name (units in the name) to a finite number.
        metrics: BTreeMap<String, f64>,
    },
    Scan {
        reader: String,
        card: String,
    },
    Event {
        level: EventLevel,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    Txn(Txn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventLevel {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TxnOp {
    Stamp,
    Earn,
    Redeem,
    Reverse,
}

/// A loyalty transaction. `tx_id` is its worldwide idempotency key. The schema's bounds are
/// those of [`crate::limits`] (a test in the cloud checks that they agree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Txn {
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    pub tx_id: TxId,
    pub op: TxnOp,
    #[schema(min_length = 1, max_length = 256)]
    pub program: String,
    #[schema(min_length = 1, max_length = 256)]
    pub card: String,
    #[schema(min_length = 1, max_length = 256)]
    pub store: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub qty: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub amount_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub receipt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 128)]
    pub reverses: Option<TxId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    /// The cashier who rang it up, so that an offline overdraft can be traced to a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub staff: Option<String>,
}

impl RecordBody {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Reading { .. } => "reading",
            Self::Scan { .. } => "scan",
            Self::Event { .. } => "event",
            Self::Txn(_) => "txn",
        }
    }

    pub fn is_txn(&self) -> bool {
        matches!(self, Self::Txn(_))
    }

    /// Checks every rule that the types alone do not express.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Self::Reading { sensor, metrics } => {
                text("sensor", sensor)?;
                if metrics.is_empty() {
                    return Err(WireError::MissingField("metrics".into()));
                }
                if metrics.len() > MAX_METRICS {
                    return Err(WireError::invalid(
                        "metrics",
                        format!("more than {MAX_METRICS} in one reading"),
                    ));
                }
                for (name, value) in metrics {
                    text("metrics", name)?;
                    if !value.is_finite() {
                        return Err(WireError::NonFiniteMetric {
                            metric: name.clone(),
                        });
                    }
                }
                Ok(())
            }
            Self::Scan { reader, card } => {
                text("reader", reader)?;
                text("card", card)
            }
            Self::Event { message, code, .. } => {
                if message.len() > 16 * MAX_TEXT_LEN {
                    return Err(WireError::invalid("message", "longer than 4096 bytes"));
                }
                code.as_deref().map_or(Ok(()), |c| text("code", c))
            }
            Self::Txn(txn) => txn.validate(),
        }
    }
}

impl Txn {
    pub fn validate(&self) -> Result<(), WireError> {
        text("program", &self.program)?;
        text("card", &self.card)?;
        text("store", &self.store)?;
        if let Some(qty) = self.qty
            && !(1..=MAX_QTY).contains(&qty)
        {
            return Err(WireError::invalid(
                "qty",
                format!("must be an integer from 1 to {MAX_QTY}"),
            ));
        }
        if let Some(amount) = self.amount_minor
            && !(0..=MAX_AMOUNT_MINOR).contains(&amount)
        {
            return Err(WireError::invalid(
                "amount_minor",
                format!("must be from 0 to {MAX_AMOUNT_MINOR}"),
            ));
        }
        if let Some(currency) = &self.currency
            && !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(WireError::invalid(
                "currency",
                "must be an ISO 4217 code like EUR",
            ));
        }
        if let Some(receipt) = &self.receipt {
            text("receipt", receipt)?;
        }
        if let Some(staff) = &self.staff {
            text("staff", staff)?;
        }
        match self.op {
            TxnOp::Stamp | TxnOp::Redeem if self.qty.is_none() => {
                Err(WireError::MissingField("qty".into()))
            }
            TxnOp::Earn if self.qty.is_none() && self.amount_minor.is_none() => {
                Err(WireError::MissingField("qty or amount_minor".into()))
            }
            TxnOp::Reverse => match &self.reverses {
                None => Err(WireError::MissingField("reverses".into())),
                Some(r) if *r == self.tx_id => Err(WireError::invalid(
                    "reverses",
                    "a transaction cannot reverse itself",
                )),
                Some(_) => Ok(()),
            },
            _ if self.reverses.is_some() => Err(WireError::invalid(
                "reverses",
                "only allowed with op \"reverse\"",
            )),
            _ => Ok(()),
        }
    }
}

impl Unsequenced {
    pub fn new(ts: Timestamp, body: RecordBody) -> Self {
        Self {
            ts,
            ts_suspect: false,
            body,
        }
    }

    /// Flagged `ts_suspect` when `suspect`: stamped by a clock not yet believable.
    pub fn suspect(mut self, suspect: bool) -> Self {
        self.ts_suspect = suspect;
        self
    }

    /// Validates and serialises the record for the spool: `{"ts":..,"type":..,..}`.
    /// [`crate::EnvelopeWriter::push`] later splices the `seq` in without reparsing.
    pub fn to_spool_json(&self) -> Result<String, WireError> {
        self.body.validate()?;
        let json =
            serde_json::to_string(self).map_err(|e| WireError::invalid("record", e.to_string()))?;
        if json.len() > MAX_RECORD_BYTES {
            return Err(WireError::RecordTooLarge {
                bytes: json.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        Ok(json)
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

fn text(field: &str, value: &str) -> Result<(), WireError> {
    if value.is_empty() {
        return Err(WireError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(WireError::invalid(
            field,
            format!("longer than {MAX_TEXT_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(WireError::invalid(field, "contains control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(op: TxnOp) -> Txn {
        Txn {
            tx_id: TxId::new("t-1").expect("id"),
            op,
            program: "coffee".into(),
            card: "C-1".into(),
            store: "S-1".into(),
            qty: Some(1),
            amount_minor: None,
            currency: None,
            receipt: None,
            reverses: None,
            offline: false,
            staff: None,
        }
    }

    #[test]
    fn txn_rules() {
        let reverse_ok = Txn {
            reverses: Some(TxId::new("t-0").expect("id")),
            ..txn(TxnOp::Reverse)
        };
        let cases: Vec<(Txn, Option<&str>)> = vec![
            (txn(TxnOp::Stamp), None),
            (
                Txn {
                    qty: None,
                    ..txn(TxnOp::Stamp)
                },
                Some("missing_field"),
            ),
            (
                Txn {
                    qty: Some(0),
                    ..txn(TxnOp::Stamp)
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    qty: None,
                    amount_minor: Some(450),
                    ..txn(TxnOp::Earn)
                },
                None,
            ),
            (
                Txn {
                    qty: Some(MAX_QTY),
                    ..txn(TxnOp::Redeem)
                },
                None,
            ),
            (
                Txn {
                    qty: Some(MAX_QTY + 1),
                    ..txn(TxnOp::Stamp)
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    qty: Some(u64::MAX),
                    ..txn(TxnOp::Redeem)
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    qty: Some(i64::MAX as u64),
                    ..txn(TxnOp::Stamp)
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    qty: None,
                    amount_minor: Some(MAX_AMOUNT_MINOR + 1),
                    ..txn(TxnOp::Earn)
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    qty: None,
                    ..txn(TxnOp::Earn)
                },
                Some("missing_field"),
            ),
            (
                Txn {
                    amount_minor: Some(-1),
                    ..txn(TxnOp::Earn)
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    qty: None,
                    ..txn(TxnOp::Redeem)
                },
                Some("missing_field"),
            ),
            (txn(TxnOp::Reverse), Some("missing_field")),
            (reverse_ok.clone(), None),
            (
                Txn {
                    reverses: Some(TxId::new("t-1").expect("id")),
                    ..txn(TxnOp::Reverse)
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    op: TxnOp::Stamp,
                    ..reverse_ok
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    card: String::new(),
                    ..txn(TxnOp::Stamp)
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    currency: Some("eur".into()),
                    ..txn(TxnOp::Stamp)
                },
                Some("invalid_field"),
            ),
            (
                Txn {
                    currency: Some("EUR".into()),
                    ..txn(TxnOp::Stamp)
                },
                None,
            ),
        ];
        for (i, (t, want)) in cases.into_iter().enumerate() {
            let got = t.validate().err().map(|e| e.reason_code());
            assert_eq!(got, want, "case {i}: {t:?}");
        }
    }

    #[test]
    fn a_reading_has_at_most_max_metrics() {
        let reading = |n: usize| RecordBody::Reading {
            sensor: "s".into(),
            metrics: (0..n).map(|i| (format!("m{i}"), 1.0)).collect(),
        };
        assert!(reading(MAX_METRICS).validate().is_ok());
        assert_eq!(
            reading(MAX_METRICS + 1)
                .validate()
                .map_err(|e| e.reason_code()),
            Err("invalid_field")
        );
    }

    #[test]
    fn non_finite_metric_is_refused() {
        let body = RecordBody::Reading {
            sensor: "s".into(),
            metrics: [("t".to_owned(), f64::NAN)].into(),
        };
        assert_eq!(
            body.validate().map_err(|e| e.reason_code()),
            Err("non_finite_metric")
        );
    }

    #[test]
    fn spool_json_has_ts_first_and_no_seq() {
        let ts = Timestamp::parse("2026-11-22T09:59:58Z").expect("ts");
        let json = Unsequenced::new(
            ts,
            RecordBody::Scan {
                reader: "r".into(),
                card: "C".into(),
            },
        )
        .to_spool_json()
        .expect("json");
        assert_eq!(
            json,
            r#"{"ts":"2026-11-22T09:59:58.000Z","type":"scan","reader":"r","card":"C"}"#
        );
    }
}
