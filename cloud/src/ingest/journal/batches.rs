//! Lake objects: chunks of lines sealed into a batch under a key fixed before the write,
//! forgotten once written, and found again after a crash.

use rusqlite::params;

use super::{Journal, JournalError};

/// Lines of one partition, durable in the journal.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub id: i64,
    pub partition: String,
    pub lines: Vec<u8>,
    pub records: u64,
    pub first_received_ms: i64,
}

/// A lake object planned in the journal, not yet known to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub batch: i64,
    pub partition: String,
    pub key: String,
    pub records: u64,
}

impl Journal {
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
}
