//! A Delta Lake table, local or in an object store, read through the `deltalake` table
//! provider at its latest version or a pinned one: the files the log holds at that
//! version are read (with their deletion vectors and partition values), removed files
//! are not. On a cluster, where Ballista cannot send that provider to its executors, the
//! same files are read as a Parquet listing (see [`as_files`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Once};

use arrow::datatypes::{Field, Schema};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan, Union};
use datafusion::prelude::{DataFrame, Expr, SessionContext, cast, ident, lit};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoArrow as _;
use deltalake_core::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake_core::{DeltaResult, DeltaTable, DeltaTableBuilder, DeltaTableError};
use pipeline_spec::{Cloud, Pipeline, Place, Source};

use crate::store;

/// Reading needs no commit protocol, so every store gets deltalake's default log store;
/// the object store itself is built by [`store::open`], from the source's settings.
struct ReadLogStores;

impl LogStoreFactory for ReadLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &url::Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in [
            "s3://", "s3a://", "gs://", "az://", "azure://", "abfs://", "abfss://",
        ] {
            if let Ok(url) = url::Url::parse(scheme) {
                logstore_factories().insert(url, Arc::new(ReadLogStores));
            }
        }
    });
}

/// Opens the table `source` names and registers it as `name`.
pub(super) async fn register(
    ctx: &SessionContext,
    pipeline: &Pipeline,
    name: &str,
    source: &Source,
    place: Place,
) -> Result<(), String> {
    register_log_stores();
    let (url, cloud, builder) = match place {
        Place::Local => {
            let folder = pipeline.resolve_path(&source.path);
            if !folder.join("_delta_log").is_dir() {
                return Err(format!(
                    "{} is not a Delta table: it has no `_delta_log/` folder (for Parquet files, write `format: parquet`)",
                    folder.display()
                ));
            }
            let folder = std::path::absolute(&folder)
                .map_err(|e| format!("cannot resolve {}: {e}", folder.display()))?;
            let url = url::Url::from_directory_path(&folder)
                .map_err(|()| format!("{} cannot be read as a folder", folder.display()))?;
            let builder = DeltaTableBuilder::from_url(url.clone()).map_err(|e| e.to_string())?;
            (url, None, builder)
        }
        Place::Remote { cloud, mut url } => {
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            let store = store::open(cloud, &url, &source.storage)?;
            // The session reads the files itself on a cluster (and the scheduler lists them).
            store::register(ctx, &store);
            let builder = DeltaTableBuilder::from_url(url.clone())
                .map_err(|e| e.to_string())?
                .with_storage_backend(store.inner, store::root_of(&url));
            (url, Some(cloud), builder)
        }
    };
    let builder = match source.version {
        Some(version) => builder.with_version(version),
        None => builder,
    };
    let table = builder
        .load()
        .await
        .map_err(|e| explain(&url, cloud, source, e))?;
    if pipeline.file.engine.cluster.is_some() {
        return as_files(ctx, name, &table, &url);
    }
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| explain(&url, cloud, source, e))?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| format!("cannot read the Delta table at {url} ({e})"))?;
    ctx.register_table(name, provider)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The field metadata key of a column's name in the files, under column mapping.
const PHYSICAL_NAME: &str = "delta.columnMapping.physicalName";

