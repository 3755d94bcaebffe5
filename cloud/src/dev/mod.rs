//! `ferry-cloud dev`: the whole pipeline on one machine with no configuration.
//!
//! An embedded MQTT broker, every cloud role (ingest to a lake folder, the ledger on
//! SQLite, the APIs on 127.0.0.1), and five real `ferry-agent` processes, each with its
//! own spool: three simulated weather stations and two simulated tills. The token is made
//! once and kept in the data folder, so a restart keeps it.

mod agents;
mod broker;
mod ports;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

pub use agents::Agents;

use crate::config::CloudConfig;
use crate::ingest::IngestMetrics;
use crate::loyalty::{BrandFields, DeviceKind, Ledger, Program, Registration, StoreFields};

/// The card the simulated tills stamp first and most (the agent's simulator agrees).
const REGULAR: &str = "C-0001";

/// `ferry-cloud dev`'s options.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub mqtt_port: u16,
    pub http_port: u16,
    /// Records each simulated device makes (0: no end).
    pub records: u64,
    /// Milliseconds between simulated records, instead of 1000 (stations) and 2000 (tills).
    pub interval_ms: Option<u64>,
}

/// The broker started, the cloud's configuration and the ledger's programs ready.
pub struct Prepared {
    pub config: CloudConfig,
    data_dir: PathBuf,
    token: String,
}

/// Checks what a start needs (the agent binary, every port free), then starts the broker
/// and prepares the cloud's configuration and the ledger's programs; the caller then runs
/// the cloud roles and, once the ingest has subscribed, [`start_agents`]. A check that
/// fails leaves nothing behind: it comes before the data folder is touched.
pub fn prepare(opts: &DevOptions) -> anyhow::Result<Prepared> {
    agents::binary()?;
    ports::check(opts)?;
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    let data_dir = opts
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", opts.data_dir.display()))?;
    // Everything in it (the token, the ledger, the hot store, the lake, the spools) is its
    // owner's alone.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", data_dir.display()))?;
    let token = token(&data_dir)?;
    broker::start(opts.mqtt_port)?;
    let config = cloud_config(&data_dir, opts, &token)?;
    seed_programs(&data_dir.join("loyalty.db"))?;
    Ok(Prepared {
        config,
        data_dir,
        token,
    })
}

/// Starts the simulated devices and prints where to look.
pub fn start_agents(prepared: &Prepared, opts: &DevOptions) -> anyhow::Result<Agents> {
    let agents = Agents::start(&prepared.data_dir, opts, &token_path(&prepared.data_dir))?;
    print_banner(&prepared.data_dir, opts, &prepared.token, &agents);
    Ok(agents)
}

/// Waits, up to [`SETTLE_MAX`], until the ingest has admitted everything the broker holds
/// for it: nothing unacknowledged, and no new record for a while. Called once the agents
/// have stopped, so that what they delivered reaches the lake before the ingest stops.
pub async fn settle(metrics: &IngestMetrics) {
    let taken =
        || metrics.records_in.load(Ordering::Relaxed) + metrics.duplicates.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    let mut last = taken();
    let mut quiet = 0;
    while quiet < SETTLE_QUIET_POLLS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = taken();
        if now == last && metrics.unacked.load(Ordering::Relaxed) <= 0 {
            quiet += 1;
        } else {
            quiet = 0;
        }
        last = now;
    }
}

/// At most this long for [`settle`].
const SETTLE_MAX: Duration = Duration::from_secs(3);
/// Polls 100 ms apart with nothing new that make the ingest settled.
const SETTLE_QUIET_POLLS: u32 = 3;

fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

/// The API token: made at the first start, then read back.
fn token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(data_dir);
    if let Ok(token) = std::fs::read_to_string(&path)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let token: String = (0..32)
        .map(|_| char::from_digit(rand::random_range(0..16), 16).unwrap_or('0'))
        .collect();
    // Readable by its owner only: it opens every API.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(token.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// How often `dev` compacts its lake into the curated tables.
const COMPACT_INTERVAL_S: u64 = 20;

fn cloud_config(data_dir: &Path, opts: &DevOptions, token: &str) -> anyhow::Result<CloudConfig> {
    let text = format!(
        r#"
data_dir = "{cloud}"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
client_id = "ferry-dev-ingest"
[lake]
root = "{lake}"
flush_interval_s = 5
compact_interval_s = {compact}
[loyalty]
url = "http://127.0.0.1:{http}"
token = "{token}"
database = "sqlite://{ledger}"
[http]
listen = "127.0.0.1:{http}"
token = "{token}"
[dashboard]
database = "sqlite://{hot}"
offline_after_s = 60
[[dashboard.alarms]]
name = "warm"
metric = "temperature_c"
op = ">"
value = 15.0
for_s = 30
"#,
        cloud = data_dir.join("cloud").display(),
        hot = data_dir.join("hot.db").display(),
        lake = data_dir.join("lake").display(),
        ledger = data_dir.join("loyalty.db").display(),
        mqtt = opts.mqtt_port,
        http = opts.http_port,
        compact = COMPACT_INTERVAL_S,
    );
    // The environment is left out: `dev` means no configuration at all.
    Ok(CloudConfig::parse(&text, [])?)
}

