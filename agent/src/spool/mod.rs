//! The spool: a SQLite outbox in which every record is durable before anything is
//! acknowledged, and from which a record is deleted only on its PUBACK.
//!
//! One thread ([`writer`]) owns the only writing connection. Callers send it operations over
//! a bounded channel; operations that queue up together commit in one transaction, with one
//! fsync (group commit). Readers ([`reader`]) use their own read-only connections, which WAL
//! lets run beside the writer, in this process or in `ferry-agent status`.

mod reader;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use ferry_shared::record::Unsequenced;
use ferry_shared::{SpoolId, WireError};
use tokio::sync::{mpsc, oneshot, watch};

pub use reader::{PendingRow, SpoolReader, SpoolStatus};
pub use schema::{FILE_NAME, FORMAT};

/// Records of the two classes drain and evict differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// `txn` records: drained first, never evicted.
    Transaction = 0,
    /// `reading`, `scan` and `event` records: evicted oldest first over `spool.max_bytes`.
    Telemetry = 1,
}

impl Class {
    pub const DRAIN_ORDER: [Class; 2] = [Class::Transaction, Class::Telemetry];
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full: transactions would take {needed} of the {max} bytes allowed")]
    Full { needed: u64, max: u64 },
    #[error("invalid record: {0}")]
    Invalid(#[from] WireError),
    #[error("spool database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("spool database: pragma {name} reads back {got:?}, not {want:?}")]
    Pragma {
        name: String,
        want: String,
        got: String,
    },
    #[error(
        "spool database has format {0}, newer than this agent reads ({FORMAT}); refusing to touch it"
    )]
    FutureSchema(i64),
    #[error("spool database has a bad identity row: {0}")]
    Identity(String),
    #[error("no spool at {0} (has the agent run with this data_dir?)")]
    Missing(PathBuf),
    #[error("the spool is being created; try again in a moment")]
    BeingCreated,
    #[error("spool I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The disk under the spool is full: nothing of the group was stored.
    #[error("the disk under the spool is full")]
    DiskFull,
    /// The storage failed (an I/O error, a failed fsync): the group's outcome is unknown
    /// until the connection is reopened, which the writer does before its next group.
    #[error("spool storage failed: {0}")]
    Storage(String),
    #[error("spool writer has stopped")]
    Closed,
}

/// A record ready for the spool: validated and serialised, but without a seq yet.
#[derive(Debug, Clone)]
pub struct NewRecord {
    class: Class,
    json: String,
}

impl NewRecord {
    pub fn new(record: &Unsequenced) -> Result<Self, WireError> {
        let class = if record.body.is_txn() {
            Class::Transaction
        } else {
            Class::Telemetry
        };
        Ok(Self {
            class,
            json: record.to_spool_json()?,
        })
    }
}

/// The seqs given to one append: `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first: u64,
    pub last: u64,
}

/// Acknowledges records `first..=last` of one class. Records of the other class in that
/// range, and rows already gone, are untouched, which is what makes a range a safe ack for
/// a batch that was read as `class = ? AND seq > ? ORDER BY seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRange {
    pub class: Class,
    pub first: u64,
    pub last: u64,
    /// What the envelope held of the range, when the sender knows: the writer then frees
    /// its bytes without reading the rows back.
    pub held: Option<Held>,
}

/// The records of an [`AckRange`] as they were read for an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub records: u64,
    /// The sum of their bodies' lengths.
    pub bytes: u64,
}

/// The outcome of [`Spool::append_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// Appended now, under this seq.
    Accepted { seq: u64 },
    /// The key was accepted before for the same request; nothing was appended. Carries the
    /// original answer.
    Replayed { tx_id: String, seq: u64 },
    /// The key was accepted before for a different request; nothing was appended.
    Mismatch { tx_id: String },
}

/// An idempotency key and the request it comes with: a key names one request, never two.
#[derive(Debug, Clone)]
pub struct Keyed {
    pub key: String,
    /// The request's fields as canonical JSON, the key left out.
    pub request: String,
}

impl Keyed {
    /// What a key stored with `stored` (`None`: stored before requests were kept) says of
    /// this request, given the original answer.
    pub fn replay(&self, stored: Option<&str>, tx_id: String, seq: u64) -> Once {
        match stored {
            Some(stored) if stored != self.request => Once::Mismatch { tx_id },
            _ => Once::Replayed { tx_id, seq },
        }
    }
}

