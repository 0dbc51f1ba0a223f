//! Engine errors, split by whose they are: the user's pipeline or data, the outside
//! world (disk, sink), or ours.

use pipeline_sink::SinkError;
use pipeline_spec::{Classified, ErrorKind};

use crate::Shares;

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
    let mut said = hide_data_values(&filter_failure(&message).unwrap_or(message));
    // `to_date(col, '%d/%m/%Y')` meeting a value of another form fails the whole run.
    if said.contains("Error parsing timestamp from '")
        && let Some((_, rest)) = said.split_once("' using format '")
        && let Some((format, _)) = rest.split_once('\'')
    {
        let pattern = format_pattern(format).unwrap_or_else(|| "...".to_owned());
        let function = if format.contains(['H', 'M', 'S']) {
            "to_timestamp"
        } else {
            "to_date"
        };
        said.push_str(&format!(
            "; to read only the values of that form, guard the call: `CASE WHEN col ~ '^{pattern}$' THEN {function}(col, '{format}') END`"
        ));
    }
    // `lifetime_value > (SELECT lifetime_value FROM ...)`: one value was meant.
    if said.contains("Scalar subquery returned more than one row") {
        said.push_str(
            ": a subquery compared with a value must give one value; take one (`(SELECT max(col) FROM ...)`), or test membership with `IN (SELECT ...)`",
        );
    }
    said
}

/// A query that ran out of its share of `engine.memory_limit_mib` (`limit_mib`), as users
/// read it. A join that holds one side in memory cannot spill it, so only a share that
/// holds the side helps: the message says how large a limit gives one.
pub(crate) fn memory_advice(message: String, limit_mib: u64) -> String {
    let Some(need) = held_side_need(&message) else {
        // DataFusion's advice names its own settings, which a pipeline file does not set.
        const ITS_ADVICE: &str = " Consider increasing the memory limit config: 'datafusion.runtime.memory_limit', or decreasing the config: 'datafusion.execution.sort_spill_reservation_bytes'.";
        let message = message.replace(ITS_ADVICE, "");
        return format!(
            "the query needs more memory than engine.memory_limit_mib ({limit_mib} MiB) allows; \
             raise it in the pipeline file. DataFusion said: {message}"
        );
    };
    let share = |mib: u64| Shares::of((mib as usize) << 20).query;
    let in_mib = |bytes: usize| bytes.div_ceil(1 << 20);
    // The smallest multiple of 32 MiB whose share holds the side with a quarter to spare
    // (what else the segment SQL holds meanwhile), within the largest limit allowed.
    let wanted = need + need / 4;
    let suggest = (1..=MAX_MEMORY_LIMIT_MIB / 32)
        .map(|k| k * 32)
        .find(|mib| share(*mib) >= wanted)
        .unwrap_or(MAX_MEMORY_LIMIT_MIB);
    format!(
        "a join in the segment's SQL holds one of its sides in memory, which it cannot spill to \
         disk, and that side needs at least {} MiB: more than the {} MiB the segment SQL gets of \
         engine.memory_limit_mib ({limit_mib} MiB; the export's own sorts get the rest). Set \
         `memory_limit_mib: {suggest}` under `engine:` in the pipeline file (the segment SQL \
         then gets {} MiB), or make that side smaller: DataFusion holds the side it judges the \
         smaller, so filter it, or select only the join's key, before the join",
        in_mib(need),
        in_mib(share(limit_mib)),
        in_mib(share(suggest)),
    )
}

/// The largest `engine.memory_limit_mib` a pipeline file may set.
const MAX_MEMORY_LIMIT_MIB: u64 = 1 << 20;

/// What a join that holds one side in memory had and asked DataFusion's memory pool for
/// when the pool refused it (`Failed to allocate additional 68.0 MB for HashJoinInput with
/// 64.7 MB already allocated ...`), in bytes. None for any other consumer (a sort spills
/// instead) or message.
fn held_side_need(message: &str) -> Option<usize> {
    const HOLDERS: [&str; 4] = [
        "HashJoinInput",
        "NestedLoopJoinLoad",
        "CrossJoinExec",
        "PiecewiseMergeJoinInput",
    ];
    let (_, rest) = message.split_once("Failed to allocate additional ")?;
    let (more, rest) = rest.split_once(" for ")?;
    let (consumer, rest) = rest.split_once(" with ")?;
    let (held, _) = rest.split_once(" already allocated")?;
    if !HOLDERS.iter().any(|h| consumer.starts_with(h)) {
        return None;
    }
    Some(pool_size(more)? + pool_size(held)?)
}

