//! Sinks consume the stream of contact record batches of one export and report what they did.
//!
//! A sink is chosen by the connection's `type`. The [`dry_run`] sink writes the exact
//! SendGrid request bodies to a folder; the HTTP sink plugs in through the same trait.

pub mod dry_run;
pub mod encoder;
pub mod preview;
pub mod private_fs;
pub mod sendgrid;

use std::path::PathBuf;

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Serialize;

/// The contacts of one export: record batches whose columns are [`ExportTarget::fields`].
pub type ContactStream = BoxStream<'static, Result<RecordBatch, ArrowError>>;

/// Whether a column fills a reserved SendGrid field or a custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Reserved,
    Custom,
}

/// One column of the contact batches and the SendGrid field it fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactField {
    /// The reserved field's name, or the custom field's name.
    pub name: String,
    pub kind: FieldKind,
}

impl ContactField {
    /// The field as a user names it: `first_name`, or `custom_fields.<name>`.
    pub fn qualified_name(&self) -> String {
        match self.kind {
            FieldKind::Reserved => self.name.clone(),
            FieldKind::Custom => format!("custom_fields.{}", self.name),
        }
    }
}

/// Where one export's contacts go.
#[derive(Debug, Clone)]
pub struct ExportTarget {
    /// The export's name.
    pub export: String,
    /// SendGrid list ids the contacts are added to.
    pub list_ids: Vec<String>,
    /// Column `i` of every batch fills `fields[i]`; column 0 is `email`.
    pub fields: Vec<ContactField>,
}

/// What a sink did with one export's contacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SinkReport {
    /// Requests made (or, for a dry run, request bodies written).
    pub requests: u64,
    /// Contacts in those requests.
    pub contacts: u64,
    /// Bytes of request bodies.
    pub bytes: u64,
    /// Where the bodies went: files for a dry run.
    pub outputs: Vec<PathBuf>,
    /// SendGrid import jobs, in upload order.
    pub jobs: Vec<JobReport>,
    /// Contacts SendGrid refused, with its message.
    pub rejects: Vec<SinkReject>,
    /// Requests retried after a transient failure.
    pub retries: u64,
    /// 429 answers waited out.
    pub rate_limited: u64,
}

/// What happened to one import job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobReport {
    /// Accepted by an earlier, interrupted run and followed by this one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    pub job_id: String,
    /// `accepted` (not followed), `pending` (still running at the timeout),
    /// `completed`, `errored` or `failed`.
    pub status: String,
    pub requested: u64,
    pub created: u64,
    pub updated: u64,
    pub errored: u64,
}

/// A contact SendGrid refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkReject {
    pub email: String,
    /// `sendgrid_rejected` (a 400 on upload) or `import_errored` (the import job's errors).
    pub reason: &'static str,
    pub message: String,
    /// The import job whose errors file named the contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// Why a sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The contact stream failed upstream (selection, reading data).
    #[error("{0}")]
    Upstream(ArrowError),
    /// The batches do not have the columns the export declared: a bug.
    #[error("internal error: {0}")]
    Internal(String),
    /// A single contact cannot fit in one request.
    #[error("{0}")]
    Data(String),
    /// SendGrid refused the work or could not be reached.
    #[error("{0}")]
    Sendgrid(#[from] sendgrid_client::ClientError),
    /// The export cannot run as configured (a missing list or custom field).
    #[error("{0}")]
    Config(String),
    /// Writing output failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Records each body SendGrid accepted, as it happens, so that a later run can finish
/// an interrupted one without sending those contacts again.
pub trait UploadJournal: Send + Sync {
    /// SendGrid answered `job_id` for a body holding `contacts` for `list_ids`.
    fn accepted(
        &self,
        job_id: &str,
        list_ids: &[String],
        contacts: &encoder::BodyKeys,
    ) -> std::io::Result<()>;
}

/// Consumes an export's contact stream.
pub trait Sink: Send {
    /// Sends (or writes) every contact of the stream; returns what was done.
    fn write_all<'a>(
        &'a mut self,
        target: &'a ExportTarget,
        contacts: ContactStream,
    ) -> BoxFuture<'a, Result<SinkReport, SinkError>>;
}
