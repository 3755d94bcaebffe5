//! Lake lines as typed rows, borrowed from the decompressed objects: one struct per record
//! type, each with the fields every line has (README: the lake).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

use super::time::micros;

/// What a row says besides its type's own fields.
pub trait Row<'a>: Deserialize<'a> {
    fn device(&self) -> &str;
    fn spool(&self) -> &str;
    /// Delta has no unsigned integers; a seq beyond i64 fails to parse, naming its line.
    fn seq(&self) -> i64;
    fn ts(&self) -> &str;
    fn received_at(&self) -> &str;
    fn ts_suspect(&self) -> bool;
}

macro_rules! row {
    ($name:ident { $( $(#[$meta:meta])* $field:ident : $ty:ty ),* $(,)? }) => {
        #[derive(Debug, Deserialize)]
        pub struct $name<'a> {
            seq: i64,
            #[serde(borrow)]
            ts: Cow<'a, str>,
            #[serde(borrow)]
            device: Cow<'a, str>,
            #[serde(borrow)]
            spool: Cow<'a, str>,
            #[serde(borrow)]
            received_at: Cow<'a, str>,
            #[serde(default)]
            ts_suspect: bool,
            $( $(#[$meta])* pub $field: $ty, )*
        }

        impl<'a> Row<'a> for $name<'a> {
            fn device(&self) -> &str { &self.device }
            fn spool(&self) -> &str { &self.spool }
            fn seq(&self) -> i64 { self.seq }
            fn ts(&self) -> &str { &self.ts }
            fn received_at(&self) -> &str { &self.received_at }
            fn ts_suspect(&self) -> bool { self.ts_suspect }
        }
    };
}

row!(Reading {
    #[serde(borrow)]
    sensor: Cow<'a, str>,
    #[serde(borrow)]
    metrics: Metrics<'a>,
});

row!(Scan {
    #[serde(borrow)]
    reader: Cow<'a, str>,
    #[serde(borrow)]
    card: Cow<'a, str>,
});

row!(Event {
    #[serde(borrow)]
    level: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
});

row!(Txn {
    #[serde(borrow)]
    tx_id: Cow<'a, str>,
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    program: Cow<'a, str>,
    #[serde(borrow)]
    card: Cow<'a, str>,
    #[serde(borrow)]
    store: Cow<'a, str>,
    #[serde(default)]
    qty: Option<i64>,
    #[serde(default)]
    amount_minor: Option<i64>,
    #[serde(borrow, default)]
    currency: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    receipt: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reverses: Option<Cow<'a, str>>,
    #[serde(default)]
    offline: bool,
});

/// A reading's metrics in the order the line gives them, without a map per row.
#[derive(Debug, Default)]
pub struct Metrics<'a>(pub Vec<(Cow<'a, str>, f64)>);

impl<'de: 'a, 'a> Deserialize<'de> for Metrics<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

        struct Entries<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for Entries<'a> {
            type Value = Metrics<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of metric names to numbers")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((Name(name), value)) = map.next_entry::<Name<'de>, f64>()? {
                    out.push((name, value));
                }
                Ok(Metrics(out))
            }
        }

        deserializer.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// A row with its timestamps read, ready to sort.
#[derive(Debug)]
pub struct Parsed<R> {
    pub row: R,
    pub ts: i64,
    pub received: i64,
    /// Ranks of its `(device, spool)` and its `device` among the day's, in text order, so
    /// that sorting compares integers rather than strings.
    pair: u32,
    device: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("{object} line {line}: {reason}")]
pub struct LineError {
    pub object: String,
    pub line: usize,
    pub reason: String,
}

/// Every line of one decompressed object.
pub fn parse<'a, R: Row<'a>>(
    object: &str,
    text: &'a [u8],
    out: &mut Vec<Parsed<R>>,
) -> Result<(), LineError> {
    let fail = |line: usize, reason: String| LineError {
        object: object.to_owned(),
        line,
        reason,
    };
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let row: R = serde_json::from_slice(line).map_err(|e| fail(n + 1, e.to_string()))?;
        let ts = micros(row.ts()).ok_or_else(|| fail(n + 1, format!("bad ts {:?}", row.ts())))?;
        let received = micros(row.received_at())
            .ok_or_else(|| fail(n + 1, format!("bad received_at {:?}", row.received_at())))?;
        out.push(Parsed {
            row,
            ts,
            received,
            pair: 0,
            device: 0,
        });
    }
    Ok(())
}

/// Sorted by `(device, ts)`, each `(device, spool, seq)` once: the copy received first.
/// Returns how many copies were left out.
pub fn dedupe_and_sort<'a, R: Row<'a>>(rows: &mut Vec<Parsed<R>>) -> usize {
    rank(rows);
    let before = rows.len();
    rows.sort_unstable_by_key(|r| (r.pair, r.row.seq(), r.received));
    rows.dedup_by(|later, first| later.pair == first.pair && later.row.seq() == first.row.seq());
    // Within a spool, seq order is nearly ts order: this sort finds runs already in place.
    rows.sort_by_key(|r| (r.device, r.ts, r.pair, r.row.seq()));
    before - rows.len()
}

