//! The `ferry-cloud` command line (CONTRACT §1). A skeleton: the roles are named and parse
//! their arguments, and each says plainly that it is not built yet rather than pretend.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// MQTT to the S3 data lake.
    Ingest {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The exactly-once ledger of stamps and points, and its HTTP API.
    Loyalty {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Devices, live readings and loyalty figures.
    Dashboard {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Every role in one process.
    All {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Every role with no configuration: embedded broker, local lake, SQLite.
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
    let role = match Cli::parse().command {
        Command::Ingest { .. } => "ingest",
        Command::Loyalty { .. } => "loyalty",
        Command::Dashboard { .. } => "dashboard",
        Command::All { .. } => "all",
        Command::Dev { .. } => "dev",
    };
    eprintln!(
        "ferry-cloud {role}: not built yet; this release ships the agent only (see README.md)"
    );
    ExitCode::from(2)
}
