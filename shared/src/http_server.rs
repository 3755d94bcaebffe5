//! The one HTTP serve loop of both binaries (the agent's POS API, the cloud's APIs), with
//! the bounds `axum::serve` lacks, so that slow or idle clients cannot hold a process:
//!
//! - a request's head must arrive within [`Limits::header_read_timeout`], and a kept-alive
//!   connection is closed once idle that long between requests (hyper starts the same timer
//!   while it waits for the next request);
//! - a request's body must keep coming (each frame within [`Limits::body_read_timeout`]),
//!   and the whole of a request's handling ends within [`Limits::request_deadline`]
//!   (tower-http's timeouts): a slow body answers 408 and frees its connection;
//! - an answer the client stops reading fails its write after [`Limits::write_stall`]
//!   without progress, and the connection is dropped ([`WriteStall`]); a stream that the
//!   client keeps reading (the dashboards' events) lives on;
//! - at most [`Limits::max_connections`] at once: the next waits in the kernel's backlog;
//! - the routes open to anyone (the API's description, the sign-in, metrics) take at most
//!   a burst and then a steady rate from each client address ([`PerClient`]), which answers
//!   429 with `Retry-After` beyond it; every request carries its client's address
//!   ([`Peer`]);
//! - at shutdown the listener closes, idle and half-sent connections close at once,
//!   requests in flight get [`Limits::drain`] to finish, and then every connection still
//!   open is dropped with its handle on the app's state, so the caller can shut down.
//!
//! Only with the `http-server` feature: the wire itself knows nothing of tokio.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};
use tower::ServiceExt;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub request_deadline: Duration,
    pub write_stall: Duration,
    pub max_connections: usize,
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            request_deadline: Duration::from_secs(30),
            write_stall: Duration::from_secs(10),
            // Each costs a task and its buffers, a few KiB: enough that a few hundred slow
            // clients, each cut off within the timeouts above, leave room for the rest.
            max_connections: 1024,
            drain: Duration::from_secs(3),
        }
    }
}

/// A socket whose writes fail once they have made no progress for `stall`: hyper would
/// otherwise wait forever on a client that never reads its answer.
pub struct WriteStall<T> {
    io: T,
    stall: Duration,
    pending_since: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteStall<T> {
    pub fn new(io: T, stall: Duration) -> Self {
        Self {
            io,
            stall,
            pending_since: None,
        }
    }

    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.pending_since = None;
            return polled;
        }
        let stall = self.stall;
        let timer = self
            .pending_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The address a request came from, as the serve loop accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A request rate per client address: a burst, then a steady rate (GCRA, governor's keyed
/// limiter). IPv6 clients are keyed by their /64, which one host can fill with addresses.
#[derive(Clone)]
pub struct PerClient {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    checks: Arc<AtomicU64>,
}

impl PerClient {
    /// `burst` requests at once, then `per_second`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            )),
            checks: Arc::default(),
        }
    }

    /// The open routes' limit: 30 at once, then 10 a second, per client. A page load, a
    /// sign-in or a Prometheus scrape is a few requests; a crowd of one is cut off.
    pub fn open_routes() -> Self {
        Self::new(
            NonZeroU32::MIN.saturating_add(9),
            NonZeroU32::MIN.saturating_add(29),
        )
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        }
    }

    /// Whether a request from `peer` may go on now.
    pub fn allows(&self, peer: IpAddr) -> bool {
        // The table holds one small entry per client; forget the ones that are full again.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&Self::key(peer)).is_ok()
    }

    /// A route layer (`axum::middleware::from_fn_with_state`): 429 beyond the rate. A
    /// request without a [`Peer`] (not from [`serve`]) is let through.
    pub async fn limit(State(this): State<Self>, request: Request, next: Next) -> Response {
        let peer = request.extensions().get::<Peer>().map(|p| p.0.ip());
        if peer.is_some_and(|ip| !this.allows(ip)) {
            // At least one a second comes free again.
            return (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [(axum::http::header::RETRY_AFTER, "1")],
                "too many requests from this address; try again shortly\n",
            )
                .into_response();
        }
        next.run(request).await
    }
}

/// Serves `app` on `listener` until `shutdown`, then stops as described above.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let app = app
        .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.request_deadline,
        ));
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
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors, most likely: let some connections end first.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let stream = WriteStall::new(stream, limits.write_stall);
        let app = app.clone();
        let service = tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            app.clone().oneshot(request)
        });
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
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
