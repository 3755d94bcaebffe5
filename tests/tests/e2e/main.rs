//! The end-to-end suite: real agents, a real broker and the real cloud binaries, on
//! loopback. One test binary (one link on 2 cores), one module per journey.

mod broker;
mod dashboard_browser;
mod dev;
mod loyalty;
mod openapi;
mod pipeline;

/// The heaviest tests (the loyalty chaos run, the browser) each load both cores on their
/// own, so they run alone: they take the write side; the others share the read side, and
/// run beside each other as they did when each journey was a binary of its own.
static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write().await
}

pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    LOAD.read().await
}
