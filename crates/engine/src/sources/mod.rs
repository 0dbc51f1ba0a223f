//! Sources: Parquet files (a file, a folder or a glob) or a Delta table, on local disk
//! or in an object store, checked and registered as SQL tables.

mod delta;
mod remote;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::functions::expr_fn::nullif;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use datafusion::prelude::{SessionContext, cast, ident, lit};
use pipeline_spec::{Cloud, Pipeline, Place, Source, SourceFormat, Storage, place_of};

use crate::plan::is_bytes;
use crate::store;

use crate::progress::{FooterRows, footer_key};

/// Registers every source; returns one message per problem.
pub(crate) async fn register_all(
    ctx: &SessionContext,
    pipeline: &Pipeline,
) -> (FooterRows, Vec<String>) {
    let mut problems = Vec::new();
    let mut footers = FooterRows::new();
    let mut stores: HashMap<String, (&str, &Storage)> = HashMap::new();
    for (name, source) in &pipeline.file.sources {
        // A session holds one store per bucket (a Delta table's too, on a cluster): two
        // sources on one bucket must agree on its settings.
        let place = place_of(&source.path).and_then(|place| {
            if let Place::Remote { url, .. } = &place {
                let root = store::root_of(url).to_string();
                match stores.get(&root) {
                    Some((other, settings)) if *settings != &source.storage => {
                        return Err(format!(
                            "reads {root} like source `{other}` but with other `storage:` settings; give both the same"
                        ));
                    }
                    _ => {
                        stores.insert(root, (name, &source.storage));
                    }
                }
            }
            Ok(place)
        });
        let result = match place {
            Err(message) => Err(message),
            Ok(place) if source.format == SourceFormat::Delta => {
                delta::register(ctx, pipeline, name, source, place).await
            }
            Ok(Place::Local) => register_local(ctx, pipeline, name, source, &mut footers),
            Ok(Place::Remote { cloud, url }) => {
                register_remote(ctx, name, source, cloud, &url, &mut footers).await
            }
        };
        if let Err(message) = result {
            problems.push(format!("source `{name}` ({}): {message}", source.path));
        }
    }
    (footers, problems)
}

