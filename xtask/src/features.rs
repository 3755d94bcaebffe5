//! The run build and the test build must compile dependencies with the same features, or
//! the test build recompiles most of the tree (cargo resolves features per build). This
//! compares the two, as `cargo tree` sees them.

use std::collections::{BTreeMap, BTreeSet};

/// `package version` -> its features, for one selection of packages and edge kinds.
fn features(selection: &[&str], edges: &str) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let out = crate::cargo()
        .arg("tree")
        .args(selection)
        .args(["-e", edges, "-f", "{p} {f}", "--prefix", "none"])
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

fn parse(tree: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in tree.lines().map(|l| l.trim_end_matches(" (*)")) {
        let words: Vec<&str> = line.split(' ').collect();
        let [name, version, rest @ ..] = words.as_slice() else {
            continue;
        };
        let set = map.entry(format!("{name} {version}")).or_default();
        // A path dependency prints `(/path)` before its features.
        if let Some(list) = rest.iter().rfind(|w| !w.starts_with('(')) {
            set.extend(list.split(',').filter(|f| !f.is_empty()).map(str::to_owned));
        }
    }
    map
}

/// Fails, naming each package and the features only the test build turns on.
pub fn check() -> Result<(), String> {
    let run = features(&["-p", "ferry-cloud", "-p", "ferry-agent"], "normal,build")?;
    let test = features(&["--workspace"], "normal,build,dev")?;
    let differ: Vec<String> = run
        .iter()
        .filter_map(|(package, run_set)| {
            let test_set = test.get(package)?;
            (test_set != run_set).then(|| {
                let only_test: Vec<&str> =
                    test_set.difference(run_set).map(String::as_str).collect();
                format!(
                    "  {package}: only the test build has {}",
                    only_test.join(", ")
                )
            })
        })
        .collect();
    if differ.is_empty() {
        println!("the run build and the test build compile their common dependencies alike");
        Ok(())
    } else {
        Err(format!(
            "the test build would recompile these (turn the features on in cloud/Cargo.toml's \
             feature-unification block, or avoid them in the tests):\n{}",
            differ.join("\n")
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_cargo_tree_lines() {
        let map = super::parse(
            "tokio v1.54.1 bytes,rt\ntokio v1.54.1 macros (*)\nferry-cloud v0.1.0 (/w/cloud) \nserde v1.0.1 \n",
        );
        assert_eq!(map["tokio v1.54.1"].len(), 3);
        assert!(map["ferry-cloud v0.1.0"].is_empty());
        assert!(map["serde v1.0.1"].is_empty());
    }
}
