//! A serial device that comes and goes: opened, read line by line on a thread of its own,
//! and reopened with backoff when it vanishes (unplugged) or is missing at start.
//!
//! serialport is blocking, so the reading happens on a plain thread that hands events to the
//! async source over a bounded channel. When the source is slow (the spool is busy), the
//! thread waits and the kernel's tty buffer takes up the slack; nothing in here grows.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferry_shared::record::Unsequenced;
use ferry_shared::{RecordBody, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::framing::{Framed, LineFramer};
use ferry_shared::backoff;

/// How long one read waits before the thread looks at the stop token again.
const READ_POLL: Duration = Duration::from_millis(100);
const REOPEN_MIN: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(30);
/// A device that stayed open this long and then vanished starts its backoff afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PortSpec {
    pub path: PathBuf,
    pub baud: u32,
    pub max_line_bytes: usize,
}

impl PortSpec {
    pub fn new(path: &std::path::Path, baud: u32, max_line_bytes: usize) -> Self {
        Self {
            path: path.to_owned(),
            baud,
            max_line_bytes,
        }
    }
}

/// When a line arrived: the wall clock for its record, the monotonic clock for filters.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// The wall clock's stamp, and whether it cannot be believed yet ([`crate::clock`]).
    pub ts: (Timestamp, bool),
    pub instant: Instant,
}

impl Received {
    pub fn now() -> Self {
        Self {
            ts: crate::clock::stamp(),
            instant: Instant::now(),
        }
    }

    /// A record of what arrived then.
    pub fn record(&self, body: RecordBody) -> Unsequenced {
        crate::clock::stamped(self.ts, body)
    }
}

#[derive(Debug)]
pub enum PortEvent {
    Line(Vec<u8>, Received),
    /// A line longer than `max_line_bytes`, dropped; this many bytes.
    Overlong(usize),
    /// The device vanished in the middle of a line of this many bytes.
    Partial(usize),
    Opened,
    /// The device could not be opened (first failure of a streak) or vanished.
    Lost(String),
}

pub struct PortReader {
    events: mpsc::Receiver<PortEvent>,
    thread: JoinHandle<()>,
}

impl PortReader {
    pub fn spawn(spec: PortSpec, stop: CancellationToken) -> std::io::Result<Self> {
        let (tx, events) = mpsc::channel(256);
        let name = format!("serial {}", spec.path.display());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || read_forever(&spec, &tx, &stop))?;
        Ok(Self { events, thread })
    }

    /// The next event; `None` once the thread has stopped.
    pub async fn next(&mut self) -> Option<PortEvent> {
        self.events.recv().await
    }

    /// An event that is ready now, if any.
    pub fn try_next(&mut self) -> Option<PortEvent> {
        self.events.try_recv().ok()
    }

    /// Waits for the thread; it ends within one read poll of the stop token.
    pub async fn join(self) {
        drop(self.events);
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

fn read_forever(spec: &PortSpec, tx: &mpsc::Sender<PortEvent>, stop: &CancellationToken) {
    let path = spec.path.to_string_lossy().into_owned();
    let mut framer = LineFramer::new(spec.max_line_bytes);
    let mut failures: u32 = 0;
    while !stop.is_cancelled() {
        let port = serialport::new(path.as_str(), spec.baud)
            .timeout(READ_POLL)
            .open();
        let lost = match port {
            Ok(mut port) => {
                info!(path = %path, baud = spec.baud, "serial device open");
                if tx.blocking_send(PortEvent::Opened).is_err() {
                    return;
                }
                let opened = Instant::now();
                let Some(error) = read_until_lost(port.as_mut(), &mut framer, tx, stop) else {
                    return;
                };
                warn!(path = %path, error = %error, "serial device lost; reopening");
                if let Some(n) = framer.take_partial()
                    && tx.blocking_send(PortEvent::Partial(n)).is_err()
                {
                    return;
                }
                if opened.elapsed() >= HEALTHY_AFTER {
                    failures = 0;
                }
                Some(error)
            }
            Err(e) if failures == 0 => {
                warn!(path = %path, error = %e, "serial device not available; retrying");
                Some(e.to_string())
            }
            Err(e) => {
                debug!(path = %path, error = %e, failures, "serial device still not available");
                None
            }
        };
        if let Some(error) = lost
            && tx.blocking_send(PortEvent::Lost(error)).is_err()
        {
            return;
        }
        sleep_unless_stopped(backoff::jittered(REOPEN_MIN, REOPEN_MAX, failures), stop);
        failures = failures.saturating_add(1);
    }
}

/// Reads until the device fails (returns why) or the source stops (returns `None`).
fn read_until_lost(
    port: &mut dyn serialport::SerialPort,
    framer: &mut LineFramer,
    tx: &mpsc::Sender<PortEvent>,
    stop: &CancellationToken,
) -> Option<String> {
    let mut buf = [0u8; 1024];
    loop {
        if stop.is_cancelled() {
            return None;
        }
        let n = match port.read(&mut buf) {
            // A tty whose other end hung up reads as end of file on some systems.
            Ok(0) => return Some("end of file".into()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Some(e.to_string()),
        };
        let received = Received::now();
        for framed in framer.push(&buf[..n]) {
            let event = match framed {
                Framed::Line(line) => PortEvent::Line(line, received),
                Framed::Overlong(n) => PortEvent::Overlong(n),
            };
            if tx.blocking_send(event).is_err() {
                return None;
            }
        }
    }
}

fn sleep_unless_stopped(total: Duration, stop: &CancellationToken) {
    let deadline = Instant::now() + total;
    while !stop.is_cancelled() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(READ_POLL));
    }
}
