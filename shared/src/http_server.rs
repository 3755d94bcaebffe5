//! The one HTTP serve loop of both binaries (the agent's POS API, the cloud's APIs), with
//! the bounds `axum::serve` lacks, so that slow or idle clients cannot hold a process:
//!
//! - a request's head must arrive within [`Limits::header_read_timeout`], and a kept-alive
//!   connection is closed once idle that long between requests (hyper starts the same timer
//!   while it waits for the next request);
//! - at most [`Limits::max_connections`] at once: the next waits in the kernel's backlog;
//! - at shutdown the listener closes, idle and half-sent connections close at once,
//!   requests in flight get [`Limits::drain`] to finish, and then every connection still
//!   open is dropped with its handle on the app's state, so the caller can shut down.
//!
//! Only with the `http-server` feature: the wire itself knows nothing of tokio.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            drain: Duration::from_secs(3),
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then stops as described above.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, most likely: let some connections end first.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            let _permit = permit;
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain) => {
            tracing::warn!("requests still in flight at shutdown were cut off");
        }
    }
    // A half-sent request would otherwise keep its task, and the app's state, alive until
    // its header-read timeout.
    connections.shutdown().await;
}
