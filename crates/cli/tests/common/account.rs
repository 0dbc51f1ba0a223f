//! An emulated account and a folder of profile rows: the setting of the sync and
//! live-behaviour tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use sendgrid_emulator::{Config, Emulator, KeyConfig, marketing_scopes};
use serde_json::Value;

use super::*;

pub const KEY: &str = "SG.sync-test-key";
pub const OTHER_LIST: &str = "5f0c1d9e-8a7b-4c3d-9e2f-1a2b3c4d5e6f";

/// One profile row.
#[derive(Clone)]
pub struct Row {
    pub id: i64,
    pub email: String,
    pub first_name: String,
    pub city: String,
    pub subscribed: bool,
}

pub fn email(id: i64) -> String {
    format!("customer{id:05}@example.com")
}

/// Profile `id`: subscribed, with a name and a city.
pub fn row(id: i64) -> Row {
    Row {
        id,
        email: email(id),
        first_name: format!("Name{id}"),
        city: format!("City{}", id % 7),
        subscribed: true,
    }
}

/// An address of 100-odd characters for profile `id`: more than search by emails takes.
pub fn long_email(id: i64) -> String {
    format!(
        "customer{id}@{}.{}.example.com",
        "d".repeat(60),
        "e".repeat(50)
    )
}

pub fn rows(n: i64) -> Vec<Row> {
    (1..=n).map(row).collect()
}

/// Writes the three-version table at `dir/table` from rows 1–300 and 301–600 (see
/// write_delta.py), partitioned by `partition_by` if given; `None` when no Python is
/// configured (and none is required).
pub fn write_delta_table(dir: &Path, partition_by: Option<&str>) -> Option<()> {
    let python = python("`deltalake` installed")?;
    let all = rows(600);
    for (name, part) in [("first", &all[..300]), ("second", &all[300..])] {
        let scratch = dir.join(name);
        write_profiles(&scratch, part);
    }
    let out = std::process::Command::new(python)
        .arg(repo().join("crates/cli/tests/support/write_delta.py"))
        .arg(dir.join("table"))
        .arg(dir.join("first/data/profiles.parquet"))
        .arg(dir.join("second/data/profiles.parquet"))
        .args(partition_by)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    Some(())
}

/// A pipeline exporting the subscribed rows of `source` (as [`write_delta_table`] writes
/// them) to one list.
pub fn delta_yaml(source: &str) -> String {
    subscribed_pipeline(
        &connections_yaml(None),
        "",
        source,
        &format!(
            "    list_ids: [{LIST}]\n    mapping:\n      email: email\n      first_name: first_name\n"
        ),
    )
}

/// A pipeline's text: top-level `settings` lines, `connections`, the `profiles` source,
/// and one export `daily` of the subscribed profiles ending with `export_lines`.
pub fn subscribed_pipeline(
    connections: &str,
    settings: &str,
    profiles: &str,
    export_lines: &str,
) -> String {
    format!(
        "version: 1
{settings}{connections}sources:
  profiles: {profiles}
segments:
  subscribed: SELECT * FROM profiles WHERE is_subscribed
exports:
  - name: daily
    connection: marketing
    segments: [subscribed]
    order_by: customer_id
    contacts_per_request: 50
{export_lines}"
    )
}

/// Profile rows as the bytes of a Parquet file (the columns [`write_profiles`] writes),
/// for an object store.
pub fn profiles_parquet(rows: &[Row]) -> Vec<u8> {
    let scratch = tempfile::tempdir().unwrap();
    write_profiles(scratch.path(), rows);
    std::fs::read(scratch.path().join("data/profiles.parquet")).unwrap()
}

/// Renames every hundredth profile (the ids ending in 07): a 1% change. Their emails.
pub fn rename_every_hundredth(data: &mut [Row]) -> BTreeSet<String> {
    let mut changed = BTreeSet::new();
    for r in data.iter_mut().filter(|r| r.id % 100 == 7) {
        r.first_name = format!("Renamed{}", r.id);
        changed.insert(r.email.clone());
    }
    changed
}

