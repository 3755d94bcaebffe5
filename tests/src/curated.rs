//! The curated lake read back as an analyst would, by tools that are not Ferry: the Python
//! `deltalake` package (delta-rs) over the table's current version, and DuckDB over the
//! Parquet files that version lists. Also `ferry-cloud compact --once` as a process.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::process::Proc;

/// What one reader saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Seen {
    pub rows: u64,
    /// Distinct `(device, spool, seq)`.
    pub distinct: u64,
    /// Rows per `(device, spool)`.
    pub counts: BTreeMap<String, u64>,
    /// Column name to the reader's own type name.
    pub types: BTreeMap<String, String>,
    /// A digest of every row's `(device, spool, seq, ts)`, sorted: equal row sets, equal
    /// digests.
    pub digest: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Readback {
    pub version: i64,
    /// The Parquet files of that version.
    pub files: Vec<String>,
    pub delta: Seen,
    pub duckdb: Seen,
}

const SCRIPT: &str = r#"
import hashlib, json, sys
import duckdb
from deltalake import DeltaTable, QueryBuilder

args = json.loads(sys.argv[1])
table = DeltaTable(args["uri"], storage_options=args["storage"] or None)

def seen(con, relation, types):
    rows, distinct = con.sql(
        f"SELECT count(*), count(DISTINCT (device, spool, seq)) FROM {relation}").fetchall()[0]
    counts = dict(con.sql(
        f"SELECT device || '/' || spool, count(*) FROM {relation} GROUP BY ALL").fetchall())
    digest = hashlib.sha256()
    for row in con.sql(
            f"SELECT device, spool, seq, epoch_ms(ts) FROM {relation} ORDER BY ALL").fetchall():
        digest.update(repr(row).encode())
    return {"rows": rows, "distinct": distinct, "counts": counts, "types": types,
            "digest": digest.hexdigest()}

# delta-rs: its own SQL engine over the table's current version.
batch = QueryBuilder().register("t", table).execute(
    "SELECT device, spool, seq, ts FROM t").read_all()
delta_types = {f.name: str(f.type) for f in table.schema().fields}
delta = seen(duckdb.connect(), "batch", delta_types)

# DuckDB: the Parquet files that version lists, nothing else.
def local(uri):
    for prefix, folder in args["local"].items():
        if uri.startswith(prefix):
            return folder.rstrip("/") + "/" + uri[len(prefix):].lstrip("/")
    return uri
files = [local(uri) for uri in table.file_uris()]
con = duckdb.connect()
con.sql(f"CREATE VIEW files AS SELECT * FROM read_parquet({files!r})")
duck_types = {name: kind for name, kind, *_ in con.sql("DESCRIBE files").fetchall()}
print(json.dumps({"version": table.version(), "files": files,
                  "delta": delta, "duckdb": seen(con, "files", duck_types)}))
"#;

/// Reads the Delta table at `uri` (`/path` or `s3://bucket/key`). `storage` are delta-rs's
/// storage options (an S3 endpoint and keys); `local` maps URI prefixes to folders, for
/// DuckDB to read an S3 server's files from its disk.
pub fn read_table(uri: &str, storage: &[(&str, String)], local: &[(&str, &Path)]) -> Readback {
    let args = serde_json::json!({
        "uri": uri,
        "storage": storage.iter().cloned().collect::<BTreeMap<_, _>>(),
        "local": local
            .iter()
            .map(|(prefix, dir)| (prefix.to_string(), dir.display().to_string()))
            .collect::<BTreeMap<_, _>>(),
    });
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &args.to_string()])
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "reading {uri} with delta-rs and DuckDB failed (are the deltalake and duckdb Python \
         packages installed? `pip install deltalake duckdb`; `cargo xtask test` does this):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "reader output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The rows of `sql` over the Delta table in `folder` (as `t`), by delta-rs's own engine.
pub fn query(folder: &Path, sql: &str) -> serde_json::Value {
    let script = "import json, sys\n\
                  import duckdb\n\
                  from deltalake import DeltaTable, QueryBuilder\n\
                  rows = QueryBuilder().register('t', DeltaTable(sys.argv[1])).execute(sys.argv[2]).read_all()\n\
                  print(json.dumps(duckdb.sql('SELECT * FROM rows').fetchall()))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(folder)
        .arg(sql)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{sql} on {}: {}",
        folder.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rows as JSON")
}

/// What `ferry-cloud compact --once` printed, or how it failed.
#[derive(Debug)]
pub struct Round {
    pub code: Option<i32>,
    /// The report (`commits`, `rows_in`, `rows_out`, `duplicates`) when it succeeded.
    pub report: Option<serde_json::Value>,
    pub stderr: String,
}

impl Round {
    pub fn commits(&self) -> u64 {
        self.report
            .as_ref()
            .and_then(|r| r["commits"].as_u64())
            .unwrap_or_else(|| panic!("no report: {self:?}"))
    }
}

/// `compact --once` as a process that a test may SIGKILL: not yet started.
pub fn compactor(bin: &Path, config: &Path, env: &[(&str, String)], log: &Path) -> Proc {
    let config = config.display().to_string();
    let mut proc = Proc::new(bin, &["compact", "--config", &config, "--once"], log.into());
    for (k, v) in env {
        proc.env(k, v.clone());
    }
    proc
}

/// Runs `compact --once` to its end.
pub fn compact_once(bin: &Path, config: &Path, env: &[(&str, String)]) -> Round {
    let out = Command::new(bin)
        .args(["compact", "--config"])
        .arg(config)
        .arg("--once")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running ferry-cloud compact");
    let stdout = String::from_utf8_lossy(&out.stdout);
    Round {
        code: out.status.code(),
        report: out
            .status
            .success()
            .then(|| serde_json::from_str(stdout.trim()).ok())
            .flatten(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