fn register_local(
    ctx: &SessionContext,
    pipeline: &Pipeline,
    name: &str,
    source: &Source,
    footers: &mut FooterRows,
) -> Result<(), String> {
    let path = pipeline.resolve_path(&source.path);
    let (files, hidden) = list_files_and_hidden(&path)?;
    let mut read = Vec::with_capacity(files.len());
    for file in &files {
        let (schema, rows) = read_schema(file).map_err(|e| format!("{}: {e}", file.display()))?;
        footers.insert(footer_key(&file.to_string_lossy()), rows);
        read.push((file.display().to_string(), schema));
    }
    let schema = merge_schemas(read)?;
    let folder = match hidden {
        Some(hidden) => {
            let root = absolute(&path)?;
            let relative: Vec<String> = files.iter().map(|f| path_from(&root, f)).collect();
            let url = ListingTableUrl::parse(root.to_string_lossy()).map_err(|e| e.to_string())?;
            partitioned(url, &relative, &hidden, &schema)?
        }
        None => None,
    };
    let files = match folder {
        Some(partitioned) => partitioned,
        None => Files::Each(
            files
                .iter()
                .map(|f| ListingTableUrl::parse(f.to_string_lossy()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?,
        ),
    };
    register_listing(ctx, name, files, source, schema)
}

/// What a Parquet source's table reads.
enum Files {
    /// These files.
    Each(Vec<ListingTableUrl>),
    /// The files of a folder of Hive-style partition folders (`country=DE/`), each key a
    /// column whose value the folder names, of the type its values take
    /// ([`partition_type`]).
    Partitioned {
        folder: Box<ListingTableUrl>,
        keys: Vec<(String, DataType)>,
    },
}

/// A folder's files as [`Files::Partitioned`] when they sit in `key=value` folders:
/// `relative` holds each file's path from the folder, `hidden` those of the Parquet files
/// skipped for a name starting with `_` or `.`.
fn partitioned(
    folder: ListingTableUrl,
    relative: &[String],
    hidden: &[String],
    schema: &Schema,
) -> Result<Option<Files>, String> {
    let keys = partition_keys(relative)?;
    if keys.is_empty() {
        return Ok(None);
    }
    let in_files: Vec<&String> = keys
        .iter()
        .filter(|k| schema.field_with_name(k).is_ok())
        .collect();
    if in_files.len() == keys.len() {
        // The files hold the partition columns themselves (some writers keep them).
        return Ok(None);
    }
    if let Some(key) = in_files.first() {
        return Err(format!(
            "column `{key}` is in the files and in the names of their folders (`{key}=...`); every partition column must be in one place only: rewrite the files without it, or name the files with a glob to read them without partition columns"
        ));
    }
    // DataFusion lists the folder itself, and reads such files: the skip cannot hold.
    if let Some(file) = hidden
        .iter()
        .find(|h| h.split('/').rev().skip(1).all(|d| d.contains('=')))
    {
        return Err(format!(
            "{file} starts with `_` or `.`, so it is not data, but it sits among the partition folders' files and would be read with them: move it out of the folder"
        ));
    }
    let keys = keys
        .into_iter()
        .enumerate()
        .map(|(level, key)| {
            let values = relative.iter().filter_map(|path| {
                let folder = path.split('/').nth(level)?;
                folder.split_once('=').map(|(_, value)| value)
            });
            let data_type = partition_type(values);
            (key, data_type)
        })
        .collect();
    Ok(Some(Files::Partitioned {
        folder: Box::new(folder),
        keys,
    }))
}

/// The type of a partition column whose folders name `values`, as Spark, pyarrow and
/// DuckDB infer one, so that the column sorts, computes and is sent as the numbers and
/// dates it holds (as text, `order_by: day` would put 10 before 9, and a Number field
/// would refuse it): whole numbers read as `BIGINT` and `YYYY-MM-DD` dates as `DATE`, when
/// every value (but the null folder's) is one, written as that type writes it back. A
/// value the type would change (`month=01`, `id=+5`) keeps the column text, so no value
/// is ever read as another.
fn partition_type<'a>(values: impl Iterator<Item = &'a str>) -> DataType {
    let mut values: Vec<&str> = values.filter(|v| *v != HIVE_NULL).collect();
    values.sort_unstable();
    values.dedup();
    if values.is_empty() {
        return DataType::Utf8;
    }
    let text = arrow::array::StringArray::from(values);
    let strict = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    [DataType::Int64, DataType::Date32]
        .into_iter()
        .find(|t| {
            arrow::compute::cast_with_options(&text, t, &strict)
                .and_then(|typed| arrow::compute::cast(&typed, &DataType::Utf8))
                .is_ok_and(|back| back.as_ref() == &text as &dyn arrow::array::Array)
        })
        .unwrap_or(DataType::Utf8)
}

/// The keys of the `key=value` folders between a folder and its files (`relative`: their
/// paths from it), as Spark's `partitionBy`, Hive and pyarrow's `write_to_dataset` lay
/// them out; none when no file is in such a folder. Every file must then be under the
/// same keys, in the same order, and in no other folder.
fn partition_keys(relative: &[String]) -> Result<Vec<String>, String> {
    let folders = |path: &str| -> Vec<String> {
        let mut parts: Vec<String> = path.split('/').map(str::to_owned).collect();
        parts.pop();
        parts
    };
    let keys_of = |path: &str| -> Option<Vec<String>> {
        folders(path)
            .iter()
            .map(|f| match f.split_once('=') {
                Some((key, _)) if !key.is_empty() => Some(key.to_owned()),
                _ => None,
            })
            .collect()
    };
    let Some(example) = relative
        .iter()
        .find(|p| folders(p).iter().any(|f| f.contains('=')))
    else {
        return Ok(Vec::new());
    };
    let Some(keys) = keys_of(example) else {
        let is_key = |f: &str| f.split_once('=').is_some_and(|(key, _)| !key.is_empty());
        let folders = folders(example);
        let plain = folders
            .iter()
            .find(|f| !is_key(f))
            .cloned()
            .unwrap_or_default();
        // Plain folders only above the `key=value` ones, the same for every file: the
        // source can start below them.
        let above: Vec<&str> = folders
            .iter()
            .map(String::as_str)
            .take_while(|f| !is_key(f))
            .collect();
        let start = format!("{}/", above.join("/"));
        let rest = &folders[above.len()..];
        let below = if !rest.is_empty()
            && rest.iter().all(|f| is_key(f))
            && relative.iter().all(|p| p.starts_with(&start))
        {
            format!("point the source at `.../{}/`, ", above.join("/"))
        } else {
            String::new()
        };
        return Err(format!(
            "`{example}` is under `{plain}`, which is not a `key=value` folder (a key, `=`, a value): a folder is read with partition columns (one per `key=value` folder, as Spark and Hive write them) when every folder between it and its files is a `key=value` folder; {below}move the odd files out, or name the files with a glob to read them without partition columns"
        ));
    };
    for path in relative {
        if keys_of(path).as_ref() != Some(&keys) {
            return Err(format!(
                "`{path}` and `{example}` are not in the same `key=value` folders: a folder is read with partition columns (one per `key=value` folder, as Spark and Hive write them) when every file sits under the same keys, in the same order, and in no other folder; move the odd files out, or name the files with a glob to read them without partition columns"
            ));
        }
    }
    Ok(keys)
}

/// Lists a source's objects, reads their footers concurrently, and registers them.
async fn register_remote(
    ctx: &SessionContext,
    name: &str,
    source: &Source,
    cloud: Cloud,
    url: &url::Url,
    footers: &mut FooterRows,
) -> Result<(), String> {
    let store = store::open(cloud, url, &source.storage)?;
    store::register(ctx, &store);
    let remote::Listed { objects, folder } = remote::list_objects(&store, url).await?;
    let read = remote::read_footers(&store, &objects).await?;
    let mut schemas = Vec::with_capacity(read.len());
    let mut urls = Vec::with_capacity(read.len());
    for (object, (schema, rows)) in objects.iter().zip(read) {
        footers.insert(footer_key(object.location.as_ref()), rows);
        let object_url = remote::url_of(&store, &object.location);
        schemas.push((object_url.clone(), schema));
        urls.push(ListingTableUrl::parse(&object_url).map_err(|e| e.to_string())?);
    }
    let schema = merge_schemas(schemas)?;
    let partitioned = match folder {
        Some((folder, relative, hidden)) => {
            let folder = ListingTableUrl::parse(&folder).map_err(|e| e.to_string())?;
            partitioned(folder, &relative, &hidden, &schema)?
        }
        None => None,
    };
    let files = partitioned.unwrap_or(Files::Each(urls));
    register_listing(ctx, name, files, source, schema)
}

/// One schema for a source's files, merged one file at a time so that a file that does
/// not fit is named. Columns that writers store alike but type apart merge into the type
/// that holds both (see [`widened`]): a table appended to by pandas and Polars jobs has
/// `string` and `large_string` files.
fn merge_schemas(files: Vec<(String, Schema)>) -> Result<Schema, String> {
    let mut merged: Vec<Field> = Vec::new();
    for (i, (file, schema)) in files.into_iter().enumerate() {
        for field in schema.fields() {
            let Some(known) = merged.iter_mut().find(|m| m.name() == field.name()) else {
                merged.push(field.as_ref().clone());
                continue;
            };
            let mut tried = known.clone();
            if let Err(e) = tried.try_merge(field) {
                let Some(wide) = widened(known.data_type(), field.data_type()) else {
                    return Err(format!(
                        "{file} has a schema that does not fit the {i} file(s) before it ({e}); every file of a source needs the same column types"
                    ));
                };
                tried = Field::new(
                    field.name(),
                    wide,
                    known.is_nullable() || field.is_nullable(),
                );
            }
            *known = tried;
        }
    }
    Ok(Schema::new(merged))
}

/// The type that holds values of `a` and of `b`, for the types one Parquet column reads as
/// whichever writer wrote it: any text as `Utf8`, any bytes as `Binary`, integers as the
/// wider (signed when either is), floats and integers beside floats as `Float64`,
/// dictionaries as their values, times of one zone in the coarser unit.
fn widened(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let signed = |t: &DataType| matches!(t, Int8 | Int16 | Int32 | Int64);
    let unsigned = |t: &DataType| matches!(t, UInt8 | UInt16 | UInt32 | UInt64);
    let float = |t: &DataType| matches!(t, Float16 | Float32 | Float64);
    let width = |t: &DataType| t.primitive_width().unwrap_or(8);
    Some(match (a, b) {
        (Dictionary(_, a), b) | (b, Dictionary(_, a)) => {
            return if a.as_ref() == b {
                Some(b.clone())
            } else {
                widened(a, b)
            };
        }
        (a, b) if text(a) && text(b) => Utf8,
        (a, b) if is_bytes(a) && is_bytes(b) => Binary,
        (a, b) if signed(a) && signed(b) || unsigned(a) && unsigned(b) => {
            if width(a) >= width(b) {
                a.clone()
            } else {
                b.clone()
            }
        }
        (a, b) if signed(a) && unsigned(b) || unsigned(a) && signed(b) => {
            // The unsigned values fit a signed type twice as wide, up to Int64.
            let bytes = [a, b]
                .iter()
                .map(|t| if unsigned(t) { width(t) * 2 } else { width(t) })
                .max()?;
            match bytes {
                2 => Int16,
                4 => Int32,
                8 => Int64,
                _ => return None,
            }
        }
        (a, b)
            if (float(a) || signed(a) || unsigned(a)) && (float(b) || signed(b) || unsigned(b)) =>
        {
            Float64
        }
        (Timestamp(u, zone), Timestamp(v, other)) if zone == other => {
            Timestamp(if u < v { *u } else { *v }, zone.clone())
        }
        _ => return None,
    })
}

fn register_listing(
    ctx: &SessionContext,
    name: &str,
    files: Files,
    source: &Source,
    schema: Schema,
) -> Result<(), String> {
    let bytes = source.binary_as_string && schema.fields().iter().any(|f| is_bytes(f.data_type()));
    let (table, keys) = match files {
        Files::Each(urls) => (listing(urls, schema)?, Vec::new()),
        Files::Partitioned { folder, keys } => {
            // Read as text (the null folder's name is not a number), typed in `readable`.
            let columns = keys
                .iter()
                .map(|(k, _)| (k.clone(), DataType::Utf8))
                .collect();
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(columns);
            let config = ListingTableConfig::new(*folder)
                .with_listing_options(options)
                .with_schema(Arc::new(schema));
            let table = ListingTable::try_new(config).map_err(|e| e.to_string())?;
            (Arc::new(table) as Arc<dyn TableProvider>, keys)
        }
    };
    let table = if bytes || !keys.is_empty() {
        readable(ctx, table, bytes, &keys)?
    } else {
        table
    };
    ctx.register_table(name, table).map_err(|e| e.to_string())?;
    Ok(())
}

/// What a file of no bytes is.
const EMPTY_FILE: &str = "is empty (0 bytes), not a Parquet file: a write that never finished leaves such files; remove it";

/// The folder name Spark and Hive give a partition whose value is null.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// The Parquet files `urls` read as one table of `schema`.
pub(super) fn listing(
    urls: Vec<ListingTableUrl>,
    schema: Schema,
) -> Result<Arc<dyn TableProvider>, String> {
    // The strings stay `Utf8`, not the view types DataFusion picks when it infers a schema
    // itself: views spared the 10% filter a sixth of its time but held the pages their
    // values sit in, 5-55 MiB more at every peak (docs/performance.md, "String view types").
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(Arc::new(schema));
    Ok(Arc::new(
        ListingTable::try_new(config).map_err(|e| e.to_string())?,
    ))
}

/// `table` with its byte columns cast to text (when `bytes`), and its partition columns
/// (`keys`) null where their folder says so, cast to their type. The bytes' cast runs
/// after the scan, on Arrow arrays: it checks every value is UTF-8 and fails the query on
/// one that is not. (Handing the Parquet reader a `Utf8` schema for the bytes, as
/// DataFusion's own `binary_as_string` does, skips that check: parquet builds the arrays
/// unchecked in release builds.) A filter on a partition column still picks the folders
/// to read: DataFusion evaluates such expressions, casts included, on the folders'
/// values.
fn readable(
    ctx: &SessionContext,
    table: Arc<dyn TableProvider>,
    bytes: bool,
    keys: &[(String, DataType)],
) -> Result<Arc<dyn TableProvider>, String> {
    let columns = table
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let column = ident(f.name());
            if let Some((_, data_type)) = keys.iter().find(|(k, _)| k == f.name()) {
                let value = nullif(column, lit(HIVE_NULL));
                match data_type {
                    DataType::Utf8 => value,
                    typed => cast(value, typed.clone()),
                }
                .alias(f.name())
            } else if bytes && is_bytes(f.data_type()) {
                cast(column, DataType::Utf8).alias(f.name())
            } else {
                column
            }
        })
        .collect::<Vec<_>>();
    let frame = ctx
        .read_table(table)
        .and_then(|t| t.select(columns))
        .map_err(|e| e.to_string())?;
    Ok(frame.into_view())
}

