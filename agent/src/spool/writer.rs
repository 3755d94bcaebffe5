//! The writer thread: group commit, gap-free seqs, byte caps and eviction.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::{AckRange, Appended, Class, Keyed, NewRecord, Once, Op, SpoolError};

/// Upper bound of records in one group commit, so one transaction stays short.
const MAX_GROUP_RECORDS: usize = 20_000;

/// What the writer knows without asking SQLite. Loaded once at startup (recovery) and kept
/// in step with every commit; restored from a copy when a commit fails.
#[derive(Debug, Clone)]
pub struct WriterState {
    pub last_seq: u64,
    evicted_total: u64,
    txn_bytes: u64,
    telemetry_bytes: u64,
    txn_count: u64,
    telemetry_count: u64,
    /// When the oldest pending record was appended (unix ms).
    oldest_appended_at: Option<i64>,
    max_bytes: u64,
}

impl WriterState {
    pub fn load(conn: &Connection, max_bytes: u64) -> Result<Self, SpoolError> {
        let (last_seq, evicted_total): (i64, i64) = conn.query_row(
            "SELECT last_seq, evicted_total FROM spool WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut state = Self {
            last_seq: last_seq as u64,
            evicted_total: evicted_total as u64,
            txn_bytes: 0,
            telemetry_bytes: 0,
            txn_count: 0,
            telemetry_count: 0,
            oldest_appended_at: None,
            max_bytes,
        };
        // The one scan of the records: from here on the writer keeps these in step.
        let mut by_class = conn.prepare(
            "SELECT class, COUNT(*), COALESCE(SUM(length(body)), 0) FROM records GROUP BY class",
        )?;
        let mut rows = by_class.query([])?;
        while let Some(row) = rows.next()? {
            let (class, count, bytes): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let class = if class == Class::Transaction as i64 {
                Class::Transaction
            } else {
                Class::Telemetry
            };
            *state.count_mut(class) = count as u64;
            *state.bytes_mut(class) = bytes as u64;
        }
        state.oldest_appended_at = oldest_appended_at(conn)?;
        Ok(state)
    }

    /// What `status` reports of the spool, as of the last commit.
    pub fn figures(&self) -> Figures {
        Figures {
            last_seq: self.last_seq,
            pending: self.txn_count + self.telemetry_count,
            pending_bytes: self.txn_bytes + self.telemetry_bytes,
            pending_transactions: self.txn_count,
            oldest_appended_at: self.oldest_appended_at,
            evicted_total: self.evicted_total,
        }
    }

    fn count_mut(&mut self, class: Class) -> &mut u64 {
        match class {
            Class::Transaction => &mut self.txn_count,
            Class::Telemetry => &mut self.telemetry_count,
        }
    }

    fn bytes_mut(&mut self, class: Class) -> &mut u64 {
        match class {
            Class::Transaction => &mut self.txn_bytes,
            Class::Telemetry => &mut self.telemetry_bytes,
        }
    }
}

/// The spool's figures as the writer keeps them, published after every commit so that the
/// uplink's status message costs no scan of the spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub last_seq: u64,
    pub pending: u64,
    pub pending_bytes: u64,
    pub pending_transactions: u64,
    pub oldest_appended_at: Option<i64>,
    pub evicted_total: u64,
}

