//! The curated tables: one per record type, their columns, and rows as Arrow batches.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanArray, Float64Builder, Int64Array, MapArray, StringArray,
    StringBuilder, StructArray, TimestampMicrosecondArray,
};
use deltalake::arrow::buffer::OffsetBuffer;
use deltalake::arrow::datatypes::{DataType as ArrowType, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::{DataType, MapType, StructField};

use super::CompactError;
use super::rows::{Event, Outcome, Parsed, Reading, Row, Scan, Txn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Readings,
    Scans,
    Events,
    Transactions,
}

/// The partition column: the record's day in UTC (README: the lake).
pub const PARTITION: &str = "dt";

impl Table {
    pub const ALL: [Self; 4] = [
        Self::Readings,
        Self::Scans,
        Self::Events,
        Self::Transactions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Readings => "readings",
            Self::Scans => "scans",
            Self::Events => "events",
            Self::Transactions => "transactions",
        }
    }

    /// The `type=` of its raw objects.
    pub fn raw_type(self) -> &'static str {
        match self {
            Self::Readings => "reading",
            Self::Scans => "scan",
            Self::Events => "event",
            Self::Transactions => "txn",
        }
    }

    /// Its folder under `lake.root`.
    pub fn key(self) -> String {
        format!("curated/{}", self.name())
    }

    pub fn columns(self) -> Vec<StructField> {
        let string = |name: &str| StructField::new(name, DataType::STRING, false);
        let maybe = |name: &str| StructField::new(name, DataType::STRING, true);
        let mut columns = vec![
            string("device"),
            string("spool"),
            StructField::new("seq", DataType::LONG, false),
            StructField::new("ts", DataType::TIMESTAMP, false),
            StructField::new("received", DataType::TIMESTAMP, false),
            StructField::new("ts_suspect", DataType::BOOLEAN, false),
        ];
        columns.extend(match self {
            Self::Readings => vec![
                string("sensor"),
                StructField::new(
                    "metrics",
                    MapType::new(DataType::STRING, DataType::DOUBLE, false),
                    false,
                ),
            ],
            Self::Scans => vec![string("reader"), string("card")],
            Self::Events => vec![string("level"), string("message"), maybe("code")],
            Self::Transactions => vec![
                string("tx_id"),
                string("op"),
                string("program"),
                string("card"),
                string("store"),
                StructField::new("qty", DataType::LONG, true),
                StructField::new("amount_minor", DataType::LONG, true),
                maybe("currency"),
                maybe("receipt"),
                maybe("reverses"),
                StructField::new("offline", DataType::BOOLEAN, false),
                maybe("outcome"),
                maybe("reason"),
            ],
        });
        columns.push(string(PARTITION));
        columns
    }
}

/// Rows of one type as Arrow columns.
pub trait Columns<'a>: Row<'a> + Sized {
    /// The transaction a row carries, for the ledger's outcome.
    fn tx_id(&self) -> Option<&str> {
        None
    }

    /// This type's own columns by name.
    fn own(rows: &[Parsed<Self>], extra: &Extra, schema: &Schema) -> Result<Named, CompactError>;
}

type Named = Vec<(&'static str, ArrayRef)>;

/// What a row's columns need beyond its line: for transactions, the ledger's outcome of
/// each row, aligned with the rows (empty for other types, or when the ledger is not known).
pub type Extra = [Option<Outcome>];

pub fn batch<'a, R: Columns<'a>>(
    rows: &[Parsed<R>],
    extra: &Extra,
    schema: &Arc<Schema>,
    day: &str,
) -> Result<RecordBatch, CompactError> {
    let micros = |values: Vec<i64>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
    };
    let mut named: Named = vec![
        ("device", strings(rows, |r| r.device())),
        ("spool", strings(rows, |r| r.spool())),
        (
            "seq",
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.row.seq()),
            )),
        ),
        ("ts", micros(rows.iter().map(|r| r.ts).collect())),
        (
            "received",
            micros(rows.iter().map(|r| r.received).collect()),
        ),
        (
            "ts_suspect",
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.row.ts_suspect()).collect::<Vec<_>>(),
            )),
        ),
        (
            PARTITION,
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                day,
                rows.len(),
            ))),
        ),
    ];
    named.extend(R::own(rows, extra, schema)?);
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            named
                .iter()
                .find(|(name, _)| *name == field.name())
                .map(|(_, array)| array.clone())
                .ok_or_else(|| CompactError::Schema(format!("no column {}", field.name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| CompactError::Schema(e.to_string()))
}

fn strings<'r, T: 'r>(rows: &'r [Parsed<T>], f: impl Fn(&'r T) -> &'r str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| f(&r.row)),
    ))
}

