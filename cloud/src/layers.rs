//! The cloud's layers, bottom up, and the test that keeps imports running one way: a
//! module may use its own layer's module or those of layers below, never one above. So
//! there is no import cycle, and a change to the dashboards never recompiles the ingest's
//! reasoning. ARCHITECTURE.md draws the same table.

/// Bottom up. Within a layer, modules do not use each other, except as listed lower.
const LAYERS: &[&[&str]] = &[
    &["config"],
    &["http", "db", "certs"],
    &["sign"],
    &["pool"],
    &["lake", "loyalty", "hot"],
    &["ingest", "curated", "enroll"],
    &["dashboard", "fleet"],
    &["dev", "openapi", "check"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level modules that `text` names through `crate::` (and through `super::` in a
/// top-level module's own files, where `super` is the crate), comments left out.
fn imports(text: &str, top_level_file: bool) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = ["crate::", "super::"]
            .iter()
            .filter(|p| **p == "crate::" || top_level_file)
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min()
        {
            rest = &rest[at.0 + at.1..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a::B, c}`: the first name of each item at the top of the braces.
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            rest = &group[i..];
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && (c.is_alphanumeric() || c == '_') => {
                            found.push(ident(&group[i..]));
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                found.push(ident(rest));
            }
        }
    }
    found
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn imports_run_one_way() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).expect("src/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if matches!(name.as_str(), "lib" | "main" | "layers") {
            continue;
        }
        let Some(layer) = layer_of(&name) else {
            wrong.push(format!(
                "src/{name}: a module in no layer; add it to LAYERS"
            ));
            continue;
        };
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            walk(&path)
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source file");
            let top_level_file = file == path || file == path.join("mod.rs");
            for used in imports(&text, top_level_file) {
                checked += 1;
                match layer_of(&used) {
                    Some(l) if used == name || l < layer => {}
                    Some(l) => wrong.push(format!(
                        "{}: {name} (layer {layer}) uses {used} (layer {l})",
                        file.strip_prefix(&src).unwrap_or(&file).display()
                    )),
                    None => {}
                }
            }
        }
    }
    assert!(
        checked > 30,
        "the scan found only {checked} imports; is it broken?"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("module folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_scan_sees_grouped_and_inline_paths() {
    let text = "use crate::{db::Db, hot::{HotItem, Latest}, config};\n\
                // use crate::dev::Nothing;\n\
                let x = crate::lake::Line::new(super::ingest::X);";
    assert_eq!(imports(text, false), ["db", "hot", "config", "lake"]);
    assert_eq!(
        imports(text, true),
        ["db", "hot", "config", "lake", "ingest"]
    );
}
