//! Requests and answers, as SendGrid's OpenAPI files define them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One entry of SendGrid's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ApiError {
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub message: String,
}

impl ApiError {
    /// The contact index a field such as `contacts[12].email` names.
    pub fn contact_index(&self) -> Option<usize> {
        let field = self.field.as_deref()?;
        let rest = field.strip_prefix("contacts[")?;
        rest.split(']').next()?.parse().ok()
    }
}

/// `202 {job_id}`.
#[derive(Debug, Deserialize)]
pub struct JobAccepted {
    pub job_id: String,
}

/// An import job's status.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ImportJob {
    #[serde(default)]
    pub id: String,
    /// `upsert` in the spec; the live API says `upsert_contacts`.
    #[serde(default)]
    pub job_type: String,
    pub status: String,
    #[serde(default)]
    pub results: ImportResults,
}

impl ImportJob {
    /// `completed`, `errored` or `failed`: the job will not change any more.
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "errored" | "failed")
    }
}

/// Counts of an import job (numbers in the spec; whole counts in practice).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ImportResults {
    #[serde(default)]
    pub requested_count: f64,
    #[serde(default)]
    pub created_count: f64,
    #[serde(default)]
    pub updated_count: f64,
    #[serde(default)]
    pub errored_count: f64,
    #[serde(default)]
    pub errors_url: Option<String>,
}

/// A contact list.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct List {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub contact_count: u64,
}

/// Why SendGrid will not email an address: its suppression lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppression {
    /// Globally unsubscribed.
    Unsubscribed,
    Bounced,
    Blocked,
    /// Marked a message as spam.
    SpamReport,
    /// An address SendGrid found invalid.
    Invalid,
}

impl Suppression {
    pub const ALL: [Suppression; 5] = [
        Self::Unsubscribed,
        Self::Bounced,
        Self::Blocked,
        Self::SpamReport,
        Self::Invalid,
    ];

    /// The list's endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Self::Unsubscribed => "/v3/suppression/unsubscribes",
            Self::Bounced => "/v3/suppression/bounces",
            Self::Blocked => "/v3/suppression/blocks",
            Self::SpamReport => "/v3/suppression/spam_reports",
            Self::Invalid => "/v3/suppression/invalid_emails",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Unsubscribed => "unsubscribed",
            Self::Bounced => "bounced",
            Self::Blocked => "blocked",
            Self::SpamReport => "spam_report",
            Self::Invalid => "invalid",
        }
    }
}

/// One entry of a suppression list (the fields all five share).
#[derive(Debug, Deserialize)]
pub(crate) struct Suppressed {
    pub email: String,
}

/// `GET /v3/marketing/contacts/count`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct ContactCount {
    pub contact_count: u64,
    #[serde(default)]
    pub billable_count: u64,
}

/// One page of `GET /v3/marketing/lists`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListPage {
    #[serde(default)]
    pub result: Vec<List>,
    #[serde(default, rename = "_metadata")]
    pub metadata: PageMetadata,
}

/// Where the next page is: a URL whose `page_token` the client reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageMetadata {
    #[serde(default)]
    pub next: Option<String>,
}

/// Custom field types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum FieldType {
    Text,
    Number,
    Date,
}

/// A custom field definition.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FieldDefinition {
    pub id: String,
    pub name: String,
    pub field_type: FieldType,
}

/// `GET /v3/marketing/field_definitions`.
#[derive(Debug, Clone, Deserialize)]
pub struct FieldDefinitions {
    #[serde(default)]
    pub custom_fields: Vec<FieldDefinition>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Scopes {
    pub scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchResult {
    #[serde(default)]
    pub result: BTreeMap<String, SearchEntry>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SearchEntry {
    pub contact: Option<FoundContact>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FoundContact {
    pub id: String,
}

/// Whether the scopes include Marketing read and write access.
pub fn has_marketing_access(scopes: &[String]) -> bool {
    let read = scopes
        .iter()
        .any(|s| s == "marketing.read" || s == "marketing_campaigns.read");
    let write = scopes.iter().any(|s| {
        matches!(
            s.as_str(),
            "marketing_campaigns.create" | "marketing_campaigns.update"
        )
    });
    read && write
}
