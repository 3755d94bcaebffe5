//! The `ferry-agent` command line (README: command line).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_agent::Stopped;
use ferry_agent::config::{AgentConfig, ConfigFile};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "ferry-agent",
    version = ferry_agent::VERSION,
    about = "Ferry's edge agent: a durable spool that drains to MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGINT or SIGTERM.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Stop cleanly when the process that started this one ends, however it ends: for
        /// supervisors that cannot be relied on to stop their children (`ferry-cloud dev`).
        #[arg(long)]
        exit_with_parent: bool,
    },
    /// Check a config before `run` (the packaged unit's `ExecStartPre`): its keys, the TLS
    /// files and their permissions, the data directory; exit 1 naming the key at fault.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Also connect to the broker once, as this device.
        #[arg(long)]
        connect: bool,
    },
    /// Get this device's own certificate and thing from AWS IoT Core, by fleet provisioning
    /// by claim; writes `mqtt.cert_file`, `mqtt.key_file` and `device_id` into the config.
    /// Does nothing when the device already has its certificate and key.
    Enroll {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The claim certificate the devices ship with.
        #[arg(long, value_name = "FILE")]
        claim_cert: PathBuf,
        #[arg(long, value_name = "FILE")]
        claim_key: PathBuf,
        /// The fleet provisioning template's name.
        #[arg(long, value_name = "NAME")]
        template: String,
        /// The template's `SerialNumber`; by default the Pi's serial, else /etc/machine-id.
        #[arg(long)]
        serial: Option<String>,
        /// The template's `Store` parameter.
        #[arg(long)]
        store: Option<String>,
        /// Let IoT Core make the private key (`certificates/create`) instead of sending a
        /// CSR for a key made here.
        #[arg(long)]
        aws_key: bool,
        /// Seconds to wait for each of IoT Core's answers.
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
    },
    /// Print the POS API's OpenAPI 3.1 document (also served at /v1/openapi.json).
    Openapi,
    /// Print the spool's state as one JSON object; safe while `run` is running.
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ferry_agent::logging::init();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Openapi => {
            println!("{}", ferry_agent::pos_api::openapi::json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            exit_with_parent,
        } => {
            let file = ConfigFile::read(&config)?;
            file.parse()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let stopped = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                if exit_with_parent {
                    tokio::spawn(stop_when_orphaned(shutdown.clone()));
                }
                ferry_agent::run(file, shutdown).await
            })?;
            Ok(match stopped {
                Stopped::Shutdown => ExitCode::SUCCESS,
                // The service manager restarts the agent into the new binary.
                Stopped::Updated => ExitCode::from(ferry_agent::update::EXIT_UPDATED),
                Stopped::TrialFailed => {
                    eprintln!(
                        "ferry-agent: this version's trial ended before it delivered its status"
                    );
                    ExitCode::FAILURE
                }
            })
        }
        Command::Check { config, connect } => {
            for line in one_thread()?.block_on(ferry_agent::check::check(&config, connect))? {
                println!("{line}");
            }
            println!("ok");
            Ok(ExitCode::SUCCESS)
        }
        Command::Enroll {
            config,
            claim_cert,
            claim_key,
            template,
            serial,
            store,
            aws_key,
            timeout_s,
        } => {
            use ferry_agent::enroll::{self, EnrollOptions, KeyOrigin, Outcome};
            let serial = serial.or_else(enroll::default_serial).context(
                "no serial number found (/proc/cpuinfo, /etc/machine-id): give --serial",
            )?;
            let opts = EnrollOptions {
                config,
                claim_cert,
                claim_key,
                template,
                serial,
                store,
                key_origin: if aws_key {
                    KeyOrigin::Aws
                } else {
                    KeyOrigin::Device
                },
                timeout: std::time::Duration::from_secs(timeout_s),
            };
            match one_thread()?.block_on(enroll::enroll(&opts))? {
                Outcome::AlreadyEnrolled { device } => {
                    println!("already enrolled as {device}; nothing to do");
                }
                Outcome::Enrolled {
                    thing,
                    certificate_id,
                } => println!(
                    "enrolled as {thing} (certificate {certificate_id}); {} updated",
                    opts.config.display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config } => {
            let cfg = AgentConfig::load(&config)?;
            let status = ferry_agent::status::read(&cfg)?;
            println!("{}", serde_json::to_string(&status)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// For the commands that make a connection or two and end.
fn one_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A parent that dies, even by SIGKILL, leaves its children to another process: the
/// parent pid changes, which is checked twice a second.
async fn stop_when_orphaned(shutdown: CancellationToken) {
    let parent = std::os::unix::process::parent_id();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if std::os::unix::process::parent_id() != parent {
            info!(parent, "the parent process ended: shutting down");
            shutdown.cancel();
            return;
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