/// The programs the simulated tills use, unless they exist already (a user may have
/// changed them through the API); and every simulated device in the registry.
fn seed_programs(ledger: &Path) -> anyhow::Result<()> {
    let mut ledger = Ledger::open(&format!("sqlite://{}", ledger.display()))?;
    let have = ledger.programs()?;
    let programs = [
        (
            "coffee",
            Program::Stamps {
                stamps_per_reward: 10,
                reward: "free coffee".into(),
            },
        ),
        (
            "points",
            Program::Points {
                points_per_currency_unit: 1.0,
                reward: "5 EUR voucher".into(),
                reward_cost: 100,
                expiry_days: Some(365),
            },
        ),
    ];
    for (id, program) in programs {
        if !have.iter().any(|(known, _)| known == id) {
            ledger.put_program(id, &program)?;
        }
    }
    // One brand, and a store for each till, so that the tills' transactions apply.
    ledger.put_brand(
        "demo",
        &BrandFields {
            name: "Demo Coffee".into(),
        },
    )?;
    for (device, _) in agents::roster().into_iter().filter(|(_, till)| *till) {
        ledger.put_store(
            &agents::store_of(&device),
            &StoreFields {
                name: format!("Demo store of {device}"),
                brand: "demo".into(),
                time_zone: "Europe/Berlin".into(),
                currency: "EUR".into(),
            },
        )?;
    }
    // The tills at their stores; the stations too, so the dashboards list them before
    // they are first heard from.
    for (device, till) in agents::roster() {
        let reg = if till {
            Registration {
                kind: DeviceKind::Till,
                store: Some(agents::store_of(&device)),
            }
        } else {
            Registration {
                kind: DeviceKind::Station,
                store: None,
            }
        };
        ledger.put_device(&device, &reg)?;
    }
    Ok(())
}

fn print_banner(data_dir: &Path, opts: &DevOptions, token: &str, agents: &Agents) {
    print!("{}", banner(data_dir, opts, token, agents));
}

/// What `dev` prints once its agents run. Every URL, curl and query in it works as printed
/// within the time it gives; an end-to-end test runs each one.
fn banner(data_dir: &Path, opts: &DevOptions, token: &str, agents: &Agents) -> String {
    let http = format!("http://127.0.0.1:{}", opts.http_port);
    let lake = data_dir.join("lake");
    let auth = format!("curl -H 'Authorization: Bearer {token}'");
    let tills: String = agents
        .pos_ports()
        .iter()
        .map(|(name, port)| {
            format!("  {auth} http://127.0.0.1:{port}/v1/cards/{REGULAR}   # {name}'s POS API\n")
        })
        .collect();
    format!(
        "\nFerry dev is running. Ctrl-C stops everything.\n\n\
         MQTT broker   mqtt://127.0.0.1:{mqtt} (embedded)\n\
         Lake          {lake} (raw; curated Delta tables in curated/, every {compact} s)\n\
         Ledger        {ledger} (SQLite)\n\
         Hot store     {hot} (SQLite, for the dashboards)\n\
         Dashboard     {http}/   token: {token}\n\
         Agents        {agents} (logs and spools in {agent_dir})\n\n\
         Try these (the tills stamp card {REGULAR} first, so it has balances within 10 s):\n\
         \x20 {auth} {http}/v1/cards/{REGULAR}\n\
         {tills}\
         \x20 {auth} {http}/v1/programs\n\
         \x20 {auth} {http}/v1/devices\n\
         \x20 curl {http}/metrics\n\n\
         Query the lake within 15 s (pip install duckdb):\n\
         \x20 python3 -c \"import duckdb; duckdb.sql(\\\"SELECT device, count(*) AS readings, \
         round(avg(metrics.temperature_c), 1) AS avg_temp_c \
         FROM read_json_auto('{lake}/raw/type=reading/*/*/*.ndjson.gz', hive_partitioning = true) \
         GROUP BY device ORDER BY device\\\").show()\"\n\n\
         Query the curated readings within {curated} s (pip install deltalake):\n\
         \x20 python3 -c \"from deltalake import DeltaTable, QueryBuilder; \
         print(QueryBuilder().register('r', DeltaTable('{lake}/curated/readings')).execute(\
         'SELECT device, count(*) AS readings FROM r GROUP BY device ORDER BY device').read_all())\"\n\n",
        mqtt = opts.mqtt_port,
        lake = lake.display(),
        ledger = data_dir.join("loyalty.db").display(),
        hot = data_dir.join("hot.db").display(),
        agents = agents.names().join(", "),
        agent_dir = data_dir.join("agents").display(),
        compact = COMPACT_INTERVAL_S,
        // The lake's first objects come within its 5 s flush; the round after them at most
        // an interval later, and a round takes seconds.
        curated = 2 * COMPACT_INTERVAL_S + 10,
    )
}
