//! Opening the spool database: pragmas that are read back, embedded migrations, and the
//! quarantine of a corrupt file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_shared::SpoolId;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tracing::error;

use super::SpoolError;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_spool.sql"),
    include_str!("../../migrations/0002_idempotency.sql"),
    include_str!("../../migrations/0003_idempotency_request.sql"),
    include_str!("../../migrations/0004_format.sql"),
];

/// The newest spool format this binary knows: the number of its migrations.
pub const FORMAT: u32 = MIGRATIONS.len() as u32;

pub const FILE_NAME: &str = "spool.db";

/// Opens (creating if needed) the writer's connection.
pub fn open_writer(path: &Path) -> Result<Connection, SpoolError> {
    match try_open_writer(path) {
        Err(SpoolError::Sqlite(e)) if is_corruption(&e) => {
            let moved = quarantine(path)?;
            // Loud on purpose: records in the quarantined file are not lost, but they are no
            // longer being sent, and an operator has to look at them.
            error!(
                spool = %path.display(),
                quarantined = %moved.display(),
                error = %e,
                "SPOOL DATABASE IS CORRUPT: moved it aside and starting a new spool with a new spool id"
            );
            try_open_writer(path)
        }
        other => other,
    }
}

fn try_open_writer(path: &Path) -> Result<Connection, SpoolError> {
    let mut conn = Connection::open(path)?;
    set_pragma(&conn, "journal_mode", "wal", "wal")?;
    // FULL: every commit is fsynced to the WAL before we acknowledge anything.
    set_pragma(&conn, "synchronous", "FULL", "2")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens a read-only connection, for the uplink and for `ferry-agent status`, which may run
/// while another process writes.
pub fn open_reader(path: &Path) -> Result<Connection, SpoolError> {
    if !path.exists() {
        return Err(SpoolError::Missing(path.to_owned()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Readers scan forward once; a small page cache keeps the agent's RSS low on a Pi.
    conn.pragma_update(None, "cache_size", -512)?;
    Ok(conn)
}

fn set_pragma(conn: &Connection, name: &str, value: &str, want: &str) -> Result<(), SpoolError> {
    conn.pragma_update(None, name, value)?;
    let got: String = conn.pragma_query_value(None, name, |row| {
        row.get::<_, rusqlite::types::Value>(0).map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(s) => s.to_lowercase(),
            other => format!("{other:?}"),
        })
    })?;
    if got != want {
        return Err(SpoolError::Pragma {
            name: name.to_owned(),
            want: want.to_owned(),
            got,
        });
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), SpoolError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = i64::from(FORMAT);
    if version > known {
        // A newer binary migrated this spool (and was then rolled back): usable as long as
        // its migrations left it readable by this format.
        let readable_by = readable_by(conn).map_err(|_| SpoolError::FutureSchema(version))?;
        if i64::from(readable_by) > known {
            return Err(SpoolError::FutureSchema(version));
        }
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if i == 0 {
            // In the same transaction as the tables, so no reader ever sees a spool
            // without its identity.
            create_identity(&tx)?;
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The oldest format a binary must know to use this spool (migration 0004).
pub fn readable_by(conn: &Connection) -> Result<u32, SpoolError> {
    Ok(conn.query_row(
        "SELECT readable_by FROM spool_format WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}

fn create_identity(conn: &Connection) -> Result<(), SpoolError> {
    conn.execute(
        "INSERT INTO spool (id, spool_id, created_at, last_seq, evicted_total) VALUES (1, ?1, ?2, 0, 0)",
        (ulid::Ulid::new().to_string(), chrono::Utc::now().timestamp_millis()),
    )?;
    Ok(())
}

/// Tells a spool that its writer is still creating from any other failure.
pub fn is_being_created(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::QueryReturnedNoRows => true,
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.starts_with("no such table"),
        _ => false,
    }
}

pub fn spool_id(conn: &Connection) -> Result<SpoolId, SpoolError> {
    let id: String = conn.query_row("SELECT spool_id FROM spool WHERE id = 1", [], |r| r.get(0))?;
    SpoolId::new(id).map_err(|e| SpoolError::Identity(e.to_string()))
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Moves the database and its WAL aside; never deletes them.
fn quarantine(path: &Path) -> Result<PathBuf, SpoolError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let target = path.with_extension(format!("db.corrupt-{stamp}"));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", target.display()))?;
        }
    }
    Ok(target)
}
