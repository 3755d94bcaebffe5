//! POS transactions acknowledged per second (each durable in the spool before its 202),
//! and latency percentiles, at 1, 8 and 32 concurrent clients, through the real
//! `ferry-agent` binary. Baseline in the same run: the same clients calling `/healthz`,
//! which does no storage, so the ratio says what durability costs over bare HTTP.
//!
//!     cargo bench -p ferry-agent --bench pos

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::free_port;
use ferry_tests::http::request;

const BIN: &str = env!("CARGO_BIN_EXE_ferry-agent");
const TOKEN: &str = "bench-token-0123456";
const REQUESTS_PER_RUN: usize = 6_000;

struct Run {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn load(port: u16, clients: usize, path: &'static str, method: &'static str, tag: &str) -> Run {
    let per_client = REQUESTS_PER_RUN / clients;
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let tag = tag.to_owned();
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let body = if method == "POST" {
                        format!(
                            r#"{{"op":"stamp","program":"coffee","card":"C-{}","store":"S-1","qty":1,"idempotency_key":"{tag}-{c}-{i}"}}"#,
                            i % 200
                        )
                    } else {
                        String::new()
                    };
                    let t = Instant::now();
                    let (status, reply) = request(port, method, path, TOKEN, &body).expect("answer");
                    latencies.push(t.elapsed());
                    assert!(status == 200 || status == 202, "{status}: {reply}");
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client"))
        .collect();
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    Run {
        per_s: all.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("agent.toml");
    // No broker: the uplink retries in the background while the spool takes every write.
    std::fs::write(
        &config,
        format!(
            "device_id = \"pos-bench\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n\
             [pos_api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n",
            dir.path().join("data").display(),
            free_port()
        ),
    )
    .expect("config");
    let mut agent = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("FERRY_LOG", "error")
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(port, "GET", "/healthz", TOKEN, "").is_err() {
        assert!(Instant::now() < deadline, "POS API did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    println!(
        "{:>8} {:>12} {:>9} {:>9} {:>14} {:>9}",
        "clients", "txn/s", "p50 ms", "p99 ms", "healthz req/s", "ratio"
    );
    for clients in [1, 8, 32] {
        let base = load(port, clients, "/healthz", "GET", "base");
        let txn = load(
            port,
            clients,
            "/v1/transactions",
            "POST",
            &format!("c{clients}"),
        );
        println!(
            "{clients:>8} {:>12.0} {:>9.2} {:>9.2} {:>14.0} {:>9.2}",
            txn.per_s,
            txn.p50_ms,
            txn.p99_ms,
            base.per_s,
            txn.per_s / base.per_s
        );
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status();
    let _ = agent.wait();
}
