//! What a selection did: the counts per segment and export, and the profile cap's verdict.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pipeline_sink::SinkReport;
use pipeline_spec::OnCapExceeded;
use serde::Serialize;

/// Counts for one segment of an export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SegmentSummary {
    pub segment: String,
    /// Rows the segment's query returned.
    pub rows: u64,
    pub rejected: u64,
    /// Rows whose email an earlier row (by `order_by`) already supplied.
    pub duplicates: u64,
    /// Contacts this segment supplied after dedupe, before the cap.
    pub contacts: u64,
}

/// Where an export's contacts stand against its profile cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapStatus {
    /// At most `max_profiles` contacts.
    Within,
    /// Over the cap with `on_cap_exceeded: fail`: nothing sent.
    Exceeded,
    /// Over the cap with `on_cap_exceeded: truncate`: the first `max_profiles` sent.
    Truncated,
}

/// The profile cap's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapVerdict {
    pub max_profiles: u64,
    pub on_cap_exceeded: OnCapExceeded,
    pub status: CapStatus,
    /// Contacts over the cap: dropped when truncated, the excess when exceeded.
    pub over_by: u64,
}

impl CapVerdict {
    /// The verdict for `total` distinct contacts.
    pub fn new(total: u64, max_profiles: u64, on_cap_exceeded: OnCapExceeded) -> Self {
        let status = if total <= max_profiles {
            CapStatus::Within
        } else if on_cap_exceeded == OnCapExceeded::Fail {
            CapStatus::Exceeded
        } else {
            CapStatus::Truncated
        };
        Self {
            max_profiles,
            on_cap_exceeded,
            status,
            over_by: total.saturating_sub(max_profiles),
        }
    }

    pub fn exceeded(&self) -> bool {
        self.status == CapStatus::Exceeded
    }
}

/// What happened to one export.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub export: String,
    pub list_ids: Vec<String>,
    /// Member rows over all segments, before dedupe.
    pub rows: u64,
    pub segments: Vec<SegmentSummary>,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// What is wrong with the invalid emails (`invalid_email` rows of an export keyed by
    /// email), as the rejects file's `detail` says it, with how many rows have it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub invalid_emails: BTreeMap<String, u64>,
    pub duplicates: u64,
    /// Contacts with at least one field cut to SendGrid's limit.
    pub truncated_contacts: u64,
    /// Valid, distinct contacts before the cap.
    pub contacts: u64,
    pub cap: CapVerdict,
    /// Contacts handed to the sink.
    pub sent: u64,
    pub sink: Option<SinkReport>,
    pub rejects_file: Option<PathBuf>,
    pub allowed_rejects: u64,
    /// Normalised emails of the rejected rows, when asked for.
    #[serde(skip)]
    pub rejected_emails: Vec<String>,
}

impl ExportSummary {
    /// More rejects than the export tolerates.
    pub fn rejects_over_threshold(&self) -> bool {
        self.rejected > self.allowed_rejects
    }
}
