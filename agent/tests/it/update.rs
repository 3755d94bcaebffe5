//! Signed updates end to end: real Mosquitto, an HTTP server for the artifacts, the agent
//! started the way the packaged unit starts it (the update guard before every start, a
//! restart after every exit), and a second build of the agent to update to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_shared::DeviceId;
use ferry_shared::fleet::{self, this_arch};
use ferry_shared::signing::{Sha256, SigningKey};
use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use ferry_tests::fleet::{
    ArtifactServer, Serve, Supervisor, VARIANT_VERSION, Watcher, variant_agent,
};
use ferry_tests::wait_until;
use rand::Rng;
use serde_json::{Value, json};

use crate::{BIN, FAST};

const STOCK_VERSION: &str = env!("CARGO_PKG_VERSION");

struct Device {
    id: DeviceId,
    broker: Mosquitto,
    collector: Collector,
    watcher: Watcher,
    server: ArtifactServer,
    key: SigningKey,
    dir: tempfile::TempDir,
    binary: PathBuf,
    config: PathBuf,
}

impl Device {
    /// A device running the stock build from its own copy of the binary, which updates
    /// replace; `update_extra` goes into `[update]`.
    async fn new(name: &str, update_extra: &str) -> Self {
        let id = DeviceId::new(name).expect("id");
        let broker = Mosquitto::start();
        let collector = Collector::start(broker.port).await;
        let watcher = Watcher::start(
            broker.port,
            &[
                &format!("ferry/v1/{name}/jobs/+/status"),
                &format!("ferry/v1/{name}/status"),
            ],
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("bin/ferry-agent");
        std::fs::create_dir_all(binary.parent().expect("bin dir")).expect("bin dir");
        std::fs::copy(BIN, &binary).expect("copying the stock agent");
        let (key, _) = SigningKey::generate().expect("signing key");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "device_id = \"{name}\"\ndata_dir = \"{data}\"\n[mqtt]\nurl = \"{url}\"\n{FAST}\n\
                 status_interval_s = 1\n\
                 [[sources]]\ntype = \"simulator\"\nprofile = \"weather\"\ninterval_ms = 20\n\
                 [update]\npublic_key = \"{public}\"\nbinary = \"{bin}\"\n{update_extra}\n",
                data = dir.path().join("data").display(),
                url = broker.url(),
                public = key.public_key(),
                bin = binary.display(),
            ),
        )
        .expect("config");
        Self {
            id,
            broker,
            collector,
            watcher,
            server: ArtifactServer::start(),
            key,
            dir,
            binary,
            config,
        }
    }

    fn supervise(&self, env: &[(&str, &str)]) -> Supervisor {
        Supervisor::start(
            &self.binary,
            &self.config,
            &self.dir.path().join("data"),
            env,
            &self.dir.path().join("agent.log"),
        )
    }

    /// Serves `bytes` as `name` and describes them truthfully, signed with the device's key.
    fn artifact(&self, name: &str, bytes: Vec<u8>, how: Serve) -> Value {
        let described = json!({
            "url": self.server.url(name),
            "sha256": Sha256::hex_of(&bytes),
            "size": bytes.len(),
            "signature": self.key.sign(&bytes),
        });
        self.server.put(name, bytes, how);
        described
    }

    async fn publish_job(&self, job: &str, version: &str, artifact: Value) {
        let doc = json!({"job_id": job, "version": version, "artifacts": {this_arch(): artifact}});
        self.watcher
            .publish_retained(&fleet::jobs_topic(&self.id), &doc)
            .await;
    }

    async fn job_ends(&self, job: &str, timeout: Duration) -> Value {
        self.watcher
            .wait_for(
                &fleet::job_status_topic(&self.id, job),
                timeout,
                "a final job status",
                |v| v["status"] == "SUCCEEDED" || v["status"] == "FAILED",
            )
            .await
    }

    async fn running_version(&self, version: &str, timeout: Duration) {
        self.watcher
            .wait_for(
                &format!("ferry/v1/{}/status", self.id),
                timeout,
                &format!("an online status from version {version}"),
                |v| v["online"] == true && v["agent_version"] == version,
            )
            .await;
    }

    fn delivered(&self) -> usize {
        self.collector.seen().seqs_of(self.id.as_str()).len()
    }

    async fn keeps_delivering(&self) {
        let before = self.delivered();
        wait_until(Duration::from_secs(30), "more records delivered", || {
            self.delivered() > before + 20
        })
        .await;
    }

    /// Stops the agent, drains what is left with the stock build, and checks that every seq
    /// from 1 to the spool's last arrived.
    async fn every_record_arrived(&self, mut supervisor: Supervisor) {
        supervisor.stop();
        let last = crate::drain_and_check_every_seq(
            self.dir.path(),
            &self.dir.path().join("data"),
            self.id.as_str(),
            &self.broker.url(),
            &self.collector,
        )
        .await;
        assert!(last > 100, "the simulator wrote only {last}");
    }
}

