//! `/v1/status` and `/metrics` (Prometheus text).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, PosState};
use crate::spool::{SpoolReader, SpoolStatus};
use crate::status::{AgentStatus, RunStatus};

async fn spool_status(state: &PosState) -> Result<SpoolStatus, ApiError> {
    state.read(SpoolReader::status).await
}

pub async fn status(State(state): State<PosState>) -> Result<Json<AgentStatus>, ApiError> {
    let spool = spool_status(&state).await?;
    let rate = state.uplink.link_bytes_per_s.load(Ordering::Relaxed);
    Ok(Json(AgentStatus::new(
        state.device.to_string(),
        spool,
        RunStatus::now((rate > 0).then_some(rate)),
    )))
}

pub async fn prometheus(State(state): State<PosState>) -> Result<String, ApiError> {
    let s = spool_status(&state).await?;
    let u = &state.uplink;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    gauge(
        "ferry_spool_pending",
        "Records not yet acknowledged by the broker.",
        "gauge",
        s.pending as f64,
    );
    gauge(
        "ferry_spool_pending_bytes",
        "Bytes of pending records.",
        "gauge",
        s.pending_bytes as f64,
    );
    gauge(
        "ferry_spool_oldest_pending_age_seconds",
        "Age of the oldest pending record.",
        "gauge",
        s.oldest_pending_age_s,
    );
    gauge(
        "ferry_spool_evicted_total",
        "Telemetry records evicted over spool.max_bytes.",
        "counter",
        s.evicted_total as f64,
    );
    gauge(
        "ferry_spool_last_seq",
        "Highest seq ever appended.",
        "gauge",
        s.last_seq as f64,
    );
    gauge(
        "ferry_uplink_publishes_total",
        "Envelopes published.",
        "counter",
        u.publishes.load(Ordering::Relaxed) as f64,
    );
    gauge(
        "ferry_uplink_connects_total",
        "MQTT connections made (reconnects included).",
        "counter",
        u.connects.load(Ordering::Relaxed) as f64,
    );
    gauge(
        "ferry_uplink_records_acked_total",
        "Records deleted on PUBACK.",
        "counter",
        u.records_acked.load(Ordering::Relaxed) as f64,
    );
    gauge(
        "ferry_uplink_link_bytes_per_second",
        "Payload bytes per second the link carries, as measured from PUBACKs (0 until measured).",
        "gauge",
        u.link_bytes_per_s.load(Ordering::Relaxed) as f64,
    );
    let clock = crate::clock::status();
    gauge(
        "ferry_clock_synced",
        "1 once the wall clock is believed (clock.synced_by), 0 before.",
        "gauge",
        f64::from(u8::from(clock.clock_synced)),
    );
    gauge(
        "ferry_records_ts_suspect_total",
        "Records stamped while the wall clock was not believed, flagged ts_suspect.",
        "counter",
        clock.ts_suspect_total as f64,
    );
    let src = &state.sources;
    for (name, help, counter) in [
        (
            "ferry_serial_readings_total",
            "Sensor readings spooled.",
            &src.readings,
        ),
        (
            "ferry_serial_filtered_total",
            "Sensor readings dropped by the edge filter.",
            &src.filtered,
        ),
        ("ferry_card_scans_total", "Card scans spooled.", &src.scans),
        (
            "ferry_card_scans_debounced_total",
            "Repeated card reads ignored within debounce_ms.",
            &src.debounced,
        ),
        (
            "ferry_serial_device_lost_total",
            "Times a serial device vanished or could not be opened.",
            &src.port_lost,
        ),
    ] {
        gauge(
            name,
            help,
            "counter",
            counter.load(Ordering::Relaxed) as f64,
        );
    }
    labelled(
        &mut out,
        "ferry_serial_bad_lines_total",
        "Serial lines refused, by reason.",
        "reason",
        src.bad_lines(),
    );
    let answers = state.answers.lock().map(|a| a.clone()).unwrap_or_default();
    labelled(
        &mut out,
        "ferry_pos_requests_total",
        "POS API answers by HTTP status.",
        "status",
        answers,
    );
    Ok(out)
}

/// A counter with one label, one line per value.
fn labelled<K: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (K, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (key, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {n}");
    }
}

pub async fn count_answers(
    State(state): State<PosState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if let Ok(mut answers) = state.answers.lock() {
        *answers.entry(response.status().as_u16()).or_insert(0) += 1;
    }
    response
}
