//! The event feed behind `GET /v1/events`: one task watches the hot store and fans what is
//! new out to every open stream, so a hundred open dashboards cost one query a tick.
//!
//! It works across processes (the ingest may run elsewhere): each tick it asks for the
//! latest values and alarms changed since the rev it saw, and for every device's state,
//! which it compares with the last tick's, so a device going quiet turns `offline` on the
//! feed when its inactivity timeout passes, with nothing written.
//!
//! Events (`event:` name, then JSON `data:`):
//! - `reading`: a series' latest value (`device`, `metric`, `ts`, `t`, `value`); a series
//!   writing faster than the tick shows its newest value per tick;
//! - `device`: a device's state, when it or its backlog changed;
//! - `alarm`: an alarm raised or cleared;
//! - `resync`: this stream fell behind and missed events; reload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::Timestamp;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::DashboardConfig;
use crate::hot::HotPool;
use crate::hot::{Changes, DeviceView};

/// Events a slow stream may fall behind before it is told to resync.
const BUFFER: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub data: String,
}

impl Event {
    fn new(name: &'static str, data: &impl Serialize) -> Option<Self> {
        Some(Self {
            name,
            data: serde_json::to_string(data).ok()?,
        })
    }
}

#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Feed {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    fn send(&self, event: Option<Event>) {
        if let Some(event) = event {
            // No stream open: nobody to tell.
            let _ = self.tx.send(Arc::new(event));
        }
    }
}

/// What of a device's view, when changed, is news; `last_seen` alone is not.
fn news_key(d: &DeviceView) -> impl PartialEq + use<> {
    (
        d.state.clone(),
        d.agent_version.clone(),
        d.backlog.pending,
        d.backlog.oldest_pending_age_s.map(f64::to_bits),
    )
}

pub async fn watch(
    hot: Arc<HotPool>,
    cfg: Arc<DashboardConfig>,
    feed: Feed,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_millis(cfg.events_interval_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Start from now: a new stream loads history through the API.
    let mut rev: Option<i64> = None;
    let mut devices: HashMap<String, DeviceView> = HashMap::new();
    let offline_after = cfg.offline_after_ms();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let after = rev;
        let now = Timestamp::now().unix_millis();
        let polled = hot
            .run(move |store| {
                let changes = match after {
                    Some(after) => store.changes(after)?,
                    None => Changes {
                        rev: store.rev()?,
                        ..Changes::default()
                    },
                };
                Ok((changes, store.devices(now, offline_after)?))
            })
            .await;
        let (changes, views) = match polled {
            Ok(polled) => polled,
            Err(e) => {
                warn!(error = %e, "event feed: reading the hot store failed");
                continue;
            }
        };
        rev = Some(changes.rev);
        for reading in &changes.readings {
            feed.send(Event::new("reading", reading));
        }
        for view in views {
            let changed = devices
                .get(&view.device)
                .is_none_or(|before| news_key(before) != news_key(&view));
            if changed && after.is_some() {
                feed.send(Event::new("device", &view));
            }
            devices.insert(view.device.clone(), view);
        }
        for alarm in &changes.alarms {
            feed.send(Event::new("alarm", alarm));
        }
    }
}
