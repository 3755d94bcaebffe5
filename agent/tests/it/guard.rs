//! `ferry-update-guard` against hostile or damaged update state, under the two shells a Pi's
//! `/bin/sh` may be: every case must exit 0 (the unit still starts), run nothing it read,
//! leave a `guard_bad_state` verdict and put a known binary in place.

use std::path::Path;
use std::process::Command;

use ferry_tests::fleet::guard_script;

/// The shells `/bin/sh` is on Debian (dash) and elsewhere (bash in POSIX mode).
const SHELLS: [&[&str]; 2] = [&["dash"], &["bash", "--posix"]];

fn good_trial(started: &str) -> String {
    format!(
        "job=r1-pi\nversion=0.2.0\nprevious_version=0.1.0\nstarted={started}\ntrial_s=120\nprevious_spool_format=4\n"
    )
}

struct Case {
    name: &'static str,
    trial: String,
    readable_by: Option<&'static str>,
}

/// Runs the guard once over `case` and returns (exit code, stderr).
fn run_guard(shell: &[&str], root: &Path, case: &Case) -> (Option<i32>, String) {
    let state = root.join("state");
    let update = state.join("update");
    std::fs::create_dir_all(&update).expect("state");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::write(bin.join("ferry-agent"), "new build").expect("binary");
    std::fs::write(bin.join("ferry-agent.previous"), "old build").expect("previous");
    std::fs::write(update.join("trial"), &case.trial).expect("trial");
    if let Some(r) = case.readable_by {
        std::fs::write(update.join("spool_readable_by"), r).expect("readable_by");
    }
    let out = Command::new(shell[0])
        .args(&shell[1..])
        .arg(guard_script())
        .arg(&state)
        .arg(bin.join("ferry-agent"))
        // No packaged binary here: the guard falls back to the previous one.
        .env("FERRY_PACKAGED_AGENT", root.join("no-such-binary"))
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("{} is needed for this test: {e}", shell[0]));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hostile_update_state_gives_a_verdict_and_a_start_never_an_evaluation() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let cases = [
        Case {
            name: "a version with a newline that adds a started= line first",
            trial: format!(
                "job=r1-pi\nversion=1.0\nstarted=now[$(touch pwned-a)]\nprevious_version=0.1.0\nstarted={now}\ntrial_s=120\nprevious_spool_format=4\n"
            ),
            readable_by: None,
        },
        Case {
            name: "a $(…) payload as the start time",
            trial: good_trial("now[$(touch pwned-b)]"),
            readable_by: None,
        },
        Case {
            name: "a non-digit in started",
            trial: good_trial(&format!("{now}x")),
            readable_by: None,
        },
        Case {
            name: "a command substitution in the version",
            trial: good_trial(&now).replace("version=0.2.0", "version=$(touch pwned-c)"),
            readable_by: None,
        },
        Case {
            name: "a truncated file",
            trial: "job=r1-pi\nversion=0.2.0\nsta".into(),
            readable_by: None,
        },
        Case {
            name: "an arithmetic payload in spool_readable_by",
            trial: good_trial(&now),
            readable_by: Some("x[$(touch pwned-d)]"),
        },
    ];
    for shell in SHELLS {
        for case in &cases {
            let root = tempfile::tempdir().expect("tmp");
            let (code, stderr) = run_guard(shell, root.path(), case);
            let label = format!("{shell:?}, {}", case.name);
            println!("guard {label}: exit {code:?}: {}", stderr.trim());
            assert_eq!(
                code,
                Some(0),
                "{label}: the unit must still start: {stderr}"
            );
            let pwned: Vec<_> = std::fs::read_dir(root.path())
                .expect("root")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("pwned"))
                .collect();
            assert!(pwned.is_empty(), "{label}: the guard ran a command it read");
            let verdict = std::fs::read_to_string(root.path().join("state/update/guard_bad_state"))
                .unwrap_or_else(|e| panic!("{label}: no guard_bad_state verdict: {e}"));
            assert!(verdict.starts_with("job="), "{label}: {verdict}");
            assert!(
                !root.path().join("state/update/trial").exists(),
                "{label}: the trial is ended"
            );
            let binary =
                std::fs::read_to_string(root.path().join("bin/ferry-agent")).expect("binary");
            assert_eq!(binary, "old build", "{label}: the known binary is in place");
        }
        // A well-formed trial is still a trial: start 1 of 3, nothing changed.
        let root = tempfile::tempdir().expect("tmp");
        let ok = Case {
            name: "a good trial",
            trial: good_trial(&now),
            readable_by: Some("4\n"),
        };
        let (code, stderr) = run_guard(shell, root.path(), &ok);
        assert_eq!(code, Some(0), "{shell:?}: {stderr}");
        assert!(stderr.contains("start 1 of 3"), "{shell:?}: {stderr}");
        let binary = std::fs::read_to_string(root.path().join("bin/ferry-agent")).expect("binary");
        assert_eq!(binary, "new build", "{shell:?}");
    }
}
