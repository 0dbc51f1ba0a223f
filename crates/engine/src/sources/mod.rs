//! Sources: Parquet files (a file, a folder or a glob) or a Delta table, on local disk
//! or in an object store, checked and registered as SQL tables.

mod delta;
mod remote;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use datafusion::prelude::{SessionContext, cast, ident};
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
    let files = list_files(&pipeline.resolve_path(&source.path))?;
    let mut read = Vec::with_capacity(files.len());
    for file in &files {
        let (schema, rows) = read_schema(file).map_err(|e| format!("{}: {e}", file.display()))?;
        footers.insert(footer_key(&file.to_string_lossy()), rows);
        read.push((file.display().to_string(), schema));
    }
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(f.to_string_lossy()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    register_listing(ctx, name, urls, source, merge_schemas(read)?)
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
    let objects = remote::list_objects(&store, url).await?;
    let read = remote::read_footers(&store, &objects).await?;
    let mut schemas = Vec::with_capacity(read.len());
    let mut urls = Vec::with_capacity(read.len());
    for (object, (schema, rows)) in objects.iter().zip(read) {
        footers.insert(footer_key(object.location.as_ref()), rows);
        let object_url = remote::url_of(&store, &object.location);
        schemas.push((object_url.clone(), schema));
        urls.push(ListingTableUrl::parse(&object_url).map_err(|e| e.to_string())?);
    }
    register_listing(ctx, name, urls, source, merge_schemas(schemas)?)
}

/// One schema for a source's files, merged one file at a time so that a file that does
/// not fit is named.
fn merge_schemas(files: Vec<(String, Schema)>) -> Result<Schema, String> {
    let mut merged = Schema::empty();
    for (i, (file, schema)) in files.into_iter().enumerate() {
        merged = Schema::try_merge([merged, schema]).map_err(|e| {
            format!(
                "{file} has a schema that does not fit the {i} file(s) before it ({e}); every file of a source needs the same column types"
            )
        })?;
    }
    Ok(merged)
}

fn register_listing(
    ctx: &SessionContext,
    name: &str,
    urls: Vec<ListingTableUrl>,
    source: &Source,
    schema: Schema,
) -> Result<(), String> {
    let bytes = source.binary_as_string && schema.fields().iter().any(|f| is_bytes(f.data_type()));
    let table = listing(urls, schema)?;
    let table = if bytes {
        bytes_as_text(ctx, table)?
    } else {
        table
    };
    ctx.register_table(name, table).map_err(|e| e.to_string())?;
    Ok(())
}

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

/// `table` with its byte columns cast to text. The cast runs after the scan, on Arrow
/// arrays: it checks every value is UTF-8 and fails the query on one that is not. (Handing
/// the Parquet reader a `Utf8` schema for the bytes, as DataFusion's own `binary_as_string`
/// does, skips that check: parquet builds the arrays unchecked in release builds.)
fn bytes_as_text(
    ctx: &SessionContext,
    table: Arc<dyn TableProvider>,
) -> Result<Arc<dyn TableProvider>, String> {
    let columns = table
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let column = ident(f.name());
            if is_bytes(f.data_type()) {
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
        return Err(format!(
            "{} does not exist; check the path (relative paths start at the pipeline file's folder)",
            path.display()
        ));
    };
    files.sort();
    Ok(files)
}

/// A folder's Parquet files, each once: a symbolic link back to a folder already read
/// (or to a file already found) is not followed again.
#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    /// Names skipped for starting with `_` or `.`.
    skipped: Vec<String>,
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

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))
}

/// Reads a file's footer: its schema and row count. A corrupt or non-Parquet file fails
/// here, named.
fn read_schema(path: &Path) -> Result<(Schema, u64), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| format!("is not a readable Parquet file ({e})"))?;
    let meta = reader.metadata().file_metadata();
    let schema = parquet_to_arrow_schema(meta.schema_descr(), meta.key_value_metadata())
        .map_err(|e| format!("has a schema Arrow cannot read ({e})"))?;
    Ok((schema, u64::try_from(meta.num_rows()).unwrap_or(0)))
}
