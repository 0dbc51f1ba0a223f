//! What the sync state made of one export's run.

use std::path::PathBuf;

use serde::Serialize;

use crate::DiffCounts;

/// The incremental and mirror side of one export's run (or plan).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncReport {
    /// `upsert` or `mirror`.
    pub mode: &'static str,
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
    /// `none`, `planned` (plan or dry run), `done`, `refused` (the mass-removal guard),
    /// or `skipped` (the upload did not finish cleanly, so nothing is removed).
    pub removal: &'static str,
    /// Leavers as a share of the contacts the export put on its largest list.
    pub removal_share: f64,
    /// The guard's limit.
    pub max_removal_share: f64,
    /// Contacts in the snapshot after the run.
    pub snapshot_contacts: u64,
    /// Things the user should know: a recovered lock, a changed mapping, a new endpoint.
    pub notes: Vec<String>,
}

impl SyncReport {
    /// The mass-removal guard stopped the removals.
    pub fn removal_refused(&self) -> bool {
        self.removal == "refused"
    }
}
