//! Sources: where records come from. Each runs as its own task and appends to the spool;
//! none of them holds records in memory longer than one append.
//!
//! - `simulator`: generated readings or transactions, for demos, tests and benchmarks;
//! - `serial`: a sensor's readings over a serial port;
//! - `card_reader`: card ids read at the till, turned into scans and, by a rule, stamps.
//!
//! The two serial sources share their machinery: `port` (a device that comes and goes, read
//! on a thread), `framing` (bounded lines), `incidents` (rate-limited reports of bad input)
//! and `line_source` (the loop from port events to spool appends).

mod card_reader;
mod edge_filter;
mod framing;
mod incidents;
mod line_source;
mod metrics;
mod port;
mod serial;
mod simulator;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::SourceConfig;
use crate::spool::Spool;

pub use edge_filter::EdgeFilterConfig;
pub use metrics::SourceMetrics;
pub use simulator::Simulator;

use card_reader::CardLines;
use line_source::LineSource;
use port::PortSpec;
use serial::SensorLines;

/// Starts every configured source.
pub fn spawn_all(
    sources: &[SourceConfig],
    device: &ferry_shared::DeviceId,
    spool: &Spool,
    metrics: &Arc<SourceMetrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinSet<anyhow::Result<()>>> {
    let mut set = JoinSet::new();
    for (index, source) in sources.iter().enumerate() {
        match source {
            SourceConfig::Simulator(cfg) => {
                let sim = Simulator::new(cfg.clone(), device.clone(), index);
                set.spawn(sim.run(spool.clone(), shutdown.clone()));
            }
            SourceConfig::Serial(cfg) => {
                let source = LineSource {
                    spec: PortSpec::new(&cfg.path, cfg.baud, cfg.max_line_bytes),
                    what: format!("serial {} on {}", cfg.sensor, cfg.path.display()),
                    report_window: Duration::from_secs(cfg.report_window_s),
                    handler: SensorLines::new(cfg, metrics.clone()),
                };
                set.spawn(source.run(spool.clone(), metrics.clone(), shutdown.clone()));
            }
            SourceConfig::CardReader(cfg) => {
                let source = LineSource {
                    spec: PortSpec::new(&cfg.path, cfg.baud, cfg.max_line_bytes),
                    what: format!("card reader {} on {}", cfg.reader, cfg.path.display()),
                    report_window: Duration::from_secs(cfg.report_window_s),
                    handler: CardLines::new(cfg, device.clone(), metrics.clone())
                        .with_context(|| format!("sources[{index}].pattern"))?,
                };
                set.spawn(source.run(spool.clone(), metrics.clone(), shutdown.clone()));
            }
        }
    }
    Ok(set)
}