pub fn write_profiles(dir: &Path, rows: &[Row]) {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "customer_id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        ),
        (
            "email",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.email.as_str()),
            )),
        ),
        (
            "first_name",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.first_name.as_str()),
            )),
        ),
        (
            "city",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.city.as_str()),
            )),
        ),
        (
            "is_subscribed",
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.subscribed).collect::<Vec<_>>(),
            )),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let file = std::fs::File::create(dir.join("data/profiles.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// An account in the emulator, with the lists `daily` and `other`, and a folder for the
/// pipeline, its data and its state.
pub struct Setup {
    pub emulator: Emulator,
    pub dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Setup {
    pub fn new(import_delay_ms: u64) -> Self {
        Self::with(Config {
            import_delay_ms,
            ..Config::default()
        })
    }

    /// An account configured by `config`: its key is set here, and the lists `daily` and
    /// `other` join the config's.
    pub fn with(config: Config) -> Self {
        let mut lists = vec![
            (LIST.into(), "daily".into()),
            (OTHER_LIST.into(), "other".into()),
        ];
        lists.extend(config.lists.iter().cloned());
        let (rt, emulator) = start_emulator(Config {
            keys: vec![KeyConfig {
                key: KEY.into(),
                scopes: marketing_scopes(),
            }],
            lists,
            ..config
        });
        Self {
            emulator,
            dir: tempfile::tempdir().unwrap(),
            _rt: rt,
        }
    }

    /// Writes the pipeline: one export `daily` of the subscribed profiles.
    pub fn pipeline(&self, export_lines: &str) -> &'static str {
        let text = self.pipeline_text(
            "",
            "{ format: parquet, path: data/profiles.parquet }",
            export_lines,
        );
        write(self.dir.path(), &text)
    }

    /// The pipeline's text: top-level `settings` lines, the `profiles` source, and one
    /// export `daily` of the subscribed profiles ending with `export_lines`.
    pub fn pipeline_text(&self, settings: &str, profiles: &str, export_lines: &str) -> String {
        let connections = super::connections_yaml(Some(&self.emulator.url()));
        subscribed_pipeline(&connections, settings, profiles, export_lines)
    }

    pub fn run(&self, args: &[&str]) -> Run {
        pipeline(self.dir.path(), args, &[("SENDGRID_API_KEY", KEY)])
    }

    pub fn run_json(&self, args: &[&str]) -> (Run, Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let run = self.run(&all);
        let doc = run.json();
        let export = doc["exports"][0].clone();
        (run, export)
    }

    /// Upserted emails in requests from `from` on, in order.
    pub fn upserted_since(&self, from: usize) -> Vec<String> {
        self.emulator.requests()[from..]
            .iter()
            .flat_map(|r| r.upserted.iter().map(|u| u.email.clone()))
            .collect()
    }

    pub fn log_len(&self) -> usize {
        self.emulator.requests().len()
    }

    /// Runs `pipeline` with `args` and `--output json`, which must exit with `code`;
    /// returns the emails the run upserted, in order, and its first export's summary.
    pub fn run_sending(&self, args: &[&str], code: i32) -> (Vec<String>, Value) {
        let before = self.log_len();
        let (run, export) = self.run_json(args);
        assert_eq!(run.code, code, "{}", run.stderr);
        (self.upserted_since(before), export)
    }

    /// A list's contacts by email with their first name.
    pub fn list_names(&self, list: &str) -> BTreeMap<String, String> {
        let state = self.emulator.inspect();
        state["lists"][list]["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["email"].as_str().unwrap().to_owned(),
                    c["first_name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    pub fn contacts_in_account(&self) -> u64 {
        self.emulator.inspect()["contacts"].as_u64().unwrap()
    }

    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join(".state/daily")
    }
}

/// A small deterministic generator for random test runs that can be replayed from a seed.
pub struct Lcg(pub u64);

impl Lcg {
    /// A generator seeded from the environment variable `var` when set (to replay a run),
    /// else from the clock; the seed is printed.
    pub fn from_env(var: &str) -> (u64, Self) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{var}={seed}");
        (seed, Self(seed))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}
