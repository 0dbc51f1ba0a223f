//! The selection against brute force: each email's first row by the export's order, the
//! first `max_profiles` emails kept, per-segment counts, and the rejects file in order, with
//! a memory limit below the rows sorted (about 50 MB: the sorts must spill to get there).

mod common;

use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use common::Capture;
use pipeline_engine::{CapStatus, Engine, ExportSummary, RunOptions};

const ROWS: usize = 120_000;
const EMAILS: u64 = 40_000;
const CAP: usize = 25_000;

struct Row {
    id: Option<i64>,
    email: Option<String>,
    bio: String,
    score: f64,
}

fn rows() -> Vec<Row> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..ROWS)
        .map(|i| {
            let r = next();
            let k = r % EMAILS;
            let email = match i % 97 {
                0 => Some("not an email".to_owned()),
                1 => None,
                2 => Some(format!("  User{k}@Example.COM ")),
                _ => Some(format!("user{k}@example.com")),
            };
            Row {
                id: (i % 53 != 0).then_some((next() % 30_000) as i64),
                email,
                // Long values, so the sorted rows outgrow the memory limit many times.
                bio: format!("{:0>400}", next() % 700),
                score: (next() % 1000) as f64 / 10.0,
            }
        })
        .collect()
}

fn write_table(path: &Path, rows: &[Row]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("bio", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(rows.iter().map(|r| r.id).collect::<Int64Array>()),
            Arc::new(
                rows.iter()
                    .map(|r| r.email.clone())
                    .collect::<StringArray>(),
            ),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.bio.clone()))
                    .collect::<StringArray>(),
            ),
            Arc::new(rows.iter().map(|r| r.score).collect::<Float64Array>()),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn pipeline(dir: &Path, memory_limit_mib: u64, on_cap_exceeded: &str) -> pipeline_spec::Pipeline {
    let text = format!(
        r#"
version: 1
engine: {{ memory_limit_mib: {memory_limit_mib}, batch_size: 4096 }}
connections:
  m: {{ type: sendgrid, api_key: "${{K}}", data_privacy_consent: true }}
sources:
  t: {{ format: parquet, path: t.parquet }}
segments:
  a: SELECT * FROM t WHERE score >= 30
  b: SELECT * FROM t WHERE id % 4 = 0
exports:
  - name: x
    connection: m
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    segments: [a, b]
    mapping:
      email: email
      custom_fields: {{ bio: bio, score: score }}
    order_by: id desc
    max_profiles: {CAP}
    on_cap_exceeded: {on_cap_exceeded}
    allowed_rejects: 1000000
"#
    );
    pipeline_spec::parse(&text, &dir.join("p.yaml"), &|_| Some("k".into())).unwrap()
}

/// What brute force expects: the kept contacts in order, and per segment (rows, rejected,
/// contacts).
struct Expected {
    kept: Vec<(String, String, f64)>,
    total: usize,
    segments: Vec<(u64, u64, u64)>,
    rejected_keys: Vec<Option<i64>>,
}

