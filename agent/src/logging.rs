//! The log filter, which a desired configuration may change while the agent runs
//! (`log_level`); `FERRY_LOG`, when set, wins over both file and cloud.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

const ENV: &str = "FERRY_LOG";

/// Logs to stderr, at `FERRY_LOG` or `info` until [`set_level`] says otherwise.
pub fn init() {
    let filter = EnvFilter::try_from_env(ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let _ = FILTER.set(handle);
}

/// Applies the configured filter, already checked by the config, unless `FERRY_LOG` is set.
pub fn set_level(level: &str) {
    if std::env::var_os(ENV).is_some() {
        return;
    }
    if let (Some(handle), Ok(filter)) = (FILTER.get(), EnvFilter::try_new(level)) {
        let _ = handle.reload(filter);
    }
}
