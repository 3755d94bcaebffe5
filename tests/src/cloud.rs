//! A real `ferry-cloud ingest` process for tests and benches: its config written from a
//! broker port and a lake (a folder, or an S3 server), its `/metrics` read back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::free_port;
use crate::http::request;
use crate::lake::{self, Object};
use crate::process::Proc;
use crate::s3::S3Server;

pub const BUCKET: &str = "ferry-lake";
pub const TOKEN: &str = "cloud-test-token";

/// Where the ingest under test writes.
pub enum Lake<'a> {
    Folder(&'a Path),
    S3(&'a S3Server),
}

pub struct Ingest {
    pub proc: Proc,
    pub http_port: u16,
    /// Where the objects can be read back as files.
    pub objects: PathBuf,
    bin: PathBuf,
    config: PathBuf,
    dir: PathBuf,
}

/// An ingest on `broker_port`; `lake_extra` lines go into `[lake]`.
pub fn ingest(bin: &str, dir: &Path, broker_port: u16, lake: Lake, lake_extra: &str) -> Ingest {
    ingest_with(bin.as_ref(), dir, broker_port, lake, lake_extra, "")
}

/// [`ingest`], with further config sections (`[loyalty]`, say) after the others.
pub fn ingest_with(
    bin: &Path,
    dir: &Path,
    broker_port: u16,
    lake: Lake,
    lake_extra: &str,
    sections: &str,
) -> Ingest {
    let http_port = free_port();
    let (root, objects, env) = match lake {
        Lake::Folder(path) => (path.display().to_string(), path.to_owned(), Vec::new()),
        Lake::S3(server) => (
            format!("s3://{BUCKET}/lake"),
            server.bucket_dir(BUCKET).join("lake"),
            server.client_env(),
        ),
    };
    let s3 = match lake {
        Lake::S3(server) => format!(
            "s3_endpoint = \"{}\"\ns3_force_path_style = true\ns3_region = \"us-east-1\"\n",
            server.endpoint()
        ),
        Lake::Folder(_) => String::new(),
    };
    let config = format!(
        "data_dir = \"{data}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nclient_id = \"ingest-under-test\"\n\
         [lake]\nroot = \"{root}\"\n{s3}flush_interval_s = 1\n{lake_extra}\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\ntoken = \"{TOKEN}\"\n{sections}",
        data = dir.join("data").display(),
    );
    let config_path = dir.join("cloud.toml");
    std::fs::write(&config_path, config).expect("writing cloud config");
    let path = config_path.to_string_lossy().into_owned();
    let mut proc = Proc::new(bin, &["ingest", "--config", &path], dir.join("ingest.log"));
    for (k, v) in env {
        proc.env(k, v);
    }
    Ingest {
        proc,
        http_port,
        objects,
        bin: bin.to_owned(),
        config: config_path,
        dir: dir.to_owned(),
    }
}

impl Ingest {
    /// The same ingest, not yet started, run by `prefix` (`ip netns exec NS`,
    /// [`crate::netns::Link`]) and reaching the broker at `host` instead of 127.0.0.1. Its
    /// HTTP port is then inside the namespace: read the lake, not the metrics.
    pub fn behind(mut self, prefix: &[String], host: &str) -> Self {
        let text = std::fs::read_to_string(&self.config).expect("reading cloud config");
        let text = text.replacen("mqtt://127.0.0.1:", &format!("mqtt://{host}:"), 1);
        std::fs::write(&self.config, text).expect("writing cloud config");
        let config = self.config.display().to_string();
        self.proc = Proc::wrapped(
            prefix,
            &self.bin,
            &["ingest", "--config", &config],
            self.dir.join("ingest.log"),
        );
        self
    }

    pub fn metrics(&self) -> String {
        match request(self.http_port, "GET", "/metrics", "", "") {
            Ok((200, body)) => body,
            _ => String::new(),
        }
    }

    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics(), name)
    }

    /// Waits until the broker has acknowledged the ingest's subscriptions: only from then
    /// on does it keep what devices publish for the ingest (before, it has no one to keep
    /// it for).
    pub async fn wait_subscribed(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.metric("ferry_ingest_subscribed") != 1.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the ingest did not subscribe within 30 s; log:\n{}",
                self.proc.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn lake(&self) -> Vec<Object> {
        lake::read(&self.objects)
    }

    /// Waits until the lake holds at least `n` raw records; on timeout, fails with the
    /// ingest's log.
    pub async fn wait_for_records(&self, n: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let have = lake::record_ids(&self.lake()).len();
            if have >= n {
                return;
            }
            if std::time::Instant::now() > deadline {
                let log = self.proc.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out after {timeout:?}: {have} of {n} records in the lake; ingest log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The configuration of `ferry-cloud all` as the tests run it: the ingest on `broker`, a
/// lake folder, the loyalty API and the dashboards on `ledger` and `hot`, the HTTP server on
/// `http`, all with [`TOKEN`], everything else in `dir`. Each `*_extra` goes at the end of
/// its section, `tail` after them all (more tables).
pub struct AllConfig<'a> {
    pub dir: &'a Path,
    pub broker: u16,
    pub http: u16,
    pub client_id: &'a str,
    pub ledger: String,
    /// The hot store; `None` runs no `[dashboard]`.
    pub hot: Option<String>,
    pub lake_extra: &'a str,
    pub dashboard_extra: &'a str,
    pub tail: &'a str,
}

impl<'a> AllConfig<'a> {
    /// Both databases as SQLite files in `dir`, nothing extra.
    pub fn new(dir: &'a Path, broker: u16, http: u16, client_id: &'a str) -> Self {
        let sqlite = |name: &str| format!("sqlite://{}", dir.join(name).display());
        Self {
            dir,
            broker,
            http,
            client_id,
            ledger: sqlite("ledger.db"),
            hot: Some(sqlite("hot.db")),
            lake_extra: "",
            dashboard_extra: "",
            tail: "",
        }
    }

    pub fn toml(&self) -> String {
        let Self {
            dir,
            broker,
            http,
            client_id,
            ledger,
            lake_extra,
            dashboard_extra,
            tail,
            ..
        } = self;
        let mut config = format!(
            "data_dir = \"{data}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\nclient_id = \"{client_id}\"\n\
             [lake]\nroot = \"{lake}\"\n{lake_extra}\
             [loyalty]\nurl = \"http://127.0.0.1:{http}\"\ntoken = \"{TOKEN}\"\ndatabase = \"{ledger}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\ntoken = \"{TOKEN}\"\n",
            data = dir.join("cloud").display(),
            lake = dir.join("lake").display(),
        );
        if let Some(hot) = &self.hot {
            config.push_str(&format!(
                "[dashboard]\ndatabase = \"{hot}\"\n{dashboard_extra}"
            ));
        }
        config.push_str(tail);
        config
    }
}

/// `ferry-cloud all` with `config` (TOML, written into `dir`), started; returns once its
/// ingest has subscribed, as `/metrics` on its `http` port says: before that a broker
/// drops what devices publish.
pub async fn start_all(dir: &Path, config: &str, http: u16) -> Proc {
    let path = dir.join("cloud.toml");
    std::fs::write(&path, config).expect("writing cloud config");
    let path = path.to_string_lossy().into_owned();
    let mut cloud = Proc::new(
        crate::bins::path("ferry-cloud"),
        &["all", "--config", &path],
        dir.join("cloud.log"),
    );
    cloud.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !request(http, "GET", "/metrics", "", "")
        .is_ok_and(|(_, m)| m.contains("ferry_ingest_subscribed 1"))
    {
        assert!(
            cloud.is_running(),
            "ferry-cloud all exited:\n{}",
            cloud.log()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "ferry-cloud all not subscribed in 30 s:\n{}",
            cloud.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cloud
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Asserts that the lake holds exactly the records `expected` names, each once.
pub fn assert_exactly_once(objects: &[Object], expected: &BTreeMap<(String, String), u64>) {
    let mut counts: BTreeMap<(String, String, u64), u32> = BTreeMap::new();
    for id in lake::record_ids(objects) {
        *counts.entry(id).or_insert(0) += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        dups.is_empty(),
        "records in the lake more than once: {dups:?}"
    );
    let total: u64 = expected.values().sum();
    for ((device, spool), n) in expected {
        for seq in 1..=*n {
            assert!(
                counts.contains_key(&(device.clone(), spool.clone(), seq)),
                "{device}/{spool} seq {seq} is missing from the lake"
            );
        }
    }
    assert_eq!(
        counts.len() as u64,
        total,
        "the lake holds records nobody sent"
    );
}

pub fn spool_id(i: usize) -> String {
    format!("01JD3W6Q3X8F2M7C9K4N5P{i:04}")
}
