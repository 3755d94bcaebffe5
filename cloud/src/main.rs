//! The `ferry-cloud` command line (README: command line).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_cloud::config::{CloudConfig, Role, redact_password};
use ferry_cloud::dev::{self, DevOptions};
use ferry_cloud::loyalty::{self, LedgerPool, LoyaltyApi, LoyaltyMetrics};
use ferry_cloud::{curated, dashboard, http, ingest};
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
    /// Devices, live readings, loyalty figures and alarms: the API, the event feed and the
    /// web page, from the hot store the ingest feeds.
    Dashboard {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Every role in one process: the ingest, the ledger when `loyalty.database` is set, and
    /// the dashboards when `[dashboard]` is.
    All {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The raw lake into the curated Delta Lake tables (README: the curated lake): every
    /// `lake.compact_interval_s` (default 300) until stopped, or one round with `--once`.
    Compact {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// One round, then exit; prints what it did as JSON.
        #[arg(long)]
        once: bool,
        /// One round of this day only (YYYY-MM-DD); implies `--once`.
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_day)]
        day: Option<String>,
    },
    /// The lake's tables for query engines.
    Lake {
        #[command(subcommand)]
        action: LakeAction,
    },
    /// Certificates for a self-hosted Mosquitto (deploy/mosquitto): a CA and the broker's
    /// certificate (`init`), then a client certificate per device (`client`).
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// The enrollment allow-list the stack's pre-provisioning hook reads (README: deploy
    /// to AWS): only a serial listed here gets an identity with the claim certificate.
    Enroll {
        /// The stack's `EnrollmentAllowList` output: s3://BUCKET/PREFIX.
        #[arg(long, value_name = "URL")]
        list: String,
        /// An S3-compatible endpoint instead of AWS's.
        #[arg(long, value_name = "URL")]
        s3_endpoint: Option<String>,
        #[arg(long)]
        s3_region: Option<String>,
        #[arg(long)]
        s3_force_path_style: bool,
        #[command(subcommand)]
        action: EnrollAction,
    },
    /// Signed updates for the agents: `keygen` makes the release key, `artifact` prints a
    /// binary's entry for `POST /v1/rollouts` (url, signed manifest, signature).
    Sign {
        #[command(subcommand)]
        action: SignAction,
    },
    /// Check a config before a role starts (the packaged unit's `ExecStartPre`): its keys,
    /// the sections the role needs, the TLS files and their permissions, the data directory;
    /// exit 2 naming the key at fault.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The role the config is for.
        #[arg(long, default_value = "all", value_parser = parse_role)]
        role: Role,
        /// Also connect to the broker once (as `mqtt.client_id` plus `-check`).
        #[arg(long)]
        connect: bool,
    },
    /// Prints the API's OpenAPI 3.1 document (also served at /v1/openapi.json).
    Openapi,
    /// Every role with no configuration: an embedded MQTT broker, a lake folder, the ledger
    /// on SQLite, HTTP on 127.0.0.1, and five simulated agents (three weather stations, two
    /// tills) as real ferry-agent processes.
    Dev {
        #[arg(long, default_value = "./ferry-dev")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 1883)]
        mqtt_port: u16,
        /// The cloud API; the tills' POS APIs take the next two ports.
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Records each simulated device makes before it idles (0: no end).
        #[arg(long, default_value_t = 0)]
        records: u64,
        /// Milliseconds between simulated records (default: 1000 for stations, 2000 for
        /// tills).
        #[arg(long)]
        interval_ms: Option<u64>,
    },
}

#[derive(Subcommand)]
enum EnrollAction {
    /// Lists serials: each may enroll once, as the thing ferry-SERIAL.
    Allow {
        /// The store they enroll into, whatever the device asks for.
        #[arg(long)]
        store: Option<String>,
        #[arg(required = true, value_name = "SERIAL")]
        serials: Vec<String>,
    },
    /// Lets listed serials whose things exist enroll once more (a new SD card).
    Reenroll {
        #[arg(required = true, value_name = "SERIAL")]
        serials: Vec<String>,
    },
    /// Takes serials off the list (an enrolled device keeps its certificate: revoke that
    /// in IoT Core).
    Revoke {
        #[arg(required = true, value_name = "SERIAL")]
        serials: Vec<String>,
    },
    /// Prints every listed serial and its entry, a JSON object per line.
    List,
}