/// The Parquet files a source path names, sorted.
pub(crate) fn list_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    list_files_and_hidden(path).map(|(files, _)| files)
}

/// [`list_files`], and for a folder the paths from it of the Parquet files skipped for a
/// name starting with `_` or `.`.
fn list_files_and_hidden(path: &Path) -> Result<(Vec<PathBuf>, Option<Vec<String>>), String> {
    let mut hidden = None;
    let text = path.to_string_lossy();
    let mut files = if text.contains(['*', '?', '[']) {
        let paths = glob::glob(&text).map_err(|e| format!("is not a valid glob: {e}"))?;
        let mut files = Vec::new();
        for entry in paths {
            let p =
                entry.map_err(|e| format!("cannot read {}: {}", e.path().display(), e.error()))?;
            if p.is_file() {
                files.push(absolute(&p)?);
            }
        }
        if files.is_empty() {
            return Err(format!("the glob {} matches no file", path.display()));
        }
        files
    } else if path.is_dir() {
        let mut walk = Walk::default();
        walk.folder(path)
            .map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        hidden = Some(
            walk.hidden_parquet
                .iter()
                .map(|h| path_from(path, h))
                .collect(),
        );
        if walk.files.is_empty() {
            let skipped = match walk.skipped.first() {
                Some(first) => format!(
                    "; {} name(s) starting with `_` or `.` (such as `{first}`) were skipped: tools like Spark leave such markers beside the data, so they are never read",
                    walk.skipped.len()
                ),
                None => String::new(),
            };
            return Err(format!(
                "the folder {} holds no .parquet file{skipped}",
                path.display()
            ));
        }
        walk.files
    } else if path.is_file() {
        vec![absolute(path)?]
    } else {
        let home = pipeline_spec::unexpanded(path)
            .map(|advice| format!("; {advice}"))
            .unwrap_or_default();
        let miss = if home.is_empty() {
            pipeline_spec::near_miss(path)
        } else {
            String::new()
        };
        let check = if miss.starts_with(';') {
            ""
        } else {
            "; check the path"
        };
        return Err(format!(
            "{} does not exist{miss}{check} (relative paths start at the pipeline file's folder){home}",
            path.display(),
        ));
    };
    files.sort();
    Ok((files, hidden))
}

