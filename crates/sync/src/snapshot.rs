//! `snapshot.parquet`: one row per contact SendGrid accepted for the export, or refused
//! for good (with the message it refused it with).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray, StringBuilder, TimestampSecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampSecondType};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::{StateError, io, parse_hash};
use pipeline_spec::IdentifierSet;

const VERSION_KEY: &str = "pipeline.state_version";
const ENDPOINT_KEY: &str = "pipeline.endpoint";
const FIELDS_KEY: &str = "pipeline.fields";
const FILE_KEY: &str = "pipeline.file";
const VERSION: &str = "1";

/// What SendGrid holds for one contact, as far as this export knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Hash of the mapped fields last accepted.
    pub hash: u64,
    /// The lists it was upserted to, as [`crate::list_key`] writes them.
    pub lists: Arc<str>,
    /// When it was accepted (Unix seconds).
    pub synced_at: i64,
    /// SendGrid refused the contact for good with these fields (an address on its bounce
    /// list, say), with this message: it is not sent again until its fields change.
    pub refused: Option<Arc<str>>,
    /// The identifiers it was last accepted with; empty when not known (a snapshot
    /// written before they were kept, or a refused contact).
    pub identifiers: IdentifierSet,
}

/// The entries' hashes as [`crate::hash_hex`] writes them, without a string per row.
fn hashes(rows: &[(&String, &Entry)]) -> StringArray {
    let mut out = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
    for (_, entry) in rows {
        crate::with_hash_hex(entry.hash, |digits| out.append_value(digits));
    }
    out.finish()
}

/// The entries' identifier sets as names (`email,external_id`), null when not known.
fn identifier_names(rows: &[(&String, &Entry)]) -> StringArray {
    // Most contacts share one set: its names are written once.
    let mut last: Option<(IdentifierSet, String)> = None;
    let mut out = StringBuilder::with_capacity(rows.len(), rows.len() * 6);
    for (_, entry) in rows {
        if entry.identifiers.is_empty() {
            out.append_null();
            continue;
        }
        if last
            .as_ref()
            .is_none_or(|(set, _)| *set != entry.identifiers)
        {
            last = Some((entry.identifiers, entry.identifiers.to_names()));
        }
        out.append_value(&last.as_ref().expect("set above").1);
    }
    out.finish()
}

/// Where the snapshot's contacts were sent and with which fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The SendGrid API the contacts went to.
    pub endpoint: String,
    /// The mapped field names (`custom_fields.<name>` for custom fields).
    pub fields: Vec<String>,
    /// The name of the pipeline file whose runs wrote it (empty: written before it was
    /// recorded).
    pub file: String,
}

/// Every contact SendGrid accepted for the export, by email.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub entries: HashMap<String, Entry>,
}

