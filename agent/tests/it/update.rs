//! Signed updates end to end: real Mosquitto, an HTTP server for the artifacts, the agent
//! started the way the packaged unit starts it (the update guard before every start, a
//! restart after every exit), and a second build of the agent to update to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_shared::DeviceId;
use ferry_shared::fleet::{self, Manifest, this_arch};
use ferry_shared::signing::{Sha256, SigningKey};
use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use ferry_tests::fleet::{
    ArtifactServer, Serve, Supervisor, VARIANT_VERSION, Watcher, manifest, signed_artifact,
    variant_agent,
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

    /// Serves `bytes` as `name` and describes them truthfully as `version`, signed with the
    /// device's key.
    fn artifact(&self, name: &str, bytes: Vec<u8>, how: Serve, version: &str) -> Value {
        let m = manifest(&bytes, version);
        self.serve_as(name, bytes, how, &m)
    }

    /// Serves `bytes` as `name`, described by `m` signed with the device's key.
    fn serve_as(&self, name: &str, bytes: Vec<u8>, how: Serve, m: &Manifest) -> Value {
        let described = signed_artifact(&self.key, &self.server.url(name), m);
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

    let artifact = dev.artifact(
        "agent-v2",
        bytes_of(&variant),
        Serve::Whole,
        VARIANT_VERSION,
    );
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

    // Back to the stock build, which is older: only as a manifest signed `rollback_to`.
    let stock = bytes_of(Path::new(BIN));
    let back = Manifest {
        rollback_to: true,
        ..manifest(&stock, STOCK_VERSION)
    };
    let artifact = dev.serve_as("agent-back", stock.clone(), Serve::Whole, &back);
    dev.publish_job("rollback1-upd-good", STOCK_VERSION, artifact)
        .await;
    let done = dev
        .job_ends("rollback1-upd-good", Duration::from_secs(120))
        .await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}\n{}", agent.log());
    assert_eq!(done["running"], STOCK_VERSION);
    assert_eq!(bytes_of(&dev.binary), stock, "the stock binary is back");
    dev.keeps_delivering().await;

    dev.every_record_arrived(agent).await;
}

/// One hostile or broken job: what it is, the document's artifact and version, and the
/// reason the device must answer with.
struct Hostile {
    name: &'static str,
    version: String,
    artifact: Value,
    reason: &'static str,
}

