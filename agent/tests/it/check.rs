//! `ferry-agent check`: the unit's `ExecStartPre`. It passes a good config, names the key
//! of a bad one, and with `--connect` reaches a real broker or says why not.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use ferry_tests::broker::Mosquitto;
use ferry_tests::certs::TestPki;

use crate::BIN;

fn check(config: &str, connect: bool) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        config.replace("{dir}", &dir.path().display().to_string()),
    )
    .expect("config");
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--config"]).arg(&path);
    if connect {
        cmd.arg("--connect");
    }
    cmd.output().expect("running ferry-agent check")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn plain(url: &str) -> String {
    format!("device_id = \"st-1\"\ndata_dir = \"{{dir}}/data\"\n[mqtt]\nurl = \"{url}\"\n")
}

#[test]
fn a_good_config_passes_and_a_broker_is_reached_once() {
    let broker = Mosquitto::start();
    let out = check(&plain(&broker.url()), true);
    assert!(out.status.success(), "{}", said(&out));
    let text = said(&out);
    assert!(text.contains("device st-1"), "{text}");
    assert!(text.contains("will be created"), "{text}");
    assert!(
        text.contains(&format!("connected to 127.0.0.1:{}", broker.port)),
        "{text}"
    );
}

#[test]
fn a_broker_that_is_not_there_fails_the_check_with_the_url_key() {
    let port = ferry_tests::free_port();
    let out = check(&plain(&format!("mqtt://127.0.0.1:{port}")), true);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        said(&out).contains("mqtt.url: cannot connect"),
        "{}",
        said(&out)
    );
    // Without --connect the same config passes: nothing else is wrong with it.
    assert!(
        check(&plain(&format!("mqtt://127.0.0.1:{port}")), false)
            .status
            .success()
    );
}

#[test]
fn bad_configs_fail_naming_the_key() {
    let cases = [
        (
            "device_id = \"CHANGE-ME\"\ndata_dir = \"/d\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n",
            "key device_id",
        ),
        (
            "device_id = \"a\"\ndata_dir = \"/d\"\n[mqtt]\nurl = \"http://x\"\n",
            "mqtt.url",
        ),
        (
            "device_id = \"a\"\ndata_dir = \"/d\"\n[mqtt]\nurl = \"mqtts://x:8883\"\n",
            "mqtt.ca_file",
        ),
        (
            "device_id = \"a\"\ndata_dir = \"/etc/hostname\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n",
            "data_dir",
        ),
    ];
    for (config, key) in cases {
        let out = check(config, false);
        assert_eq!(out.status.code(), Some(1), "{config}: {}", said(&out));
        assert!(said(&out).contains(key), "{config}: {}", said(&out));
    }
}

#[test]
fn tls_files_are_read_and_a_key_others_can_read_is_refused() {
    let pki = TestPki::new("st-1");
    let config = format!(
        "device_id = \"st-1\"\ndata_dir = \"{{dir}}/data\"\n[mqtt]\nurl = \"mqtts://127.0.0.1:1\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let set_mode = |mode| {
        std::fs::set_permissions(&pki.client_key, std::fs::Permissions::from_mode(mode))
            .expect("chmod")
    };
    set_mode(0o644);
    let out = check(&config, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        said(&out).contains("mqtt.key_file") && said(&out).contains("644"),
        "{}",
        said(&out)
    );
    set_mode(0o600);
    let out = check(&config, false);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("TLS files"), "{}", said(&out));
    let swapped = config.replace(
        &pki.client_cert.display().to_string(),
        &pki.client_key.display().to_string(),
    );
    let out = check(&swapped, false);
    assert!(said(&out).contains("mqtt.cert_file"), "{}", said(&out));
}
