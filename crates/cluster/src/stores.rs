//! The pipeline's object stores, carried to the cluster with each query.
//!
//! The client puts each remote source's store (its root URL and its `storage:` settings,
//! never a credential) into a session option; the scheduler, which lists the sources'
//! files while planning, and each executor, which reads them, open the same stores from
//! it with credentials from their own environment.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::any::Any;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::prelude::SessionConfig;
use pipeline_engine::store;
use pipeline_spec::{Pipeline, Place, SourceFormat, Storage};
use serde::{Deserialize, Serialize};

/// The session option `pipeline.stores`: the stores a query reads, as JSON
/// (`[{"root": "s3://bucket/", "storage": {...}}]`).
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    stores: String,
}

impl ConfigExtension for StoreOptions {
    const PREFIX: &'static str = "pipeline";
}

impl ExtensionOptions for StoreOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> datafusion::error::Result<()> {
        match key {
            "stores" => {
                value.clone_into(&mut self.stores);
                Ok(())
            }
            other => Err(DataFusionError::Configuration(format!(
                "`{}.{other}` is not an option; the option is `{}.stores`",
                Self::PREFIX,
                Self::PREFIX
            ))),
        }
    }

    /// The entries Ballista sends with a query: their keys must carry the prefix for the
    /// receiving side to find this extension (`extensions_options!` leaves it out).
    fn entries(&self) -> Vec<ConfigEntry> {
        vec![ConfigEntry {
            key: format!("{}.stores", Self::PREFIX),
            value: Some(self.stores.clone()),
            description: "the object stores of the pipeline's sources, with their settings",
        }]
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Remote {
    root: String,
    storage: Storage,
}

impl StoreOptions {
    /// The stores of `pipeline`'s remote sources. Delta tables are refused: their table
    /// provider is not one Ballista can send to its executors.
    pub fn of(pipeline: &Pipeline) -> Result<Self, String> {
        let mut remotes: BTreeMap<String, Storage> = BTreeMap::new();
        for (name, source) in &pipeline.file.sources {
            if source.format == SourceFormat::Delta {
                return Err(format!(
                    "sources.{name} is a Delta table, which cluster mode cannot read yet; \
                     export it to Parquet, or run this pipeline without `engine.cluster`"
                ));
            }
            if let Ok(Place::Remote { url, .. }) = pipeline_spec::place_of(&source.path) {
                remotes.insert(store::root_of(&url).to_string(), source.storage.clone());
            }
        }
        let remotes: Vec<Remote> = remotes
            .into_iter()
            .map(|(root, storage)| Remote { root, storage })
            .collect();
        Ok(Self {
            stores: serde_json::to_string(&remotes).map_err(|e| e.to_string())?,
        })
    }

    /// A registry holding local files and every store in these options.
    pub fn registry(&self) -> Result<Arc<dyn ObjectStoreRegistry>, DataFusionError> {
        let registry = DefaultObjectStoreRegistry::new();
        if self.stores.is_empty() {
            return Ok(Arc::new(registry));
        }
        let remotes: Vec<Remote> = serde_json::from_str(&self.stores).map_err(|e| {
            DataFusionError::Configuration(format!("pipeline.stores is not valid: {e}"))
        })?;
        for remote in remotes {
            let url = url::Url::parse(&remote.root).map_err(|e| {
                DataFusionError::Configuration(format!("pipeline.stores: `{}`: {e}", remote.root))
            })?;
            let Ok(Place::Remote { cloud, .. }) = pipeline_spec::place_of(url.as_str()) else {
                return Err(DataFusionError::Configuration(format!(
                    "pipeline.stores: `{url}` is not an object store"
                )));
            };
            let opened = store::open(cloud, &url, &remote.storage).map_err(|e| {
                DataFusionError::Configuration(format!("on this cluster node, `{url}`: {e}"))
            })?;
            registry.register_store(&opened.root, opened.inner);
        }
        Ok(Arc::new(registry))
    }

    /// The options in `config`, or none.
    pub fn from_config(config: &SessionConfig) -> Self {
        config
            .options()
            .extensions
            .get::<Self>()
            .cloned()
            .unwrap_or_default()
    }
}
