//! What the sync protocol made of one export's run, in enums rather than strings.

use std::path::PathBuf;

use pipeline_engine::ExportSummary;
use pipeline_spec::ExportMode;
use serde::Serialize;

use crate::DiffCounts;

/// What mirror mode did, or would do, with the contacts that left the segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalOutcome {
    /// Nothing to remove, or not mirror mode.
    #[default]
    None,
    /// A plan or dry run: the leavers would be removed.
    Planned,
    /// The leavers were taken off the lists.
    Done,
    /// The mass-removal guard stopped the removals.
    Refused,
    /// The uploads did not all finish cleanly, so nothing was removed.
    Skipped,
}

/// The incremental and mirror side of one export's run (or plan).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncReport {
    pub mode: ExportMode,
    /// The export's state folder.
    pub state_dir: PathBuf,
    /// `--full-refresh`: every contact sent, changed or not.
    pub full_refresh: bool,
    #[serde(flatten)]
    pub counts: DiffCounts,
    /// Import jobs of an earlier, interrupted run that this run followed.
    pub resumed_jobs: u64,
    /// Contacts in those jobs, not sent again.
    pub resumed_contacts: u64,
    /// Contacts on the export's lists that left its segments.
    pub leavers: u64,
    /// Leavers taken off the lists (mirror mode), per list membership.
    pub removed: u64,
    /// Leavers SendGrid no longer knows.
    pub not_found: u64,
    pub removal: RemovalOutcome,
    /// Leavers as a share of the contacts the export put on its largest list.
    pub removal_share: f64,
    /// The guard's limit.
    pub max_removal_share: f64,
    /// Contacts in the snapshot after the run.
    pub snapshot_contacts: u64,
    /// The export's `max_new_contacts`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_contacts: Option<u64>,
    /// More contacts were new to this export than `max_new_contacts`: a run sent nothing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub new_contacts_refused: bool,
    /// Selected contacts on the account's suppression lists, by list (when they were
    /// looked up: `skip_suppressed`, or `plan --suppressions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<std::collections::BTreeMap<String, u64>>,
    /// Whether those contacts were left out (`skip_suppressed`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub suppressed_skipped: bool,
    /// Things the user should know: a recovered lock, a changed mapping, a new endpoint.
    pub notes: Vec<String>,
}

impl SyncReport {
    /// Records the new-contact guard's verdict for `counts`; true when it refuses.
    pub fn guard_new_contacts(&mut self, max: Option<u64>) -> bool {
        self.max_new_contacts = max;
        self.new_contacts_refused = max.is_some_and(|max| self.counts.new > max);
        self.new_contacts_refused
    }

    /// The mass-removal guard stopped the removals.
    pub fn removal_refused(&self) -> bool {
        self.removal == RemovalOutcome::Refused
    }
}

/// One export's run as the engine summarised it, with what the sync protocol did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncedExport {
    #[serde(flatten)]
    pub summary: ExportSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncReport>,
}

impl std::ops::Deref for SyncedExport {
    type Target = ExportSummary;

    fn deref(&self) -> &ExportSummary {
        &self.summary
    }
}
