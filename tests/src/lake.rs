//! Reads a lake folder back: every `*.ndjson.gz` object, gunzipped, line by line.

use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Object {
    /// Relative to the lake root, with `/` separators.
    pub key: String,
    pub bytes: u64,
    pub lines: Vec<serde_json::Value>,
}

pub fn read(root: &Path) -> Vec<Object> {
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let raw = std::fs::read(&path).expect("reading a lake object");
            let mut text = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut text)
                .unwrap_or_else(|e| panic!("{} is not gzip: {e}", path.display()));
            let lines = text
                .lines()
                .map(|l| {
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display()))
                })
                .collect();
            let key = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            Object {
                key,
                bytes: raw.len() as u64,
                lines,
            }
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.to_string_lossy().ends_with(".ndjson.gz") {
            out.push(path);
        }
    }
}

/// Every `raw/` line's (device, spool, seq).
pub fn record_ids(objects: &[Object]) -> Vec<(String, String, u64)> {
    objects
        .iter()
        .filter(|o| o.key.starts_with("raw/"))
        .flat_map(|o| o.lines.iter())
        .map(|l| {
            (
                l["device"].as_str().unwrap_or_default().to_owned(),
                l["spool"].as_str().unwrap_or_default().to_owned(),
                l["seq"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}
