//! The dashboards' JSON API. Handlers parse and check; the hot store and the ledger answer.
//!
//! `GET /v1/devices/{id}/readings` picks raw points or rollups from the span when `step` is
//! absent: raw up to an hour (within the raw retention), otherwise whole-minute steps that
//! give at most [`AUTO_POINTS`] points (1 min for a day, 7 min for a week). `step=raw` asks
//! for raw points; any other step must be a whole number of minutes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{NaiveDate, Utc};
use ferry_shared::Timestamp;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::events::Feed;
use crate::config::DashboardConfig;
use crate::hot::HotPool;
use crate::hot::{Series, rfc3339};
use crate::http::ApiError;
use crate::loyalty::{LedgerPool, RegisteredDevice, StoreDay};

/// Raw points at most, up to this span, when the step is chosen for the caller.
const RAW_SPAN_MS: i64 = 3600 * 1000;
/// Points an automatic step aims at, at most.
pub const AUTO_POINTS: i64 = 1440;
/// Points one answer holds at most, raw or aggregated.
pub const MAX_POINTS: i64 = 20_000;
const MINUTE_MS: i64 = 60_000;
/// Days one loyalty answer covers at most.
const MAX_DAYS: i64 = 366;
/// Cleared alarms listed.
const CLEARED_LISTED: usize = 100;

#[derive(Clone)]
pub struct DashboardApi {
    pub hot: Arc<HotPool>,
    pub ledger: Option<Arc<LedgerPool>>,
    pub cfg: Arc<DashboardConfig>,
    pub feed: Feed,
    pub shutdown: CancellationToken,
}

pub fn routes(api: DashboardApi) -> Router {
    Router::new()
        .route("/v1/devices", get(list_devices))
        .route("/v1/devices/{id}", get(show_device))
        .route("/v1/devices/{id}/readings", get(readings))
        .route("/v1/stores", get(list_stores))
        .route("/v1/stores/{id}/loyalty", get(store_loyalty))
        .route("/v1/alarms", get(list_alarms))
        .route("/v1/events", get(events))
        .with_state(api)
}

fn unavailable(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unavailable(e.into())
}

/// What the ledger says of devices: registrations, and transactions held for want of one.
#[derive(Default)]
struct Registry {
    devices: BTreeMap<String, RegisteredDevice>,
    held: BTreeMap<String, u64>,
}

impl Registry {
    /// Registration and held count into a device's entry.
    fn annotate(&mut self, id: &str, entry: &mut Value) {
        if let Some(reg) = self.devices.remove(id) {
            entry["registration"] = json!(reg);
        } else if entry.get("registration").is_none() {
            entry["registration"] = Value::Null;
        }
        entry["held_transactions"] = json!(self.held.get(id).copied().unwrap_or(0));
    }
}

/// The registry, when this process can read the ledger: registration beside state. A
/// ledger that does not answer leaves the registrations out rather than the devices.
async fn registry(api: &DashboardApi) -> Registry {
    let Some(ledger) = api.ledger.clone() else {
        return Registry::default();
    };
    match ledger.run(|l| Ok((l.devices()?, l.held_counts()?))).await {
        Ok((devices, held)) => Registry {
            devices: devices.into_iter().map(|d| (d.id.clone(), d)).collect(),
            held,
        },
        Err(e) => {
            tracing::warn!(error = %e, "the device registry is unavailable");
            Registry::default()
        }
    }
}

/// A registered device the hot store has never heard from.
fn never_seen(reg: &RegisteredDevice) -> Value {
    json!({"device": reg.id, "state": "never_seen", "last_seen": null, "backlog": {},
           "registration": reg})
}

async fn list_devices(State(api): State<DashboardApi>) -> Result<Json<Value>, ApiError> {
    let after = api.cfg.offline_after_ms();
    let now = Timestamp::now().unix_millis();
    let devices = api
        .hot
        .run(move |s| s.devices(now, after))
        .await
        .map_err(unavailable)?;
    let mut registry = registry(&api).await;
    let mut list = Vec::with_capacity(devices.len() + registry.devices.len());
    for view in devices {
        let id = view.device.clone();
        let mut entry = serde_json::to_value(view).map_err(unavailable)?;
        registry.annotate(&id, &mut entry);
        list.push(entry);
    }
    for reg in std::mem::take(&mut registry.devices).values() {
        let mut entry = never_seen(reg);
        registry.annotate(&reg.id, &mut entry);
        list.push(entry);
    }
    Ok(Json(json!({
        "devices": list,
        "offline_after_s": api.cfg.offline_after_s,
    })))
}