#[derive(Subcommand)]
enum SignAction {
    /// Make an ed25519 release key in FILE (0600, never overwritten); prints the public key
    /// for the agents' `[update] public_key`.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign the manifest of BINARY with the key; prints its `artifacts` entry as JSON.
    Artifact {
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where the devices will download it from.
        #[arg(long)]
        url: String,
        /// The version BINARY says it is (`ferry-agent --version`), in semver.
        #[arg(long)]
        version: String,
        /// `amd64`, `arm64` or `armhf`; by default the one BINARY's ELF header names.
        #[arg(long)]
        arch: Option<String>,
        /// The earliest running version it may replace.
        #[arg(long, default_value = "0.0.0")]
        min_version: String,
        /// Sign it as a rollback: it may replace versions newer than itself.
        #[arg(long)]
        rollback_to: bool,
        /// Devices refuse the manifest after this many days.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_in_days: u32,
        binary: PathBuf,
    },
}

#[derive(Subcommand)]
enum LakeAction {
    /// Athena/Glue DDL for the raw and curated layers, a DuckDB view, and Spark and
    /// delta-rs one-liners, for the lake `lake.root` names (or placeholders without
    /// `--config`).
    Ddl {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    [
        Role::Ingest,
        Role::Loyalty,
        Role::Dashboard,
        Role::All,
        Role::Compact,
    ]
    .into_iter()
    .find(|r| r.name() == text)
    .ok_or_else(|| format!("{text:?} is not a role: ingest, loyalty, dashboard, all or compact"))
}

fn parse_day(text: &str) -> Result<String, String> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| format!("{text:?} is not a day as YYYY-MM-DD"))
}

