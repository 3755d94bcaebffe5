//! `{data_dir}/fleet.db`: each device's desired configuration and its last answer, the
//! rollouts and each device's job in them, and the devices known from their status.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry_shared::fleet::{JobStatus, ReportedConfig};

use crate::loyalty::AuditEntry;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device_config (
    device TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    desired TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    reported TEXT,
    reported_at TEXT
);
CREATE TABLE IF NOT EXISTS devices_seen (device TEXT PRIMARY KEY, seen_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    rollout INTEGER NOT NULL REFERENCES rollouts (id),
    device TEXT NOT NULL,
    status TEXT NOT NULL,
    report TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_rollout ON jobs (rollout);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    request_id TEXT NOT NULL
);
";

/// Who makes a fleet write, as its audit row says: recorded in the write's own transaction,
/// so that neither commits without the other.
#[derive(Debug, Clone)]
pub struct By {
    pub who: String,
    pub role: &'static str,
    pub request_id: String,
}

impl By {
    fn record(
        &self,
        tx: &rusqlite::Transaction<'_>,
        action: &str,
        target: &str,
        detail: &Value,
    ) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT INTO audit (at, who, role, action, target, detail, request_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                now(),
                self.who,
                self.role,
                action,
                target,
                detail.to_string(),
                self.request_id
            ],
        )?;
        Ok(())
    }
}

/// Up to `limit` audit entries older than `before` (an id), newest first.
pub fn audit_log(
    conn: &mut Connection,
    limit: u32,
    before: Option<i64>,
) -> rusqlite::Result<Vec<AuditEntry>> {
    conn.prepare_cached(
        "SELECT id, at, who, role, action, target, detail, request_id FROM audit
         WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?
    .query_map(
        params![before.unwrap_or(i64::MAX), limit],
        AuditEntry::from_sqlite,
    )?
    .collect()
}

#[derive(Clone)]
pub struct FleetStore(Arc<Mutex<Connection>>);

/// A device's configuration as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigView {
    pub device: String,
    pub desired: Option<DesiredView>,
    /// The device's last answer: `version`, and `applied_at` or `error`.
    #[schema(value_type = Option<Object>)]
    pub reported: Option<Value>,
    pub reported_at: Option<String>,
    /// The device runs the desired version: it answered it, without an error.
    pub in_sync: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DesiredView {
    pub version: u64,
    #[schema(value_type = Object)]
    pub config: Value,
    pub updated_at: String,
    pub updated_by: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub job_id: String,
    pub device: String,
    /// `QUEUED` until the device answers, then its `status`.
    pub status: String,
    /// The device's last report (`reason`, `detail`, `running`, `at`).
    #[schema(value_type = Option<Object>)]
    pub report: Option<Value>,
    pub updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    pub id: i64,
    pub version: String,
    #[schema(value_type = Object)]
    pub artifacts: Value,
    pub created_at: String,
    pub created_by: String,
    /// Jobs per status.
    #[schema(value_type = Object)]
    pub counts: Value,
    pub jobs: Vec<JobView>,
}

fn now() -> String {
    ferry_shared::Timestamp::now().to_string()
}

impl FleetStore {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        ferry_shared::durable_dir::create_dir_all(data_dir)?;
        let conn = Connection::open(data_dir.join("fleet.db"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))?;
        anyhow::ensure!(
            mode == "wal",
            "fleet.db: journal_mode reads back {mode}, not wal"
        );
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self(Arc::new(Mutex::new(conn))))
    }

    /// Runs `f` on a blocking thread: every commit is fsynced.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let conn = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| anyhow::anyhow!("fleet store poisoned"))?;
            Ok(f(&mut conn)?)
        })
        .await?
    }
}

/// Stores a new desired document for `device` and returns its version, one above the last.
pub fn put_desired(
    conn: &mut Connection,
    device: &str,
    config: &Value,
    by: &By,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let last: Option<i64> = tx
        .query_row(
            "SELECT version FROM device_config WHERE device = ?1",
            [device],
            |r| r.get(0),
        )
        .optional()?;
    let version = last.unwrap_or(0) + 1;
    tx.execute(
        "INSERT INTO device_config (device, version, desired, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (device) DO UPDATE SET version = excluded.version, desired = excluded.desired,
           updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        params![device, version, config.to_string(), now(), by.who],
    )?;
    let detail = serde_json::json!({"version": version, "config": config});
    by.record(&tx, "put_config", device, &detail)?;
    tx.commit()?;
    Ok(version.unsigned_abs())
}

pub fn config_view(conn: &mut Connection, device: &str) -> rusqlite::Result<ConfigView> {
    let row = conn
        .query_row(
            "SELECT version, desired, updated_at, updated_by, reported, reported_at FROM device_config WHERE device = ?1",
            [device],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?.unsigned_abs(),
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            },
        )
        .optional()?;
    // Version 0: an answer kept for a device this cloud never asked anything of.
    let Some((version, desired, updated_at, updated_by, reported, reported_at)) =
        row.filter(|r| r.0 > 0)
    else {
        return Ok(ConfigView {
            device: device.to_owned(),
            desired: None,
            reported: None,
            reported_at: None,
            in_sync: true,
        });
    };
    let reported: Option<ReportedConfig> = reported.and_then(|r| serde_json::from_str(&r).ok());
    let in_sync = reported
        .as_ref()
        .is_some_and(|r| r.version == version && r.error.is_none());
    Ok(ConfigView {
        device: device.to_owned(),
        desired: Some(DesiredView {
            version,
            config: serde_json::from_str(&desired).unwrap_or(Value::Null),
            updated_at,
            updated_by,
        }),
        reported: reported.and_then(|r| serde_json::to_value(r).ok()),
        reported_at,
        in_sync,
    })
}