/// A folder's Parquet files, each once: a symbolic link back to a folder already read
/// (or to a file already found) is not followed again.
#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    /// Names skipped for starting with `_` or `.`.
    skipped: Vec<String>,
    /// The Parquet files among them.
    hidden_parquet: Vec<PathBuf>,
    seen: std::collections::HashSet<PathBuf>,
}

impl Walk {
    fn folder(&mut self, dir: &Path) -> std::io::Result<()> {
        if !self.seen.insert(std::fs::canonicalize(dir)?) {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Spark and friends leave `_SUCCESS`, `.crc` and similar beside the data.
            if name.starts_with('.') || name.starts_with('_') {
                if name.ends_with(".parquet") && path.is_file() {
                    self.hidden_parquet.push(path);
                }
                self.skipped.push(name);
                continue;
            }
            if path.is_dir() {
                self.folder(&path)?;
            } else if name.ends_with(".parquet") && self.seen.insert(std::fs::canonicalize(&path)?)
            {
                self.files.push(std::path::absolute(&path)?);
            }
        }
        Ok(())
    }
}

/// `path`'s way from the folder `root`, its parts joined by `/` as object paths are.
fn path_from(root: &Path, path: &Path) -> String {
    let parts: Vec<_> = path
        .strip_prefix(root)
        .unwrap_or(path)
        .iter()
        .map(|p| p.to_string_lossy())
        .collect();
    parts.join("/")
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))
}

