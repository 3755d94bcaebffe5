//! A few database connections for the async side: each call borrows one, runs on a
//! blocking thread, and gives it back. A connection lost to a panic or a broken PostgreSQL
//! link is replaced by a fresh one on the next call. The ledger and the hot store use it.

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::db::DbError;

/// A connection the pool can open again from its URL.
pub trait Pooled: Sized + Send + 'static {
    type Error: From<PoolError> + Send + 'static;
    fn open(url: &str) -> Result<Self, Self::Error>;
    /// False once the connection is broken (a PostgreSQL link closed).
    fn is_usable(&self) -> bool;
}

/// The hot store's connections fail with [`DbError`]; the pool's own failures are one too.
impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        Self::Other(e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the connection pool is closed")]
    Closed,
    #[error("database call failed: {0}")]
    Join(String),
}

pub struct Pool<T: Send> {
    url: String,
    idle: Mutex<Vec<T>>,
    permits: Semaphore,
}

impl<T: Pooled> Pool<T> {
    /// Opens (and migrates) the first connection now, so a bad URL fails at startup.
    pub fn open(url: &str, size: usize) -> Result<Arc<Self>, T::Error> {
        let first = T::open(url)?;
        Ok(Arc::new(Self {
            url: url.to_owned(),
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(size.max(1)),
        }))
    }

    /// How many connections suit `url`: SQLite has one writer at a time anyway, and a
    /// second connection lets reads go beside it; PostgreSQL writers run side by side.
    pub fn size_for(url: &str) -> usize {
        if url.starts_with("postgres") { 8 } else { 2 }
    }

    pub async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut T) -> Result<R, T::Error> + Send + 'static,
    ) -> Result<R, T::Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PoolError::Closed)?;
        let pool = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let idle = pool.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
            let mut conn = match idle {
                Some(conn) => conn,
                None => T::open(&pool.url)?,
            };
            let out = work(&mut conn);
            if conn.is_usable()
                && let Ok(mut idle) = pool.idle.lock()
            {
                idle.push(conn);
            }
            out
        })
        .await;
        joined.map_err(|e| PoolError::Join(e.to_string()))?
    }
}

/// The last handle may go on an async thread (a role's task ending at shutdown). Closing a
/// PostgreSQL connection blocks on the client's own runtime, which tokio forbids there (it
/// panicked, and a clean stop exited non-zero): the connections close on a thread of their
/// own.
impl<T: Send> Drop for Pool<T> {
    fn drop(&mut self) {
        let idle = match self.idle.get_mut() {
            Ok(idle) => std::mem::take(idle),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        if idle.is_empty() {
            return;
        }
        std::thread::scope(|s| {
            s.spawn(move || drop(idle));
        });
    }
}