fn maybe_strings<'r, T: 'r>(
    rows: &'r [Parsed<T>],
    f: impl Fn(&'r T) -> Option<&'r str>,
) -> ArrayRef {
    Arc::new(StringArray::from_iter(rows.iter().map(|r| f(&r.row))))
}

impl<'a> Columns<'a> for Reading<'a> {
    fn own(rows: &[Parsed<Self>], _: &Extra, schema: &Schema) -> Result<Named, CompactError> {
        // The entries' field names and nullability as Delta's Arrow schema has them.
        let field = schema
            .field_with_name("metrics")
            .map_err(|e| CompactError::Schema(e.to_string()))?;
        let ArrowType::Map(entries, sorted) = field.data_type() else {
            return Err(CompactError::Schema("metrics is not a map".into()));
        };
        let ArrowType::Struct(entry_fields) = entries.data_type() else {
            return Err(CompactError::Schema(
                "metrics entries are not a struct".into(),
            ));
        };
        let count: usize = rows.iter().map(|r| r.row.metrics.0.len()).sum();
        let mut names = StringBuilder::with_capacity(count, count * 8);
        let mut values = Float64Builder::with_capacity(count);
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0i32);
        for r in rows {
            for (name, value) in &r.row.metrics.0 {
                names.append_value(name);
                values.append_value(*value);
            }
            let end = i32::try_from(names.len())
                .map_err(|_| CompactError::Schema("over 2^31 metric values in a batch".into()))?;
            offsets.push(end);
        }
        let entries_array = StructArray::try_new(
            entry_fields.clone(),
            vec![Arc::new(names.finish()), Arc::new(values.finish())],
            None,
        )
        .map_err(|e| CompactError::Schema(e.to_string()))?;
        let metrics = MapArray::try_new(
            entries.clone(),
            OffsetBuffer::new(offsets.into()),
            entries_array,
            None,
            *sorted,
        )
        .map_err(|e| CompactError::Schema(e.to_string()))?;
        Ok(vec![
            ("sensor", strings(rows, |r| &r.sensor)),
            ("metrics", Arc::new(metrics)),
        ])
    }
}

impl<'a> Columns<'a> for Scan<'a> {
    fn own(rows: &[Parsed<Self>], _: &Extra, _: &Schema) -> Result<Named, CompactError> {
        Ok(vec![
            ("reader", strings(rows, |r| &r.reader)),
            ("card", strings(rows, |r| &r.card)),
        ])
    }
}

impl<'a> Columns<'a> for Event<'a> {
    fn own(rows: &[Parsed<Self>], _: &Extra, _: &Schema) -> Result<Named, CompactError> {
        Ok(vec![
            ("level", strings(rows, |r| &r.level)),
            ("message", strings(rows, |r| &r.message)),
            ("code", maybe_strings(rows, |r| r.code.as_deref())),
        ])
    }
}

impl<'a> Columns<'a> for Txn<'a> {
    fn tx_id(&self) -> Option<&str> {
        Some(&self.tx_id)
    }

    fn own(rows: &[Parsed<Self>], extra: &Extra, _: &Schema) -> Result<Named, CompactError> {
        let outcome = |i: usize| extra.get(i).and_then(Option::as_ref);
        Ok(vec![
            ("tx_id", strings(rows, |r| &r.tx_id)),
            ("op", strings(rows, |r| &r.op)),
            ("program", strings(rows, |r| &r.program)),
            ("card", strings(rows, |r| &r.card)),
            ("store", strings(rows, |r| &r.store)),
            (
                "qty",
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.row.qty))),
            ),
            (
                "amount_minor",
                Arc::new(Int64Array::from_iter(
                    rows.iter().map(|r| r.row.amount_minor),
                )),
            ),
            ("currency", maybe_strings(rows, |r| r.currency.as_deref())),
            ("receipt", maybe_strings(rows, |r| r.receipt.as_deref())),
            ("reverses", maybe_strings(rows, |r| r.reverses.as_deref())),
            (
                "offline",
                Arc::new(BooleanArray::from(
                    rows.iter().map(|r| r.row.offline).collect::<Vec<_>>(),
                )),
            ),
            (
                "outcome",
                Arc::new(StringArray::from_iter(
                    (0..rows.len()).map(|i| outcome(i).map(|o| o.outcome)),
                )),
            ),
            (
                "reason",
                Arc::new(StringArray::from_iter(
                    (0..rows.len()).map(|i| outcome(i).and_then(|o| o.reason.as_deref())),
                )),
            ),
        ])
    }
}