/// Registers the table as the Parquet files its log holds at the loaded version. Files
/// of one partition are one listing, with the partition's values (from the log) as
/// constant columns; the partitions are one `UNION ALL`, whose branches a filter on a
/// partition column prunes while planning; a version without files is an empty relation
/// with the table's columns. Column mapping by name is followed (top-level columns);
/// mapping by id, nested columns under it, and deletion vectors are refused, saying which.
fn as_files(
    ctx: &SessionContext,
    name: &str,
    table: &DeltaTable,
    url: &url::Url,
) -> Result<(), String> {
    let snapshot = table
        .snapshot()
        .map_err(|e| format!("cannot read the Delta table at {url} ({e})"))?;
    let version = snapshot.version();
    let instead = "export it to Parquet, or run this pipeline without `engine.cluster`";
    let metadata = snapshot.metadata();
    // With column mapping by name, the files' columns (and the log's partition values) go
    // by each column's physical name, which its metadata gives.
    let by_name = match metadata.configuration().get("delta.columnMapping.mode") {
        None => false,
        Some(mode) if mode.eq_ignore_ascii_case("none") => false,
        Some(mode) if mode.eq_ignore_ascii_case("name") => true,
        Some(mode) => {
            return Err(format!(
                "the Delta table at {url} maps its columns by {mode} (`delta.columnMapping.mode`), which cluster mode cannot read yet (it reads mapping by name); {instead}"
            ));
        }
    };
    let schema: Schema =
        snapshot.schema().as_ref().try_into_arrow().map_err(|e| {
            format!("the Delta table at {url} has a schema Arrow cannot read ({e})")
        })?;
    let physical = |field: &Field| -> String {
        match by_name {
            true => field
                .metadata()
                .get(PHYSICAL_NAME)
                .cloned()
                .unwrap_or_else(|| field.name().clone()),
            false => field.name().clone(),
        }
    };
    let partitions: Vec<(&Field, String)> = metadata
        .partition_columns()
        .iter()
        .map(|column| {
            let field = schema.field_with_name(column).map_err(|e| e.to_string())?;
            Ok((field, physical(field)))
        })
        .collect::<Result<_, String>>()?;
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<ListingTableUrl>> = BTreeMap::new();
    let mut with_deletions = 0;
    for file in snapshot.log_data().iter() {
        if file.deletion_vector_descriptor().is_some() {
            with_deletions += 1;
        }
        let mut values = file.partition_values_map();
        let key = partitions
            .iter()
            .map(|(_, key)| values.remove(key).flatten())
            .collect();
        let uri = table.log_store().to_uri(&file.object_store_path());
        let file_url = ListingTableUrl::parse(&uri).map_err(|e| format!("{uri}: {e}"))?;
        groups.entry(key).or_default().push(file_url);
    }
    if with_deletions > 0 {
        return Err(format!(
            "{with_deletions} file(s) of the Delta table at {url} (version {version}) have deletion vectors, which cluster mode cannot read yet: rows deleted from them would be read; rewrite them (`REORG TABLE ... APPLY (PURGE)`), or {instead}"
        ));
    }
    // The provider's order: the files' columns, then the partition columns. Each file
    // column is read by its physical name and named by its table name.
    let in_files: Vec<(Field, String)> = schema
        .fields()
        .iter()
        .filter(|f| !partitions.iter().any(|(p, _)| p.name() == f.name()))
        .map(|f| (f.as_ref().clone(), physical(f)))
        .collect();
    if by_name && let Some((nested, _)) = in_files.iter().find(|(f, _)| f.data_type().is_nested()) {
        return Err(format!(
            "the Delta table at {url} maps its columns by name and its column `{}` is nested, whose fields cluster mode cannot map yet; {instead}",
            nested.name()
        ));
    }
    let file_schema = Schema::new(
        in_files
            .iter()
            .map(|(f, physical)| Field::new(physical, f.data_type().clone(), f.is_nullable()))
            .collect::<Vec<_>>(),
    );
    let mut branches = Vec::with_capacity(groups.len());
    for (values, urls) in groups {
        let files = super::listing(urls, file_schema.clone())?;
        let mut columns: Vec<Expr> = in_files
            .iter()
            .map(|(f, physical)| ident(physical).alias(f.name()))
            .collect();
        for ((field, _), value) in partitions.iter().zip(values) {
            columns.push(
                cast(lit(ScalarValue::Utf8(value)), field.data_type().clone()).alias(field.name()),
            );
        }
        let frame = ctx
            .read_table(files)
            .and_then(|f| f.select(columns))
            .map_err(|e| e.to_string())?;
        branches.push(Arc::new(frame.into_unoptimized_plan()));
    }
    // One union node over every partition, not a chain of them: a table of thousands of
    // partitions would nest as deep.
    let plan = match branches.len() {
        // No file at this version (a new table, or every row deleted): no rows, with the
        // table's columns in the provider's order.
        0 => {
            let fields: Vec<Field> = in_files
                .iter()
                .map(|(f, _)| f)
                .chain(partitions.iter().map(|(f, _)| *f))
                .map(|f| Field::new(f.name(), f.data_type().clone(), f.is_nullable()))
                .collect();
            let schema = DFSchema::try_from(Schema::new(fields)).map_err(|e| e.to_string())?;
            LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(schema),
            })
        }
        1 => Arc::unwrap_or_clone(branches.remove(0)),
        _ => LogicalPlan::Union(
            Union::try_new_with_loose_types(branches).map_err(|e| e.to_string())?,
        ),
    };
    let union = DataFrame::new(ctx.state(), plan);
    ctx.register_table(name, union.into_view())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// What a failed load means: a missing table, a version it never had, or the store's
/// own trouble.
fn explain(
    url: &url::Url,
    cloud: Option<Cloud>,
    source: &Source,
    error: DeltaTableError,
) -> String {
    match error {
        DeltaTableError::NotATable(_) => format!(
            "{url} is not a Delta table: it has no `_delta_log/` (for Parquet files, write `format: parquet`)"
        ),
        DeltaTableError::InvalidVersion(v) => format!(
            "the Delta table at {url} has no version {v}; remove `version` to read the latest"
        ),
        DeltaTableError::ObjectStore { source: e } => match cloud {
            Some(cloud) => store::describe(cloud, url, &e),
            None => format!("cannot read the Delta table at {url} ({e})"),
        },
        other => {
            let text = other.to_string();
            match source.version {
                Some(v) if text.contains("version") => format!(
                    "cannot read version {v} of the Delta table at {url} ({text}); remove `version` to read the latest"
                ),
                _ => format!("cannot read the Delta table at {url} ({text})"),
            }
        }
    }
}