async fn show_device(
    State(api): State<DashboardApi>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let after = api.cfg.offline_after_ms();
    let now = Timestamp::now().unix_millis();
    let device = id.clone();
    let (view, latest) = api
        .hot
        .run(move |s| Ok((s.device(&device, now, after)?, s.latest(&device)?)))
        .await
        .map_err(unavailable)?;
    let mut registry = registry(&api).await;
    let mut body = match (view, registry.devices.get(&id)) {
        (Some(view), _) => serde_json::to_value(view).map_err(unavailable)?,
        (None, Some(reg)) => never_seen(reg),
        (None, None) => return Err(unknown_device(&id)),
    };
    registry.annotate(&id, &mut body);
    body["latest"] = serde_json::to_value(latest).map_err(unavailable)?;
    Ok(Json(body))
}

fn unknown_device(id: &str) -> ApiError {
    ApiError::not_found(
        "unknown_device",
        format!("no device {id:?} has been heard from"),
    )
}

#[derive(Debug, Deserialize)]
struct ReadingsQuery {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

/// What a readings query resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Raw,
    /// Step in ms, a whole number of minutes.
    Rollup(i64),
}

/// Chooses raw points or a step for `[from, to)`, as the module documentation says.
pub fn plan(
    step: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    raw_from_ms: i64,
) -> Result<Plan, ApiError> {
    let span = to_ms - from_ms;
    let plan = match step.map(str::trim) {
        None | Some("") | Some("auto") => {
            if span <= RAW_SPAN_MS && from_ms >= raw_from_ms {
                Plan::Raw
            } else {
                let per_point = (span + AUTO_POINTS - 1) / AUTO_POINTS;
                let minutes = ((per_point + MINUTE_MS - 1) / MINUTE_MS).max(1);
                Plan::Rollup(minutes * MINUTE_MS)
            }
        }
        Some("raw") => Plan::Raw,
        Some(text) => {
            let ms = parse_duration_ms(text).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_step",
                    format!("step {text:?}: use raw, auto, or a duration such as 60s, 5m, 1h, 1d"),
                )
            })?;
            if ms <= 0 || ms % MINUTE_MS != 0 {
                return Err(ApiError::invalid(
                    "invalid_step",
                    "step must be a whole number of minutes (rollups are per minute), or raw",
                ));
            }
            Plan::Rollup(ms)
        }
    };
    if let Plan::Rollup(step) = plan
        && span / step > MAX_POINTS
    {
        return Err(ApiError::invalid(
            "too_many_points",
            format!(
                "{} points at this step; at most {MAX_POINTS}: take a larger step or a shorter span",
                span / step
            ),
        ));
    }
    Ok(plan)
}

/// `90`, `90s`, `5m`, `1h`, `1d`, in ms.
fn parse_duration_ms(text: &str) -> Option<i64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1000,
        "m" => MINUTE_MS,
        "h" => 3600 * 1000,
        "d" => 24 * 3600 * 1000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The times a query may name: 2000-01-01 up to the end of 9999, so that no arithmetic on
/// them (spans, steps, a day added) can leave the calendar.
const EARLIEST_MS: i64 = ferry_shared::limits::EARLIEST_STATE_TS_MS;
const LATEST_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// RFC 3339, or Unix ms, within [`EARLIEST_MS`]..=[`LATEST_MS`].
fn parse_time(key: &'static str, text: &str) -> Result<i64, ApiError> {
    let ms = match text.parse::<i64>() {
        Ok(ms) => Some(ms),
        Err(_) => Timestamp::parse(text).ok().map(|t| t.unix_millis()),
    };
    ms.filter(|ms| (EARLIEST_MS..=LATEST_MS).contains(ms))
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_time",
                format!(
                    "{key} {text:?}: use RFC 3339 (2026-11-24T10:00:00Z) or Unix ms, \
                     from 2000 to 9999"
                ),
            )
        })
}

