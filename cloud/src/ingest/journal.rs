//! The ingest's local journal (SQLite): where a message's records are durable before the
//! broker hears an acknowledgement, and where a lake object is planned before it is written.
//!
//! - `chunks`: NDJSON lines, grouped by partition, from one admission (many messages, one
//!   transaction, one fsync). Deleted only once the object that holds them is in the lake.
//! - `batches`: sealed lake objects: a partition, its chunks, and the object key, fixed
//!   *before* the upload. After a crash the same chunks are written under the same key
//!   again, so the lake never holds a batch twice (and `If-None-Match: *` makes the second
//!   write a no-op). The ids are AUTOINCREMENT: a key is never reused for other lines.
//! - `seen`: per (device, spool), the seqs admitted so far (`SeenSeqs`), updated in the same
//!   transaction as the chunks, so a resend is recognised across restarts.
//! - `routes`: transaction records for the loyalty router, in the same transaction.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ferry_shared::{DeviceId, SpoolId};
use rusqlite::{Connection, OptionalExtension, params};

use super::seen::SeenSeqs;
use crate::lake::Line;

const SCHEMA: &str = include_str!("../../migrations/0001_journal.sql");

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("ingest journal: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ingest journal: pragma {name} reads back {got:?}, not {want:?}")]
    Pragma {
        name: &'static str,
        want: &'static str,
        got: String,
    },
    #[error("ingest journal: bad seen ranges for {device}/{spool}: {text:?}")]
    Seen {
        device: String,
        spool: String,
        text: String,
    },
}

/// What one message brought, decoded and checked.
#[derive(Debug)]
pub enum Admission {
    Records {
        device: DeviceId,
        spool: SpoolId,
        records: Vec<Admitted>,
    },
    Reject {
        reason: &'static str,
        line: Line,
    },
    /// A message on a device's `status` topic: for the hot store only, not the lake.
    Status {
        hot: String,
    },
}

#[derive(Debug)]
pub struct Admitted {
    pub seq: u64,
    pub line: Line,
    /// The `tx_id` of a `txn`: the loyalty router gets its lake line.
    pub tx_id: Option<String>,
    /// A reading: its lake line also goes to the hot store's queue.
    pub hot: bool,
}

/// Lines of one partition, durable in the journal.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub id: i64,
    pub partition: String,
    pub lines: Vec<u8>,
    pub records: u64,
    pub first_received_ms: i64,
}

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

/// A lake object planned in the journal, not yet known to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub batch: i64,
    pub partition: String,
    pub key: String,
    pub records: u64,
}

#[derive(Debug, Default)]
pub struct AdmitOutcome {
    pub chunks: Vec<Chunk>,
    pub records: u64,
    pub duplicates: u64,
    pub rejects: u64,
    /// Transactions queued for the loyalty router.
    pub routed: u64,
    /// Entries queued for the hot store.
    pub hot: u64,
}

pub struct Journal {
    conn: Connection,
    instance: String,
    seen: HashMap<(String, String), SeenSeqs>,
    queues: Queues,
}