/// The hostile-fleet suite: jobs an attacker who holds a signed build, a retained topic or a
/// mirror could send, against the real agent on real Mosquitto, started under the unit's
/// guard. Each is answered `FAILED` with its reason, nothing is installed, the agent never
/// restarts and keeps delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_fleet_jobs_are_refused_with_their_reason_and_delivery_goes_on() {
    let dev = Device::new("upd-bad", "max_bytes = 1073741824").await;
    let agent = dev.supervise(&[]);
    dev.running_version(STOCK_VERSION, Duration::from_secs(30))
        .await;
    let payload = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 % 251) as u8).collect() };
    let (other, _) = SigningKey::generate().expect("key");
    let stock = bytes_of(Path::new(BIN));
    let next = "9.9.8";
    let m = |bytes: &[u8]| manifest(bytes, next);
    let hostile = |name, version: &str, artifact, reason| Hostile {
        name,
        version: version.to_owned(),
        artifact,
        reason,
    };

    let mut tampered = dev.artifact("a-tamper", payload(50_000), Serve::Whole, next);
    let text = tampered["manifest"]
        .as_str()
        .expect("text")
        .replace("\"rollback_to\":false", "\"rollback_to\":true");
    tampered["manifest"] = json!(text);
    let injected = |version: &str| {
        let mut a = dev.artifact("a-inject", payload(1000), Serve::Whole, next);
        // Signed with the version too, so only the check of its form stops it.
        let mut inj = m(&payload(1000));
        inj.version = version.to_owned();
        a["manifest"] = json!(inj.to_text());
        a["signature"] = json!(dev.key.sign(inj.to_text().as_bytes()));
        a
    };
    let other_arch = if this_arch() == "arm64" {
        "armhf"
    } else {
        "arm64"
    };
    let cases = [
        hostile(
            "a version with a newline and a started= line",
            "1.0\nstarted=now[$(id>&2)]",
            injected("1.0\nstarted=now[$(id>&2)]"),
            "bad_job",
        ),
        hostile(
            "a $(…) payload as the version",
            "now[$(id>&2)]",
            injected("now[$(id>&2)]"),
            "bad_job",
        ),
        hostile(
            "signed by another key",
            next,
            signed_artifact(&other, &dev.server.url("a-inject"), &m(&payload(1000))),
            "signature_mismatch",
        ),
        hostile(
            "a manifest changed after signing",
            next,
            tampered,
            "signature_mismatch",
        ),
        hostile(
            "a signed older build replayed as a downgrade",
            "0.0.1",
            dev.artifact("a-old", stock.clone(), Serve::Whole, "0.0.1"),
            "downgrade",
        ),
        hostile(
            "a manifest for another architecture",
            next,
            dev.serve_as(
                "a-arch",
                payload(1000),
                Serve::Whole,
                &Manifest {
                    arch: other_arch.into(),
                    ..m(&payload(1000))
                },
            ),
            "wrong_arch",
        ),
        hostile(
            "an expired manifest (a frozen mirror)",
            next,
            dev.serve_as(
                "a-exp",
                payload(1000),
                Serve::Whole,
                &Manifest {
                    expires: ferry_shared::Timestamp::parse("2020-01-01T00:00:00Z").expect("ts"),
                    ..m(&payload(1000))
                },
            ),
            "expired",
        ),
        hostile(
            "a build that needs a newer running version first",
            next,
            dev.serve_as(
                "a-min",
                payload(1000),
                Serve::Whole,
                &Manifest {
                    min_version: "9.0.0".into(),
                    ..m(&payload(1000))
                },
            ),
            "too_old",
        ),
        hostile(
            "the job's version is not the signed one",
            "9.9.7",
            dev.artifact("a-label", payload(1000), Serve::Whole, next),
            "bad_job",
        ),
        hostile(
            "a binary signed under another version's label",
            next,
            dev.artifact("a-mislabel", stock.clone(), Serve::Whole, next),
            "version_mismatch",
        ),
        hostile(
            "bytes other than the signed digest",
            next,
            dev.serve_as(
                "a-sha",
                payload(50_000),
                Serve::Whole,
                &Manifest {
                    sha256: Sha256::hex_of(b"something else"),
                    ..m(&payload(50_000))
                },
            ),
            "sha256_mismatch",
        ),
        hostile(
            "a server that ends short",
            next,
            dev.artifact("a-trunc", payload(50_000), Serve::Truncated(20_000), next),
            "truncated",
        ),
        hostile(
            "a declared size above update.max_bytes",
            next,
            dev.serve_as(
                "a-big",
                payload(1000),
                Serve::Whole,
                &Manifest {
                    size: 2 << 30,
                    ..m(&payload(1000))
                },
            ),
            "too_large",
        ),
        hostile(
            "a server that sends more than signed",
            next,
            dev.serve_as(
                "a-more",
                payload(50_000),
                Serve::Whole,
                &Manifest {
                    size: 10_000,
                    ..m(&payload(50_000))
                },
            ),
            "too_large",
        ),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let job = format!("hostile-{i}");
        dev.publish_job(&job, &case.version, case.artifact).await;
        let done = dev.job_ends(&job, Duration::from_secs(60)).await;
        println!("{:<50} -> {} {}", case.name, done["reason"], done["detail"]);
        assert_eq!(done["status"], "FAILED", "{}: {done}", case.name);
        assert_eq!(done["reason"], case.reason, "{}: {done}", case.name);
        assert_eq!(done["running"], STOCK_VERSION, "{}", case.name);
        assert!(
            !dev.dir.path().join("data/update/trial").exists(),
            "{}",
            case.name
        );
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

    // A trial file with a non-digit (as a version injected before the guard read strictly
    // would have left): the guard's verdict, a start of the binary, the job answered.
    std::fs::write(
        dev.dir.path().join("data/update/trial"),
        format!(
            "job=hostile-trial\nversion={next}\nprevious_version={STOCK_VERSION}\nstarted=17x\ntrial_s=60\nprevious_spool_format=4\n"
        ),
    )
    .expect("trial file");
    agent.kill9();
    let done = dev.job_ends("hostile-trial", Duration::from_secs(30)).await;
    println!(
        "{:<50} -> {} {}",
        "a non-digit in the trial file", done["reason"], done["detail"]
    );
    assert_eq!(done["reason"], "guard_bad_state", "{done}\n{}", agent.log());
    dev.running_version(STOCK_VERSION, Duration::from_secs(30))
        .await;
    dev.keeps_delivering().await;
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
        let artifact = dev.artifact(job, bytes_of(&variant), Serve::Whole, VARIANT_VERSION);
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
        VARIANT_VERSION,
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
