//! A few ledger connections for the async side: each call borrows one, runs on a blocking
//! thread, and gives it back. A connection lost to a panic or a broken PostgreSQL link is
//! replaced by a fresh one on the next call.

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::{Ledger, LedgerError};

pub struct LedgerPool {
    database: String,
    idle: Mutex<Vec<Ledger>>,
    permits: Semaphore,
}

impl LedgerPool {
    /// Opens (and migrates) the first connection now, so a bad URL fails at startup.
    pub fn open(database: &str, size: usize) -> Result<Arc<Self>, LedgerError> {
        let first = Ledger::open(database)?;
        Ok(Arc::new(Self {
            database: database.to_owned(),
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(size.max(1)),
        }))
    }

    /// How many connections suit `database`: SQLite has one writer at a time anyway, and a
    /// second connection lets reads go beside it; PostgreSQL writers of different cards
    /// run side by side.
    pub fn size_for(database: &str) -> usize {
        if database.starts_with("postgres") {
            8
        } else {
            2
        }
    }

    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LedgerError::Row("the ledger pool is closed".into()))?;
        let pool = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let idle = pool.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
            let mut ledger = match idle {
                Some(ledger) => ledger,
                None => Ledger::open(&pool.database)?,
            };
            let out = work(&mut ledger);
            if ledger.is_usable()
                && let Ok(mut idle) = pool.idle.lock()
            {
                idle.push(ledger);
            }
            out
        })
        .await;
        joined.map_err(|e| LedgerError::Row(format!("ledger call failed: {e}")))?
    }
}
