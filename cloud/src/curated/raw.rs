//! The raw layer, read: `raw/type={type}/dt={day}/hour={hour}/*.ndjson.gz`.

use std::collections::BTreeMap;
use std::io::Read;

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
}