/// Every device with a desired document or an answer, by device.
pub fn config_views(conn: &mut Connection) -> rusqlite::Result<Vec<ConfigView>> {
    let devices: Vec<String> = {
        let mut stmt = conn.prepare("SELECT device FROM device_config ORDER BY device")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    devices.iter().map(|d| config_view(conn, d)).collect()
}

/// Keeps a device's answer; an answer for a device with no desired document is kept too,
/// so that a document published by other means still shows its answer.
pub fn put_reported(
    conn: &mut Connection,
    device: &str,
    answer: &ReportedConfig,
) -> rusqlite::Result<()> {
    let text = serde_json::to_string(answer).unwrap_or_default();
    conn.execute(
        "INSERT INTO device_config (device, version, desired, updated_at, updated_by, reported, reported_at)
         VALUES (?1, 0, '{}', ?3, 'device', ?2, ?3)
         ON CONFLICT (device) DO UPDATE SET reported = excluded.reported, reported_at = excluded.reported_at",
        params![device, text, now()],
    )?;
    Ok(())
}

pub fn saw_device(conn: &mut Connection, device: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO devices_seen (device, seen_at) VALUES (?1, ?2)
         ON CONFLICT (device) DO UPDATE SET seen_at = excluded.seen_at",
        params![device, now()],
    )?;
    Ok(())
}

pub fn devices_seen(conn: &mut Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT device FROM devices_seen ORDER BY device")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Creates a rollout and a queued job per device; returns its id.
pub fn create_rollout(
    conn: &mut Connection,
    version: &str,
    artifacts: &Value,
    devices: &[String],
    by: &By,
) -> rusqlite::Result<(i64, Vec<(String, String)>)> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO rollouts (version, artifacts, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
        params![version, artifacts.to_string(), now(), by.who],
    )?;
    let id = tx.last_insert_rowid();
    let mut jobs = Vec::new();
    for device in devices {
        let job_id = job_id(id, device);
        tx.execute(
            "INSERT INTO jobs (job_id, rollout, device, status, updated_at) VALUES (?1, ?2, ?3, 'QUEUED', ?4)",
            params![job_id, id, device, now()],
        )?;
        jobs.push((device.clone(), job_id));
    }
    let detail =
        serde_json::json!({"version": version, "devices": devices, "artifacts": artifacts});
    by.record(&tx, "create_rollout", &id.to_string(), &detail)?;
    tx.commit()?;
    Ok((id, jobs))
}

/// `r{rollout}-{device}`: unique, and a valid topic level and file name on the device.
pub fn job_id(rollout: i64, device: &str) -> String {
    format!("r{rollout}-{device}")
}

/// Keeps a device's report on a job of ours; reports on other jobs are ignored.
pub fn put_job_status(
    conn: &mut Connection,
    job_id: &str,
    device: &str,
    status: &JobStatus,
) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE jobs SET status = ?1, report = ?2, updated_at = ?3 WHERE job_id = ?4 AND device = ?5",
        params![
            status.status.as_str(),
            serde_json::to_string(status).unwrap_or_default(),
            now(),
            job_id,
            device
        ],
    )?;
    Ok(changed > 0)
}

pub fn rollout_view(conn: &mut Connection, id: i64) -> rusqlite::Result<Option<RolloutView>> {
    let head = conn
        .query_row(
            "SELECT version, artifacts, created_at, created_by FROM rollouts WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((version, artifacts, created_at, created_by)) = head else {
        return Ok(None);
    };
    let mut stmt = conn.prepare(
        "SELECT job_id, device, status, report, updated_at FROM jobs WHERE rollout = ?1 ORDER BY device",
    )?;
    let jobs: Vec<JobView> = stmt
        .query_map([id], |r| {
            Ok(JobView {
                job_id: r.get(0)?,
                device: r.get(1)?,
                status: r.get(2)?,
                report: r
                    .get::<_, Option<String>>(3)?
                    .and_then(|t| serde_json::from_str(&t).ok()),
                updated_at: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut counts = serde_json::Map::new();
    for job in &jobs {
        let n = counts.get(&job.status).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(job.status.clone(), Value::from(n + 1));
    }
    Ok(Some(RolloutView {
        id,
        version,
        artifacts: serde_json::from_str(&artifacts).unwrap_or(Value::Null),
        created_at,
        created_by,
        counts: Value::Object(counts),
        jobs,
    }))
}

pub fn rollout_ids(conn: &mut Connection) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare("SELECT id FROM rollouts ORDER BY id DESC LIMIT 50")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}
