//! The fleet API (README: remote configuration, updates): desired configurations per
//! device, and rollouts of signed updates.

use std::collections::BTreeMap;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_shared::DeviceId;
use ferry_shared::fleet::{Artifact, JobDocument, Manifest, check_remote_keys};
use serde::Deserialize;
use serde_json::Value;

use super::link::Link;
use super::store::{self, ConfigView, FleetStore, RolloutView};
use crate::config::ApiRole;
use crate::http::{ApiError, Caller};

#[derive(Clone)]
pub struct FleetApi {
    pub store: FleetStore,
    pub link: Link,
}

pub fn routes(api: FleetApi) -> Router {
    Router::new()
        .route("/v1/configs", get(list_configs))
        .route("/v1/devices/{id}/config", get(show_config).put(put_config))
        .route("/v1/rollouts", post(create_rollout).get(list_rollouts))
        .route("/v1/rollouts/{id}", get(show_rollout))
        .route("/v1/fleet/audit", get(audit_log))
        .with_state(api)
}

/// Without `[mqtt]`: the same routes, each answering 503 with what is missing, so that a
/// caller learns why rather than finding no such route.
pub fn unconfigured() -> Router {
    let missing = || async {
        ApiError::NotConfigured("fleet operations need [mqtt] in this process's config".into())
    };
    Router::new()
        .route("/v1/configs", get(missing))
        .route("/v1/devices/{id}/config", get(missing).put(missing))
        .route("/v1/rollouts", post(missing).get(missing))
        .route("/v1/rollouts/{id}", get(missing))
        .route("/v1/fleet/audit", get(missing))
}

/// The author of a write, for its audit row.
fn by(caller: &Caller) -> store::By {
    store::By {
        who: caller.name.clone(),
        role: caller.role.name(),
        request_id: caller.request_id.clone(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    limit: Option<u32>,
    before: Option<i64>,
}

/// Every fleet write (desired configurations, rollouts), newest first: who, the role, what,
/// the target, when and the request id, recorded in the write's own transaction in
/// `fleet.db`.
#[utoipa::path(get, path = "/v1/fleet/audit", tag = "fleet",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000),
           ("before" = Option<i64>, Query)),
    responses((status = 200, body = FleetAudit), (status = 400, body = ferry_shared::openapi::ErrorDoc)))]
pub async fn audit_log(
    State(api): State<FleetApi>,
    Query(page): Query<AuditPage>,
) -> Result<Json<FleetAudit>, ApiError> {
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            "limit: must be 1 to 1000",
        ));
    }
    let entries = api
        .store
        .run(move |conn| store::audit_log(conn, limit, page.before))
        .await
        .map_err(unavailable)?;
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(FleetAudit {
        entries,
        next_before: next,
    }))
}

/// A page of the fleet's audit trail; `next_before` asks for the next.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FleetAudit {
    pub entries: Vec<crate::loyalty::AuditEntry>,
    pub next_before: Option<i64>,
}

fn unavailable(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unavailable(e.into())
}

fn device_id(id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(id).map_err(|e| ApiError::invalid("invalid_device", e.to_string()))
}

/// The desired configuration and the device's last answer; `in_sync` is false while they
/// differ (drift).
#[utoipa::path(get, path = "/v1/devices/{id}/config", tag = "fleet",
    params(("id" = String, Path, description = "The device")),
    responses((status = 200, body = ConfigView)))]
pub async fn show_config(
    State(api): State<FleetApi>,
    Path(id): Path<String>,
) -> Result<Json<ConfigView>, ApiError> {
    let id = device_id(&id)?;
    let view = api
        .store
        .run(move |conn| store::config_view(conn, id.as_str()))
        .await
        .map_err(unavailable)?;
    Ok(Json(view))
}

/// Every device's configuration state, for the dashboards' drift column.
#[utoipa::path(get, path = "/v1/configs", tag = "fleet",
    responses((status = 200, body = Vec<ConfigView>)))]
pub async fn list_configs(State(api): State<FleetApi>) -> Result<Json<Vec<ConfigView>>, ApiError> {
    let views = api
        .store
        .run(store::config_views)
        .await
        .map_err(unavailable)?;
    Ok(Json(views))
}

