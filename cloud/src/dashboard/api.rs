//! The dashboards' JSON API. Handlers parse and check (the query parsers are in
//! [`super::query`]); the hot store and the ledger answer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use ferry_shared::Timestamp;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::events::Feed;
use super::query::{MAX_POINTS, Plan, RAW_SPAN_MS, parse_day, plan, required_metric, span};
use crate::config::DashboardConfig;
use crate::hot::HotPool;
use crate::hot::{Series, rfc3339};
use crate::http::{ApiError, Caller};
use crate::loyalty::{LedgerPool, RegisteredDevice, StoreDay};

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
        .route("/v1/stations", get(super::stations::tiles))
        .route("/v1/compare", get(super::stations::compare))
        .route("/v1/loyalty", get(super::figures::loyalty))
        .route("/v1/traffic", get(super::figures::traffic))
        .route("/v1/events", get(events))
        .with_state(api)
}

pub(super) fn unavailable(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unavailable(e.into())
}

/// What the ledger says of devices: registrations, and transactions held for want of one.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) devices: BTreeMap<String, RegisteredDevice>,
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
pub(super) async fn registry(api: &DashboardApi) -> Registry {
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
    let (devices, alarms) = api
        .hot
        .run(move |s| Ok((s.devices(now, after)?, s.active_alarms()?)))
        .await
        .map_err(unavailable)?;
    let mut raised: BTreeMap<String, u64> = BTreeMap::new();
    for a in alarms {
        *raised.entry(a.device).or_default() += 1;
    }
    let mut registry = registry(&api).await;
    let mut list = Vec::with_capacity(devices.len() + registry.devices.len());
    for view in devices {
        let id = view.device.clone();
        let mut entry = serde_json::to_value(view).map_err(unavailable)?;
        registry.annotate(&id, &mut entry);
        entry["active_alarms"] = json!(raised.get(&id).copied().unwrap_or(0));
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
        // The page measures "ago" from this clock, not the browser's.
        "now": rfc3339(now),
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

async fn readings(
    State(api): State<DashboardApi>,
    Path(id): Path<String>,
    Query(q): Query<ReadingsQuery>,
) -> Result<Json<Value>, ApiError> {
    let metric = required_metric(q.metric)?;
    let now = Timestamp::now().unix_millis();
    let (from, to) = span(q.from.as_deref(), q.to.as_deref(), now, RAW_SPAN_MS)?;
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

pub(super) fn ledger(api: &DashboardApi) -> Result<Arc<LedgerPool>, ApiError> {
    api.ledger.clone().ok_or_else(|| {
        ApiError::NotConfigured(
            "loyalty figures need loyalty.database in this process's configuration".into(),
        )
    })
}

async fn list_stores(
    State(api): State<DashboardApi>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let (mut stores, mut records) = ledger(&api)?
        .run(|l| Ok((l.stores()?, l.store_records()?)))
        .await
        .map_err(unavailable)?;
    stores.extend(records.iter().map(|r| r.id.clone()));
    stores.sort_unstable();
    stores.dedup();
    stores.retain(|s| caller.covers(s));
    records.retain(|r| caller.covers(&r.id));
    Ok(Json(json!({ "stores": stores, "records": records })))
}

#[derive(Debug, Deserialize)]
struct DaysQuery {
    from: Option<String>,
    to: Option<String>,
}

/// Days `from..=to` (UTC), today when absent; every day is listed, with zeros when quiet.
async fn store_loyalty(
    State(api): State<DashboardApi>,
    Extension(caller): Extension<Caller>,
    Path(store): Path<String>,
    Query(q): Query<DaysQuery>,
) -> Result<Json<Value>, ApiError> {
    if !caller.covers(&store) {
        return Err(ApiError::Forbidden(format!(
            "this token ({}) sees stores {:?} only",
            caller.name, caller.stores
        )));
    }
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