/// A size as DataFusion's memory pool writes one: `68.0 MB`, in units of 1024.
fn pool_size(text: &str) -> Option<usize> {
    let (value, unit) = text.split_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let scale: u64 = match unit {
        "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    Some((value * scale as f64).ceil() as usize)
}

/// A regular expression that the values a date format reads match: digits for the
/// numbers, the other characters as they are. None for a format with names (`%b`) or
/// other codes.
fn format_pattern(format: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => out.push_str(match chars.next()? {
                'Y' => "[0-9]{4}",
                'm' | 'd' | 'H' | 'M' | 'S' | 'y' => "[0-9]{2}",
                _ => return None,
            }),
            '\'' => return None,
            c if ".^$*+?()[]{}|\\".contains(c) => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// `... Error evaluating filter predicate: ArrowError(CastError("why"), Some(""))` (or
/// `ArrowError(DivideByZero, ...)`, `Execution("why")`), the Parquet reader's words for a
/// filter pushed into the scan, as `evaluating the filter failed: why`.
fn filter_failure(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("Error evaluating filter predicate: ")?;
    let inner = rest.strip_prefix("ArrowError(").unwrap_or(rest);
    let kind_len = inner
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(inner.len());
    let (kind, after) = inner.split_at(kind_len);
    let why = match after.strip_prefix("(\"") {
        Some(quoted) => quoted
            .rsplit_once("\"), Some(")
            .or_else(|| quoted.rsplit_once("\")"))
            .map_or(quoted, |(why, _)| why),
        None => match kind {
            "DivideByZero" => "division by zero",
            "" => return None,
            other => other,
        },
    };
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

    /// DataFusion's words when the 100M-row membership join ran out of a 128 MiB limit's
    /// share: the side needs 132.7 MiB; a quarter more fits the share of 224 MiB (168).
    #[test]
    fn a_join_out_of_memory_is_told_the_limit_that_holds_its_side() {
        let datafusion = "Resources exhausted: Additional allocation failed for HashJoinInput with top memory consumers (across reservations) as:\n  HashJoinInput#2(can spill: false) consumed 64.7 MB, peak 64.7 MB.\nError: Failed to allocate additional 68.0 MB for HashJoinInput with 64.7 MB already allocated for this reservation - 31.3 MB remain available for the total memory pool: fair(pool_size: 96.0 MB)";
        assert_eq!(
            memory_advice(datafusion.into(), 128),
            "a join in the segment's SQL holds one of its sides in memory, which it cannot spill to disk, and that side needs at least 133 MiB: more than the 96 MiB the segment SQL gets of engine.memory_limit_mib (128 MiB; the export's own sorts get the rest). Set `memory_limit_mib: 224` under `engine:` in the pipeline file (the segment SQL then gets 168 MiB), or make that side smaller: DataFusion holds the side it judges the smaller, so filter it, or select only the join's key, before the join"
        );
        // A partitioned join names its partition; below 128 MiB the sorts' 8 MiB floors
        // leave the segment SQL less than three quarters.
        let partitioned = "Resources exhausted: Failed to allocate additional 2.0 MB for HashJoinInput[1] with 6.5 MB already allocated for this reservation - 1.5 MB remain available for the total memory pool: fair(pool_size: 8.0 MB)";
        let said = memory_advice(partitioned.into(), 16);
        assert!(
            said.contains("needs at least 9 MiB: more than the 8 MiB the segment SQL gets of engine.memory_limit_mib (16 MiB;"),
            "{said}"
        );
        // At 32 MiB the floors still leave it 8 MiB; at 64 it gets 40.
        assert!(
            said.contains("`memory_limit_mib: 64` under `engine:` in the pipeline file (the segment SQL then gets 40 MiB)"),
            "{said}"
        );
        // A sort spills: a larger limit is the only advice, with DataFusion's words.
        let sort = "Resources exhausted: Failed to allocate additional 9.0 MB for ExternalSorterMerge[0] with 0.0 B already allocated for this reservation - 1.0 MB remain available for the total memory pool: fair(pool_size: 8.0 MB)";
        assert_eq!(
            memory_advice(sort.into(), 16),
            format!(
                "the query needs more memory than engine.memory_limit_mib (16 MiB) allows; raise it in the pipeline file. DataFusion said: {sort}"
            )
        );
        // A sort that cannot go on says so first, then DataFusion's advice on settings a
        // pipeline file does not have, which is left out.
        let said = memory_advice(
            format!(
                "Not enough memory to continue external sort. Consider increasing the memory limit config: 'datafusion.runtime.memory_limit', or decreasing the config: 'datafusion.execution.sort_spill_reservation_bytes'.\ncaused by\n{sort}"
            ),
            16,
        );
        assert_eq!(
            said,
            format!(
                "the query needs more memory than engine.memory_limit_mib (16 MiB) allows; raise it in the pipeline file. DataFusion said: Not enough memory to continue external sort.\ncaused by\n{sort}"
            )
        );
    }

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
        assert_eq!(
            failure_text(
                &"Parquet error: External: Compute error: Error evaluating filter predicate: ArrowError(DivideByZero, Some(\"\"))"
            ),
            "evaluating the filter failed: division by zero"
        );
        assert_eq!(
            failure_text(
                &"Parquet error: External: Compute error: Error evaluating filter predicate: Execution(\"Error parsing timestamp from '02134' using format '%d/%m/%Y': input contains invalid characters\")"
            ),
            "evaluating the filter failed: Error parsing timestamp from '<a value of 5 characters, not shown>' using format '%d/%m/%Y': input contains invalid characters; to read only the values of that form, guard the call: `CASE WHEN col ~ '^[0-9]{2}/[0-9]{2}/[0-9]{4}$' THEN to_date(col, '%d/%m/%Y') END`"
        );
        assert_eq!(
            format_pattern("%Y-%m-%d %H:%M").unwrap(),
            "[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}"
        );
        assert_eq!(
            format_pattern("%d.%m.%Y").unwrap(),
            "[0-9]{2}\\.[0-9]{2}\\.[0-9]{4}"
        );
        assert_eq!(format_pattern("%d %b %Y"), None);
        assert!(
            failure_text(&"Execution error: Error parsing timestamp from 'x' using format '%Y-%m-%d %H:%M': input is out of range")
                .ends_with("THEN to_timestamp(col, '%Y-%m-%d %H:%M') END`")
        );
        assert_eq!(
            failure_text(&"Execution error: Scalar subquery returned more than one row"),
            "Scalar subquery returned more than one row: a subquery compared with a value must give one value; take one (`(SELECT max(col) FROM ...)`), or test membership with `IN (SELECT ...)`"
        );
        let plain = "the query needs more memory than engine.memory_limit_mib allows";
        assert_eq!(hide_data_values(plain), plain);
    }
}
