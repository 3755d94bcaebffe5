//! The stations' panels: a tile per station (`GET /v1/stations`) and readings of one metric
//! across stations (`GET /v1/compare`). A station is a device with readings that the
//! registry does not call a till.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Query, State};
use ferry_shared::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{DashboardApi, registry, unavailable};
use super::query::{MINUTE_MS, Plan, plan, required_metric, span};
use super::units;
use crate::hot::{Latest, Series, rfc3339};
use crate::http::ApiError;
use crate::loyalty::DeviceKind;

/// What a tile's sparkline spans.
const SPARK_MS: i64 = 3600 * 1000;
/// What a comparison spans unless asked.
const COMPARE_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Stations one comparison takes at most.
const MAX_COMPARED: usize = 8;

pub async fn tiles(State(api): State<DashboardApi>) -> Result<Json<Value>, ApiError> {
    let now = Timestamp::now().unix_millis();
    let after = api.cfg.offline_after_ms();
    let tills = tills(&api).await;
    let (devices, latest, alarms) = api
        .hot
        .run(move |s| Ok((s.devices(now, after)?, s.latest_all()?, s.active_alarms()?)))
        .await
        .map_err(unavailable)?;
    let mut by_device: BTreeMap<String, Vec<Latest>> = BTreeMap::new();
    for l in latest.into_iter().filter(|l| !tills.contains(&l.device)) {
        by_device.entry(l.device.clone()).or_default().push(l);
    }
    let mut metrics = BTreeSet::new();
    let mut stations = Vec::with_capacity(by_device.len());
    for (device, mut latest) in by_device {
        latest.sort_by(|a, b| units::order(&a.metric, &b.metric));
        let view = devices.iter().find(|d| d.device == device);
        let newest = latest.iter().map(|l| l.t).max().unwrap_or_default();
        let state = match view.map(|v| v.state.as_str()) {
            Some("online") if now - newest > after => "stale",
            Some(state) => state,
            None => "offline",
        };
        let spark_metric = latest.first().map(|l| l.metric.clone());
        let spark = match spark_metric.clone() {
            Some(metric) => {
                let d = device.clone();
                api.hot
                    .run(move |s| s.rollup(&d, &metric, now - SPARK_MS, now, MINUTE_MS))
                    .await
                    .map_err(unavailable)?
            }
            None => Series::Raw {
                t: Vec::new(),
                value: Vec::new(),
            },
        };
        let values: Vec<Value> = latest
            .iter()
            .map(|l| {
                metrics.insert(l.metric.clone());
                json!({"metric": l.metric, "label": units::label(&l.metric),
                       "unit": units::unit(&l.metric), "value": l.value, "ts": l.ts})
            })
            .collect();
        let raised: Vec<&crate::hot::Alarm> =
            alarms.iter().filter(|a| a.device == device).collect();
        stations.push(json!({
            "device": device,
            "state": state,
            "last_seen": view.and_then(|v| v.last_seen.clone()),
            "reading_at": rfc3339(newest),
            "latest": values,
            "spark": {"metric": spark_metric, "series": spark},
            "alarms": raised,
        }));
    }
    let mut metrics: Vec<String> = metrics.into_iter().collect();
    metrics.sort_by(|a, b| units::order(a, b));
    let metrics: Vec<Value> = metrics
        .iter()
        .map(|m| json!({"metric": m, "label": units::label(m), "unit": units::unit(m)}))
        .collect();
    Ok(Json(json!({
        "now": rfc3339(now),
        "metrics": metrics,
        "stations": stations,
    })))
}

/// The devices the registry calls tills: they have no readings to show. A ledger that does
/// not answer hides none.
async fn tills(api: &DashboardApi) -> BTreeSet<String> {
    registry(api)
        .await
        .devices
        .into_values()
        .filter(|d| d.kind == DeviceKind::Till.name())
        .map(|d| d.id)
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct CompareQuery {
    metric: Option<String>,
    /// Comma-separated.
    devices: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

/// One metric of several stations over a span, as avg, min and max per step on one time
/// axis (a step a station has no data for is `null` in its columns).
pub async fn compare(
    State(api): State<DashboardApi>,
    Query(q): Query<CompareQuery>,
) -> Result<Json<Value>, ApiError> {
    let metric = required_metric(q.metric)?;
    let devices: Vec<String> = q
        .devices
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if devices.is_empty() || devices.len() > MAX_COMPARED {
        return Err(ApiError::invalid(
            "invalid_devices",
            format!("devices: 1 to {MAX_COMPARED} device ids, comma-separated"),
        ));
    }
    let now = Timestamp::now().unix_millis();
    let (from, to) = span(q.from.as_deref(), q.to.as_deref(), now, COMPARE_SPAN_MS)?;
    // Rollups always, so that every station's steps fall on one axis; a minute at least.
    let step = match plan(q.step.as_deref(), from, to, i64::MAX)? {
        Plan::Rollup(step) => step,
        Plan::Raw => MINUTE_MS,
    };
    let (m, wanted) = (metric.clone(), devices.clone());
    let series = api
        .hot
        .run(move |s| {
            wanted
                .iter()
                .map(|d| s.rollup(d, &m, from, to, step))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(unavailable)?;
    let axis: Vec<i64> = series
        .iter()
        .flat_map(|s| match s {
            Series::Rollup { t, .. } | Series::Raw { t, .. } => t.iter().copied(),
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let columns: Vec<Value> = devices
        .iter()
        .zip(&series)
        .map(|(device, s)| {
            let Series::Rollup {
                t, avg, min, max, ..
            } = s
            else {
                return json!({"device": device});
            };
            let at: BTreeMap<i64, usize> = t.iter().enumerate().map(|(i, t)| (*t, i)).collect();
            let column = |values: &Vec<f64>| -> Vec<Option<f64>> {
                axis.iter()
                    .map(|x| at.get(x).map(|i| values[*i]).filter(|v| v.is_finite()))
                    .collect()
            };
            json!({"device": device, "avg": column(avg), "min": column(min), "max": column(max)})
        })
        .collect();
    Ok(Json(json!({
        "metric": metric,
        "label": units::label(&metric),
        "unit": units::unit(&metric),
        "from": rfc3339(from),
        "to": rfc3339(to),
        "step_s": step / 1000,
        "t": axis,
        "devices": columns,
    })))
}
