//! The `ferry-cloud` command line (CONTRACT §1).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_cloud::config::{CloudConfig, Role, redact_password};
use ferry_cloud::loyalty::{self, LedgerPool, LoyaltyApi, LoyaltyMetrics};
use ferry_cloud::{http, ingest};
use ferry_shared::Token;
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
    /// The exactly-once ledger of stamps and points, and its HTTP API.
    Loyalty {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Devices, live readings and loyalty figures (not built yet).
    Dashboard {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Every role in one process: the ingest, and the ledger when `loyalty.database` is set.
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
        Command::Ingest { config } => (Role::Ingest, config),
        Command::Loyalty { config } => (Role::Loyalty, config),
        Command::All { config } => (Role::All, config),
        Command::Dashboard { .. } => return not_built("dashboard"),
        Command::Dev { .. } => return not_built("dev"),
    };
    let cfg = match CloudConfig::load(&config).and_then(|cfg| {
        cfg.check_role(role)?;
        Ok(cfg)
    }) {
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

async fn run(role: Role, cfg: CloudConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        signals.cancel();
    });
    info!(role = role.name(), "ferry-cloud starting");
    let tasks = tokio_util::task::TaskTracker::new();
    let mut metrics = http::Metrics::default();
    let mut apis: Option<axum::Router> = None;

    let runs_ledger = role == Role::Loyalty || (role == Role::All && cfg.runs_ledger());
    if let (true, Some(l)) = (runs_ledger, &cfg.loyalty)
        && let Some(database) = &l.database
    {
        info!(
            database = redact_password(Some(database)),
            "opening the ledger"
        );
        let url = database.clone();
        let pool =
            tokio::task::spawn_blocking(move || LedgerPool::open(&url, LedgerPool::size_for(&url)))
                .await?
                .context("loyalty.database: cannot open the ledger")?;
        let lm = Arc::new(LoyaltyMetrics::default());
        tasks.spawn(loyalty::run_expiry(
            pool.clone(),
            lm.clone(),
            Duration::from_secs(l.expiry_interval_s),
            shutdown.clone(),
        ));
        let routes = loyalty::api::routes(LoyaltyApi {
            pool,
            metrics: lm.clone(),
        });
        apis = Some(match apis {
            Some(others) => others.merge(routes),
            None => routes,
        });
        metrics.loyalty = Some(lm);
    }
    let ingest_metrics = Arc::new(ingest::IngestMetrics::default());
    if role.runs_ingest() {
        metrics.ingest = Some(ingest_metrics.clone());
    }
    if let Some(h) = &cfg.http {
        let listener = tokio::net::TcpListener::bind(h.listen)
            .await
            .with_context(|| format!("http.listen: cannot listen on {}", h.listen))?;
        info!(listen = %h.listen, "HTTP listening");
        let app = http::router(Arc::new(Token::new(h.token.clone())), metrics, apis);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = http::serve(listener, app, stop.clone()).await {
                error!(error = format!("{e:#}"), "HTTP server failed");
                stop.cancel();
            }
        });
    }
    tasks.close();
    let outcome = if role.runs_ingest() {
        ingest::run(cfg.ingest_setup()?, ingest_metrics, shutdown.clone()).await
    } else {
        shutdown.cancelled().await;
        Ok(())
    };
    shutdown.cancel();
    tasks.wait().await;
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