fn oldest_appended_at(conn: &Connection) -> Result<Option<i64>, SpoolError> {
    Ok(conn
        .query_row(
            "SELECT appended_at FROM records ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// The bytes of one class's pending bodies, counted.
fn class_bytes(conn: &Connection, class: Class) -> Result<u64, SpoolError> {
    let n: i64 = conn.query_row(
        "SELECT COALESCE(SUM(length(body)), 0) FROM records WHERE class = ?1",
        [class as i64],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// How hard a commit syncs. Appends are acknowledged to their callers, so they are synced
/// before the answer (`FULL`). A group of acknowledgements only deletes records the broker
/// already has: if a power cut takes the deletion back, those records are sent again and
/// the receivers drop the copies, so that group skips the fsync of the WAL (`NORMAL`); the
/// next synced commit, or a checkpoint, makes it durable with everything before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    Full,
    Normal,
}

impl SyncMode {
    fn of(group: &[Op]) -> Self {
        if group.iter().all(|op| matches!(op, Op::Ack { .. })) {
            Self::Normal
        } else {
            Self::Full
        }
    }

    fn set(self, conn: &Connection) -> Result<(), SpoolError> {
        let value = match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", value)?;
        Ok(())
    }
}

pub fn run(
    mut conn: Connection,
    path: &Path,
    mut state: WriterState,
    mut ops: mpsc::Receiver<Op>,
    last_seq: watch::Sender<u64>,
    figures: watch::Sender<Figures>,
) {
    let mut failures = FailureLog::default();
    // `open_writer` set FULL and read it back.
    let mut sync = SyncMode::Full;
    while let Some(first) = ops.blocking_recv() {
        let mut group = vec![first];
        let mut records = group_records(&group[0]);
        while records < MAX_GROUP_RECORDS {
            match ops.try_recv() {
                Ok(op) => {
                    records += group_records(&op);
                    group.push(op);
                }
                Err(_) => break,
            }
        }
        let before = state.clone();
        let wanted = SyncMode::of(&group);
        if wanted != sync {
            // Until the change takes, stay with the stricter mode already set.
            match wanted.set(&conn) {
                Ok(()) => sync = wanted,
                Err(e) => warn!(error = %e, "could not change the spool's sync mode"),
            }
        }
        match commit_group(&mut conn, &mut state, group) {
            Ok(replies) => {
                if state.last_seq != before.last_seq {
                    last_seq.send_replace(state.last_seq);
                }
                figures.send_replace(state.figures());
                for reply in replies {
                    reply.send();
                }
            }
            Err((e, replies)) => {
                failures.note(&e);
                state = before;
                let failure = Failure::of(&e);
                for reply in replies {
                    reply.fail(&failure);
                }
                // After a failed fsync the page cache cannot be trusted (PostgreSQL's
                // lesson): read the spool again from the disk before the next group. What
                // the failed group did is whatever the disk says now; a caller that retries
                // with its idempotency key gets that outcome.
                if matches!(failure, Failure::Storage(_)) {
                    match reopen(path, state.max_bytes) {
                        Ok((fresh, fresh_state)) => {
                            conn = fresh;
                            state = fresh_state;
                            last_seq.send_replace(state.last_seq);
                            figures.send_replace(state.figures());
                        }
                        Err(e) => {
                            error!(error = %e, "reopening the spool failed; retrying at the next group")
                        }
                    }
                }
            }
        }
    }
}

fn reopen(path: &Path, max_bytes: u64) -> Result<(Connection, WriterState), SpoolError> {
    let conn = super::schema::open_writer(path)?;
    let state = WriterState::load(&conn, max_bytes)?;
    Ok((conn, state))
}

/// Why a group failed, as its callers are told.
#[derive(Debug, Clone)]
enum Failure {
    DiskFull,
    Storage(String),
    Other(String),
}

impl Failure {
    fn of(e: &SpoolError) -> Self {
        use rusqlite::ErrorCode;
        let code = match e {
            SpoolError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => Some(f.code),
            _ => None,
        };
        match (code, e) {
            (Some(ErrorCode::DiskFull), _) => Self::DiskFull,
            (_, SpoolError::Io(io)) if io.kind() == std::io::ErrorKind::StorageFull => {
                Self::DiskFull
            }
            (Some(ErrorCode::SystemIoFailure), _) | (_, SpoolError::Io(_)) => {
                Self::Storage(e.to_string())
            }
            _ => Self::Other(e.to_string()),
        }
    }

    fn error(&self) -> SpoolError {
        match self {
            Self::DiskFull => SpoolError::DiskFull,
            Self::Storage(msg) => SpoolError::Storage(msg.clone()),
            Self::Other(msg) => {
                SpoolError::Io(std::io::Error::other(format!("commit failed: {msg}")))
            }
        }
    }
}

/// Storage failures come in runs (a full disk fails every group until space is freed):
/// the first of each window is logged, and the rest are counted into the next line.
#[derive(Default)]
struct FailureLog {
    window_start: Option<std::time::Instant>,
    suppressed: u64,
}

const FAILURE_LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

impl FailureLog {
    fn note(&mut self, e: &SpoolError) {
        let now = std::time::Instant::now();
        if self
            .window_start
            .is_some_and(|start| now.duration_since(start) < FAILURE_LOG_WINDOW)
        {
            self.suppressed += 1;
            return;
        }
        error!(
            error = %e,
            also_failed = self.suppressed,
            "spool commit failed; nothing in this group was acknowledged"
        );
        self.window_start = Some(now);
        self.suppressed = 0;
    }
}

fn group_records(op: &Op) -> usize {
    match op {
        Op::Append { records, .. } => records.len(),
        Op::AppendOnce { .. } => 1,
        Op::Ack { .. } => 1,
    }
}

/// A reply held back until the group's commit is durable.
enum Reply {
    Once(
        tokio::sync::oneshot::Sender<Result<Once, SpoolError>>,
        Result<Once, SpoolError>,
    ),
    Appended(
        tokio::sync::oneshot::Sender<Result<Appended, SpoolError>>,
        Result<Appended, SpoolError>,
    ),
    Acked(tokio::sync::oneshot::Sender<Result<u64, SpoolError>>, u64),
}

impl Reply {
    fn send(self) {
        // A caller that went away no longer needs its answer; the commit stands.
        match self {
            Reply::Appended(tx, result) => drop(tx.send(result)),
            Reply::Once(tx, result) => drop(tx.send(result)),
            Reply::Acked(tx, deleted) => drop(tx.send(Ok(deleted))),
        }
    }

    fn fail(self, failure: &Failure) {
        let err = || failure.error();
        match self {
            Reply::Appended(tx, _) => drop(tx.send(Err(err()))),
            Reply::Once(tx, _) => drop(tx.send(Err(err()))),
            Reply::Acked(tx, _) => drop(tx.send(Err(err()))),
        }
    }
}

fn commit_group(
    conn: &mut Connection,
    state: &mut WriterState,
    group: Vec<Op>,
) -> Result<Vec<Reply>, (SpoolError, Vec<Reply>)> {
    let mut replies = Vec::with_capacity(group.len());
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return Err((e.into(), group.into_iter().map(Op::into_reply).collect())),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let mut ops = group.into_iter();
    for op in ops.by_ref() {
        let step = match op {
            Op::Append { records, reply } => match answer(append(&tx, state, &records, now)) {
                Ok(result) => Ok(Reply::Appended(reply, result)),
                Err(e) => Err((e, Op::Append { records, reply }.into_reply())),
            },
            Op::AppendOnce {
                key,
                tx_id,
                record,
                reply,
            } => match append_once(&tx, state, &key, &tx_id, record, now) {
                Ok(result) => Ok(Reply::Once(reply, result)),
                Err(e) => Err((e, Reply::Once(reply, Err(SpoolError::Closed)))),
            },
            Op::Ack { range, reply } => match ack(&tx, state, range) {
                Ok(deleted) => Ok(Reply::Acked(reply, deleted)),
                Err(e) => Err((e, Reply::Acked(reply, 0))),
            },
        };
        match step {
            Ok(reply) => replies.push(reply),
            Err((e, failed)) => {
                // Every caller of the group, the failed one and those not reached yet,
                // hears of the failure; dropping the transaction rolls it all back.
                replies.push(failed);
                replies.extend(ops.map(Op::into_reply));
                return Err((e, replies));
            }
        }
    }
    let finish = || -> Result<(), SpoolError> {
        evict_over_cap(&tx, state)?;
        tx.execute(
            "UPDATE spool SET last_seq = ?1, evicted_total = ?2 WHERE id = 1",
            params![state.last_seq as i64, state.evicted_total as i64],
        )?;
        tx.commit()?;
        Ok(())
    };
    match finish() {
        Ok(()) => Ok(replies),
        Err(e) => Err((e, replies)),
    }
}

impl Op {
    /// The reply slot of an operation that will not run; `Reply::fail` fills in why.
    fn into_reply(self) -> Reply {
        match self {
            Op::Append { reply, .. } => Reply::Appended(reply, Err(SpoolError::Closed)),
            Op::AppendOnce { reply, .. } => Reply::Once(reply, Err(SpoolError::Closed)),
            Op::Ack { reply, .. } => Reply::Acked(reply, 0),
        }
    }
}

/// Appends one caller's records. A full spool refuses just this caller, before anything is
/// written; any other error leaves rows behind and must abort the group (see [`answer`]).
fn append(
    tx: &rusqlite::Transaction<'_>,
    state: &mut WriterState,
    records: &[NewRecord],
    now: i64,
) -> Result<Appended, SpoolError> {
    let txn_bytes: u64 = records
        .iter()
        .filter(|r| r.class == Class::Transaction)
        .map(|r| r.json.len() as u64)
        .sum();
    if txn_bytes > 0 && state.txn_bytes + txn_bytes > state.max_bytes {
        return Err(SpoolError::Full {
            needed: state.txn_bytes + txn_bytes,
            max: state.max_bytes,
        });
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO records (seq, class, appended_at, body) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let first = state.last_seq + 1;
    for (i, r) in records.iter().enumerate() {
        stmt.execute(params![
            (first + i as u64) as i64,
            r.class as i64,
            now,
            r.json.as_bytes()
        ])?;
        *state.bytes_mut(r.class) += r.json.len() as u64;
        *state.count_mut(r.class) += 1;
    }
    if !records.is_empty() {
        state.oldest_appended_at.get_or_insert(now);
    }
    state.last_seq += records.len() as u64;
    Ok(Appended {
        first,
        last: state.last_seq,
    })
}

/// Splits a refusal, which is that caller's answer while the group goes on, from a database
/// failure, which must abort the whole group: rows of a half-done append must never commit.
fn answer<T>(result: Result<T, SpoolError>) -> Result<Result<T, SpoolError>, SpoolError> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(refused @ SpoolError::Full { .. }) => Ok(Err(refused)),
        Err(failure) => Err(failure),
    }
}

/// Looks the key up and appends only if it is new. Runs inside the group's transaction, so
/// a second use of a key in the same group sees the first.
fn append_once(
    tx: &rusqlite::Transaction<'_>,
    state: &mut WriterState,
    key: &Keyed,
    tx_id: &str,
    record: NewRecord,
    now: i64,
) -> Result<Result<Once, SpoolError>, SpoolError> {
    let seen: Option<(String, i64, Option<String>)> = tx
        .prepare_cached("SELECT tx_id, seq, request FROM idempotency WHERE key = ?1")?
        .query_row([&key.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if let Some((tx_id, seq, request)) = seen {
        return Ok(Ok(key.replay(request.as_deref(), tx_id, seq as u64)));
    }
    let appended = match answer(append(tx, state, &[record], now))? {
        Ok(a) => a,
        // Refused (full): the key is not stored, so a retry may yet succeed.
        Err(refused) => return Ok(Err(refused)),
    };
    tx.prepare_cached(
        "INSERT INTO idempotency (key, tx_id, seq, created_at, request) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![key.key, tx_id, appended.first as i64, now, key.request])?;
    Ok(Ok(Once::Accepted {
        seq: appended.first,
    }))
}

fn ack(
    tx: &rusqlite::Transaction<'_>,
    state: &mut WriterState,
    range: AckRange,
) -> Result<u64, SpoolError> {
    let deleted = tx
        .prepare_cached("DELETE FROM records WHERE class = ?1 AND seq BETWEEN ?2 AND ?3")?
        .execute(params![
            range.class as i64,
            range.first as i64,
            range.last as i64
        ])? as u64;
    match range.held {
        // The range held exactly the envelope's rows: seqs only grow, so none can have
        // joined it since they were read.
        Some(held) if held.records == deleted => {
            let bytes = state.bytes_mut(range.class);
            *bytes = bytes.saturating_sub(held.bytes);
        }
        _ if deleted == 0 => {}
        // Part of it was gone (evicted, or acknowledged through an earlier copy of the
        // envelope), or the sender did not say: count again.
        _ => *state.bytes_mut(range.class) = class_bytes(tx, range.class)?,
    }
    if deleted > 0 {
        let count = state.count_mut(range.class);
        *count = count.saturating_sub(deleted);
        state.oldest_appended_at = oldest_appended_at(tx)?;
    }
    Ok(deleted)
}

/// Over `max_bytes`, deletes the oldest telemetry until the spool fits again.
fn evict_over_cap(
    tx: &rusqlite::Transaction<'_>,
    state: &mut WriterState,
) -> Result<(), SpoolError> {
    let total = state.txn_bytes + state.telemetry_bytes;
    if total <= state.max_bytes {
        return Ok(());
    }
    let excess = total - state.max_bytes;
    let mut freed = 0u64;
    let mut count = 0u64;
    let mut upto = None;
    {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, length(body) FROM records WHERE class = ?1 ORDER BY seq",
        )?;
        let mut rows = stmt.query([Class::Telemetry as i64])?;
        while let Some(row) = rows.next()? {
            let (seq, len): (i64, i64) = (row.get(0)?, row.get(1)?);
            freed += len as u64;
            count += 1;
            upto = Some(seq);
            if freed >= excess {
                break;
            }
        }
    }
    let Some(upto) = upto else {
        return Ok(());
    };
    tx.prepare_cached("DELETE FROM records WHERE class = ?1 AND seq <= ?2")?
        .execute(params![Class::Telemetry as i64, upto])?;
    state.telemetry_bytes -= freed;
    state.telemetry_count = state.telemetry_count.saturating_sub(count);
    state.oldest_appended_at = oldest_appended_at(tx)?;
    state.evicted_total += count;
    warn!(
        evicted = count,
        bytes = freed,
        up_to_seq = upto,
        "spool over max_bytes: evicted oldest telemetry"
    );
    Ok(())
}
