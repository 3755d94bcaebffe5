//! `ferry-agent enroll` against a stand-in for IoT Core's fleet provisioning on a real
//! Mosquitto with mutual TLS: the device's certificate, made from its own CSR and signed
//! by the broker's CA, then connects; rejections and silence leave nothing behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_tests::broker::Mosquitto;
use ferry_tests::certs::TestPki;
use ferry_tests::provisioning::{Answer, FleetProvisioning};

use crate::BIN;

const TEMPLATE: &str = "FerryFleet";

struct Device {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Device {
    /// The config a package installs, filled in with the endpoint and the CA only.
    fn new(port: u16, pki: &TestPki) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "# Filled in by `ferry-agent enroll`.\ndevice_id = \"CHANGE-ME\"\ndata_dir = \"{}\"\n\n[mqtt]\nurl = \"mqtts://127.0.0.1:{port}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                dir.path().join("data").display(),
                pki.ca.display(),
                dir.path().join("device.pem.crt").display(),
                dir.path().join("private.pem.key").display(),
            ),
        )
        .expect("config");
        Self { dir, config }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn enroll(&self, pki: &TestPki, extra: &[&str]) -> Output {
        self.enroll_with(pki, TEMPLATE, "SN-0042", extra)
    }

    fn enroll_with(&self, pki: &TestPki, template: &str, serial: &str, extra: &[&str]) -> Output {
        run(Command::new(BIN)
            .arg("enroll")
            .arg("--config")
            .arg(&self.config)
            .arg("--claim-cert")
            .arg(&pki.client_cert)
            .arg("--claim-key")
            .arg(&pki.client_key)
            .args([
                "--template",
                template,
                "--serial",
                serial,
                "--timeout-s",
                "3",
            ])
            .args(extra))
    }

    fn check_connect(&self) -> Output {
        run(Command::new(BIN)
            .args(["check", "--connect", "--config"])
            .arg(&self.config))
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).expect("config")
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.env("FERRY_LOG", "warn")
        .output()
        .expect("running ferry-agent")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_enrolls_with_its_own_key_connects_and_a_second_run_does_nothing() {
    let pki = TestPki::new("claim");
    let broker = Mosquitto::start_tls(&pki);
    let iot = FleetProvisioning::start(broker.port, &pki, TEMPLATE, Answer::Accept).await;
    let device = Device::new(broker.port, &pki);

    let before = device.check_connect();
    assert!(
        !before.status.success(),
        "unenrolled, check refuses: {}",
        text(&before)
    );
    assert!(text(&before).contains("device_id"), "{}", text(&before));

    let out = device.enroll(&pki, &["--store", "shop-7"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("enrolled as ferry-SN-0042"),
        "{}",
        text(&out)
    );

    let requests: Vec<_> = iot.asked().requests.clone();
    assert_eq!(requests.len(), 2, "one certificate, one provisioning");
    assert_eq!(requests[0].0, "$aws/certificates/create-from-csr/json");
    assert!(
        requests[0].1["certificateSigningRequest"]
            .as_str()
            .is_some_and(|csr| csr.contains("BEGIN CERTIFICATE REQUEST")),
        "a CSR, not a key, leaves the device"
    );
    assert_eq!(
        requests[1].0,
        format!("$aws/provisioning-templates/{TEMPLATE}/provision/json")
    );
    assert_eq!(requests[1].1["parameters"]["SerialNumber"], "SN-0042");
    assert_eq!(requests[1].1["parameters"]["Store"], "shop-7");
    assert!(requests[1].1["certificateOwnershipToken"].is_string());

    assert_eq!(mode(&device.file("private.pem.key")), 0o600);
    assert_eq!(mode(&device.file("device.pem.crt")), 0o600);
    let key = std::fs::read_to_string(device.file("private.pem.key")).expect("key");
    assert!(key.contains("PRIVATE KEY"));
    assert!(
        !requests
            .iter()
            .any(|(_, body)| body.to_string().contains(key.trim()))
    );
    let config = device.config_text();
    assert!(config.contains("device_id = \"ferry-SN-0042\""), "{config}");
    assert!(
        config.starts_with("# Filled in by `ferry-agent enroll`."),
        "comments stay: {config}"
    );

    // The certificate is the device's own and the broker takes it.
    let check = device.check_connect();
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("connected to 127.0.0.1"),
        "{}",
        text(&check)
    );

    let again = device.enroll(&pki, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already enrolled as ferry-SN-0042"),
        "{}",
        text(&again)
    );
    assert_eq!(iot.asked().requests.len(), 2, "a second run asks nothing");
    assert_eq!(device.config_text(), config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_aws_key_the_key_comes_from_iot_core() {
    let pki = TestPki::new("claim");
    let broker = Mosquitto::start_tls(&pki);
    let iot = FleetProvisioning::start(broker.port, &pki, TEMPLATE, Answer::Accept).await;
    let device = Device::new(broker.port, &pki);
    let out = device.enroll(&pki, &["--aws-key"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(iot.asked().requests[0].0, "$aws/certificates/create/json");
    assert_eq!(mode(&device.file("private.pem.key")), 0o600);
    let check = device.check_connect();
    assert!(check.status.success(), "{}", text(&check));
}

/// Each failure names what IoT Core said (or that it said nothing) and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_and_silence_fail_with_the_reason_and_leave_the_device_as_it_was() {
    let pki = TestPki::new("claim");
    let broker = Mosquitto::start_tls(&pki);
    let cases = [
        (Answer::RejectCertificate, TEMPLATE, "400 InvalidCsr"),
        (
            Answer::RejectProvision,
            TEMPLATE,
            "403 AccessDenied: Pre-provisioning hook denied",
        ),
        (Answer::Accept, "NoSuchTemplate", "404 ResourceNotFound"),
        (
            Answer::Silent,
            TEMPLATE,
            "no answer on $aws/certificates/create-from-csr/json/accepted or /rejected within 3 s",
        ),
    ];
    for (answer, template, expected) in cases {
        let iot = FleetProvisioning::start(broker.port, &pki, TEMPLATE, answer).await;
        let device = Device::new(broker.port, &pki);
        let before = device.config_text();
        let out = device.enroll_with(&pki, template, "SN-1", &[]);
        assert!(!out.status.success(), "{answer:?}: {}", text(&out));
        assert!(text(&out).contains(expected), "{answer:?}: {}", text(&out));
        assert!(
            !device.file("private.pem.key").exists(),
            "{answer:?}: no key left"
        );
        assert!(
            !device.file("device.pem.crt").exists(),
            "{answer:?}: no certificate left"
        );
        assert_eq!(device.config_text(), before, "{answer:?}: config untouched");
        drop(iot);
    }
}

#[test]
fn a_bad_claim_or_config_is_named_before_anything_is_sent() {
    let pki = TestPki::new("claim");
    let device = Device::new(1, &pki);
    let missing_claim = run(Command::new(BIN)
        .arg("enroll")
        .arg("--config")
        .arg(&device.config)
        .args(["--claim-cert", "/nonexistent/claim.pem", "--claim-key"])
        .arg(&pki.client_key)
        .args(["--template", TEMPLATE, "--serial", "SN-1"]));
    assert!(!missing_claim.status.success());
    assert!(
        text(&missing_claim).contains("--claim-cert /nonexistent/claim.pem"),
        "{}",
        text(&missing_claim)
    );

    // Refused before anything is sent: a serial that is not one, and one that would name a
    // thing like the ingest's client ids.
    for (serial, said) in [
        ("a/b", "serial \"a/b\""),
        ("ingest-1", "starts with \"ingest\""),
    ] {
        let bad_serial = device.enroll_with(&pki, TEMPLATE, serial, &[]);
        assert!(!bad_serial.status.success());
        assert!(
            text(&bad_serial).contains(said),
            "{serial}: {}",
            text(&bad_serial)
        );
    }

    std::fs::write(&device.config, "device_id = \"CHANGE-ME\"\ndata_dir = \"/d\"\n[mqtt]\nurl = \"mqtts://CHANGE-ME.iot.eu-west-1.amazonaws.com\"\n").expect("config");
    let placeholder = device.enroll(&pki, &[]);
    assert!(!placeholder.status.success());
    assert!(
        text(&placeholder).contains("mqtt.url"),
        "{}",
        text(&placeholder)
    );

    std::fs::write(&device.config, "device_id = \"CHANGE-ME\"\ndata_dir = \"/d\"\n[mqtt]\nurl = \"mqtts://127.0.0.1:1\"\nca_file = \"/x\"\n").expect("config");
    let no_cert_file = device.enroll(&pki, &[]);
    assert!(
        text(&no_cert_file).contains("mqtt.cert_file: required to enroll"),
        "{}",
        text(&no_cert_file)
    );
}
