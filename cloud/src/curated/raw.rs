//! The raw layer, read: `raw/type={type}/dt={day}/hour={hour}/*.ndjson.gz`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use base64::Engine;
use serde::Deserialize;

use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};

use super::CompactError;
use super::store::Lake;
use super::tables::Table;

/// A table's raw objects by day, each day's in key order. With `only`, that day alone.
pub async fn days(
    lake: &Lake,
    table: Table,
    only: Option<&str>,
) -> Result<BTreeMap<String, Vec<ObjectMeta>>, CompactError> {
    let mut prefix = format!("raw/type={}", table.raw_type());
    if let Some(day) = only {
        prefix.push_str(&format!("/dt={day}"));
    }
    let prefix = lake.path(&prefix);
    let mut listed = lake.store.list(Some(&prefix));
    let mut days: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    while let Some(meta) = listed.next().await {
        let meta = match meta {
            Ok(meta) => meta,
            // A folder that does not exist yet holds no objects.
            Err(object_store::Error::NotFound { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        if let Some(day) = day_of(lake.key(&meta.location)) {
            days.entry(day.to_owned()).or_default().push(meta);
        }
    }
    for objects in days.values_mut() {
        objects.sort_by(|a, b| a.location.cmp(&b.location));
    }
    Ok(days)
}

/// The day of a lake object's key; `None` for what the ingest does not write as an object
/// (temporaries start with a dot).
fn day_of(key: &str) -> Option<&str> {
    let mut parts = key.split('/');
    let (raw, kind, dt) = (parts.next()?, parts.next()?, parts.next()?);
    let name = key.rsplit('/').next()?;
    if raw != "raw" || !kind.starts_with("type=") || name.starts_with('.') {
        return None;
    }
    if !name.ends_with(".ndjson.gz") {
        return None;
    }
    let day = dt.strip_prefix("dt=")?;
    (day.len() == 10 && chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok()).then_some(day)
}

/// Fetches `objects` (a few at a time) and gunzips them: `(key, lines)` in their order.
pub async fn fetch(
    lake: &Lake,
    objects: &[ObjectMeta],
) -> Result<Vec<(String, Vec<u8>)>, CompactError> {
    futures_util::stream::iter(objects.iter().map(|meta| async move {
        let key = lake.key(&meta.location).to_owned();
        let gz = lake.store.get(&meta.location).await?.bytes().await?;
        let mut text = Vec::with_capacity(gz.len() * 8);
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut text)
            .map_err(|e| CompactError::Io {
                what: format!("decompressing {key}"),
                source: e,
            })?;
        Ok::<_, CompactError>((key, text))
    }))
    .buffered(16)
    .try_collect()
    .await
}

/// How many days after a transaction's own day the compactor looks in `errors/` for the
/// router's rejection of it: the router answers within seconds, or hours after an outage.
pub const REJECTION_DAYS: u64 = 3;

/// The transactions the ledger rejected, by `tx_id`, with its reason, as the router traced
/// them to `errors/dt=...` on `day` and the [`REJECTION_DAYS`] after it.
pub async fn rejections(lake: &Lake, day: &str) -> Result<HashMap<String, String>, CompactError> {
    let mut found = HashMap::new();
    let Ok(first) = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d") else {
        return Ok(found);
    };
    for date in first.iter_days().take(REJECTION_DAYS as usize + 1) {
        let prefix = lake.path(&format!("errors/dt={}", date.format("%Y-%m-%d")));
        let objects: Vec<ObjectMeta> = match lake.store.list(Some(&prefix)).try_collect().await {
            Ok(objects) => objects,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        for (_, text) in fetch(lake, &objects).await? {
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if let Some((tx_id, reason)) = rejection(line) {
                    found.insert(tx_id, reason);
                }
            }
        }
    }
    Ok(found)
}

/// An `errors/` line the router wrote for a transaction the ledger rejected.
fn rejection(line: &[u8]) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct Reject {
        reason: String,
        payload_b64: String,
    }
    #[derive(Deserialize)]
    struct Body {
        tx_id: String,
    }
    let reject: Reject = serde_json::from_slice(line).ok()?;
    let reason = reject.reason.strip_prefix("loyalty_")?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(reject.payload_b64)
        .ok()?;
    let body: Body = serde_json::from_slice(&payload).ok()?;
    Some((body.tx_id, reason.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lake_objects_have_a_day() {
        let key = "raw/type=reading/dt=2026-11-22/hour=09/x-000000000001.ndjson.gz";
        assert_eq!(day_of(key), Some("2026-11-22"));
        assert_eq!(
            day_of("raw/type=reading/dt=2026-11-22/hour=09/.tmp-01J"),
            None
        );
        assert_eq!(
            day_of("raw/type=reading/dt=yesterday/hour=09/x.ndjson.gz"),
            None
        );
        assert_eq!(day_of("errors/dt=2026-11-22/x.ndjson.gz"), None);
    }

    #[test]
    fn the_routers_rejections_are_read_and_other_errors_are_not() {
        let body = base64::engine::general_purpose::STANDARD
            .encode(r#"{"seq":3,"type":"txn","tx_id":"T-1","op":"redeem"}"#);
        let line = format!(
            r#"{{"received_at":"2026-11-22T09:00:00.000Z","topic":"ferry/v1/pos-1/transactions","reason":"loyalty_insufficient_balance","payload_b64":"{body}"}}"#
        );
        assert_eq!(
            rejection(line.as_bytes()),
            Some(("T-1".to_owned(), "insufficient_balance".to_owned()))
        );
        let decoding = line.replace("loyalty_insufficient_balance", "not_json");
        assert_eq!(rejection(decoding.as_bytes()), None);
    }
}
