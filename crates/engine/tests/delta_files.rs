//! A Delta table where the selection runs on a cluster: read as the Parquet files its log
//! holds at the version read (Ballista cannot send deltalake's provider to executors).
//! The tables are written here, log and files, so that each case is exactly what it says;
//! the cluster is this process's own session, which is what the engine hands the sources
//! to (crates/cli/tests/cluster.rs runs a real one).

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use common::Capture;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use pipeline_engine::{Cluster, Engine, RunOptions};
use serde_json::{Value, json};

/// A "cluster" that runs the queries in this process, with the session it is given.
struct Here;

impl Cluster for Here {
    fn connect<'a>(
        &'a self,
        _address: &'a str,
        state: SessionState,
        _pipeline: &'a pipeline_spec::Pipeline,
    ) -> BoxFuture<'a, Result<SessionContext, String>> {
        Box::pin(async move { Ok(SessionContext::new_with_state(state)) })
    }
}

/// Writes `ids` (with their emails) as the Parquet file `name` of the table at `dir`;
/// returns the file's `add` action.
fn data_file(dir: &Path, name: &str, ids: &[i64]) -> Value {
    data_file_with_columns(dir, name, ids, ["id", "email"])
}

/// [`data_file`], its two columns named `columns` in the file.
fn data_file_with_columns(dir: &Path, name: &str, ids: &[i64], columns: [&str; 2]) -> Value {
    let schema = Arc::new(Schema::new(vec![
        Field::new(columns[0], DataType::Int64, true),
        Field::new(columns[1], DataType::Utf8, true),
    ]));
    let emails: Vec<String> = ids.iter().map(|i| format!("p{i}@example.com")).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(emails)),
        ],
    )
    .unwrap();
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    json!({"add": {
        "path": name,
        "partitionValues": {},
        "size": std::fs::metadata(&path).unwrap().len(),
        "modificationTime": 1_700_000_000_000u64,
        "dataChange": true,
    }})
}

/// A column of the table's schema, with `metadata`.
fn column(name: &str, kind: &str, metadata: Value) -> Value {
    json!({"name": name, "type": kind, "nullable": true, "metadata": metadata})
}

/// The columns `id` and `email` that [`data_file`] writes.
fn columns() -> Vec<Value> {
    vec![
        column("id", "long", json!({})),
        column("email", "string", json!({})),
    ]
}

/// The table's first commit: its protocol and metadata (`fields`, partitioned by
/// `partitions`), then `actions`.
fn first_commit(
    dir: &Path,
    protocol: Value,
    configuration: Value,
    (fields, partitions): (Vec<Value>, &[&str]),
    actions: &[Value],
) {
    let schema = json!({"type": "struct", "fields": fields});
    let metadata = json!({"metaData": {
        "id": "5fba94ed-9794-4965-ba6e-6ee3c0d22af9",
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema.to_string(),
        "partitionColumns": partitions,
        "configuration": configuration,
        "createdTime": 1_700_000_000_000u64,
    }});
    let mut lines = vec![json!({ "protocol": protocol }), metadata];
    lines.extend(actions.iter().cloned());
    commit(dir, 0, &lines);
}

fn commit(dir: &Path, version: u64, lines: &[Value]) {
    let log = dir.join("_delta_log");
    std::fs::create_dir_all(&log).unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(log.join(format!("{version:020}.json")), text).unwrap();
}

/// Every row of `t`, its email sent.
const ALL: (&str, &str) = ("SELECT * FROM t", "email: email");

/// A pipeline exporting `segment` of the source `t` with `mapping`.
fn pipeline(
    dir: &Path,
    source: &str,
    cluster: bool,
    (segment, mapping): (&str, &str),
) -> pipeline_spec::Pipeline {
    let engine = if cluster {
        "engine: { cluster: \"df://127.0.0.1:50050\" }"
    } else {
        ""
    };
    common::pipeline(dir, engine, &format!("  t: {source}"), segment, mapping)
}

async fn open(dir: &Path, source: &str, cluster: bool) -> Result<Engine, String> {
    open_export(dir, source, cluster, ALL).await
}

async fn open_export(
    dir: &Path,
    source: &str,
    cluster: bool,
    export: (&str, &str),
) -> Result<Engine, String> {
    Engine::open_with(&pipeline(dir, source, cluster, export), Some(&Here))
        .await
        .map_err(|e| e.to_string())
}