async fn readings(
    State(api): State<DashboardApi>,
    Path(id): Path<String>,
    Query(q): Query<ReadingsQuery>,
) -> Result<Json<Value>, ApiError> {
    let metric = q
        .metric
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("missing_metric", "metric is required"))?;
    let now = Timestamp::now().unix_millis();
    let to =
        q.to.as_deref()
            .map(|t| parse_time("to", t))
            .transpose()?
            .unwrap_or(now);
    let from = match q.from.as_deref() {
        Some(t) => parse_time("from", t)?,
        None => to - RAW_SPAN_MS,
    };
    if from >= to {
        return Err(ApiError::invalid("invalid_range", "from must be before to"));
    }
    let plan = plan(q.step.as_deref(), from, to, now - api.cfg.raw_keep_ms())?;
    let after = api.cfg.offline_after_ms();
    let (device, m) = (id.clone(), metric.clone());
    let series = api
        .hot
        .run(move |s| {
            if s.device(&device, now, after)?.is_none() {
                return Ok(None);
            }
            Ok(Some(match plan {
                Plan::Raw => s.raw(&device, &m, from, to, MAX_POINTS as usize)?,
                Plan::Rollup(step) => s.rollup(&device, &m, from, to, step)?,
            }))
        })
        .await
        .map_err(unavailable)?
        .ok_or_else(|| unknown_device(&id))?;
    let truncated = matches!(series, Series::Raw { .. }) && series.len() as i64 >= MAX_POINTS;
    let mut body = json!({
        "device": id,
        "metric": metric,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "truncated": truncated,
    });
    if let (Value::Object(out), Value::Object(fields)) = (
        &mut body,
        serde_json::to_value(series).map_err(unavailable)?,
    ) {
        out.extend(fields);
    }
    Ok(Json(body))
}

fn ledger(api: &DashboardApi) -> Result<Arc<LedgerPool>, ApiError> {
    api.ledger.clone().ok_or_else(|| {
        ApiError::NotConfigured(
            "loyalty figures need loyalty.database in this process's configuration".into(),
        )
    })
}

async fn list_stores(State(api): State<DashboardApi>) -> Result<Json<Value>, ApiError> {
    let stores = ledger(&api)?
        .run(|l| l.stores())
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "stores": stores })))
}

#[derive(Debug, Deserialize)]
struct DaysQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `YYYY-MM-DD`, or the day of an RFC 3339 time, from 2000 to 9999.
fn parse_day(key: &'static str, text: &str) -> Result<NaiveDate, ApiError> {
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .or_else(|| {
            let ms = Timestamp::parse(text).ok()?.unix_millis();
            Some(chrono::DateTime::<Utc>::from_timestamp_millis(ms)?.date_naive())
        });
    let in_range = |d: &NaiveDate| {
        chrono::DateTime::<Utc>::from_timestamp_millis(EARLIEST_MS)
            .zip(chrono::DateTime::<Utc>::from_timestamp_millis(LATEST_MS))
            .is_some_and(|(first, last)| (first.date_naive()..last.date_naive()).contains(d))
    };
    day.filter(in_range).ok_or_else(|| {
        ApiError::invalid(
            "invalid_time",
            format!(
                "{key} {text:?}: use a day (2026-11-24) or an RFC 3339 time, from 2000 to 9999"
            ),
        )
    })
}

/// Days `from..=to` (UTC), today when absent; every day is listed, with zeros when quiet.
async fn store_loyalty(
    State(api): State<DashboardApi>,
    Path(store): Path<String>,
    Query(q): Query<DaysQuery>,
) -> Result<Json<Value>, ApiError> {
    let today = Utc::now().date_naive();
    let to =
        q.to.as_deref()
            .map(|t| parse_day("to", t))
            .transpose()?
            .unwrap_or(today);
    let from = q
        .from
        .as_deref()
        .map(|t| parse_day("from", t))
        .transpose()?
        .unwrap_or(to);
    if from > to {
        return Err(ApiError::invalid(
            "invalid_range",
            "from must not be after to",
        ));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::invalid(
            "invalid_range",
            format!("at most {MAX_DAYS} days at a time"),
        ));
    }
    // `to` is before 9999-12-31 (`parse_day`), so the day after it exists.
    let end = to.succ_opt().unwrap_or(to);
    let (s, a, b) = (store.clone(), from.to_string(), end.to_string());
    let found = ledger(&api)?
        .run(move |l| l.store_days(&s, &a, &b))
        .await
        .map_err(unavailable)?;
    let days: Vec<StoreDay> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|d| {
            let day = d.to_string();
            found
                .iter()
                .find(|f| f.day == day)
                .cloned()
                .unwrap_or(StoreDay {
                    day,
                    ..StoreDay::default()
                })
        })
        .collect();
    Ok(Json(json!({ "store": store, "days": days })))
}

