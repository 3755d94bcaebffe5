//! Admission: a group of decoded messages made durable in one transaction (one fsync):
//! lake lines into chunks, resends recognised and left out, queue entries for the router
//! and the hot store beside them.

use std::collections::BTreeMap;

use ferry_shared::{DeviceId, SpoolId};
use rusqlite::params;

use super::{Chunk, Journal, JournalError};
use crate::ingest::seen::Edit;
use crate::lake::Line;

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

impl Journal {
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
        // What this admission changed in the seen sets: undone should the commit fail, and
        // the ranges to write (`None`: delete).
        // One entry per message, so the (device, spool) key is not copied per record.
        let mut edits: Vec<((String, String), Vec<Edit>)> = Vec::new();
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
                    let set = self.seen.entry(key.clone()).or_default();
                    let mut made = Vec::with_capacity(records.len());
                    for record in records {
                        let Some(edit) = set.insert(record.seq) else {
                            outcome.duplicates += 1;
                            continue;
                        };
                        made.push(edit);
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
                    edits.push((key, made));
                }
            }
        }

        // The last word on each range this admission touched.
        let mut rows: BTreeMap<(&str, &str, u64), Option<u64>> = BTreeMap::new();
        for ((device, spool), made) in &edits {
            for edit in made {
                rows.insert((device, spool, edit.set.0), Some(edit.set.1));
                // After the set: at the bound, the range forgotten can be the one just made.
                for (lo, _) in &edit.removed {
                    rows.insert((device, spool, *lo), None);
                }
            }
        }
        let written = self.write_admission(
            &rows,
            &mut outcome,
            by_partition,
            &routes,
            &hot,
            received_ms,
        );
        if let Err(e) = written {
            // Memory goes back to what the disk holds.
            for (key, made) in edits.iter().rev() {
                if let Some(set) = self.seen.get_mut(key) {
                    made.iter().rev().for_each(|edit| set.undo(edit));
                }
            }
            return Err(e);
        }
        outcome.routed = routes.len() as u64;
        outcome.hot = hot.len() as u64;
        Ok(outcome)
    }

    /// The admission's one transaction: chunks, seen ranges, and the queues.
    fn write_admission(
        &mut self,
        rows: &BTreeMap<(&str, &str, u64), Option<u64>>,
        outcome: &mut AdmitOutcome,
        by_partition: BTreeMap<String, (Vec<u8>, u64)>,
        routes: &[(String, String)],
        hot: &[String],
        received_ms: i64,
    ) -> Result<(), JournalError> {
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
                "INSERT OR REPLACE INTO seen_ranges (device, spool, lo, hi) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut delete = tx.prepare_cached(
                "DELETE FROM seen_ranges WHERE device = ?1 AND spool = ?2 AND lo = ?3",
            )?;
            for ((device, spool, lo), hi) in rows {
                match hi {
                    Some(hi) => upsert.execute(params![device, spool, *lo as i64, *hi as i64])?,
                    None => delete.execute(params![device, spool, *lo as i64])?,
                };
            }
            let mut route =
                tx.prepare_cached("INSERT INTO routes (tx_id, body) VALUES (?1, ?2)")?;
            for (tx_id, body) in routes {
                route.execute(params![tx_id, body])?;
            }
            let mut queue_hot = tx.prepare_cached("INSERT INTO hot (body) VALUES (?1)")?;
            for body in hot {
                queue_hot.execute(params![body])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A `seen` entry of the hot queue: the device was heard from at `at_ms`.
fn seen_item(device: &str, at_ms: i64) -> String {
    serde_json::to_string(&crate::hot::HotItem::Seen {
        device: device.to_owned(),
        at_ms,
    })
    .unwrap_or_default()
}
