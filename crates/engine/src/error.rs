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

/// A query's failure while it ran, as users read it: DataFusion's kind prefixes dropped,
/// and the values from the data it quotes hidden.
pub(crate) fn failure_text(e: &dyn std::fmt::Display) -> String {
    let message = crate::segments::without_kind(&e.to_string());
    hide_data_values(&filter_failure(&message).unwrap_or(message))
}

/// `... Error evaluating filter predicate: ArrowError(CastError("why"), Some(""))`, the
/// Parquet reader's words for a filter pushed into the scan, as `evaluating the filter
/// failed: why`.
fn filter_failure(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("Error evaluating filter predicate: ArrowError(")?;
    let (_, quoted) = rest.split_once("(\"")?;
    let (why, _) = quoted
        .rsplit_once("\"), Some(")
        .or_else(|| quoted.rsplit_once("\")"))?;
    Some(format!("evaluating the filter failed: {why}"))
}

/// Where a value from the data follows in Arrow's and DataFusion's messages, and the
/// texts that may end it.
const DATA_VALUES: [(&str, &[&str]); 5] = [
    ("Cannot cast string '", &["' to value of", "' to decimal"]),
    ("Cannot cast value '", &["' to value of"]),
    ("Error parsing timestamp from '", &["': ", "' using format"]),
    ("Failed to parse '", &["' as "]),
    ("can't parse the string value ", &[" to decimal"]),
];

/// `message` with the values from the data it quotes replaced by their length: a query
/// that fails on a row must not print the row's email or name.
pub(crate) fn hide_data_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let next = DATA_VALUES
            .iter()
            .filter_map(|(lead, ends)| rest.find(lead).map(|at| (at, *lead, *ends)))
            .min_by_key(|(at, ..)| *at);
        let Some((at, lead, ends)) = next else {
            break;
        };
        let value_start = at + lead.len();
        let end = ends
            .iter()
            .filter_map(|end| rest[value_start..].find(end))
            .min();
        out.push_str(&rest[..value_start]);
        match end {
            Some(len) => {
                let chars = rest[value_start..value_start + len].chars().count();
                out.push_str(&format!("<a value of {chars} characters, not shown>"));
                rest = &rest[value_start + len..];
            }
            None => {
                out.push_str("<a value, not shown>");
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_the_data_are_not_shown() {
        assert_eq!(
            hide_data_values(
                "Compute error: Error evaluating filter predicate: ArrowError(CastError(\"Cannot cast string 'ada.lovelace@example.com' to value of Int32 type\"), Some(\"\"))"
            ),
            "Compute error: Error evaluating filter predicate: ArrowError(CastError(\"Cannot cast string '<a value of 24 characters, not shown>' to value of Int32 type\"), Some(\"\"))"
        );
        assert_eq!(
            hide_data_values(
                "Parser error: Error parsing timestamp from 'Grace O'Hara': error parsing date; Cannot cast value 'ja' to value of Boolean type"
            ),
            "Parser error: Error parsing timestamp from '<a value of 12 characters, not shown>': error parsing date; Cannot cast value '<a value of 2 characters, not shown>' to value of Boolean type"
        );
        assert_eq!(
            hide_data_values("Cannot cast string 'unterminated"),
            "Cannot cast string '<a value, not shown>"
        );
        assert_eq!(
            failure_text(
                &"Parquet error: External: Compute error: Error evaluating filter predicate: ArrowError(CastError(\"Cannot cast string 'ada@example.com' to value of Int32 type\"), Some(\"\"))"
            ),
            "evaluating the filter failed: Cannot cast string '<a value of 15 characters, not shown>' to value of Int32 type"
        );
        let plain = "the query needs more memory than engine.memory_limit_mib allows";
        assert_eq!(hide_data_values(plain), plain);
    }
}
