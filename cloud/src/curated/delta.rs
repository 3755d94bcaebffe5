//! A curated table's Delta log: opened (created the first time), asked what a day was
//! built from, and a day replaced in one commit.

use std::collections::HashMap;

use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, MetadataExt};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use serde_json::json;

use super::CompactError;
use super::store::Lake;
use super::tables::{PARTITION, Table};

pub async fn open(lake: &Lake, table: Table) -> Result<DeltaTable, CompactError> {
    let mut delta = lake.table(&table.key())?.build()?;
    if !delta.verify_deltatable_existence().await? {
        return create(lake, table).await;
    }
    delta.load().await?;
    Ok(delta)
}

async fn create(lake: &Lake, table: Table) -> Result<DeltaTable, CompactError> {
    let log_store = lake.table(&table.key())?.build()?.log_store();
    let created = CreateBuilder::new()
        .with_log_store(log_store)
        .with_table_name(table.name())
        .with_comment(format!(
            "Ferry's {} from the raw lake, each (device, spool, seq) once; \
             written by ferry-cloud compact",
            table.name()
        ))
        .with_columns(table.columns())
        .with_partition_columns([PARTITION])
        .with_save_mode(SaveMode::ErrorIfExists)
        .await;
    match created {
        Ok(delta) => {
            lake.make_durable(&table.key(), &[commit_file(0)]).await?;
            Ok(delta)
        }
        // Created meanwhile by a compactor of an older lease: it is the same table. If it
        // is not there either, the reason is the create's.
        Err(e) => lake
            .table(&table.key())?
            .load()
            .await
            .map_err(|_| CompactError::Delta(e)),
    }
}

/// The table property that records how many raw objects a day was built from. In the
/// table's metadata, which every reader loads anyway: a round learns every day's count
/// without reading the log again.
fn built_key(day: &str) -> String {
    format!("ferry.raw_objects.{PARTITION}={day}")
}

/// How many raw objects the day's current files were built from (0: never compacted).
/// Raw objects are only ever added, so a day with more than this has news.
pub fn built_from(delta: &DeltaTable, day: &str) -> Result<i64, CompactError> {
    Ok(delta
        .snapshot()?
        .metadata()
        .configuration()
        .get(&built_key(day))
        .and_then(|count| count.parse().ok())
        .unwrap_or(0))
}

/// One commit that adds `adds` and removes every file the day had, and records the raw
/// objects it was built from (their count in the table's properties, their keys in the
/// commit's metadata).
pub async fn replace_day(
    delta: &mut DeltaTable,
    day: &str,
    adds: Vec<Add>,
    sources: &[String],
) -> Result<u64, CompactError> {
    let snapshot = delta.snapshot()?;
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    let day_value = Some(day.to_owned());
    actions.extend(
        snapshot
            .log_data()
            .iter()
            .filter(|file| file.partition_values_map().get(PARTITION) == Some(&day_value))
            .map(|file| Action::Remove(file.remove_action(true))),
    );
    let built = i64::try_from(sources.len())
        .map_err(|_| CompactError::Schema("too many raw objects in a day".into()))?;
    let metadata = snapshot
        .metadata()
        .clone()
        .add_config_key(built_key(day), built.to_string())
        .map_err(deltalake::DeltaTableError::from)?;
    actions.push(Action::Metadata(metadata));
    let commit_info = HashMap::from([
        ("ferry.day".to_owned(), json!(day)),
        ("ferry.raw_objects".to_owned(), json!(sources)),
    ]);
    let committed = CommitBuilder::default()
        .with_actions(actions)
        .with_app_metadata(commit_info)
        .build(
            Some(snapshot),
            delta.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: Some(vec![PARTITION.to_owned()]),
                predicate: Some(format!("{PARTITION} = '{day}'")),
            },
        )
        .await?;
    // The commit's own snapshot: no need to read the log back.
    delta.state = Some(committed.snapshot());
    Ok(committed.version())
}

/// A version's log entry, relative to its table.
pub fn commit_file(version: u64) -> String {
    format!("_delta_log/{version:020}.json")
}
