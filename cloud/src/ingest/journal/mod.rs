//! The ingest's local journal (SQLite): where a message's records are durable before the
//! broker hears an acknowledgement, and where a lake object is planned before it is written.
//!
//! - `chunks`: NDJSON lines, grouped by partition, from one admission (many messages, one
//!   transaction, one fsync). Deleted only once the object that holds them is in the lake.
//! - `batches`: sealed lake objects: a partition, its chunks, and the object key, fixed
//!   *before* the upload. After a crash the same chunks are written under the same key
//!   again, so the lake never holds a batch twice (and `If-None-Match: *` makes the second
//!   write a no-op). The ids are AUTOINCREMENT: a key is never reused for other lines.
//! - `seen_ranges`: per (device, spool), the seqs admitted so far (`SeenSeqs`), one row per
//!   range, updated in the same transaction as the chunks (only the ranges that moved), so
//!   a resend is recognised across restarts.
//! - `routes`: transaction records for the loyalty router, in the same transaction.
//! - `hot`: readings, status and device activity for the dashboards' hot store, likewise.
//!
//! Here: opening (pragmas read back, schema, the seen sets loaded). [`admit`]: the batch
//! commit of admitted messages. [`batches`]: sealing, writing and recovering lake objects.
//! [`queues`]: the `routes` and `hot` queues and their readers.

mod admit;
mod batches;
mod queues;

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

pub use admit::{Admission, Admitted};
pub use batches::Chunk;
pub use queues::{QueueReader, Queues};

use super::seen::SeenSeqs;

const SCHEMA: &str = include_str!("../../../migrations/0001_journal.sql");

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

pub struct Journal {
    conn: Connection,
    instance: String,
    seen: HashMap<(String, String), SeenSeqs>,
    queues: Queues,
}

impl Journal {
    pub fn open(dir: &Path, queues: Queues) -> Result<Self, JournalError> {
        ferry_shared::durable_dir::create_dir_all(dir).map_err(|e| {
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
        migrate_seen_text(&conn)?;
        let mut seen: HashMap<(String, String), SeenSeqs> = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT device, spool, lo, hi FROM seen_ranges")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let (device, spool, lo, hi): (String, String, i64, i64) =
                    (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                seen.entry((device, spool))
                    .or_default()
                    .restore(lo as u64, hi as u64);
            }
        }
        Ok(Self {
            conn,
            instance,
            seen,
            queues,
        })
    }

    /// How many seq ranges the journal keeps for one (device, spool).
    pub fn seen_ranges(&self, device: &str, spool: &str) -> usize {
        self.seen
            .get(&(device.to_owned(), spool.to_owned()))
            .map_or(0, SeenSeqs::ranges)
    }

    /// This journal's id, part of every object key it plans.
    pub fn instance(&self) -> &str {
        &self.instance
    }
}

/// Moves the sets older journals kept as one text row each into `seen_ranges`.
fn migrate_seen_text(conn: &Connection) -> Result<(), JournalError> {
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT device, spool, ranges FROM seen")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    for (device, spool, text) in rows {
        let set = SeenSeqs::from_text(&text).ok_or_else(|| JournalError::Seen {
            device: device.clone(),
            spool: spool.clone(),
            text: text.clone(),
        })?;
        for (lo, hi) in set.iter() {
            tx.execute(
                "INSERT OR REPLACE INTO seen_ranges (device, spool, lo, hi) VALUES (?1, ?2, ?3, ?4)",
                params![device, spool, lo as i64, hi as i64],
            )?;
        }
        tx.execute(
            "DELETE FROM seen WHERE device = ?1 AND spool = ?2",
            params![device, spool],
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::Line;
    use ferry_shared::{DeviceId, SpoolId};

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
