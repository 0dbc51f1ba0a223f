//! A source in an object store: the objects a URL names (one object, a prefix read as a
//! folder, or a glob), and their footers, read concurrently.

use arrow::datatypes::Schema;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::store::{self, Store, StorePath};

/// Footers in flight at once: each is one or two ranged GETs.
const FOOTER_CONCURRENCY: usize = 16;

/// The Parquet objects a URL names.
pub(super) struct Listed {
    /// Sorted by path.
    pub objects: Vec<ObjectMeta>,
    /// The folder they were listed under, when the URL names one (not one object or a
    /// glob), with their paths from it and those of the `_`/`.` Parquet objects skipped.
    pub folder: Option<(url::Url, Vec<String>, Vec<String>)>,
}

/// The Parquet objects `url` names.
pub(super) async fn list_objects(store: &Store, url: &url::Url) -> Result<Listed, String> {
    let path = url.path().trim_start_matches('/');
    let decoded = store::path_in_store(url)?;
    if path.contains(['*', '?', '[']) {
        let objects = glob(store, url, decoded.as_ref()).await?;
        return Ok(Listed {
            objects,
            folder: None,
        });
    }
    // One object, unless the URL ends in `/` or nothing is there: then a folder.
    if !path.is_empty() && !path.ends_with('/') {
        match store.inner.head(&decoded).await {
            Ok(meta) => {
                return Ok(Listed {
                    objects: vec![meta],
                    folder: None,
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store::describe(store.cloud, url, &e)),
        }
    }
    let prefix = (!path.is_empty()).then_some(&decoded);
    let listed: Vec<ObjectMeta> = store
        .inner
        .list(prefix)
        .try_collect()
        .await
        .map_err(|e| store::describe(store.cloud, url, &e))?;
    let mut skipped = Vec::new();
    let mut hidden_parquet = Vec::new();
    // Each object with its path from the folder.
    let mut objects = Vec::new();
    for meta in listed {
        let relative: Vec<&str> = meta
            .location
            .as_ref()
            .strip_prefix(decoded.as_ref())
            .unwrap_or(meta.location.as_ref())
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        // Spark and friends leave `_SUCCESS`, `.crc` and similar beside the data.
        if let Some(hidden) = relative
            .iter()
            .find(|p| p.starts_with('_') || p.starts_with('.'))
        {
            skipped.push((*hidden).to_owned());
            if meta.location.as_ref().ends_with(".parquet") {
                hidden_parquet.push(relative.join("/"));
            }
        } else if meta.location.as_ref().ends_with(".parquet") {
            let relative = relative.join("/");
            objects.push((meta, relative));
        }
    }
    if objects.is_empty() {
        let note = match skipped.first() {
            Some(first) => format!(
                "; {} name(s) starting with `_` or `.` (such as `{first}`) were skipped: tools like Spark leave such markers beside the data, so they are never read",
                skipped.len()
            ),
            None => String::new(),
        };
        return Err(format!("no .parquet object is at {url}{note}"));
    }
    objects.sort_by(|a, b| a.0.location.cmp(&b.0.location));
    let (objects, relative_paths) = objects.into_iter().unzip();
    let folder = format!("{}/", url_of(store, &decoded).trim_end_matches('/'));
    let folder = url::Url::parse(&folder).map_err(|e| format!("{folder}: {e}"))?;
    Ok(Listed {
        objects,
        folder: Some((folder, relative_paths, hidden_parquet)),
    })
}

/// The objects matching a glob: listed under the glob's fixed prefix, then matched
/// whole (`*` does not cross a `/`).
async fn glob(store: &Store, url: &url::Url, pattern: &str) -> Result<Vec<ObjectMeta>, String> {
    let matcher = glob::Pattern::new(pattern).map_err(|e| format!("is not a valid glob: {e}"))?;
    let fixed = &pattern[..pattern.find(['*', '?', '[']).unwrap_or(pattern.len())];
    let folder = &fixed[..fixed.rfind('/').map_or(0, |i| i + 1)];
    let prefix = StorePath::from(folder);
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..glob::MatchOptions::new()
    };
    let mut objects: Vec<ObjectMeta> = store
        .inner
        .list((!folder.is_empty()).then_some(&prefix))
        .try_filter(|meta| {
            futures::future::ready(matcher.matches_with(meta.location.as_ref(), options))
        })
        .try_collect()
        .await
        .map_err(|e| store::describe(store.cloud, url, &e))?;
    if objects.is_empty() {
        return Err(format!("the glob {url} matches no object"));
    }
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(objects)
}

/// Each object's Arrow schema and row count, from its footer; a footer that cannot be
/// read names its object.
pub(super) async fn read_footers(
    store: &Store,
    objects: &[ObjectMeta],
) -> Result<Vec<(Schema, u64)>, String> {
    futures::stream::iter(objects)
        .map(|meta| async move {
            let url = url_of(store, &meta.location);
            if meta.size == 0 {
                return Err(format!("{url}: {}", super::EMPTY_FILE));
            }
            let metadata = DFParquetMetadata::new(store.inner.as_ref(), meta)
                .fetch_metadata()
                .await
                .map_err(|e| match e.find_root() {
                    DataFusionError::ObjectStore(e) => {
                        let parsed = url::Url::parse(&url).unwrap_or_else(|_| store.root.clone());
                        store::describe(store.cloud, &parsed, e)
                    }
                    e => format!("{url}: is not a readable Parquet file ({e})"),
                })?;
            let file = metadata.file_metadata();
            let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
                .map_err(|e| format!("{url}: has a schema Arrow cannot read ({e})"))?;
            Ok((schema, u64::try_from(file.num_rows()).unwrap_or(0)))
        })
        .buffered(FOOTER_CONCURRENCY)
        .try_collect()
        .await
}

/// The URL of an object in `store`.
pub(super) fn url_of(store: &Store, location: &StorePath) -> String {
    format!(
        "{}/{}",
        store.root.as_str().trim_end_matches('/'),
        location.as_ref()
    )
}
