//! `ferry-cloud check`: the unit's `ExecStartPre`. A config fit for the role passes and,
//! with `--connect`, reaches a real broker under its own client id; a bad one fails with
//! exit code 2 and the key named.

use std::process::{Command, Output};

use ferry_tests::broker::Mosquitto;

use crate::BIN;

fn check(config: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cloud.toml");
    std::fs::write(
        &path,
        config.replace("{dir}", &dir.path().display().to_string()),
    )
    .expect("config");
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .args(args)
        .output()
        .expect("running ferry-cloud check")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ingest_config(url: &str) -> String {
    format!(
        "data_dir = \"{{dir}}/data\"\n[mqtt]\nurl = \"{url}\"\nclient_id = \"ingest-1\"\n[lake]\nroot = \"{{dir}}/lake\"\n"
    )
}

#[test]
fn a_config_fit_for_the_role_passes_and_connects_as_its_own_client() {
    let _guard = crate::beside_others();
    let broker = Mosquitto::start();
    let out = check(
        &ingest_config(&broker.url()),
        &["--role", "ingest", "--connect"],
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("as ingest-1-check"), "{}", said(&out));

    let port = ferry_tests::free_port();
    let out = check(
        &ingest_config(&format!("mqtt://127.0.0.1:{port}")),
        &["--role", "ingest", "--connect"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        said(&out).contains("mqtt.url: cannot connect"),
        "{}",
        said(&out)
    );
}

#[test]
fn a_config_unfit_for_the_role_fails_naming_the_key() {
    let _guard = crate::beside_others();
    let ingest = ingest_config("mqtt://127.0.0.1:1");
    let cases = [
        (ingest.clone(), "dashboard", "key dashboard"),
        (ingest.clone(), "loyalty", "key loyalty.database"),
        (
            format!("{ingest}[http]\nlisten = \"127.0.0.1:1\"\ntoken = \"change-me\"\n"),
            "all",
            "key http.token",
        ),
        (
            ingest.replace("ingest-1", "CHANGE-ME"),
            "ingest",
            "key mqtt.client_id",
        ),
        (ingest.clone(), "nonsense", "not a role"),
    ];
    for (config, role, expected) in cases {
        let out = check(&config, &["--role", role]);
        assert_eq!(out.status.code(), Some(2), "{role}: {}", said(&out));
        assert!(said(&out).contains(expected), "{role}: {}", said(&out));
    }
}