fn expected(rows: &[Row]) -> Expected {
    let in_segment = [
        |r: &Row| r.score >= 30.0,
        |r: &Row| r.id.is_some_and(|id| id % 4 == 0),
    ];
    // (id, segment, normalised email, bio, score) for each valid member row.
    let mut members = Vec::new();
    let mut segments = vec![(0u64, 0u64, 0u64); 2];
    let mut rejected_keys = Vec::new();
    for (s, member) in in_segment.iter().enumerate() {
        for r in rows.iter().filter(|r| member(r)) {
            segments[s].0 += 1;
            match r
                .email
                .as_deref()
                .map(str::trim)
                .filter(|e| e.contains('@'))
            {
                Some(e) => members.push((r.id, s, e.to_lowercase(), r.bio.clone(), r.score)),
                None => {
                    segments[s].1 += 1;
                    rejected_keys.push(r.id);
                }
            }
        }
    }
    let id_desc_nulls_last = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => b.cmp(&a),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    members.sort_by(|a, b| {
        id_desc_nulls_last(a.0, b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
            .then(a.4.total_cmp(&b.4))
    });
    let mut seen = std::collections::HashSet::new();
    let mut contacts = Vec::new();
    for (_, s, email, bio, score) in members {
        if seen.insert(email.clone()) {
            segments[s].2 += 1;
            contacts.push((email, bio, score));
        }
    }
    rejected_keys.sort_by(|a, b| id_desc_nulls_last(*a, *b));
    Expected {
        total: contacts.len(),
        kept: contacts.into_iter().take(CAP).collect(),
        segments,
        rejected_keys,
    }
}

fn contacts(batches: &[RecordBatch]) -> Vec<(String, String, f64)> {
    let text = |b: &RecordBatch, name: &str| {
        let c = arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        c.as_string::<i32>().clone()
    };
    batches
        .iter()
        .flat_map(|b| {
            let (email, bio) = (text(b, "email"), text(b, "bio"));
            let score = b
                .column_by_name("score")
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone();
            (0..b.num_rows())
                .map(move |i| {
                    (
                        email.value(i).to_owned(),
                        bio.value(i).to_owned(),
                        score.value(i),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs the export of `dir`'s table with `memory_limit_mib` and `on_cap_exceeded`.
async fn run(dir: &Path, memory_limit_mib: u64, on_cap_exceeded: &str) -> (ExportSummary, Capture) {
    let pipeline = pipeline(dir, memory_limit_mib, on_cap_exceeded);
    let engine = Engine::open(&pipeline).await.unwrap();
    let query = engine.plan_exports(&[]).await.unwrap().remove(0);
    let mut sink = Capture::default();
    let options = RunOptions {
        rejects_dir: Some(dir.join("rejects")),
        ..Default::default()
    };
    let summary = engine
        .run_export(&query, &mut sink, &options)
        .await
        .unwrap();
    (summary, sink)
}

/// A folder with the generated table, and what brute force expects of it.
fn table() -> (tempfile::TempDir, Expected) {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows();
    write_table(&dir.path().join("t.parquet"), &rows);
    (dir, expected(&rows))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sorted_selection_matches_brute_force_under_a_small_memory_limit() {
    let (dir, want) = table();
    assert!(want.total > CAP, "the cap binds");

    for memory_limit_mib in [32, 512] {
        let (summary, sink) = run(dir.path(), memory_limit_mib, "truncate").await;

        let got = contacts(&sink.0);
        assert_eq!(got.len(), CAP, "limit {memory_limit_mib}");
        assert!(
            got == want.kept,
            "contacts differ at limit {memory_limit_mib}"
        );
        assert_eq!(summary.contacts as usize, want.total);
        assert_eq!(summary.cap.status, CapStatus::Truncated);
        assert_eq!(summary.cap.over_by as usize, want.total - CAP);
        let segments: Vec<(u64, u64, u64)> = summary
            .segments
            .iter()
            .map(|s| (s.rows, s.rejected, s.contacts))
            .collect();
        assert_eq!(segments, want.segments);
        for s in &summary.segments {
            assert_eq!(s.duplicates, s.rows - s.rejected - s.contacts);
        }

        // The rejects file holds every rejected row, in the export's order.
        let file = summary.rejects_file.expect("rows were rejected");
        let keys: Vec<Option<i64>> = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["key"].as_str().and_then(|k| k.parse().ok())
            })
            .collect();
        assert_eq!(keys, want.rejected_keys, "limit {memory_limit_mib}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_with_fail_nothing_is_sent_and_the_counts_are_complete() {
    let (dir, want) = table();
    let (summary, sink) = run(dir.path(), 512, "fail").await;
    assert!(sink.0.is_empty());
    assert!(summary.sink.is_none());
    assert_eq!(summary.cap.status, CapStatus::Exceeded);
    assert_eq!(summary.contacts as usize, want.total);
    let contacts: Vec<u64> = summary.segments.iter().map(|s| s.contacts).collect();
    assert_eq!(
        contacts,
        want.segments.iter().map(|s| s.2).collect::<Vec<_>>()
    );
    assert!(summary.rejects_file.is_none());
    assert!(!dir.path().join("rejects/x.rejects.jsonl").exists());
}

/// A pipeline that names a cluster, opened by an engine that has no cluster client (a
/// build without the `cluster` feature), is refused with what to do, before any query.
#[tokio::test]
async fn a_cluster_without_a_cluster_client_is_refused() {
    let (dir, _) = table();
    let mut pipeline = pipeline(dir.path(), 64, "truncate");
    pipeline.file.engine.cluster = Some("df://127.0.0.1:50050".into());
    let Err(e) = Engine::open(&pipeline).await else {
        panic!("opened");
    };
    assert_eq!(
        e.to_string(),
        "engine.cluster: this build of pipeline has no cluster mode; build it with `cargo build -p pipeline-cli --features cluster` (see docs/cluster.md), or remove `cluster` to run the selection here"
    );
}

/// A table whose text columns are stored as bytes with no string annotation, as Impala
/// and older Hive write them; `email` holds `emails`.
fn write_bytes_table(path: &Path, emails: &[&[u8]]) {
    use arrow::array::BinaryArray;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("email", DataType::Binary, false),
        Field::new("name", DataType::Binary, false),
    ]));
    let names: [&[u8]; 3] = ["Zoë".as_bytes(), b"skip", "Émile".as_bytes()];
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![3, 2, 1])),
            Arc::new(BinaryArray::from(emails.to_vec())),
            Arc::new(BinaryArray::from(names.to_vec())),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn bytes_pipeline(dir: &Path, source_options: &str) -> pipeline_spec::Pipeline {
    common::pipeline(
        dir,
        "",
        &format!("  t: {{ format: parquet, path: t.parquet{source_options} }}"),
        "SELECT * FROM t WHERE name <> 'skip'",
        "email: email, first_name: name",
    )
}

/// Runs the export of `dir`'s byte table with `binary_as_string: true`.
async fn run_bytes(dir: &Path) -> (Result<ExportSummary, pipeline_engine::EngineError>, Capture) {
    let pipeline = bytes_pipeline(dir, ", binary_as_string: true");
    let engine = Engine::open(&pipeline).await.unwrap();
    let query = engine.plan_exports(&[]).await.unwrap().remove(0);
    let mut sink = Capture::default();
    let summary = engine
        .run_export(&query, &mut sink, &RunOptions::default())
        .await;
    (summary, sink)
}

const BYTES_EMAILS: [&[u8]; 3] = [
    b"zoe@example.com",
    b"skip@example.com",
    b"emile@example.com",
];

/// With `binary_as_string`, byte columns are text: filtered in SQL and sent as fields.
#[tokio::test]
async fn binary_as_string_reads_byte_columns_as_text() {
    let dir = tempfile::tempdir().unwrap();
    write_bytes_table(&dir.path().join("t.parquet"), &BYTES_EMAILS);
    let (summary, sink) = run_bytes(dir.path()).await;
    let summary = summary.unwrap();
    let got: Vec<(String, String)> = sink
        .0
        .iter()
        .flat_map(|b| {
            let text = |name: &str| {
                let c = b.column_by_name(name).unwrap();
                arrow::compute::cast(c, &DataType::Utf8).unwrap()
            };
            let (email, name) = (text("email"), text("first_name"));
            let (email, name) = (
                email.as_string::<i32>().clone(),
                name.as_string::<i32>().clone(),
            );
            (0..b.num_rows())
                .map(move |i| (email.value(i).to_owned(), name.value(i).to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        got,
        [
            ("emile@example.com".to_owned(), "Émile".to_owned()),
            ("zoe@example.com".to_owned(), "Zoë".to_owned()),
        ]
    );
    assert_eq!(summary.contacts, 2);
}

/// Without it, mapping a byte column says what the column is and what to set.
#[tokio::test]
async fn a_byte_email_column_names_the_option() {
    let dir = tempfile::tempdir().unwrap();
    write_bytes_table(&dir.path().join("t.parquet"), &BYTES_EMAILS);
    let engine = Engine::open(&bytes_pipeline(dir.path(), "")).await.unwrap();
    let Err(e) = engine.plan_exports(&[]).await else {
        panic!("planned");
    };
    let message = e.to_string();
    assert!(
        message.contains(
            "mapping.email: in segment `a`, `email` is Binary; the email must be text: map the email column, or convert with CAST(... AS VARCHAR) (if the column is text that Impala or Hive stored as bytes, set `binary_as_string: true` on its source)"
        ),
        "{message}"
    );
}

/// Bytes that are not UTF-8 stop the run with the column named, before anything is sent.
#[tokio::test]
async fn binary_as_string_refuses_bytes_that_are_not_text() {
    let dir = tempfile::tempdir().unwrap();
    let emails: [&[u8]; 3] = [
        b"zoe@example.com",
        b"skip@example.com",
        b"\xffmile@example.com",
    ];
    write_bytes_table(&dir.path().join("t.parquet"), &emails);
    let (summary, sink) = run_bytes(dir.path()).await;
    let e = summary.expect_err("ran");
    assert!(sink.0.is_empty());
    let message = e.to_string();
    assert!(
        message.contains("segment `a`, mapping.email")
            && message.contains("Encountered non UTF-8 data"),
        "{message}"
    );
    assert!(
        message.ends_with("; a value of a byte column that its source reads as text (`binary_as_string: true`) is not UTF-8: convert the column to UTF-8 where the table is written (text kept in Latin-1 or another older encoding is the usual cause), or leave it out of the segment's columns and the mapping"),
        "{message}"
    );
}