/// Sets each row's `pair` and `device` ranks.
fn rank<'a, R: Row<'a>>(rows: &mut [Parsed<R>]) {
    let ranks: Vec<(u32, u32)> = {
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        let of_row: Vec<usize> = rows
            .iter()
            .map(|r| {
                let next = seen.len();
                *seen.entry((r.row.device(), r.row.spool())).or_insert(next)
            })
            .collect();
        let mut pairs: Vec<((&str, &str), usize)> = seen.into_iter().collect();
        pairs.sort_unstable();
        let mut by_first_seen = vec![(0u32, 0u32); pairs.len()];
        let mut device = 0u32;
        for (pair, ((name, _), first_seen)) in pairs.iter().enumerate() {
            if pair > 0 && pairs[pair - 1].0.0 != *name {
                device += 1;
            }
            by_first_seen[*first_seen] = (pair as u32, device);
        }
        of_row.into_iter().map(|i| by_first_seen[i]).collect()
    };
    for (r, (pair, device)) in rows.iter_mut().zip(ranks) {
        r.pair = pair;
        r.device = device;
    }
}

/// What the ledger made of a transaction, where it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `applied`, `duplicate`, `held` or `rejected`.
    pub outcome: &'static str,
    pub reason: Option<String>,
}

/// The ledger's answers by `tx_id`, per row: in a day's rows, the first record of an
/// applied `tx_id` is `applied` and any later one (another record of the same
/// transaction) is `duplicate`.
pub fn outcomes<R>(
    rows: &[Parsed<R>],
    tx_id: impl Fn(&R) -> Option<&str>,
    ledger: &HashMap<String, Outcome>,
) -> Vec<Option<Outcome>> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let Some(id) = tx_id(&r.row) else { continue };
        first
            .entry(id)
            .and_modify(|at| {
                let current = &rows[*at];
                if (r.ts, r.received) < (current.ts, current.received) {
                    *at = i;
                }
            })
            .or_insert(i);
    }
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let id = tx_id(&r.row)?;
            let known = ledger.get(id)?;
            if known.outcome == "applied" && first.get(id) != Some(&i) {
                return Some(Outcome {
                    outcome: "duplicate",
                    reason: None,
                });
            }
            Some(known.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(device: &str, seq: u64, ts: &str, received: &str) -> String {
        format!(
            r#"{{"seq":{seq},"ts":"{ts}","type":"reading","sensor":"s","metrics":{{"t\u00b0":1.5,"h":2}},"device":"{device}","spool":"S1","received_at":"{received}"}}"#
        )
    }

    #[test]
    fn resends_are_dropped_and_rows_sorted_by_device_then_ts() {
        let text = [
            line(
                "b",
                2,
                "2026-11-22T09:00:02.000Z",
                "2026-11-22T09:00:05.000Z",
            ),
            line(
                "a",
                1,
                "2026-11-22T09:00:03.000Z",
                "2026-11-22T09:00:09.000Z",
            ),
            line(
                "b",
                1,
                "2026-11-22T09:00:01.000Z",
                "2026-11-22T09:00:05.000Z",
            ),
            // A resend, received later: the first copy stays.
            line(
                "b",
                2,
                "2026-11-22T09:00:02.000Z",
                "2026-11-22T09:01:00.000Z",
            ),
        ]
        .join("\n");
        let mut rows: Vec<Parsed<Reading>> = Vec::new();
        parse("o", text.as_bytes(), &mut rows).expect("parse");
        assert_eq!(dedupe_and_sort(&mut rows), 1);
        let order: Vec<_> = rows.iter().map(|r| (r.row.device(), r.row.seq())).collect();
        assert_eq!(order, [("a", 1), ("b", 1), ("b", 2)]);
        assert_eq!(
            rows[2].received,
            micros("2026-11-22T09:00:05.000Z").expect("ts")
        );
        // An escaped metric name is read, not refused.
        assert_eq!(rows[0].row.metrics.0[0].0, "t\u{b0}");
    }

    #[test]
    fn a_bad_line_is_named() {
        let mut rows: Vec<Parsed<Reading>> = Vec::new();
        let text = format!(
            "{}\n{{\"seq\":1}}\n",
            line(
                "a",
                1,
                "2026-11-22T09:00:03.000Z",
                "2026-11-22T09:00:09.000Z"
            )
        );
        let err = parse("raw/x.ndjson.gz", text.as_bytes(), &mut rows).expect_err("bad");
        assert_eq!((err.object.as_str(), err.line), ("raw/x.ndjson.gz", 2));
    }
}