#[derive(Subcommand)]
enum CertsAction {
    /// A new CA (ca.pem, ca.key) and the broker's certificate (server.pem, server.key).
    Init {
        /// The folder; keep it, with the CA's key, off the broker.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The broker's host name or IP address, as devices connect to it; repeatable.
        #[arg(long = "server-name", value_name = "HOST", required = true)]
        server_names: Vec<String>,
    },
    /// A client certificate per device id (or the ingest's name), in DIR/clients/.
    Client {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// Without `FERRY_LOG`: info, but for the embedded broker of `dev`, which reports every
/// connection and every disconnect, a clean stop's included, as errors. `dev` checks its
/// ports before the broker starts, so what these hide is noise. The Delta crates log every
/// snapshot and scan at info; the compactor logs what it did itself.
const DEFAULT_LOG: &str = "info,rumqttd=warn,rumqttd::router::routing=off,rumqttd::server::broker=off,deltalake_core=warn,buoyant_kernel=warn";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // `compact --once` (or `--day`): one round, then exit.
    let mut one_round = None;
    let (role, config) = match Cli::parse().command {
        Command::Ingest { config } => (Role::Ingest, config),
        Command::Loyalty { config } => (Role::Loyalty, config),
        Command::All { config } => (Role::All, config),
        Command::Dashboard { config } => (Role::Dashboard, config),
        Command::Compact { config, once, day } => {
            if once || day.is_some() {
                one_round = Some(day);
            }
            (Role::Compact, config)
        }
        Command::Lake {
            action: LakeAction::Ddl { config },
        } => {
            let root = match config.map(|path| checked(&path, Role::Compact)) {
                Some(Ok(cfg)) => cfg.lake.and_then(|lake| lake.root().ok()),
                Some(Err(code)) => return code,
                None => None,
            };
            print!("{}", curated::ddl(root.as_ref()));
            return ExitCode::SUCCESS;
        }
        Command::Check {
            config,
            role,
            connect,
        } => {
            let checked = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")
                .and_then(|rt| Ok(rt.block_on(ferry_cloud::check::check(&config, role, connect))?));
            return match checked {
                Ok(findings) => {
                    for line in findings {
                        println!("{line}");
                    }
                    println!("ok");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferry-cloud: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Openapi => {
            println!("{}", ferry_cloud::openapi::json());
            return ExitCode::SUCCESS;
        }
        Command::Enroll {
            list,
            s3_endpoint,
            s3_region,
            s3_force_path_style,
            action,
        } => {
            let s3 = ferry_cloud::enroll::S3Settings {
                endpoint: s3_endpoint,
                region: s3_region,
                force_path_style: s3_force_path_style,
            };
            return match enroll(&list, &s3, action) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferry-cloud enroll: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Sign { action } => {
            let done = match action {
                SignAction::Keygen { out } => ferry_cloud::sign::keygen(&out),
                SignAction::Artifact {
                    key,
                    url,
                    version,
                    arch,
                    min_version,
                    rollback_to,
                    expires_in_days,
                    binary,
                } => {
                    let release = ferry_cloud::sign::Release {
                        version,
                        arch,
                        min_version,
                        rollback_to,
                        expires_in_days,
                    };
                    ferry_cloud::sign::artifact(&key, &binary, &url, &release)
                        .and_then(|a| Ok(serde_json::to_string_pretty(&a)?))
                }
            };
            return match done {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferry-cloud sign: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Certs { action } => {
            let made = match action {
                CertsAction::Init { dir, server_names } => {
                    ferry_cloud::certs::init(&dir, &server_names)
                }
                CertsAction::Client { dir, names } => ferry_cloud::certs::clients(&dir, &names),
            };
            return match made {
                Ok(files) => {
                    for file in files {
                        println!("{}", file.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferry-cloud certs: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Dev {
            data_dir,
            mqtt_port,
            http_port,
            records,
            interval_ms,
        } => {
            return finish(run_dev(DevOptions {
                data_dir,
                mqtt_port,
                http_port,
                records,
                interval_ms,
            }));
        }
    };
    let cfg = match checked(&config, role) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    if let Some(day) = one_round {
        return finish(compact_once(&cfg, day));
    }
    finish(
        tokio::runtime::Runtime::new()
            .context("cannot start the runtime")
            .and_then(|rt| {
                rt.block_on(async {
                    let shutdown = CancellationToken::new();
                    tokio::spawn(cancel_on_signal(shutdown.clone()));
                    run(role, cfg, Arc::default(), shutdown).await
                })
            }),
    )
}

/// `enroll`: one line of JSON per serial it changed or lists.
fn enroll(
    list: &str,
    s3: &ferry_cloud::enroll::S3Settings,
    action: EnrollAction,
) -> anyhow::Result<()> {
    use ferry_cloud::enroll::AllowList;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async {
        let allow_list = AllowList::open(list, s3).await?;
        let say = |serial: &str, entry: &ferry_cloud::enroll::Entry| {
            println!("{}", entry.line(serial));
        };
        match action {
            EnrollAction::Allow { store, serials } => {
                for serial in &serials {
                    say(serial, &allow_list.allow(serial, store.as_deref()).await?);
                }
            }
            EnrollAction::Reenroll { serials } => {
                for serial in &serials {
                    say(serial, &allow_list.reenroll(serial).await?);
                }
            }
            EnrollAction::Revoke { serials } => {
                for serial in &serials {
                    let was = allow_list.revoke(serial).await?;
                    println!("{}", serde_json::json!({"serial": serial, "revoked": was}));
                }
            }
            EnrollAction::List => {
                for (serial, entry) in allow_list.list().await? {
                    say(&serial, &entry);
                }
            }
        }
        Ok(())
    })
}

/// The config at `path` with the sections `role` needs, or exit code 2 after saying why.
fn checked(path: &std::path::Path, role: Role) -> Result<CloudConfig, ExitCode> {
    let loaded = CloudConfig::load(path).and_then(|cfg| {
        cfg.check_role(role)?;
        Ok(cfg)
    });
    loaded.map_err(|e| {
        eprintln!("ferry-cloud: {e}");
        ExitCode::from(2)
    })
}

/// `compact --once`: one round, its report on stdout.
fn compact_once(cfg: &CloudConfig, day: Option<String>) -> anyhow::Result<()> {
    let lake = cfg.lake.clone().context("lake")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async {
        let ledger = open_ledger_for_reading(cfg).await?;
        let compactor = curated::Compactor::new(&lake, ledger, Arc::default())?;
        let report = compactor.run_once(day.as_deref()).await?;
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    })
}

/// The ledger, when the config names one, for the transactions' outcomes.
async fn open_ledger_for_reading(cfg: &CloudConfig) -> anyhow::Result<Option<Arc<LedgerPool>>> {
    let Some(database) = cfg.loyalty.as_ref().and_then(|l| l.database.clone()) else {
        return Ok(None);
    };
    Ok(Some(
        tokio::task::spawn_blocking(move || LedgerPool::open(&database, 1))
            .await?
            .context("loyalty.database: cannot open the ledger")?,
    ))
}

fn finish(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "ferry-cloud failed");
            eprintln!("ferry-cloud: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    wait_for_signal().await;
    info!("shutting down");
    shutdown.cancel();
}

/// `dev`: the broker and the cloud roles first, then, once the ingest's subscriptions
/// stand (a broker drops what is published before anyone subscribes), the agents. At a
/// signal the agents stop first, then the ingest takes what they delivered, seals it and
/// writes it to the lake. A start that fails in a data folder it made removes the folder.
fn run_dev(opts: DevOptions) -> anyhow::Result<()> {
    let fresh = !opts.data_dir.exists();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let mut started = false;
    let outcome = runtime.block_on(dev_session(&opts, &mut started));
    if outcome.is_err()
        && fresh
        && !started
        && opts.data_dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&opts.data_dir)
    {
        error!(error = %e, dir = %opts.data_dir.display(), "could not remove the data folder of a failed start");
    }
    outcome
}

/// Runs `dev` until a signal; `started` turns true once the agents run.
async fn dev_session(opts: &DevOptions, started: &mut bool) -> anyhow::Result<()> {
    let prepared = tokio::task::block_in_place(|| dev::prepare(opts))?;
    let metrics = Arc::new(ingest::IngestMetrics::default());
    let cloud_stop = CancellationToken::new();
    let cloud = tokio::spawn(run(
        Role::All,
        prepared.config.clone(),
        metrics.clone(),
        cloud_stop.clone(),
    ));
    tokio::pin!(cloud);
    let subscribed = async {
        while !metrics.subscribed.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        ended = &mut cloud => {
            return ended?.and(Err(anyhow::anyhow!("the cloud roles stopped early")));
        }
        _ = tokio::time::timeout(DEV_READY, subscribed) => {}
    }
    if !metrics.subscribed.load(Ordering::Relaxed) {
        cloud_stop.cancel();
        let _ = cloud.await;
        anyhow::bail!(
            "the ingest did not subscribe to the embedded broker on 127.0.0.1:{} within {} s",
            opts.mqtt_port,
            DEV_READY.as_secs()
        );
    }
    let mut agents = tokio::task::block_in_place(|| dev::start_agents(&prepared, opts))?;
    *started = true;
    let early = tokio::select! {
        _ = wait_for_signal() => None,
        ended = &mut cloud => Some(ended),
    };
    info!("stopping the agents, then the cloud");
    tokio::task::block_in_place(|| agents.stop());
    if early.is_none() {
        dev::settle(&metrics).await;
    }
    cloud_stop.cancel();
    match early {
        Some(ended) => ended?.and(Err(anyhow::anyhow!("the cloud roles stopped early"))),
        None => cloud.await?,
    }
}

/// How long `dev` waits for its ingest to subscribe before it gives up.
const DEV_READY: Duration = Duration::from_secs(30);

async fn run(
    role: Role,
    cfg: CloudConfig,
    ingest_metrics: Arc<ingest::IngestMetrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    info!(role = role.name(), "ferry-cloud starting");
    let tasks = tokio_util::task::TaskTracker::new();
    let mut metrics = http::Metrics::default();
    let mut apis: Option<axum::Router> = None;
    let mut public: Option<axum::Router> = None;
    let mut ledger: Option<Arc<LedgerPool>> = None;

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
        ledger = Some(pool.clone());
        let routes = loyalty::api::routes(LoyaltyApi {
            pool,
            metrics: lm.clone(),
        });
        apis = Some(match apis {
            Some(others) => others.merge(routes),
            None => routes,
        });
        metrics.register(lm);
    }
    let runs_dashboard = matches!(role, Role::Dashboard | Role::All);
    if let (true, Some(d)) = (runs_dashboard, &cfg.dashboard) {
        info!(
            database = redact_password(Some(&d.database)),
            "opening the hot store"
        );
        // The dashboard role alone reads the ledger for its loyalty figures, if it may.
        if ledger.is_none()
            && let Some(database) = cfg.loyalty.as_ref().and_then(|l| l.database.clone())
        {
            ledger = Some(
                tokio::task::spawn_blocking(move || {
                    LedgerPool::open(&database, LedgerPool::size_for(&database))
                })
                .await?
                .context("loyalty.database: cannot open the ledger")?,
            );
        }
        let routes = dashboard::start(d.clone(), ledger.clone(), &tasks, shutdown.clone()).await?;
        apis = Some(match apis {
            Some(others) => others.merge(routes.api),
            None => routes.api,
        });
        public = Some(routes.page);
        // Fleet operations ride with the dashboards: the same people, one process.
        let fleet = ferry_cloud::fleet::start(&cfg, &tasks, shutdown.clone())?;
        apis = apis.map(|a| a.merge(fleet));
    }
    if role.runs_ingest() {
        metrics.register(ingest_metrics.clone());
    }
    let mut compactor = None;
    let interval = cfg.lake.as_ref().and_then(|l| match role {
        Role::Compact => Some(l.compact_interval_s.unwrap_or(300)),
        Role::All => l.compact_interval_s,
        _ => None,
    });
    if let (Some(interval), Some(lake)) = (interval, &cfg.lake) {
        if ledger.is_none() && role == Role::Compact {
            ledger = open_ledger_for_reading(&cfg).await?;
        }
        let cm = Arc::new(curated::CompactMetrics::default());
        let worker = curated::Compactor::new(lake, ledger.clone(), cm.clone())?;
        info!(interval_s = interval, "compacting the lake");
        compactor = Some(curated::spawn(
            worker,
            Duration::from_secs(interval),
            shutdown.clone(),
        )?);
        metrics.register(cm);
    }
    if let Some(h) = &cfg.http {
        let listener = tokio::net::TcpListener::bind(h.listen)
            .await
            .with_context(|| format!("http.listen: cannot listen on {}", h.listen))?;
        info!(listen = %h.listen, "HTTP listening");
        // The router's token opens the loyalty API where this process serves it.
        let router_token = cfg
            .loyalty
            .as_ref()
            .filter(|_| runs_ledger)
            .map(|l| l.token.as_str());
        let mut credentials = http::Credentials::new(h, router_token);
        if let Some(pool) = ledger.clone() {
            credentials = credentials.with_brand_stores(Arc::new(move |brands| {
                let pool = pool.clone();
                Box::pin(async move {
                    pool.run(move |l| l.brand_stores(&brands))
                        .await
                        .map_err(|e| e.to_string())
                })
            }));
        }
        // The API's description, open to integrators (it holds no data), within the same
        // per-client budget as the other open routes.
        let limiter = http::PerClient::open_routes();
        let description = axum::Router::new()
            .route(
                "/v1/openapi.json",
                axum::routing::get(|| async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        ferry_cloud::openapi::served(),
                    )
                }),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                limiter.clone(),
                http::PerClient::limit,
            ));
        let public = Some(match public {
            Some(page) => page.merge(description),
            None => description,
        });
        let app = http::router(Arc::new(credentials), metrics, apis, public, &limiter);
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
    if let Some(thread) = compactor {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
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