/// Sets the device's desired configuration: the settings that may change remotely
/// (`sources`, `mqtt` pacing and `gzip_level`, `spool.max_bytes`, `log_level`). It is
/// stored, given the next version and published retained; the device checks it as it
/// checks its file and answers.
#[utoipa::path(put, path = "/v1/devices/{id}/config", tag = "fleet",
    params(("id" = String, Path, description = "The device")),
    request_body(content = Object, description = "The settings, as in the agent's config file"),
    responses((status = 202, body = ConfigView), (status = 400, body = ferry_shared::openapi::ErrorDoc)))]
pub async fn put_config(
    State(api): State<FleetApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<ConfigView>), ApiError> {
    let id = device_id(&id)?;
    let Value::Object(config) = body else {
        return Err(ApiError::invalid(
            "bad_config",
            "the body must be a JSON object of settings",
        ));
    };
    check_remote_keys(&config).map_err(|e| ApiError::invalid("bad_config", e))?;
    // A card reader's `on_scan` rule makes transactions, which is minting by configuration:
    // an admin's to set, not an operator's.
    if caller.role != ApiRole::Admin && sets_scan_rules(&config) {
        return Err(ApiError::Forbidden(format!(
            "sources with an on_scan rule need role admin; this token ({}) is {:?}",
            caller.name, caller.role
        )));
    }
    let (device, stored, by) = (id.clone(), Value::Object(config.clone()), by(&caller));
    let version = api
        .store
        .run(move |conn| store::put_desired(conn, device.as_str(), &stored, &by))
        .await
        .map_err(unavailable)?;
    api.link
        .publish_desired(&id, version, config)
        .await
        .map_err(ApiError::Internal)?;
    let view = api
        .store
        .run(move |conn| store::config_view(conn, id.as_str()))
        .await
        .map_err(unavailable)?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Whether a desired configuration's sources carry an `on_scan` rule.
fn sets_scan_rules(config: &serde_json::Map<String, Value>) -> bool {
    config
        .get("sources")
        .and_then(Value::as_array)
        .is_some_and(|sources| sources.iter().any(|s| s.get("on_scan").is_some()))
}

/// `POST /v1/rollouts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    pub version: String,
    /// Per architecture (`amd64`, `arm64`, `armhf`): `url`, `manifest` (the signed text)
    /// and `signature` (`ferry-cloud sign artifact` prints these).
    #[schema(value_type = Object)]
    pub artifacts: BTreeMap<String, Artifact>,
    /// These devices...
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// ...or this share of the devices known from their status, chosen by a stable hash
    /// of the device id.
    #[serde(default)]
    pub percent: Option<u8>,
}

fn check_rollout(r: &NewRollout) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::invalid("bad_rollout", m);
    // The devices check the same document with the same function (and their own size cap).
    let doc = JobDocument {
        job_id: "rollout".into(),
        version: r.version.clone(),
        artifacts: r.artifacts.clone(),
    };
    doc.check().map_err(bad)?;
    // What the devices would refuse anyway, said to the operator now.
    for (arch, artifact) in &r.artifacts {
        let manifest = Manifest::parse(&artifact.manifest).map_err(bad)?;
        if &manifest.arch != arch {
            return Err(bad(format!(
                "artifacts.{arch} holds a manifest signed for {}",
                manifest.arch
            )));
        }
        if manifest.expires < ferry_shared::Timestamp::now() {
            return Err(bad(format!(
                "artifacts.{arch}: the manifest expired at {}; sign it again",
                manifest.expires
            )));
        }
    }
    match (&r.devices, r.percent) {
        (Some(_), Some(_)) | (None, None) => Err(bad("give devices or percent, not both".into())),
        (None, Some(p)) if !(1..=100).contains(&p) => Err(bad("percent must be 1 to 100".into())),
        (Some(d), None) if d.is_empty() || d.len() > 10_000 => {
            Err(bad("devices must list 1 to 10000 devices".into()))
        }
        _ => Ok(()),
    }
}

/// The first `percent` of `devices` in the order of a hash of their ids: the same devices
/// for the same percent, and a larger percent adds devices without dropping any.
fn share(devices: Vec<String>, percent: u8) -> Vec<String> {
    let mut ranked: Vec<(String, String)> = devices
        .into_iter()
        .map(|d| (ferry_shared::signing::Sha256::hex_of(d.as_bytes()), d))
        .collect();
    ranked.sort();
    let n = (ranked.len() * usize::from(percent)).div_ceil(100);
    ranked.into_iter().take(n).map(|(_, d)| d).collect()
}