async fn list_alarms(State(api): State<DashboardApi>) -> Result<Json<Value>, ApiError> {
    let (active, cleared) = api
        .hot
        .run(|s| Ok((s.active_alarms()?, s.cleared_alarms(CLEARED_LISTED)?)))
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "rules": api.cfg.alarms,
        "active": active,
        "cleared": cleared,
    })))
}

async fn events(
    State(api): State<DashboardApi>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = api.feed.subscribe();
    let stream =
        futures_util::stream::unfold((rx, api.shutdown.clone()), |(mut rx, stop)| async move {
            let event = tokio::select! {
                // Ends the stream, so a graceful shutdown does not wait for the browser.
                _ = stop.cancelled() => return None,
                got = rx.recv() => match got {
                    Ok(e) => SseEvent::default().event(e.name).data(e.data.as_str()),
                    Err(RecvError::Lagged(missed)) => SseEvent::default()
                        .event("resync")
                        .data(json!({ "missed": missed }).to_string()),
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(event), (rx, stop)))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600 * 1000;

    /// What an attacker might put in a query: extremes, signs, calendar edges, and seeded
    /// noise built from them. Every parser answers a value in range or an error, never a
    /// panic (a bounded stand-in for a fuzzer that CI runs every time).
    #[test]
    fn query_parsing_survives_hostile_input() {
        let seeds = [
            "+262142-12-31",
            "-262143-01-01",
            "9999-12-31",
            "0000-01-01",
            "1970-01-01",
            "2026-02-30",
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551616",
            "1e308",
            "NaN",
            "",
            "-",
            "9223372036854775807s",
            "9223372036854775807d",
            "0m",
            "-5m",
            "60s",
            "1d",
            "2026-11-24T10:00:00Z",
            "+275760-09-13T00:00:00Z",
            "auto",
            "raw",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut inputs: Vec<String> = seeds.iter().map(|s| (*s).to_owned()).collect();
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = seeds[(x % seeds.len() as u64) as usize];
            let b = seeds[((x >> 20) % seeds.len() as u64) as usize];
            let cut = (x >> 40) as usize % (a.len() + 1);
            inputs.push(format!("{}{}", &a[..cut], b));
        }
        let now = 1_800_000_000_000;
        for text in &inputs {
            if let Ok(ms) = parse_time("from", text) {
                assert!((EARLIEST_MS..=LATEST_MS).contains(&ms), "{text}: {ms}");
                for to in [ms, ms + 1, LATEST_MS] {
                    let _ = plan(Some(text), ms, to, now);
                    let _ = plan(None, ms, to, now);
                }
            }
            if let Ok(day) = parse_day("from", text) {
                assert!(day.succ_opt().is_some(), "{text}: {day}");
            }
            let _ = parse_duration_ms(text);
            let _ = plan(Some(text), now - H, now, now);
        }
    }

    #[test]
    fn the_step_follows_the_span_unless_asked() {
        let now = 100 * 24 * H;
        let raw_from = now - 7 * 24 * H;
        let cases: &[(Option<&str>, i64, Plan)] = &[
            (None, H, Plan::Raw),
            (Some("auto"), H, Plan::Raw),
            (None, H + 1, Plan::Rollup(MINUTE_MS)),
            (None, 24 * H, Plan::Rollup(MINUTE_MS)),
            (None, 7 * 24 * H, Plan::Rollup(7 * MINUTE_MS)),
            (None, 90 * 24 * H, Plan::Rollup(90 * MINUTE_MS)),
            (Some("raw"), 24 * H, Plan::Raw),
            (Some("60"), 7 * 24 * H, Plan::Rollup(MINUTE_MS)),
            (Some("1m"), 7 * 24 * H, Plan::Rollup(MINUTE_MS)),
            (Some("1h"), 7 * 24 * H, Plan::Rollup(H)),
            (Some("1d"), 7 * 24 * H, Plan::Rollup(24 * H)),
        ];
        for &(step, span, want) in cases {
            let got = plan(step, now - span, now, raw_from).expect("plan");
            assert_eq!(got, want, "step {step:?} over {span} ms");
        }
        // An hour that lies before the raw retention comes from the rollups.
        assert_eq!(
            plan(None, raw_from - 2 * H, raw_from - H, raw_from).expect("plan"),
            Plan::Rollup(MINUTE_MS)
        );
        for bad in ["30s", "90s", "0", "-1m", "5x", "m"] {
            assert!(plan(Some(bad), now - H, now, raw_from).is_err(), "{bad}");
        }
        assert!(
            plan(Some("1m"), now - 90 * 24 * H, now, raw_from).is_err(),
            "129,600 points is too many"
        );
    }
}
