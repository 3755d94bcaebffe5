//! Sources: where records come from. Each runs as its own task and appends to the spool;
//! none of them holds records in memory longer than one append.

mod simulator;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::SourceConfig;
use crate::spool::Spool;

pub use simulator::Simulator;

/// Starts every configured source.
pub fn spawn_all(
    sources: &[SourceConfig],
    device: &ferry_shared::DeviceId,
    spool: &Spool,
    shutdown: &CancellationToken,
) -> JoinSet<anyhow::Result<()>> {
    let mut set = JoinSet::new();
    for (index, source) in sources.iter().enumerate() {
        match source {
            SourceConfig::Simulator(cfg) => {
                let sim = Simulator::new(cfg.clone(), device.clone(), index);
                set.spawn(sim.run(spool.clone(), shutdown.clone()));
            }
        }
    }
    set
}