enum Op {
    Append {
        records: Vec<NewRecord>,
        reply: oneshot::Sender<Result<Appended, SpoolError>>,
    },
    AppendOnce {
        key: Keyed,
        tx_id: String,
        record: NewRecord,
        reply: oneshot::Sender<Result<Once, SpoolError>>,
    },
    Ack {
        range: AckRange,
        reply: oneshot::Sender<Result<u64, SpoolError>>,
    },
}

/// A cheap, cloneable handle to the spool.
#[derive(Clone)]
pub struct Spool {
    ops: mpsc::Sender<Op>,
    id: SpoolId,
    data_dir: PathBuf,
    path: PathBuf,
    last_seq: watch::Receiver<u64>,
    figures: watch::Receiver<writer::Figures>,
    readable_by: u32,
}

/// Joins the writer thread; returned by [`Spool::open`] so that shutdown can wait for the
/// last commit after every handle is dropped.
#[must_use = "join the writer at shutdown"]
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("spool writer thread panicked");
        }
    }
}

impl Spool {
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(schema::FILE_NAME)
    }

    /// Opens or creates the spool in `data_dir`, recovering what an earlier run left.
    pub fn open(data_dir: &Path, max_bytes: u64) -> Result<(Spool, WriterThread), SpoolError> {
        crate::durable_file::create_dir_all(data_dir)?;
        let path = Self::path_in(data_dir);
        let new = !path.exists();
        let conn = schema::open_writer(&path)?;
        if new {
            // SQLite fsyncs the folder for its WAL, not for the database file it creates.
            crate::durable_file::sync_dir(data_dir)?;
        }
        let id = schema::spool_id(&conn)?;
        let readable_by = schema::readable_by(&conn)?;
        let state = writer::WriterState::load(&conn, max_bytes)?;
        let (last_seq_tx, last_seq) = watch::channel(state.last_seq);
        let (figures_tx, figures) = watch::channel(state.figures());
        let (ops, rx) = mpsc::channel(1024);
        let thread = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn({
                let path = path.clone();
                move || writer::run(conn, &path, state, rx, last_seq_tx, figures_tx)
            })?;
        let data_dir = data_dir.to_owned();
        Ok((
            Spool {
                ops,
                id,
                data_dir,
                path,
                last_seq,
                figures,
                readable_by,
            },
            WriterThread(thread),
        ))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn id(&self) -> &SpoolId {
        &self.id
    }

    /// The oldest spool format a binary must know to use this spool.
    pub fn readable_by(&self) -> u32 {
        self.readable_by
    }

    /// The spool's figures as of the last commit, from the writer's own count: no scan of
    /// the spool, which at a million pending records would take a Pi a noticeable while.
    /// (`SpoolReader::status` counts them, for another process.)
    pub fn status(&self) -> SpoolStatus {
        let f = *self.figures.borrow();
        let now = chrono::Utc::now().timestamp_millis();
        SpoolStatus {
            spool: self.id.to_string(),
            last_seq: f.last_seq,
            pending: f.pending,
            pending_bytes: f.pending_bytes,
            pending_transactions: f.pending_transactions,
            oldest_pending_age_s: f
                .oldest_appended_at
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
            evicted_total: f.evicted_total,
        }
    }

    /// Appends records; returns once they are committed and fsynced.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<Appended, SpoolError> {
        self.call(|reply| Op::Append { records, reply }).await
    }

    /// Appends one transaction under an idempotency key, unless the key was accepted
    /// before. The key is stored in the same SQLite transaction as the record, so a crash
    /// can never leave one without the other.
    pub async fn append_once(
        &self,
        key: Keyed,
        tx_id: String,
        record: NewRecord,
    ) -> Result<Once, SpoolError> {
        self.call(|reply| Op::AppendOnce {
            key,
            tx_id,
            record,
            reply,
        })
        .await
    }

    /// Deletes acknowledged records; returns how many there still were.
    pub async fn ack(&self, range: AckRange) -> Result<u64, SpoolError> {
        self.call(|reply| Op::Ack { range, reply }).await
    }

    /// Sends one operation to the writer and waits for its answer, which comes only after
    /// the group it joined has committed.
    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, SpoolError>>) -> Op,
    ) -> Result<T, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.ops
            .send(op(reply))
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// The highest seq committed so far; changes after every commit that appended.
    pub fn last_seq(&self) -> watch::Receiver<u64> {
        self.last_seq.clone()
    }

    pub fn reader(&self) -> Result<SpoolReader, SpoolError> {
        SpoolReader::open(&self.path)
    }
}

#[cfg(test)]
mod tests;