impl Snapshot {
    /// Reads the snapshot; `None` when the export never finished a run.
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("cannot open {}", path.display()))(e)),
        };
        let corrupt = |message: String| StateError::Corrupt {
            then: "the next run then sends every contact",
            path: path.to_owned(),
            message,
        };
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| corrupt(e.to_string()))?;
        let kv: HashMap<&str, &str> = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv.key.as_str(), kv.value.as_deref()?)))
            .collect();
        match kv.get(VERSION_KEY) {
            Some(&VERSION) => {}
            Some(other) => {
                return Err(corrupt(format!(
                    "its {VERSION_KEY} is {other:?}, this version of pipeline reads {VERSION}"
                )));
            }
            None => {
                return Err(corrupt(format!(
                    "it has no {VERSION_KEY}: a Parquet file that pipeline did not write"
                )));
            }
        }
        let meta = SnapshotMeta {
            endpoint: kv.get(ENDPOINT_KEY).copied().unwrap_or_default().to_owned(),
            fields: kv
                .get(FIELDS_KEY)
                .map(|f| {
                    f.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            file: kv.get(FILE_KEY).copied().unwrap_or_default().to_owned(),
        };
        let mut entries = HashMap::new();
        // Most contacts share their lists: one string per distinct value.
        let mut last: Arc<str> = Arc::from("");
        let mut shared = |lists: &str| {
            if *last != *lists {
                last = Arc::from(lists);
            }
            last.clone()
        };
        let reader = builder.build().map_err(|e| corrupt(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| corrupt(e.to_string()))?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| corrupt(format!("no column {name}")))
            };
            let text = |name: &str| {
                column(name)?
                    .as_string_opt::<i32>()
                    .cloned()
                    .ok_or_else(|| corrupt(format!("column {name} is not text")))
            };
            let (email, hash, lists) = (text("email")?, text("fields_hash")?, text("list_ids")?);
            let synced = column("synced_at")?
                .as_primitive_opt::<TimestampSecondType>()
                .cloned()
                .ok_or_else(|| corrupt("column synced_at is not a timestamp".into()))?;
            // Written since refusals are remembered; older snapshots have none.
            let refused = match batch.column_by_name("refused") {
                Some(c) => Some(
                    c.as_string_opt::<i32>()
                        .cloned()
                        .ok_or_else(|| corrupt("column refused is not text".into()))?,
                ),
                None => None,
            };
            let refused = refused.as_ref();
            // Written since identifier sets are kept; older snapshots have none.
            let identifiers = match batch.column_by_name("identifiers") {
                Some(c) => Some(
                    c.as_string_opt::<i32>()
                        .cloned()
                        .ok_or_else(|| corrupt("column identifiers is not text".into()))?,
                ),
                None => None,
            };
            let identifiers = identifiers.as_ref();
            for row in 0..batch.num_rows() {
                if email.is_null(row) || hash.is_null(row) {
                    return Err(corrupt(format!("row {row} has no email or hash")));
                }
                let refused = refused
                    .filter(|r| r.is_valid(row))
                    .map(|r| Arc::from(r.value(row)));
                let h = parse_hash(hash.value(row))
                    .ok_or_else(|| corrupt(format!("row {row} has a malformed hash")))?;
                entries.insert(
                    email.value(row).to_owned(),
                    Entry {
                        hash: h,
                        lists: if lists.is_valid(row) {
                            shared(lists.value(row))
                        } else {
                            shared("")
                        },
                        synced_at: if synced.is_valid(row) {
                            synced.value(row)
                        } else {
                            0
                        },
                        refused,
                        identifiers: identifiers
                            .filter(|i| i.is_valid(row))
                            .map_or_else(IdentifierSet::default, |i| {
                                IdentifierSet::from_names(i.value(row))
                            }),
                    },
                );
            }
        }
        Ok(Some(Self { meta, entries }))
    }

    /// Writes the snapshot in place of the old one, owner-only, sorted by email.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let mut rows: Vec<(&String, &Entry)> = self.entries.iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let schema = Arc::new(Schema::new(vec![
            Field::new("email", DataType::Utf8, false),
            Field::new("fields_hash", DataType::Utf8, false),
            Field::new("list_ids", DataType::Utf8, false),
            Field::new(
                "synced_at",
                DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
                false,
            ),
            Field::new("refused", DataType::Utf8, true),
            Field::new("identifiers", DataType::Utf8, true),
        ]));
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![
                KeyValue::new(VERSION_KEY.into(), VERSION.to_owned()),
                KeyValue::new(ENDPOINT_KEY.into(), self.meta.endpoint.clone()),
                KeyValue::new(FIELDS_KEY.into(), self.meta.fields.join(",")),
                KeyValue::new(FILE_KEY.into(), self.meta.file.clone()),
            ]))
            // Emails and hashes are unique: a dictionary would only be built to be dropped.
            .set_column_dictionary_enabled(ColumnPath::from("email"), false)
            .set_column_dictionary_enabled(ColumnPath::from("fields_hash"), false)
            // The snapshot is always read whole: statistics would only cost time.
            .set_statistics_enabled(EnabledStatistics::None)
            .build();
        pipeline_sink::private_fs::replace_private_file(path, |file| {
            let to_io = |e: parquet::errors::ParquetError| std::io::Error::other(e.to_string());
            let mut writer =
                ArrowWriter::try_new(&mut *file, schema.clone(), Some(props)).map_err(to_io)?;
            for chunk in rows.chunks(65_536) {
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| r.0))),
                        Arc::new(hashes(chunk)),
                        Arc::new(StringArray::from_iter_values(
                            chunk.iter().map(|r| &*r.1.lists),
                        )),
                        Arc::new(
                            TimestampSecondArray::from_iter_values(
                                chunk.iter().map(|r| r.1.synced_at),
                            )
                            .with_timezone("UTC"),
                        ),
                        Arc::new(StringArray::from_iter(
                            chunk.iter().map(|r| r.1.refused.as_deref()),
                        )),
                        Arc::new(identifier_names(chunk)),
                    ],
                )
                .map_err(|e| std::io::Error::other(e.to_string()))?;
                writer.write(&batch).map_err(to_io)?;
            }
            writer.close().map_err(to_io)?;
            Ok(())
        })
        .map_err(io(format!("cannot write {}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_snapshot_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.parquet");
        assert!(Snapshot::load(&path).unwrap().is_none());
        let mut s = Snapshot {
            meta: SnapshotMeta {
                endpoint: "http://127.0.0.1:1".into(),
                fields: vec!["email".into(), "custom_fields.ltv".into()],
                file: "daily.yaml".into(),
            },
            ..Default::default()
        };
        for i in 0..70_000u64 {
            s.entries.insert(
                format!("c{i}@example.com"),
                Entry {
                    hash: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    lists: "l1,l2".into(),
                    synced_at: 1_700_000_000 + i as i64,
                    refused: (i % 1000 == 7).then(|| Arc::from("bounced, blocked")),
                    identifiers: IdentifierSet::from_bits((i % 16) as u8),
                },
            );
        }
        s.save(&path).unwrap();
        let back = Snapshot::load(&path).unwrap().unwrap();
        assert_eq!(back.meta, s.meta);
        assert_eq!(back.entries, s.entries);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no partial file left behind"
        );
    }

    #[test]
    fn a_damaged_snapshot_says_how_to_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.parquet");
        std::fs::write(&path, b"not parquet").unwrap();
        let err = Snapshot::load(&path).unwrap_err().to_string();
        assert!(err.contains("is damaged"), "{err}");
        assert!(err.contains("move it away to start over"), "{err}");
        // Another Parquet file in its place (a profile table copied there by mistake).
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec!["a"]))])
                .unwrap();
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let err = Snapshot::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(
                "is damaged (it has no pipeline.state_version: a Parquet file that pipeline did not write)"
            ),
            "{err}"
        );
    }
}
