//! The sink interface: what consumes the stream of contact record batches of one export,
//! and the value types every sink shares.
//!
//! This crate knows no HTTP client: the engine and the sync protocol compile against the
//! [`Sink`] trait alone. The SendGrid sink (`pipeline-sendgrid`) implements it beside the
//! two local sinks here: [`dry_run`] writes the exact request bodies to a folder, and
//! [`preview`] counts them for `pipeline plan`. [`encoder::bodies`] turns a contact stream
//! into request bodies for all three; [`Stage`] puts a step (the incremental diff, a
//! sample) in front of any sink.

pub mod dry_run;
pub mod encoder;
mod json;
pub mod preview;
pub mod private_fs;

use std::path::PathBuf;

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use pipeline_spec::{Classified, ErrorKind};
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
    /// Column `i` of every batch fills `fields[i]`; column 0 is the identifier that keys
    /// the contacts (`email` unless the export names another).
    pub fields: Vec<ContactField>,
    /// Most contacts in one request body (SendGrid's limit, or the export's smaller one).
    pub contacts_per_request: usize,
}

impl ExportTarget {
    /// The name of the identifier that keys the contacts: the first field's.
    pub fn key(&self) -> &str {
        self.fields.first().map_or("email", |f| f.name.as_str())
    }
}

/// What a sink did with one export's contacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SinkReport {
    /// Requests made (or, for a dry run, request bodies written).
    pub requests: u64,
    /// Contacts in those requests.
    pub contacts: u64,
    /// Bytes of request bodies, refused ones included.
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
    /// Time spent following the import jobs until they ended (or the run stopped
    /// waiting), in milliseconds.
    pub import_wait_ms: u64,
}

/// Where an import job stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// SendGrid took the body; the job was not followed (yet).
    #[default]
    Accepted,
    /// Still running when the run stopped following it.
    Pending,
    /// Imported every contact.
    Completed,
    /// Imported, but some contacts failed (the errors file names them).
    Errored,
    /// Imported nothing, or SendGrid does not know the job.
    Failed,
}

impl JobStatus {
    /// The job ended and its contacts (but those its errors name) are in SendGrid.
    pub fn imported(self) -> bool {
        matches!(self, Self::Completed | Self::Errored)
    }

    /// The job may still end: it is worth asking SendGrid again.
    pub fn open(self) -> bool {
        matches!(self, Self::Accepted | Self::Pending)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Accepted => "accepted",
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Errored => "errored",
            Self::Failed => "failed",
        })
    }
}

/// What happened to one import job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobReport {
    /// Accepted by an earlier, interrupted run and followed by this one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    pub job_id: String,
    pub status: JobStatus,
    pub requested: u64,
    pub created: u64,
    pub updated: u64,
    pub errored: u64,
    /// Why the job's errors file could not be read (expired, refused, unparsable, or
    /// naming fewer contacts than `errored`): none of the job's contacts count as synced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors_unread: Option<String>,
}

impl JobReport {
    /// The status the sync protocol folds by: a job whose errors file could not be read
    /// is, for its contacts, as good as failed (they are all sent again).
    pub fn fold_status(&self) -> JobStatus {
        if self.errors_unread.is_some() {
            JobStatus::Failed
        } else {
            self.status
        }
    }
}

/// A contact SendGrid refused, or a stage in front of the sink held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkReject {
    /// The contact's key: the value of the export's identifier (its email by default).
    pub email: String,
    /// `sendgrid_rejected` (a 400 on upload), `import_errored` (the import job's errors),
    /// `contact_too_large` (no request can hold it, so it is not sent) or
    /// `identifier_dropped` (held back: it lacks an identifier it was sent with).
    pub reason: &'static str,
    pub message: String,
    /// The import job whose errors file named the contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The hash of the fields SendGrid refused (known for a refusal at upload in a real
    /// run), so the state can remember it.
    #[serde(skip)]
    pub hash: Option<u64>,
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
    /// The service behind the sink refused the work or could not be reached; `kind` says
    /// whether the user's settings (a bad key, a missing list) or the outside world failed.
    #[error("{message}")]
    Service { kind: ErrorKind, message: String },
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

impl Classified for SinkError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Upstream(_) => ErrorKind::Data,
            Self::Internal(_) => ErrorKind::Internal,
            Self::Service { kind, .. } => *kind,
            Self::Config(_) => ErrorKind::Config,
            Self::Io { .. } => ErrorKind::Io,
        }
    }
}

/// Records each body SendGrid accepted, as it happens, so that a later run can finish
/// an interrupted one without sending those contacts again.
pub trait UploadJournal: Send + Sync {
    /// SendGrid answered `job_id` for a body holding `contacts` for `list_ids`. The
    /// upload goes on only once the returned future has made the record durable.
    fn accepted<'a>(
        &'a self,
        job_id: &'a str,
        list_ids: &'a [String],
        contacts: &'a encoder::BodyKeys,
    ) -> futures::future::BoxFuture<'a, std::io::Result<()>>;
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

/// A step in front of a sink: it sees the export's contact stream first and hands the
/// sink a stream of its own (fewer contacts, or the same ones observed).
pub trait Stage: Send {
    fn apply(&mut self, target: &ExportTarget, contacts: ContactStream) -> ContactStream;

    /// The contacts the stage held back as rejects, once the stream has ended; they join
    /// the sink's report (and so the rejects file).
    fn rejects(&mut self) -> Vec<SinkReject> {
        Vec::new()
    }
}

impl<S: Stage + ?Sized> Stage for &mut S {
    fn apply(&mut self, target: &ExportTarget, contacts: ContactStream) -> ContactStream {
        (**self).apply(target, contacts)
    }

    fn rejects(&mut self) -> Vec<SinkReject> {
        (**self).rejects()
    }
}

/// Two stages, the first in front of the second.
impl<A: Stage, B: Stage> Stage for (A, B) {
    fn apply(&mut self, target: &ExportTarget, contacts: ContactStream) -> ContactStream {
        let first = self.0.apply(target, contacts);
        self.1.apply(target, first)
    }

    fn rejects(&mut self) -> Vec<SinkReject> {
        let mut out = self.0.rejects();
        out.extend(self.1.rejects());
        out
    }
}

/// No stage: the stream passes unchanged.
impl<S: Stage> Stage for Option<S> {
    fn apply(&mut self, target: &ExportTarget, contacts: ContactStream) -> ContactStream {
        match self {
            Some(stage) => stage.apply(target, contacts),
            None => contacts,
        }
    }

    fn rejects(&mut self) -> Vec<SinkReject> {
        self.as_mut().map(Stage::rejects).unwrap_or_default()
    }
}

/// A sink behind a stage.
pub struct Staged<'s, St> {
    pub stage: St,
    pub sink: &'s mut dyn Sink,
}

impl<St: Stage> Sink for Staged<'_, St> {
    fn write_all<'a>(
        &'a mut self,
        target: &'a ExportTarget,
        contacts: ContactStream,
    ) -> BoxFuture<'a, Result<SinkReport, SinkError>> {
        let contacts = self.stage.apply(target, contacts);
        Box::pin(async move {
            let mut report = self.sink.write_all(target, contacts).await?;
            report.rejects.extend(self.stage.rejects());
            Ok(report)
        })
    }
}
