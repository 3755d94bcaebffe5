//! `ferry-cloud lake ddl`: how Athena, DuckDB, Spark and delta-rs read both layers.

use std::fmt::Write;

use super::tables::Table;
use crate::config::LakeRoot;

/// A raw type's own columns, as Hive DDL, after the columns every line has.
fn raw_columns(table: Table) -> &'static str {
    match table {
        Table::Readings => "sensor string, metrics map<string, double>",
        Table::Scans => "reader string, card string",
        Table::Events => "level string, message string, code string",
        Table::Transactions => {
            "tx_id string, op string, program string, card string, store string, qty bigint,\n  \
             amount_minor bigint, currency string, receipt string, reverses string, offline boolean"
        }
    }
}

/// The DDL and one-liners for the lake at `root`, or for `s3://BUCKET/PREFIX` placeholders.
pub fn ddl(root: Option<&LakeRoot>) -> String {
    let (s3, local) = match root {
        Some(LakeRoot::S3 { bucket, prefix }) if prefix.is_empty() => {
            (format!("s3://{bucket}"), None)
        }
        Some(LakeRoot::S3 { bucket, prefix }) => (format!("s3://{bucket}/{prefix}"), None),
        Some(LakeRoot::Local(dir)) => (
            "s3://BUCKET/PREFIX".to_owned(),
            Some(dir.display().to_string()),
        ),
        None => ("s3://BUCKET/PREFIX".to_owned(), None),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- Athena / Glue, the raw layer: gzipped NDJSON, one table per record type, with\n\
         -- partition projection (no crawler, no MSCK REPAIR). A record its device resent may\n\
         -- be here twice when several ingests share the load; the curated tables hold it once.\n"
    );
    for table in Table::ALL {
        let raw = format!("{s3}/raw/type={}", table.raw_type());
        let _ = writeln!(
            out,
            "CREATE EXTERNAL TABLE IF NOT EXISTS ferry_raw_{name} (\n  \
             device string, spool string, seq bigint, ts string, received_at string, ts_suspect boolean,\n  \
             {columns})\n\
             PARTITIONED BY (dt string, hour string)\n\
             ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n\
             LOCATION '{raw}/'\n\
             TBLPROPERTIES (\n  \
             'projection.enabled' = 'true',\n  \
             'projection.dt.type' = 'date', 'projection.dt.format' = 'yyyy-MM-dd',\n  \
             'projection.dt.range' = '2024-01-01,NOW',\n  \
             'projection.hour.type' = 'integer', 'projection.hour.range' = '0,23', 'projection.hour.digits' = '2',\n  \
             'storage.location.template' = '{raw}/dt=${{dt}}/hour=${{hour}}/');\n",
            name = table.name(),
            columns = raw_columns(table),
        );
    }
    let _ = writeln!(
        out,
        "-- Athena, the curated layer: Delta Lake tables (columns come from the table's log),\n\
         -- each (device, spool, seq) once, partitioned by dt, sorted by (device, ts).\n"
    );
    for table in Table::ALL {
        let _ = writeln!(
            out,
            "CREATE EXTERNAL TABLE IF NOT EXISTS ferry_{name}\n\
             LOCATION '{s3}/{key}/'\n\
             TBLPROPERTIES ('table_type' = 'DELTA');\n",
            name = table.name(),
            key = table.key(),
        );
    }
    let folder = local.unwrap_or_else(|| "./ferry-lake".to_owned());
    let _ = writeln!(
        out,
        "-- DuckDB, over a lake folder ({folder}); for S3, the same with {s3} after\n\
         -- INSTALL httpfs and a CREATE SECRET of TYPE s3.\n\
         CREATE VIEW ferry_raw AS SELECT * FROM read_json_auto(\n  \
         '{folder}/raw/*/*/*/*.ndjson.gz', hive_partitioning = true, union_by_name = true);\n\
         INSTALL delta; LOAD delta;\n\
         CREATE VIEW ferry_readings AS SELECT * FROM delta_scan('{folder}/curated/readings');\n\
         CREATE VIEW ferry_transactions AS SELECT * FROM delta_scan('{folder}/curated/transactions');\n"
    );
    let _ = writeln!(
        out,
        "-- Spark (with the Delta Lake package):\n\
         --   spark.read.format(\"delta\").load(\"{s3a}/curated/readings\")\n\
         -- delta-rs (pip install deltalake):\n\
         --   from deltalake import DeltaTable\n\
         --   DeltaTable(\"{s3}/curated/readings\").to_pandas(filters=[(\"dt\", \"=\", \"2026-11-22\")])",
        s3a = s3.replacen("s3://", "s3a://", 1),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_configured_bucket_and_every_table() {
        let text = ddl(Some(&LakeRoot::S3 {
            bucket: "lake".into(),
            prefix: "prod".into(),
        }));
        for table in Table::ALL {
            assert!(text.contains(&format!(
                "LOCATION 's3://lake/prod/curated/{}/'",
                table.name()
            )));
            assert!(text.contains(&format!(
                "'storage.location.template' = 's3://lake/prod/raw/type={}/dt=${{dt}}/hour=${{hour}}/'",
                table.raw_type()
            )));
        }
        assert!(text.contains("s3a://lake/prod/curated/readings"));
    }
}
