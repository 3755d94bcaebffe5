//! The `ferry-cloud` command line (CONTRACT §1).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_cloud::config::CloudConfig;
use ferry_cloud::{http, ingest};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "ferry-cloud",
    version,
    about = "Ferry's cloud half: ingest, lake, loyalty core, dashboards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// MQTT to the data lake (S3 or a local folder), every record once.
    Ingest {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The exactly-once ledger of stamps and points, and its HTTP API (not built yet).
    Loyalty {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Devices, live readings and loyalty figures (not built yet).
    Dashboard {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Every role in one process (today: the ingest).
    All {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Every role with no configuration: embedded broker, local lake, SQLite (not built yet).
    Dev {
        #[arg(long, default_value = "./ferry-dev")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 1883)]
        mqtt_port: u16,
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (role, config) = match Cli::parse().command {
        Command::Ingest { config } | Command::All { config } => ("ingest", config),
        Command::Loyalty { .. } => return not_built("loyalty"),
        Command::Dashboard { .. } => return not_built("dashboard"),
        Command::Dev { .. } => return not_built("dev"),
    };
    let cfg = match CloudConfig::load(&config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("ferry-cloud: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry-cloud: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(role, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "ferry-cloud failed");
            eprintln!("ferry-cloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_built(role: &str) -> ExitCode {
    eprintln!("ferry-cloud {role}: not built yet (see README.md)");
    ExitCode::from(2)
}

async fn run(role: &str, cfg: CloudConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        signals.cancel();
    });
    let metrics = Arc::new(ingest::IngestMetrics::default());
    let mut http_task = None;
    if let Some(h) = &cfg.http {
        let listener = tokio::net::TcpListener::bind(h.listen)
            .await
            .with_context(|| format!("http.listen: cannot listen on {}", h.listen))?;
        info!(listen = %h.listen, "HTTP listening");
        let state = http::HttpState {
            ingest: metrics.clone(),
        };
        http_task = Some(tokio::spawn(http::serve(listener, state, shutdown.clone())));
    }
    info!(role, "ferry-cloud starting");
    let outcome = ingest::run(cfg, metrics, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(task) = http_task {
        task.await??;
    }
    outcome
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
