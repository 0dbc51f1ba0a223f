//! The SendGrid sink: the [`pipeline_sink::Sink`] that uploads an export's contacts to
//! SendGrid Marketing, one job per file (as Vector lays out its sinks):
//!
//! - [`config`]: the sink's settings and how it is built;
//! - [`preflight`]: lists checked and custom field names resolved to ids before any upload;
//! - [`upload`]: bodies sent with bounded concurrency, a 400 isolated to the contacts it names;
//! - [`jobs`]: SendGrid's import jobs followed to the end;
//! - [`errors_file`]: a finished job's errors file read into rejects;
//! - [`suppressions`]: the account's suppression lists, counted and optionally skipped.
//!
//! Mirror removals are not the sink's: the sync protocol (`pipeline-sync`) decides them.

pub mod config;
pub mod errors_file;
pub mod jobs;
pub mod preflight;
mod sink;
pub mod suppressions;
pub mod upload;

pub use config::{SendgridSettings, SendgridSink, field_type_named};
pub use jobs::follow_jobs;
pub use preflight::{find_field, type_mismatch};

use pipeline_sink::SinkError;
use pipeline_spec::ErrorKind;
use sendgrid_client::ClientError;

/// A client error as the sink reports it: a bad key, missing permissions or a missing
/// resource are the user's to fix; the rest is SendGrid's or the network's.
pub fn sink_error(e: ClientError) -> SinkError {
    let kind = match &e {
        ClientError::Unauthorized { .. }
        | ClientError::Forbidden { .. }
        | ClientError::NotFound { .. }
        | ClientError::Config(_) => ErrorKind::Config,
        ClientError::Rejected { .. }
        | ClientError::Exhausted { .. }
        | ClientError::RateLimited { .. }
        | ClientError::Unexpected { .. } => ErrorKind::Remote,
    };
    SinkError::Service {
        kind,
        message: e.to_string(),
    }
}