/// Creates a job per device and publishes each retained on its `jobs` topic.
#[utoipa::path(post, path = "/v1/rollouts", tag = "fleet", request_body = NewRollout,
    responses((status = 201, body = RolloutView), (status = 400, body = ferry_shared::openapi::ErrorDoc)))]
pub async fn create_rollout(
    State(api): State<FleetApi>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<NewRollout>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    check_rollout(&body)?;
    let devices = match (&body.devices, body.percent) {
        (Some(list), _) => {
            for d in list {
                device_id(d)?;
            }
            list.clone()
        }
        (None, Some(p)) => {
            let known = api
                .store
                .run(store::devices_seen)
                .await
                .map_err(unavailable)?;
            share(known, p)
        }
        (None, None) => Vec::new(),
    };
    if devices.is_empty() {
        return Err(ApiError::invalid(
            "no_devices",
            "no device is known yet to roll out to",
        ));
    }
    let artifacts =
        serde_json::to_value(&body.artifacts).map_err(|e| ApiError::Internal(e.into()))?;
    let (version, stored, by) = (body.version.clone(), artifacts.clone(), by(&caller));
    let (id, jobs) = api
        .store
        .run(move |conn| store::create_rollout(conn, &version, &stored, &devices, &by))
        .await
        .map_err(unavailable)?;
    for (device, job_id) in &jobs {
        let device = device_id(device)?;
        api.link
            .publish_job(&device, job_id, &body.version, &artifacts)
            .await
            .map_err(ApiError::Internal)?;
    }
    let view = rollout(&api, id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn rollout(api: &FleetApi, id: i64) -> Result<RolloutView, ApiError> {
    api.store
        .run(move |conn| store::rollout_view(conn, id))
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("no_rollout", format!("no rollout {id}")))
}

/// Each device's job in the rollout: `QUEUED` until it answers, then `IN_PROGRESS`,
/// `SUCCEEDED` or `FAILED` with a `reason` (`rolled_back`, `signature_mismatch`, ...).
#[utoipa::path(get, path = "/v1/rollouts/{id}", tag = "fleet",
    params(("id" = i64, Path, description = "The rollout")),
    responses((status = 200, body = RolloutView), (status = 404, body = ferry_shared::openapi::ErrorDoc)))]
pub async fn show_rollout(
    State(api): State<FleetApi>,
    Path(id): Path<i64>,
) -> Result<Json<RolloutView>, ApiError> {
    Ok(Json(rollout(&api, id).await?))
}

/// The 50 latest rollouts, newest first.
#[utoipa::path(get, path = "/v1/rollouts", tag = "fleet",
    responses((status = 200, body = Vec<RolloutView>)))]
pub async fn list_rollouts(
    State(api): State<FleetApi>,
) -> Result<Json<Vec<RolloutView>>, ApiError> {
    let ids = api
        .store
        .run(store::rollout_ids)
        .await
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for id in ids {
        out.push(rollout(&api, id).await?);
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn a_share_is_stable_and_grows_without_dropping_devices() {
        let all: Vec<String> = (0..40).map(|i| format!("ws-{i:03}")).collect();
        let quarter = share(all.clone(), 25);
        assert_eq!(quarter.len(), 10);
        assert_eq!(share(all.clone(), 25), quarter);
        let half = share(all.clone(), 50);
        assert!(quarter.iter().all(|d| half.contains(d)));
        assert_eq!(share(all, 100).len(), 40);
        assert_eq!(share(vec!["only".into()], 1), vec!["only".to_owned()]);
    }

    #[test]
    fn remote_keys_are_checked_before_anything_is_stored() {
        let ok: Map<String, Value> =
            serde_json::from_str(r#"{"mqtt": {"gzip_level": 1}}"#).expect("json");
        assert!(check_remote_keys(&ok).is_ok());
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"mqtt": {"url": "x"}}"#).expect("json");
        assert!(
            check_remote_keys(&bad)
                .expect_err("refused")
                .contains("mqtt.url")
        );
    }
}