fn bytes_of(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_update_is_installed_passes_its_trial_and_is_kept() {
    let variant = variant_agent();
    let dev = Device::new("upd-good", "max_bytes = 1073741824\ntrial_s = 60").await;
    let agent = dev.supervise(&[]);
    dev.running_version(STOCK_VERSION, Duration::from_secs(30))
        .await;

    let artifact = dev.artifact("agent-v2", bytes_of(&variant), Serve::Whole);
    dev.publish_job("rollout1-upd-good", VARIANT_VERSION, artifact)
        .await;
    let done = dev
        .job_ends("rollout1-upd-good", Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}\n{}", agent.log());
    assert_eq!(done["running"], VARIANT_VERSION);
    dev.running_version(VARIANT_VERSION, Duration::from_secs(10))
        .await;
    assert_eq!(
        bytes_of(&dev.binary),
        bytes_of(&variant),
        "the new binary is in place"
    );
    assert_eq!(
        bytes_of(&dev.binary.with_extension("previous")),
        bytes_of(Path::new(BIN)),
        "the old one is kept as .previous"
    );
    assert!(
        !dev.dir.path().join("data/update/trial").exists(),
        "the trial is over"
    );
    dev.keeps_delivering().await;

    // The retained job again (a reconnect) is not run twice.
    let starts = agent.starts();
    agent.kill9();
    dev.running_version(VARIANT_VERSION, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agent.starts(), starts + 1, "{}", agent.log());
    let again = dev
        .job_ends("rollout1-upd-good", Duration::from_secs(5))
        .await;
    assert_eq!(again["status"], "SUCCEEDED");

    dev.every_record_arrived(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_signature_sha256_truncation_and_size_are_refused_and_delivery_goes_on() {
    let dev = Device::new("upd-bad", "max_bytes = 2097152").await;
    let agent = dev.supervise(&[]);
    dev.running_version(STOCK_VERSION, Duration::from_secs(30))
        .await;
    let payload = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 % 251) as u8).collect() };
    let (other, _) = SigningKey::generate().expect("key");

    let mut signed_by_other = dev.artifact("a-sig", payload(50_000), Serve::Whole);
    signed_by_other["signature"] = json!(other.sign(&payload(50_000)));
    let mut wrong_sha = dev.artifact("a-sha", payload(50_000), Serve::Whole);
    wrong_sha["sha256"] = json!(Sha256::hex_of(b"something else"));
    let truncated = dev.artifact("a-trunc", payload(50_000), Serve::Truncated(20_000));
    let declared_too_big = dev.artifact("a-big", payload(3 * 1024 * 1024), Serve::Whole);
    let mut sends_too_much = dev.artifact("a-more", payload(50_000), Serve::Whole);
    sends_too_much["size"] = json!(10_000);
    let cases = [
        ("bad-sig", signed_by_other, "signature_mismatch"),
        ("bad-sha", wrong_sha, "sha256_mismatch"),
        ("bad-trunc", truncated, "truncated"),
        ("bad-big", declared_too_big, "too_large"),
        ("bad-more", sends_too_much, "too_large"),
    ];
    for (job, artifact, reason) in cases {
        dev.publish_job(job, VARIANT_VERSION, artifact).await;
        let done = dev.job_ends(job, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "FAILED", "{job}: {done}");
        assert_eq!(done["reason"], reason, "{job}: {done}");
        assert_eq!(done["running"], STOCK_VERSION);
        dev.keeps_delivering().await;
    }
    assert_eq!(
        bytes_of(&dev.binary),
        bytes_of(Path::new(BIN)),
        "nothing installed"
    );
    assert!(!dev.binary.with_extension("new").exists());
    assert_eq!(agent.starts(), 1, "never restarted: {}", agent.log());
    // Resumption was tried on the truncated one, from where it stopped.
    assert!(
        dev.server
            .requests()
            .contains(&"GET /a-trunc from 20000".to_owned()),
        "{:?}",
        dev.server.requests()
    );
    // A job without a key configured is refused too: see the unit tests of `update`.
    dev.every_record_arrived(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_that_exits_at_once_or_never_connects_is_rolled_back() {
    let variant = variant_agent();
    let dev = Device::new("upd-roll", "max_bytes = 1073741824\ntrial_s = 10").await;
    for (fault, job) in [("exit", "roll-exit"), ("no-connect", "roll-noconn")] {
        let agent = dev.supervise(&[("AGENT_TEST_FAULT", fault)]);
        dev.running_version(STOCK_VERSION, Duration::from_secs(30))
            .await;
        let artifact = dev.artifact(job, bytes_of(&variant), Serve::Whole);
        dev.publish_job(job, VARIANT_VERSION, artifact).await;
        let done = dev.job_ends(job, Duration::from_secs(90)).await;
        assert_eq!(done["status"], "FAILED", "{fault}: {done}\n{}", agent.log());
        assert_eq!(done["reason"], "rolled_back", "{fault}: {done}");
        assert_eq!(
            done["running"], STOCK_VERSION,
            "reported by the restored binary"
        );
        assert_eq!(
            bytes_of(&dev.binary),
            bytes_of(Path::new(BIN)),
            "{fault}: the stock binary is back"
        );
        assert!(
            agent.log().contains("ferry-update-guard: rolled back"),
            "{}",
            agent.log()
        );
        dev.running_version(STOCK_VERSION, Duration::from_secs(10))
            .await;
        dev.keeps_delivering().await;
        let mut agent = agent;
        agent.stop();
    }
    let agent = dev.supervise(&[]);
    dev.every_record_arrived(agent).await;
}

/// SIGKILL at random moments of a download, the swap and the trial: the binary in place is
/// always one of the two builds and runs, the job ends, and every record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_download_swap_and_trial_leaves_a_runnable_agent_and_every_record() {
    let variant = variant_agent();
    let dev = Device::new("upd-chaos", "max_bytes = 1073741824\ntrial_s = 60").await;
    let agent = dev.supervise(&[]);
    dev.running_version(STOCK_VERSION, Duration::from_secs(30))
        .await;
    // About 4 s per download, so kills land in it as well as after it.
    let artifact = dev.artifact(
        "chaos",
        bytes_of(&variant),
        Serve::Throttled(Duration::from_millis(2)),
    );
    dev.publish_job("chaos-1", VARIANT_VERSION, artifact).await;
    let stock = bytes_of(Path::new(BIN));
    let new = bytes_of(&variant);
    let mut rng = rand::rng();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..5000))).await;
        agent.kill9();
        let in_place = bytes_of(&dev.binary);
        assert!(
            in_place == stock || in_place == new,
            "a torn binary is in place"
        );
    }
    let done = dev.job_ends("chaos-1", Duration::from_secs(180)).await;
    // Three kills inside the trial would rightly roll it back; either way it ended.
    let version = if done["status"] == "SUCCEEDED" {
        VARIANT_VERSION
    } else {
        assert_eq!(done["reason"], "rolled_back", "{done}");
        STOCK_VERSION
    };
    dev.running_version(version, Duration::from_secs(30)).await;
    dev.keeps_delivering().await;
    dev.every_record_arrived(agent).await;
}
