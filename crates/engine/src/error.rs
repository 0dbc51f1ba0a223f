//! Engine errors, split by whose they are: the user's pipeline or data, the outside
//! world (disk, sink), or ours.

use pipeline_sink::SinkError;
use pipeline_spec::{Classified, ErrorKind};

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Problems in the pipeline that the user must fix: sources, SQL, mapping.
    /// Every problem found is listed.
    #[error("{}", render_problems(.0))]
    Config(Vec<String>),
    /// The query failed while running (data that cannot be read or cast, resources).
    #[error("export `{export}`: selecting contacts failed: {message}")]
    Execution { export: String, message: String },
    /// Writing the rejects file failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The cluster in `engine.cluster` could not be reached, or failed a query.
    #[error("{0}")]
    Cluster(String),
    /// A bug in pipeline.
    #[error("internal error: {0}; please report it")]
    Internal(String),
    /// The sink failed.
    #[error("export `{export}`: {source}")]
    Sink { export: String, source: SinkError },
}

impl Classified for EngineError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(_) => ErrorKind::Config,
            Self::Execution { .. } => ErrorKind::Data,
            Self::Io { .. } => ErrorKind::Io,
            Self::Cluster(_) => ErrorKind::Remote,
            Self::Internal(_) => ErrorKind::Internal,
            Self::Sink { source, .. } => source.kind(),
        }
    }
}

impl EngineError {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::Config(vec![message.into()])
    }
}

fn render_problems(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => {
            let mut out = format!("{} problems:", many.len());
            for p in many {
                out.push_str("\n  ");
                out.push_str(p);
            }
            out
        }
    }
}
