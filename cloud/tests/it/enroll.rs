//! `ferry-cloud enroll` against a real S3-protocol server, and the stack's
//! pre-provisioning hook (its code, from `deploy/aws/ferry.yaml`, run by `check.py
//! --run-hook`) reading the very objects the command wrote.

use std::path::Path;
use std::process::{Command, Output};

use ferry_tests::s3::S3Server;
use serde_json::Value;

use crate::BIN;

const BUCKET: &str = "enrollment";

fn enroll(s3: &S3Server, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["enroll", "--list", &format!("s3://{BUCKET}/allow")])
        .args(["--s3-endpoint", &s3.endpoint(), "--s3-force-path-style"])
        .args(["--s3-region", ferry_tests::s3::REGION])
        .args(args)
        .envs(s3.client_env())
        .output()
        .expect("running ferry-cloud enroll")
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// What the stack's hook answers for `serial`, with `things` existing.
fn hook(s3: &S3Server, serial: &str, things: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .current_dir(&root)
        .args(["deploy/aws/check.py", "--run-hook", "deploy/aws/ferry.yaml", serial])
        .arg(s3.bucket_dir(BUCKET).join("allow"))
        .args(things)
        .output()
        .expect("python3 is needed to run the enrollment hook (with cfn-lint: cargo xtask test installs it)");
    assert!(
        out.status.success(),
        "check.py --run-hook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the hook's answer")
}

#[test]
fn the_allow_list_is_what_the_hook_reads_and_a_copied_claim_enrolls_nothing_else() {
    let s3 = S3Server::start(BUCKET);
    let allowed = lines(&enroll(
        &s3,
        &["allow", "--store", "S-01", "ws-001", "pos-s01-till1"],
    ));
    assert_eq!(allowed.len(), 2);
    assert_eq!(allowed[0]["serial"], "ws-001");
    assert_eq!(allowed[0]["store"], "S-01");

    // Listed and new: allowed, into the listed store whatever the device asked for.
    let answer = hook(&s3, "ws-001", &[]);
    assert_eq!(answer["allowProvisioning"], true, "{answer}");
    assert_eq!(answer["parameterOverrides"]["Store"], "S-01");
    // Someone else's serial, and one that would name the ingest: refused.
    assert_eq!(hook(&s3, "ws-404", &[])["allowProvisioning"], false);
    assert_eq!(hook(&s3, "ingest-1", &[])["allowProvisioning"], false);
    // The victim's thing exists: refused until the operator marks it.
    assert_eq!(
        hook(&s3, "ws-001", &["ferry-ws-001"])["allowProvisioning"],
        false
    );
    let marked = lines(&enroll(&s3, &["reenroll", "ws-001"]));
    assert_eq!(marked[0]["reenroll"], true);
    assert_eq!(
        hook(&s3, "ws-001", &["ferry-ws-001"])["allowProvisioning"],
        true
    );

    let listed = lines(&enroll(&s3, &["list"]));
    let serials: Vec<&str> = listed.iter().filter_map(|v| v["serial"].as_str()).collect();
    assert_eq!(serials, ["pos-s01-till1", "ws-001"]);

    let revoked = lines(&enroll(&s3, &["revoke", "pos-s01-till1"]));
    assert_eq!(revoked[0]["revoked"], true);
    assert_eq!(hook(&s3, "pos-s01-till1", &[])["allowProvisioning"], false);

    // Bad input: a clear error, exit 2, nothing written.
    for (args, said) in [
        (&["allow", "ingest-7"][..], "starts with \"ingest\""),
        (&["allow", "../x"][..], "must be 1 to 64"),
        (&["allow", "--store", "S 01", "ws-9"][..], "--store"),
        (&["reenroll", "ws-404"][..], "not on the allow-list"),
    ] {
        let out = enroll(&s3, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(said), "{args:?}: {err}");
    }
    let listed = lines(&enroll(&s3, &["list"]));
    assert_eq!(listed.len(), 1, "{listed:?}");
}