impl Journal {
    pub fn open(dir: &Path, queues: Queues) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("{}: {e}", dir.display())),
            )
        })?;
        let conn = Connection::open(dir.join("ingest.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::Pragma {
                name: "journal_mode",
                want: "wal",
                got: mode,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        if sync != 2 {
            return Err(JournalError::Pragma {
                name: "synchronous",
                want: "2 (FULL)",
                got: sync.to_string(),
            });
        }
        conn.execute_batch(SCHEMA)?;
        let instance = match conn
            .query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
        {
            Some(id) => id,
            None => {
                let id = ulid::Ulid::new().to_string().to_lowercase();
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('instance', ?1)",
                    params![id],
                )?;
                id
            }
        };
        let mut seen = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT device, spool, ranges FROM seen")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let (device, spool, text): (String, String, String) =
                    (row.get(0)?, row.get(1)?, row.get(2)?);
                let set = SeenSeqs::from_text(&text).ok_or_else(|| JournalError::Seen {
                    device: device.clone(),
                    spool: spool.clone(),
                    text: text.clone(),
                })?;
                seen.insert((device, spool), set);
            }
        }
        Ok(Self {
            conn,
            instance,
            seen,
            queues,
        })
    }

    /// This journal's id, part of every object key it plans.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Makes the new records of `admissions` (and every reject) durable in one transaction.
    /// Records seen before are counted as duplicates and left out. When this returns `Ok`,
    /// the messages may be acknowledged.
    pub fn admit(
        &mut self,
        admissions: Vec<Admission>,
        received_ms: i64,
    ) -> Result<AdmitOutcome, JournalError> {
        let mut outcome = AdmitOutcome::default();
        let mut by_partition: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
        let mut touched: HashMap<(String, String), SeenSeqs> = HashMap::new();
        let mut routes = Vec::new();
        let mut hot = Vec::new();
        for admission in admissions {
            match admission {
                Admission::Status { hot: item } => {
                    if self.queues.hot {
                        hot.push(item);
                    }
                }
                Admission::Reject { line, .. } => {
                    outcome.rejects += 1;
                    let entry = by_partition.entry(line.partition).or_default();
                    entry.0.extend_from_slice(line.text.as_bytes());
                    entry.1 += 1;
                }
                Admission::Records {
                    device,
                    spool,
                    records,
                } => {
                    if self.queues.hot {
                        hot.push(seen_item(device.as_str(), received_ms));
                    }
                    let key = (device.to_string(), spool.to_string());
                    let set = touched
                        .entry(key.clone())
                        .or_insert_with(|| self.seen.get(&key).cloned().unwrap_or_default());
                    for record in records {
                        if !set.insert(record.seq) {
                            outcome.duplicates += 1;
                            continue;
                        }
                        outcome.records += 1;
                        if self.queues.routes
                            && let Some(tx_id) = record.tx_id
                        {
                            routes.push((tx_id, record.line.text.trim_end().to_owned()));
                        }
                        if self.queues.hot && record.hot {
                            hot.push(record.line.text.trim_end().to_owned());
                        }
                        let entry = by_partition.entry(record.line.partition).or_default();
                        entry.0.extend_from_slice(record.line.text.as_bytes());
                        entry.1 += 1;
                    }
                }
            }
        }

        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO chunks (partition, lines, records, first_received_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (partition, (lines, records)) in by_partition {
                insert.execute(params![partition, lines, records as i64, received_ms])?;
                outcome.chunks.push(Chunk {
                    id: tx.last_insert_rowid(),
                    partition,
                    lines,
                    records,
                    first_received_ms: received_ms,
                });
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO seen (device, spool, ranges) VALUES (?1, ?2, ?3)
                 ON CONFLICT (device, spool) DO UPDATE SET ranges = excluded.ranges",
            )?;
            for ((device, spool), set) in &touched {
                upsert.execute(params![device, spool, set.to_text()])?;
            }
            let mut route =
                tx.prepare_cached("INSERT INTO routes (tx_id, body) VALUES (?1, ?2)")?;
            for (tx_id, body) in &routes {
                route.execute(params![tx_id, body])?;
            }
            let mut queue_hot = tx.prepare_cached("INSERT INTO hot (body) VALUES (?1)")?;
            for body in &hot {
                queue_hot.execute(params![body])?;
            }
        }
        tx.commit()?;
        outcome.routed = routes.len() as u64;
        outcome.hot = hot.len() as u64;
        // Only now, with the transaction committed, does memory agree with the disk.
        self.seen.extend(touched);
        Ok(outcome)
    }

    /// Plans one lake object of `chunks` (all of `partition`), before it is written.
    pub fn seal(
        &mut self,
        partition: &str,
        chunk_ids: &[i64],
        records: u64,
    ) -> Result<Sealed, JournalError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO batches (partition, object_key, records) VALUES (?1, '', ?2)",
            params![partition, records as i64],
        )?;
        let batch = tx.last_insert_rowid();
        let key = format!("{partition}/{}-{batch:012}.ndjson.gz", self.instance);
        tx.execute(
            "UPDATE batches SET object_key = ?1 WHERE id = ?2",
            params![key, batch],
        )?;
        {
            let mut assign = tx.prepare_cached("UPDATE chunks SET batch = ?1 WHERE id = ?2")?;
            for id in chunk_ids {
                assign.execute(params![batch, id])?;
            }
        }
        tx.commit()?;
        Ok(Sealed {
            batch,
            partition: partition.to_owned(),
            key,
            records,
        })
    }

    /// The batch's lake object is written: its lines leave the journal.
    pub fn written(&mut self, batch: i64) -> Result<(), JournalError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM chunks WHERE batch = ?1", params![batch])?;
        tx.execute("DELETE FROM batches WHERE id = ?1", params![batch])?;
        tx.commit()?;
        Ok(())
    }

    /// Batches sealed but not known to be written, oldest first: a crash came between.
    pub fn sealed(&self) -> Result<Vec<Sealed>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, partition, object_key, records FROM batches ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(Sealed {
                batch: r.get(0)?,
                partition: r.get(1)?,
                key: r.get(2)?,
                records: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The lines of a sealed batch, in the order they were admitted.
    pub fn batch_lines(&self, batch: i64) -> Result<Vec<Vec<u8>>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT lines FROM chunks WHERE batch = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![batch], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Chunks in no batch yet, oldest first: at start they go back into open partitions.
    pub fn unsealed(&self) -> Result<Vec<Chunk>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, partition, lines, records, first_received_ms FROM chunks
             WHERE batch IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Chunk {
                id: r.get(0)?,
                partition: r.get(1)?,
                lines: r.get(2)?,
                records: r.get::<_, i64>(3)? as u64,
                first_received_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

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

/// A `seen` entry of the hot queue: the device was heard from at `at_ms`.
fn seen_item(device: &str, at_ms: i64) -> String {
    serde_json::to_string(&crate::dashboard::HotItem::Seen {
        device: device.to_owned(),
        at_ms,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::Line;

    const ROUTES: Queues = Queues {
        routes: true,
        hot: false,
    };

    fn records(device: &str, seqs: &[u64]) -> Admission {
        Admission::Records {
            device: DeviceId::new(device).expect("id"),
            spool: SpoolId::new("01JD3W6Q3X8F2M7C9K4N5P6R8T").expect("spool"),
            records: seqs
                .iter()
                .map(|&seq| Admitted {
                    seq,
                    line: Line {
                        partition: format!("raw/type=reading/dt=2026-11-22/hour={:02}", seq % 2),
                        text: format!("{{\"seq\":{seq}}}\n"),
                    },
                    tx_id: None,
                    hot: true,
                })
                .collect(),
        }
    }

    #[test]
    fn resends_are_recognised_across_reopen_and_batches_survive_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path(), Queues::default()).expect("open");
        let instance = j.instance().to_owned();
        let out = j
            .admit(vec![records("a", &[1, 2, 3]), records("a", &[3, 4])], 1)
            .expect("admit");
        assert_eq!((out.records, out.duplicates, out.chunks.len()), (4, 1, 2));
        let odd = out
            .chunks
            .iter()
            .find(|c| c.partition.ends_with("01"))
            .expect("odd");
        let sealed = j
            .seal(&odd.partition, &[odd.id], odd.records)
            .expect("seal");
        assert!(
            sealed
                .key
                .starts_with("raw/type=reading/dt=2026-11-22/hour=01/")
        );
        assert!(sealed.key.ends_with(".ndjson.gz") && sealed.key.contains(&instance));
        drop(j);

        let mut j = Journal::open(dir.path(), Queues::default()).expect("reopen");
        assert_eq!(j.instance(), instance, "the instance id is kept");
        assert_eq!(j.sealed().expect("sealed"), vec![sealed.clone()]);
        assert_eq!(
            j.batch_lines(sealed.batch).expect("lines").concat(),
            b"{\"seq\":1}\n{\"seq\":3}\n"
        );
        let unsealed = j.unsealed().expect("unsealed");
        assert_eq!(unsealed.len(), 1);
        assert_eq!(unsealed[0].lines, b"{\"seq\":2}\n{\"seq\":4}\n");
        let out = j
            .admit(vec![records("a", &[1, 2, 3, 4, 5])], 2)
            .expect("admit");
        assert_eq!((out.records, out.duplicates), (1, 4));
        j.written(sealed.batch).expect("written");
        assert!(j.sealed().expect("sealed").is_empty());
        let next = j.seal("p", &[], 0).expect("seal");
        assert!(next.batch > sealed.batch, "batch ids are never reused");
    }

    #[test]
    fn routed_transactions_leave_the_queue_and_rejects_become_error_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let mut j = Journal::open(dir.path(), ROUTES).expect("open");
        let mut admission = records("pos-1", &[1, 2, 3]);
        if let Admission::Records { records, .. } = &mut admission {
            for r in records.iter_mut() {
                r.tx_id = Some(format!("pos-1:tx-{}", r.seq));
            }
        }
        j.admit(vec![admission], 0).expect("admit");
        let queued = QueueReader::routes(dir.path()).expect("queue");
        let routes = queued.after(0, 10).expect("read");
        assert_eq!(routes.len(), 3);
        let reject = Line {
            partition: "errors/dt=2026-11-23".into(),
            text: "{\"reason\":\"loyalty_unknown_program\"}\n".into(),
        };
        let ids: Vec<i64> = routes.iter().map(|r| r.0).collect();
        let chunks = j.routed(&ids[..2], &[reject], 5).expect("routed");
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].partition, "errors/dt=2026-11-23");
        assert_eq!(j.routes_pending().expect("pending"), 1);
        assert_eq!(queued.after(ids[1], 10).expect("read").len(), 1);
        assert!(
            j.unsealed()
                .expect("unsealed")
                .iter()
                .any(|c| c.partition.starts_with("errors/")),
            "the reject line is durable before its route is gone"
        );
    }

    #[test]
    fn transactions_are_queued_for_the_router_with_their_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path(), ROUTES).expect("open");
        let mut admission = records("pos", &[1, 2]);
        if let Admission::Records { records, .. } = &mut admission {
            records[1].tx_id = Some("pos:tx-2".into());
        }
        j.admit(vec![admission], 1).expect("admit");
        assert_eq!(j.routes_pending().expect("routes"), 1);
        let mut again = records("pos", &[2]);
        if let Admission::Records { records, .. } = &mut again {
            records[0].tx_id = Some("pos:tx-2".into());
        }
        j.admit(vec![again], 2).expect("admit");
        assert_eq!(
            j.routes_pending().expect("routes"),
            1,
            "a resend is not routed twice"
        );
        let other = tempfile::tempdir().expect("tempdir");
        let mut off = Journal::open(other.path(), Queues::default()).expect("open");
        let mut admission = records("pos", &[3]);
        if let Admission::Records { records, .. } = &mut admission {
            records[0].tx_id = Some("pos:tx-3".into());
        }
        off.admit(vec![admission], 1).expect("admit");
        assert_eq!(
            off.routes_pending().expect("routes"),
            0,
            "no [loyalty], no queue"
        );
    }

    #[test]
    fn new_readings_status_and_activity_are_queued_for_the_hot_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queues = Queues {
            routes: false,
            hot: true,
        };
        let mut j = Journal::open(dir.path(), queues).expect("open");
        let status = Admission::Status {
            hot: "{\"k\":\"status\"}".into(),
        };
        let out = j
            .admit(vec![records("ws", &[1, 2]), status], 7)
            .expect("admit");
        assert_eq!(out.hot, 4, "two readings, one status, one seen");
        let out = j.admit(vec![records("ws", &[2, 3])], 8).expect("admit");
        assert_eq!(out.hot, 2, "the resent reading is not queued again");
        let reader = QueueReader::hot(dir.path()).expect("reader");
        let queued = reader.after(0, 100).expect("read");
        assert_eq!(queued.len(), 6);
        assert!(queued[0].1.contains("\"k\":\"seen\""), "{}", queued[0].1);
        j.hot_written(queued[3].0).expect("written");
        assert_eq!(j.hot_pending().expect("pending"), 2);
        assert_eq!(
            reader.oldest().expect("oldest").as_deref(),
            Some(queued[4].1.as_str())
        );
        let mut off =
            Journal::open(tempfile::tempdir().expect("dir").path(), ROUTES).expect("open");
        assert_eq!(
            off.admit(vec![records("ws", &[1])], 1).expect("admit").hot,
            0
        );
    }

    #[test]
    fn journal_mode_reads_back_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(dir.path(), Queues::default()).expect("open");
        let mode: String = j
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
    }
}