/// The emails the export sends, in order.
async fn sent(dir: &Path, source: &str, cluster: bool) -> Vec<String> {
    sent_export(dir, source, cluster, ALL).await
}

/// The contacts `export` sends, in order: each one's email, and its country when mapped.
async fn sent_export(dir: &Path, source: &str, cluster: bool, export: (&str, &str)) -> Vec<String> {
    let engine = open_export(dir, source, cluster, export).await.unwrap();
    let query = engine.plan_exports(&[]).await.unwrap().remove(0);
    let mut sink = Capture::default();
    engine
        .run_export(&query, &mut sink, &RunOptions::default())
        .await
        .unwrap();
    sink.0
        .iter()
        .flat_map(|b| {
            let email = b.column_by_name("email").unwrap().as_string::<i32>();
            let country = b
                .column_by_name("country")
                .map(|c| arrow::compute::cast(c, &DataType::Utf8).unwrap());
            (0..b.num_rows())
                .map(|i| match &country {
                    Some(c) if c.is_null(i) => format!("{} -", email.value(i)),
                    Some(c) => format!("{} {}", email.value(i), c.as_string::<i32>().value(i)),
                    None => email.value(i).to_owned(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn emails(ids: std::ops::RangeInclusive<i64>) -> Vec<String> {
    ids.map(|i| format!("p{i}@example.com")).collect()
}

/// Version 1 replaced `a.parquet` with `b.parquet`; the replaced file stays on disk and
/// is not read, on the cluster as here, at the latest version and at a pinned one.
#[tokio::test]
async fn a_delta_table_on_a_cluster_reads_the_files_of_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let a = data_file(&table, "a.parquet", &[1, 2, 3]);
    first_commit(
        &table,
        json!({"minReaderVersion": 1, "minWriterVersion": 2}),
        json!({}),
        (columns(), &[]),
        &[a],
    );
    let b = data_file(&table, "b.parquet", &[4, 5, 6, 7]);
    let remove = json!({"remove": {"path": "a.parquet", "deletionTimestamp": 1_700_000_001_000u64, "dataChange": true}});
    commit(&table, 1, &[remove, b]);

    let latest = "{ format: delta, path: t }";
    assert_eq!(sent(dir.path(), latest, true).await, emails(4..=7));
    assert_eq!(sent(dir.path(), latest, false).await, emails(4..=7));
    let first = "{ format: delta, path: t, version: 0 }";
    assert_eq!(sent(dir.path(), first, true).await, emails(1..=3));
}

/// A partitioned table: its partition values are in the log, and read from there, on a
/// cluster as here; a null value (`__HIVE_DEFAULT_PARTITION__` in the path) is null, and
/// a filter on the partition column keeps only its partitions.
#[tokio::test]
async fn a_partitioned_delta_table_on_a_cluster_takes_its_values_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let mut adds = Vec::new();
    for (path, ids, country) in [
        ("country=US/a.parquet", &[1, 2][..], json!("US")),
        ("country=DE/b.parquet", &[3], json!("DE")),
        (
            "country=__HIVE_DEFAULT_PARTITION__/c.parquet",
            &[4],
            Value::Null,
        ),
        ("country=US/d.parquet", &[5], json!("US")),
    ] {
        let mut add = data_file(&table, path, ids);
        add["add"]["partitionValues"] = json!({ "country": country });
        adds.push(add);
    }
    let mut fields = columns();
    fields.insert(1, column("country", "string", json!({})));
    let v1 = json!({"minReaderVersion": 1, "minWriterVersion": 2});
    first_commit(&table, v1, json!({}), (fields, &["country"]), &adds);

    let source = "{ format: delta, path: t }";
    let every = ("SELECT * FROM t", "email: email, country: country");
    let expected = [
        "p1@example.com US",
        "p2@example.com US",
        "p3@example.com DE",
        "p4@example.com -",
        "p5@example.com US",
    ];
    assert_eq!(sent_export(dir.path(), source, true, every).await, expected);
    assert_eq!(
        sent_export(dir.path(), source, false, every).await,
        expected
    );
    let some = (
        "SELECT * FROM t WHERE country = 'US' OR country IS NULL",
        "email: email, country: country",
    );
    let expected = [
        "p1@example.com US",
        "p2@example.com US",
        "p4@example.com -",
        "p5@example.com US",
    ];
    assert_eq!(sent_export(dir.path(), source, true, some).await, expected);
    assert_eq!(sent_export(dir.path(), source, false, some).await, expected);
}

/// A version without files (every row deleted) has no rows, on a cluster as here, and the
/// table's columns: a filter and the mapping name them, and an earlier version of the
/// table unions with it.
#[tokio::test]
async fn an_emptied_delta_table_on_a_cluster_has_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let mut add = data_file(&table, "country=US/a.parquet", &[1, 2]);
    add["add"]["partitionValues"] = json!({ "country": "US" });
    let mut fields = columns();
    fields.insert(1, column("country", "string", json!({})));
    let v1 = json!({"minReaderVersion": 1, "minWriterVersion": 2});
    first_commit(&table, v1, json!({}), (fields, &["country"]), &[add]);
    let remove = json!({"remove": {"path": "country=US/a.parquet", "deletionTimestamp": 1_700_000_001_000u64, "dataChange": true}});
    commit(&table, 1, &[remove]);

    let source = "{ format: delta, path: t }";
    let us = (
        "SELECT * FROM t WHERE country = 'US'",
        "email: email, country: country",
    );
    for cluster in [true, false] {
        assert!(
            sent_export(dir.path(), source, cluster, us)
                .await
                .is_empty()
        );
    }
    // The source `t`, and a second source line: `t0`, the table at version 0.
    let both = "{ format: delta, path: t }\n  t0: { format: delta, path: t, version: 0 }";
    let union = (
        "SELECT * FROM t0 UNION ALL SELECT * FROM t",
        "email: email, country: country",
    );
    for cluster in [true, false] {
        assert_eq!(
            sent_export(dir.path(), both, cluster, union).await,
            ["p1@example.com US", "p2@example.com US"]
        );
    }
}

/// A table of many partitions (a day's files each, say) is one union of them all, which
/// plans and runs without nesting one level per partition.
#[tokio::test]
async fn thousands_of_partitions_read_on_a_cluster() {
    const PARTITIONS: i64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let adds: Vec<Value> = (1..=PARTITIONS)
        .map(|id| {
            let mut add = data_file(&table, &format!("day={id}/part.parquet"), &[id]);
            add["add"]["partitionValues"] = json!({ "day": id.to_string() });
            add
        })
        .collect();
    let mut fields = columns();
    fields.push(column("day", "integer", json!({})));
    let v1 = json!({"minReaderVersion": 1, "minWriterVersion": 2});
    first_commit(&table, v1, json!({}), (fields, &["day"]), &adds);
    let source = "{ format: delta, path: t }";
    let last_week = ("SELECT * FROM t WHERE day > 1993", "email: email");
    assert_eq!(
        sent_export(dir.path(), source, true, last_week).await,
        emails(1994..=PARTITIONS)
    );
    assert_eq!(sent(dir.path(), source, true).await.len(), 2_000);
}

/// Column metadata under column mapping: the column's id and its name in the files.
fn mapped(id: u64, physical: &str) -> Value {
    json!({"delta.columnMapping.id": id, "delta.columnMapping.physicalName": physical})
}

/// The first commit of a table whose columns are mapped by `mode` (`name` or `id`).
fn mapped_commit(dir: &Path, mode: &str, schema: (Vec<Value>, &[&str]), actions: &[Value]) {
    let protocol = json!({"minReaderVersion": 2, "minWriterVersion": 5});
    let configuration =
        json!({"delta.columnMapping.mode": mode, "delta.columnMapping.maxColumnId": "9"});
    first_commit(dir, protocol, configuration, schema, actions);
}

/// Column mapping by name: the files' columns (and the log's partition values) go by
/// physical names; the table's names are what the SQL and the mapping see.
#[tokio::test]
async fn a_delta_table_mapping_its_columns_by_name_reads_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let mut adds = Vec::new();
    for (path, ids, tier) in [
        ("a.parquet", &[1, 2][..], "gold"),
        ("b.parquet", &[3], "tin"),
    ] {
        let mut add = data_file_with_columns(&table, path, ids, ["col-a1", "col-b2"]);
        add["add"]["partitionValues"] = json!({ "col-c3": tier });
        adds.push(add);
    }
    let fields = vec![
        column("id", "long", mapped(1, "col-a1")),
        column("email", "string", mapped(2, "col-b2")),
        column("country", "string", mapped(3, "col-c3")),
    ];
    mapped_commit(&table, "name", (fields, &["country"]), &adds);
    let source = "{ format: delta, path: t }";
    let export = (
        "SELECT * FROM t WHERE id > 1",
        "email: email, country: country",
    );
    let expected = ["p2@example.com gold", "p3@example.com tin"];
    assert_eq!(
        sent_export(dir.path(), source, true, export).await,
        expected
    );
    assert_eq!(
        sent_export(dir.path(), source, false, export).await,
        expected
    );
}

/// What the files alone do not say is refused on a cluster, each with its reason: columns
/// mapped by id, nested columns mapped by name, rows deleted by deletion vectors.
#[tokio::test]
async fn delta_tables_the_files_do_not_describe_are_refused_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let source = "{ format: delta, path: t }";
    let refused = |message: &str, needle: &str| {
        assert!(
            message.contains("source `t` (t): the Delta table at file://")
                && message.contains(needle),
            "expected `{needle}` in: {message}"
        );
    };

    let table = dir.path().join("t");
    let add = data_file(&table, "a.parquet", &[1]);
    let fields = vec![
        column("id", "long", mapped(1, "id")),
        column("email", "string", mapped(2, "email")),
    ];
    mapped_commit(&table, "id", (fields, &[]), &[add]);
    let message = open(dir.path(), source, true).await.err().unwrap();
    refused(
        &message,
        "maps its columns by id (`delta.columnMapping.mode`), which cluster mode cannot read yet (it reads mapping by name)",
    );

    std::fs::remove_dir_all(&table).unwrap();
    let add = data_file_with_columns(&table, "a.parquet", &[1], ["col-a1", "col-b2"]);
    let address =
        json!({"type": "struct", "fields": [column("city", "string", mapped(4, "col-d4"))]});
    let fields = vec![
        column("id", "long", mapped(1, "col-a1")),
        column("email", "string", mapped(2, "col-b2")),
        json!({"name": "address", "type": address, "nullable": true, "metadata": mapped(3, "col-c3")}),
    ];
    mapped_commit(&table, "name", (fields, &[]), &[add]);
    let message = open(dir.path(), source, true).await.err().unwrap();
    refused(
        &message,
        "maps its columns by name and its column `address` is nested, whose fields cluster mode cannot map yet",
    );

    std::fs::remove_dir_all(&table).unwrap();
    let mut add = data_file(&table, "a.parquet", &[1, 2, 3]);
    add["add"]["deletionVector"] = json!({"storageType": "u", "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^", "offset": 1, "sizeInBytes": 36, "cardinality": 2});
    first_commit(
        &table,
        json!({"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["deletionVectors"], "writerFeatures": ["deletionVectors"]}),
        json!({"delta.enableDeletionVectors": "true"}),
        (columns(), &[]),
        &[add],
    );
    let message = open(dir.path(), source, true).await.err().unwrap();
    assert!(
        message.contains("1 file(s) of the Delta table at file://")
            && message.contains("(version 0) have deletion vectors, which cluster mode cannot read yet: rows deleted from them would be read"),
        "{message}"
    );
}

/// A Delta table and Parquet files on one bucket share the session's store for it: other
/// `storage:` settings for the same bucket are refused, naming both sources.
#[tokio::test]
async fn a_delta_table_and_parquet_files_on_one_bucket_agree_on_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let storage = |region: &str| {
        format!(
            "storage: {{ endpoint: \"http://127.0.0.1:9\", allow_http: true, region: {region} }}"
        )
    };
    let sources = format!(
        "  files: {{ format: parquet, path: \"s3://lake/files/\", {} }}\n  table: {{ format: delta, path: \"s3://lake/tables/t\", {} }}",
        storage("eu-west-1"),
        storage("us-east-1"),
    );
    let pipeline = common::pipeline(
        dir.path(),
        "",
        &sources,
        "SELECT * FROM files",
        "email: email",
    );
    let message = Engine::open(&pipeline).await.err().unwrap().to_string();
    assert!(
        message.contains("source `table` (s3://lake/tables/t): reads s3://lake like source `files` but with other `storage:` settings; give both the same"),
        "{message}"
    );
}
