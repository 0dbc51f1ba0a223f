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
use pipeline_spec::{Pipeline, Place, Storage};
use serde::{Deserialize, Serialize};

/// The session option `pipeline.stores`: the stores a query reads, as JSON
/// (`[{"root": "s3://bucket", "storage": {...}}]`).
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
    /// The stores of `pipeline`'s remote sources, Delta tables' among them (the client
    /// reads a Delta table's log and sends its files as a Parquet listing).
    pub fn of(pipeline: &Pipeline) -> Result<Self, String> {
        let mut remotes: BTreeMap<String, Storage> = BTreeMap::new();
        for source in pipeline.file.sources.values() {
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

#[cfg(test)]
mod tests {
    use datafusion::config::ConfigOptions;

    use super::*;

    fn pipeline(sources: &str) -> Pipeline {
        let text = format!(
            r#"
version: 1
connections:
  m: {{ type: sendgrid, api_key: "${{K}}", data_privacy_consent: true }}
sources:
{sources}
segments:
  a: SELECT * FROM t
exports:
  - name: x
    connection: m
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    segments: [a]
    mapping: {{ email: email }}
"#
        );
        pipeline_spec::parse(&text, std::path::Path::new("/p.yaml"), &|_| {
            Some("k".into())
        })
        .unwrap()
    }

    /// What Ballista sends (the entries, by key) arrives in a config that knows the
    /// extension, and opens the stores there.
    #[test]
    fn the_stores_travel_as_a_prefixed_option_and_open_on_the_other_side() {
        let p = pipeline(
            r#"  t: { format: parquet, path: "s3://lake/crm/t/", storage: { region: eu-west-1, skip_signature: true } }
  u: { format: parquet, path: local/u.parquet }"#,
        );
        let sent = StoreOptions::of(&p).unwrap();
        let entries = sent.entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key, "pipeline.stores");

        let mut received = ConfigOptions::new();
        received.extensions.insert(StoreOptions::default());
        for entry in &entries {
            received
                .set(&entry.key, entry.value.as_deref().unwrap())
                .unwrap();
        }
        let options = received.extensions.get::<StoreOptions>().unwrap();
        let remotes: Vec<Remote> = serde_json::from_str(&options.stores).unwrap();
        assert_eq!(remotes.len(), 1);
        assert_eq!(remotes[0].root, "s3://lake");
        let registry = options.registry().unwrap();
        let url = url::Url::parse("s3://lake/crm/t/part-0.parquet").unwrap();
        assert!(registry.get_store(&url).is_ok());
        let other = url::Url::parse("s3://elsewhere/t.parquet").unwrap();
        assert!(registry.get_store(&other).is_err());
    }

    #[test]
    fn a_delta_tables_store_travels_too() {
        let p = pipeline(
            r#"  t: { format: delta, path: "s3://lake/tables/t", storage: { region: eu-west-1 } }"#,
        );
        let remotes: Vec<Remote> =
            serde_json::from_str(&StoreOptions::of(&p).unwrap().stores).unwrap();
        assert_eq!(remotes.len(), 1);
        assert_eq!(remotes[0].root, "s3://lake");
    }
}
