//! The SendGrid emulator started in this process by `--local-emulator`: a cargo feature
//! (`local-emulator`, on by default), so that a slim build leaves the emulator out.

use std::collections::BTreeMap;

use pipeline_engine::ExportQuery;
use pipeline_spec::{ApiKey, Pipeline};
use pipeline_sync::SyncedExport;

use crate::Failure;

#[cfg(feature = "local-emulator")]
pub use with_emulator::LocalEmulator;
#[cfg(not(feature = "local-emulator"))]
pub use without_emulator::LocalEmulator;

#[cfg(feature = "local-emulator")]
mod with_emulator {
    use sendgrid_emulator::{Config, Emulator, KeyConfig, marketing_scopes};

    use super::*;
    use crate::Exit;

    /// A SendGrid emulator in this process, standing in for every connection.
    pub struct LocalEmulator {
        emulator: Emulator,
        key: ApiKey,
    }

    impl LocalEmulator {
        /// Starts an emulator on loopback that holds the exports' lists and custom fields.
        pub async fn start(pipeline: &Pipeline, queries: &[ExportQuery]) -> Result<Self, Failure> {
            let key = format!("SG.local-emulator.{}", std::process::id());
            let mut lists = Vec::new();
            for export in &pipeline.file.exports {
                for id in &export.list_ids {
                    lists.push((id.clone(), format!("{} list", export.name)));
                }
                // Named lists exist under their names, with ids of the emulator's own.
                for named in &export.lists {
                    let id = format!("00000000-0000-4000-8000-{:012x}", lists.len() + 1);
                    lists.push((id, named.name.clone()));
                }
            }
            let mut custom_fields: BTreeMap<String, String> = BTreeMap::new();
            for q in queries {
                for (name, t) in &q.custom_field_types {
                    custom_fields.insert(name.clone(), (*t).to_owned());
                }
            }
            let config = Config {
                keys: vec![KeyConfig {
                    key: key.clone(),
                    scopes: marketing_scopes(),
                }],
                import_delay_ms: 200,
                lists,
                custom_fields: custom_fields.into_iter().collect(),
                ..Config::default()
            };
            let emulator = Emulator::start(config).await.map_err(|e| Failure {
                exit: Exit::RunFailed,
                message: format!("cannot start the local SendGrid emulator: {e}"),
            })?;
            tracing::info!(url = %emulator.url(), "Started the local SendGrid emulator");
            Ok(Self {
                emulator,
                key: ApiKey::new(key),
            })
        }

        pub fn url(&self) -> String {
            self.emulator.url()
        }

        pub fn key(&self) -> ApiKey {
            self.key.clone()
        }

        /// The emails that landed on each export's lists.
        pub fn landed(&self, summaries: &[SyncedExport]) -> BTreeMap<String, Vec<String>> {
            let mut out = BTreeMap::new();
            for s in summaries {
                for id in &s.list_ids {
                    out.insert(id.clone(), self.emulator.list_emails(id));
                }
            }
            out
        }
    }
}

#[cfg(not(feature = "local-emulator"))]
mod without_emulator {
    use super::*;
    use crate::Exit;

    /// This build has no emulator: the type has no values.
    pub enum LocalEmulator {}

    impl LocalEmulator {
        pub async fn start(_: &Pipeline, _: &[ExportQuery]) -> Result<Self, Failure> {
            Err(Failure {
                exit: Exit::Config,
                message: "this pipeline was built without the local emulator (cargo feature \
                          `local-emulator`); build it with the default features to use --local-emulator"
                    .into(),
            })
        }

        pub fn url(&self) -> String {
            match *self {}
        }

        pub fn key(&self) -> ApiKey {
            match *self {}
        }

        pub fn landed(&self, _: &[SyncedExport]) -> BTreeMap<String, Vec<String>> {
            match *self {}
        }
    }
}
