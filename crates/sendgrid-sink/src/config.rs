//! The SendGrid sink's settings, and the sink itself as the run builds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pipeline_sink::{SinkReject, UploadJournal};
use sendgrid_client::{Client, FieldType};

/// How the sink uploads and waits.
#[derive(Debug, Clone)]
pub struct SendgridSettings {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Follow import jobs until they end.
    pub wait_for_import: bool,
    /// Longest wait for all import jobs.
    pub import_timeout: Duration,
    /// Create custom fields that do not exist instead of failing.
    pub create_missing_fields: bool,
}

impl Default for SendgridSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            wait_for_import: true,
            import_timeout: Duration::from_secs(900),
            create_missing_fields: false,
        }
    }
}

/// Uploads contacts to SendGrid.
pub struct SendgridSink {
    pub(crate) client: Client,
    pub(crate) settings: SendgridSettings,
    /// SendGrid types of custom fields, used when one is created.
    pub(crate) custom_types: BTreeMap<String, FieldType>,
    pub(crate) journal: Option<Arc<dyn UploadJournal>>,
    /// Contacts refused in jobs of an earlier, interrupted run that this run followed:
    /// reported with this run's rejects.
    pub(crate) earlier_rejects: Vec<SinkReject>,
}

impl SendgridSink {
    pub fn new(client: Client, settings: SendgridSettings) -> Self {
        Self {
            client,
            settings,
            custom_types: BTreeMap::new(),
            journal: None,
            earlier_rejects: Vec::new(),
        }
    }

    /// Records every accepted body in `journal` before going on. The contact batches must
    /// then carry the diff stage's hash column, which supplies what the journal records.
    pub fn with_journal(mut self, journal: Arc<dyn UploadJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Reports `rejects`, found by following an interrupted run's jobs, with this run's.
    pub fn with_earlier_rejects(mut self, rejects: Vec<SinkReject>) -> Self {
        self.earlier_rejects = rejects;
        self
    }

    /// The type of each custom field, by the engine's type names (`Text`, `Number`,
    /// `Date`), used when `create_missing_fields` creates one.
    pub fn with_custom_types<'a>(
        mut self,
        types: impl IntoIterator<Item = (&'a String, &'a &'static str)>,
    ) -> Self {
        self.custom_types = types
            .into_iter()
            .map(|(name, t)| (name.clone(), field_type_named(t)))
            .collect();
        self
    }
}

/// SendGrid's field type for the engine's type name (`Text`, `Number`, `Date`).
pub fn field_type_named(name: &str) -> FieldType {
    match name {
        "Number" => FieldType::Number,
        "Date" => FieldType::Date,
        _ => FieldType::Text,
    }
}