/// Reads a file's footer: its schema and row count. A corrupt or non-Parquet file fails
/// here, named.
fn read_schema(path: &Path) -> Result<(Schema, u64), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    if file.metadata().is_ok_and(|m| m.len() == 0) {
        return Err(EMPTY_FILE.to_owned());
    }
    let reader = SerializedFileReader::new(file).map_err(|e| {
        let mut head = Vec::with_capacity(512);
        let _ = std::fs::File::open(path).and_then(|f| {
            use std::io::Read;
            f.take(512).read_to_end(&mut head)
        });
        match held_instead(&head) {
            Some(what) => format!(
                "is not a Parquet file: it holds {what}. `pipeline` reads Parquet files and Delta tables: convert it first (DuckDB: `COPY (FROM '{}') TO 'profiles.parquet'`)",
                path.display()
            ),
            None => format!("is not a readable Parquet file ({e})"),
        }
    })?;
    let meta = reader.metadata().file_metadata();
    let schema = parquet_to_arrow_schema(meta.schema_descr(), meta.key_value_metadata())
        .map_err(|e| format!("has a schema Arrow cannot read ({e})"))?;
    Ok((schema, u64::try_from(meta.num_rows()).unwrap_or(0)))
}

/// What a file that is not Parquet holds, when its first bytes say so: `None` for one
/// that starts as Parquet (a damaged one) or that cannot be told.
fn held_instead(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"PAR1") {
        return None;
    }
    if let [0x1f, 0x8b, ..] = head {
        return Some("gzip-compressed data");
    }
    if head.starts_with(b"PK\x03\x04") {
        return Some("a ZIP archive (an Excel workbook is one)");
    }
    if head.starts_with(b"ORC") {
        return Some("ORC data");
    }
    if head.starts_with(b"Obj\x01") {
        return Some("Avro data");
    }
    // Text: UTF-8 but perhaps for a character cut at the end of the sample, no NUL.
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if text.is_empty() || text.contains('\0') {
        return None;
    }
    Some(if text.starts_with('{') || text.starts_with('[') {
        "JSON text"
    } else if text
        .lines()
        .next()
        .is_some_and(|l| l.contains([',', ';', '\t']))
    {
        "CSV text"
    } else {
        "text"
    })
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::TimeUnit;

    #[test]
    fn a_file_that_is_not_parquet_is_told_by_its_first_bytes() {
        assert_eq!(held_instead(b"PAR1\x15\x04"), None);
        assert_eq!(held_instead(b"id,email\n1,a@b.co\n"), Some("CSV text"));
        assert_eq!(held_instead(b"\xef\xbb\xbfid;email\n"), Some("CSV text"));
        assert_eq!(held_instead(b"{\"id\": 1}\n"), Some("JSON text"));
        assert_eq!(held_instead(b"[{\"id\": 1}]"), Some("JSON text"));
        assert_eq!(
            held_instead(b"\x1f\x8b\x08\x00"),
            Some("gzip-compressed data")
        );
        assert_eq!(
            held_instead(b"PK\x03\x04\x14\x00"),
            Some("a ZIP archive (an Excel workbook is one)")
        );
        assert_eq!(held_instead(b"ORC\x0a"), Some("ORC data"));
        assert_eq!(held_instead(b"Obj\x01\x04"), Some("Avro data"));
        assert_eq!(held_instead(b"hello"), Some("text"));
        // A character cut by the end of the sample is still text; other bytes are not.
        assert_eq!(
            held_instead("id,na\u{e9}".as_bytes().split_last().unwrap().1),
            Some("CSV text")
        );
        assert_eq!(held_instead(b"\x00\x01\xff\xfe"), None);
    }

    use super::*;

    #[test]
    fn types_writers_give_one_column_merge_into_one_that_holds_both() {
        use DataType::*;
        let dictionary = Dictionary(Box::new(Int32), Box::new(Utf8));
        for (a, b, both) in [
            (Utf8, LargeUtf8, Some(Utf8)),
            (Utf8View, Utf8, Some(Utf8)),
            (dictionary.clone(), LargeUtf8, Some(Utf8)),
            (dictionary, Utf8, Some(Utf8)),
            (LargeBinary, Binary, Some(Binary)),
            (Int32, Int64, Some(Int64)),
            (UInt8, UInt32, Some(UInt32)),
            (UInt32, Int32, Some(Int64)),
            (UInt64, Int64, None),
            (Int64, Float32, Some(Float64)),
            (
                Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Some(Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
            ),
            (
                Timestamp(TimeUnit::Microsecond, None),
                Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                None,
            ),
            (Utf8, Int64, None),
            (Boolean, Utf8, None),
        ] {
            assert_eq!(widened(&a, &b), both, "{a} and {b}");
            assert_eq!(widened(&b, &a), both, "{b} and {a}");
        }
    }

    #[test]
    fn partition_values_are_typed_only_when_every_one_reads_back_the_same() {
        use DataType::*;
        for (values, typed) in [
            (&["2026", "2027", "-5", "0"][..], Int64),
            (&["2026", HIVE_NULL], Int64),
            (&["2026-01-05", "1999-12-31", HIVE_NULL], Date32),
            (&["01", "02"], Utf8),
            (&["+5"], Utf8),
            (&["99999999999999999999"], Utf8),
            (&["2026-1-5"], Utf8),
            (&["2026-01-05T00:00:00"], Utf8),
            (&["2026", "2026-01-05"], Utf8),
            (&["DE", "FR"], Utf8),
            (&[""], Utf8),
            (&[HIVE_NULL], Utf8),
        ] {
            assert_eq!(partition_type(values.iter().copied()), typed, "{values:?}");
        }
    }

    #[test]
    fn partition_keys_come_from_key_value_folders_alike() {
        let keys = |paths: &[&str]| {
            partition_keys(&paths.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(keys(&["a.parquet", "sub/b.parquet"]), Ok(vec![]));
        assert_eq!(
            keys(&["y=2026/m=01/a.parquet", "y=2026/m=02/b.parquet"]),
            Ok(vec!["y".to_owned(), "m".to_owned()])
        );
        for odd in [
            ["y=2026/m=01/a.parquet", "y=2026/b.parquet"],
            ["y=2026/a.parquet", "m=01/b.parquet"],
            ["y=2026/a.parquet", "y=2026/sub/b.parquet"],
        ] {
            let err = keys(&odd).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "`{}` and `{}` are not in the same `key=value` folders",
                    odd[1], odd[0]
                )),
                "{odd:?}: {err}"
            );
        }
        // A plain folder above or between the `key=value` ones is named; when the plain
        // ones are all above, the source may start below them.
        for (odd, plain, below) in [
            (
                ["sub/y=2026/a.parquet", "sub/y=2027/b.parquet"],
                "sub",
                Some("sub"),
            ),
            (
                ["sub/y=2026/a.parquet", "other/y=2027/b.parquet"],
                "sub",
                None,
            ),
            (
                ["a/b/y=2026/a.parquet", "a/b/y=2027/b.parquet"],
                "a",
                Some("a/b"),
            ),
            (["=2026/a.parquet", "=2027/b.parquet"], "=2026", None),
            (
                ["y=2026/sub/m=1/a.parquet", "y=2027/sub/m=1/b.parquet"],
                "sub",
                None,
            ),
        ] {
            let err = keys(&odd).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "`{}` is under `{plain}`, which is not a `key=value` folder (a key, `=`, a value)",
                    odd[0]
                )),
                "{odd:?}: {err}"
            );
            match below {
                Some(b) => assert!(
                    err.contains(&format!("; point the source at `.../{b}/`, move the odd")),
                    "{err}"
                ),
                None => assert!(!err.contains("point the source"), "{err}"),
            }
        }
    }
}
