//! SendGrid's suppression lists beside an export: how many of the selected contacts
//! SendGrid will not email (unsubscribed, bounced, blocked, spam reports, invalid), and,
//! with `skip_suppressed`, leaving them out of the export as if not selected.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use arrow::error::ArrowError;
use futures::StreamExt;
use pipeline_sink::encoder::texts;
use pipeline_sink::{ContactStream, ExportTarget, FieldKind, SinkError, Stage};
use sendgrid_client::{Client, Suppression};

use crate::sink_error;

/// Every suppressed address of the account, lower case, with its list (the first of
/// unsubscribed, bounced, blocked, spam report, invalid that holds it).
#[derive(Debug, Default)]
pub struct Suppressions {
    by_email: HashMap<String, Suppression>,
}

impl Suppressions {
    /// Reads the five suppression lists.
    pub async fn fetch(client: &Client) -> Result<Self, SinkError> {
        let mut by_email = HashMap::new();
        for kind in Suppression::ALL {
            for email in client.suppressed(kind).await.map_err(sink_error)? {
                by_email.entry(email.to_lowercase()).or_insert(kind);
            }
        }
        Ok(Self { by_email })
    }

    pub fn len(&self) -> usize {
        self.by_email.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_email.is_empty()
    }
}

/// The stage that counts the selected contacts on a suppression list and, when `skip`,
/// leaves them out. Clones share their counts.
#[derive(Clone)]
pub struct SuppressionStage {
    list: Arc<Suppressions>,
    skip: bool,
    counts: Arc<Mutex<BTreeMap<Suppression, u64>>>,
}

impl SuppressionStage {
    pub fn new(list: Suppressions, skip: bool) -> Self {
        Self {
            list: Arc::new(list),
            skip,
            counts: Arc::default(),
        }
    }

    /// The selected contacts found on each list, by its label.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, n)| (k.label().to_owned(), *n))
            .collect()
    }

    pub fn skips(&self) -> bool {
        self.skip
    }
}

impl Stage for SuppressionStage {
    fn apply(&mut self, target: &ExportTarget, contacts: ContactStream) -> ContactStream {
        let stage = self.clone();
        // Suppressions are by address: an export that maps no email has none to match.
        let Some(email_at) = target
            .fields
            .iter()
            .position(|f| f.kind == FieldKind::Reserved && f.name == "email")
        else {
            return contacts;
        };
        contacts
            .map(move |batch| {
                let batch = batch?;
                let emails =
                    texts(&batch, email_at).map_err(|e| ArrowError::ComputeError(e.to_string()))?;
                let mut counts = stage.counts.lock().unwrap_or_else(|e| e.into_inner());
                let keep: BooleanArray = emails
                    .iter()
                    .map(|email| match stage.list.by_email.get(*email) {
                        Some(kind) => {
                            *counts.entry(*kind).or_default() += 1;
                            Some(!stage.skip)
                        }
                        None => Some(true),
                    })
                    .collect();
                drop(counts);
                if stage.skip {
                    filter_record_batch(&batch, &keep)
                } else {
                    Ok(batch)
                }
            })
            .boxed()
    }
}
