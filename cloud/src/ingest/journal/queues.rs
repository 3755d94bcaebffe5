//! The durable queues beside the lake's chunks: `routes` (transactions for the loyalty
//! router) and `hot` (entries for the dashboards' hot store). Their drainers read through
//! a [`QueueReader`]; only the pipeline deletes, once told what was done.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Chunk, Journal, JournalError};
use crate::lake::Line;

/// Which durable queues the journal fills beside the lake's chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queues {
    /// `routes`: transactions for the loyalty router.
    pub routes: bool,
    /// `hot`: readings, status and device activity for the dashboards' hot store.
    pub hot: bool,
}

/// The read side of one of the journal's queues (`routes` or `hot`), for the task that
/// drains it: its own connection, so it reads while the pipeline writes (WAL). Only the
/// pipeline deletes entries, once the task reports them done.
pub struct QueueReader {
    conn: Connection,
    after_sql: String,
    oldest_sql: String,
}

impl QueueReader {
    pub fn routes(dir: &Path) -> Result<Self, JournalError> {
        Self::open(dir, "routes")
    }

    pub fn hot(dir: &Path) -> Result<Self, JournalError> {
        Self::open(dir, "hot")
    }

    fn open(dir: &Path, table: &str) -> Result<Self, JournalError> {
        let conn = Connection::open_with_flags(
            dir.join("ingest.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Self {
            conn,
            after_sql: format!("SELECT id, body FROM {table} WHERE id > ?1 ORDER BY id LIMIT ?2"),
            oldest_sql: format!("SELECT body FROM {table} ORDER BY id LIMIT 1"),
        })
    }

    /// Up to `limit` entries queued after id `after`, oldest first: `(id, body)`.
    pub fn after(&self, after: i64, limit: usize) -> Result<Vec<(i64, String)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(&self.after_sql)?;
        let rows = stmt.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The body of the oldest entry still queued.
    pub fn oldest(&self) -> Result<Option<String>, JournalError> {
        Ok(self
            .conn
            .query_row(&self.oldest_sql, [], |r| r.get(0))
            .optional()?)
    }
}

impl Journal {
    /// The router's report, made durable in one transaction: routes the ledger answered are
    /// dropped, and those it rejected leave `rejects` (lines for `errors/`) behind in their
    /// place. Returns the chunks of those lines, for the lake.
    pub fn routed(
        &mut self,
        answered: &[i64],
        rejects: &[Line],
        received_ms: i64,
    ) -> Result<Vec<Chunk>, JournalError> {
        let mut by_partition: BTreeMap<&str, (Vec<u8>, u64)> = BTreeMap::new();
        for line in rejects {
            let entry = by_partition.entry(&line.partition).or_default();
            entry.0.extend_from_slice(line.text.as_bytes());
            entry.1 += 1;
        }
        let tx = self.conn.transaction()?;
        let mut chunks = Vec::with_capacity(by_partition.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO chunks (partition, lines, records, first_received_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (partition, (lines, records)) in by_partition {
                insert.execute(params![partition, lines, records as i64, received_ms])?;
                chunks.push(Chunk {
                    id: tx.last_insert_rowid(),
                    partition: partition.to_owned(),
                    lines,
                    records,
                    first_received_ms: received_ms,
                });
            }
            let mut delete = tx.prepare_cached("DELETE FROM routes WHERE id = ?1")?;
            for id in answered {
                delete.execute(params![id])?;
            }
        }
        tx.commit()?;
        Ok(chunks)
    }

    /// Transactions waiting for the loyalty router.
    pub fn routes_pending(&self) -> Result<u64, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM routes", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Entries waiting for the hot store.
    pub fn hot_pending(&self) -> Result<u64, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM hot", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// The hot store has every entry up to id `upto`: they leave the queue.
    pub fn hot_written(&mut self, upto: i64) -> Result<(), JournalError> {
        self.conn
            .execute("DELETE FROM hot WHERE id <= ?1", params![upto])?;
        Ok(())
    }
}
