//! The run history: a record per real run, written when it ends, and `pipeline history`.

use pipeline_sync::{RunRecord, StateDir, SyncedExport};
use serde_json::{Value, json};

use crate::output::{Outcome, run_exit};
use crate::text::table;
use crate::{Exit, Failure};

/// Appends what the run of one export did (or why it failed) to its history. A history
/// that cannot be written is a warning: the run itself stands.
pub(crate) async fn record(state: &StateDir, started: i64, result: &Result<SyncedExport, Failure>) {
    if !state.is_in_store() && !state.dir.is_dir() {
        // The run failed before it had a state: nothing to add a line to.
        return;
    }
    let mut record = RunRecord {
        started_at: started,
        finished_at: pipeline_sync::unix_now(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    match result {
        Ok(summary) => {
            let exit = run_exit(std::slice::from_ref(summary));
            record.outcome = exit.status().to_owned();
            record.exit_code = exit.code();
            record.error = crate::output::run_problems(std::slice::from_ref(summary))
                .map(|problem| crate::redact_message(&problem));
            record.selected = summary.contacts;
            record.sent = summary.sent;
            record.rejected = summary.rejected;
            record.rejected_by_reason = summary.rejected_by_reason.clone();
            if let Some(sync) = &summary.sync {
                record.new = sync.counts.new;
                record.changed = sync.counts.changed;
                record.unchanged = sync.counts.unchanged;
                record.removed = sync.removed;
                record.state_contacts = sync.snapshot_contacts;
            }
            if let Some(sink) = &summary.sink {
                record.import_wait_secs = sink.import_wait_ms as f64 / 1000.0;
            }
            for job in summary.sink.iter().flat_map(|s| &s.jobs) {
                record.created += job.created;
                record.updated += job.updated;
                record.errored += job.errored;
                record.job_ids.push(job.job_id.clone());
            }
        }
        Err(failure) => {
            record.outcome = failure.exit.status().to_owned();
            record.exit_code = failure.exit.code();
            record.error = Some(crate::redact_message(&failure.message));
            // Stopped before its summary (interrupted, or failed while sending): what
            // SendGrid accepted from it is in the journal, for the next run to finish.
            match state.accepted_by_this_run().await {
                Ok(accepted) => (record.sent, record.job_ids) = accepted,
                Err(e) => tracing::warn!(error = %e, "Cannot count what the run sent"),
            }
        }
    }
    if let Err(e) = state.append_history(&record).await {
        tracing::warn!(error = %e, "Cannot record the run in the export's history");
    }
}

/// `pipeline history`: the last runs of each export.
pub struct History {
    pub exports: Vec<(String, Vec<RunRecord>)>,
}

impl Outcome for History {
    fn exit(&self) -> Exit {
        Exit::Success
    }

    fn to_json(&self, exit: Exit) -> Value {
        let exports: Vec<Value> = self
            .exports
            .iter()
            .map(|(name, runs)| json!({"export": name, "runs": runs}))
            .collect();
        json!({"status": exit.status(), "exit_code": exit.code(), "exports": exports})
    }
}

/// Reads the last `last` runs of the exports (all, or `only`).
pub(crate) async fn history(
    pipeline: &pipeline_spec::Pipeline,
    options: &pipeline_sync::SyncOptions,
    only: &[String],
    last: usize,
) -> Result<History, Failure> {
    if let Some(message) = pipeline.no_such_exports(only) {
        return Err(Failure {
            exit: Exit::Config,
            message,
        });
    }
    let mut exports = Vec::new();
    for export in &pipeline.file.exports {
        if !pipeline_spec::is_selected(only, &export.name) {
            continue;
        }
        let state = options.state_of(pipeline, &export.name)?;
        let runs = state.read_history().await?;
        let skip = runs.len().saturating_sub(last);
        exports.push((export.name.clone(), runs.into_iter().skip(skip).collect()));
    }
    Ok(History { exports })
}

/// The last `last` runs of the exports (all, or `only`) of the pipeline `file`, its state
/// under `state_dir` when given (as for `run`).
pub(crate) async fn of_file(
    file: &std::path::Path,
    state_dir: Option<std::path::PathBuf>,
    only: &[String],
    last: usize,
) -> Result<History, Failure> {
    crate::commands::folder_argument("--state-dir", state_dir.as_deref())?;
    if let Some(dir) = state_dir.as_deref().filter(|d| is_missing_folder(d)) {
        return Err(Failure {
            exit: Exit::Config,
            message: format!(
                "the state folder {} does not exist{} (--state-dir names the folder the \
                 runs kept their state in; without it, the file's state_dir, else .state \
                 beside the file)",
                dir.display(),
                pipeline_spec::near_miss(dir)
            ),
        });
    }
    let options = pipeline_sync::SyncOptions {
        state_root: state_dir,
        ..Default::default()
    };
    history(&crate::load(file)?, &options, only, last).await
}

/// A folder on this machine that is not there (a store's URL is left to the store).
fn is_missing_folder(dir: &std::path::Path) -> bool {
    !dir.to_string_lossy().contains("://") && !dir.exists()
}

/// The columns of a run, in the history's table and the report's.
pub(crate) const RUN_COLUMNS: [&str; 12] = [
    "finished (UTC)",
    "took",
    "outcome",
    "selected",
    "new",
    "changed",
    "sent",
    "created",
    "updated",
    "errored",
    "rejected",
    "removed",
];

/// Which of [`RUN_COLUMNS`] hold numbers (aligned right).
pub(crate) const RUN_NUMBERS: [usize; 10] = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// One run's cells under [`RUN_COLUMNS`].
pub(crate) fn run_cells(r: &RunRecord) -> Vec<String> {
    vec![
        utc(r.finished_at),
        format!("{}s", (r.finished_at - r.started_at).max(0)),
        r.outcome.clone(),
        r.selected.to_string(),
        r.new.to_string(),
        r.changed.to_string(),
        r.sent.to_string(),
        r.created.to_string(),
        r.updated.to_string(),
        r.errored.to_string(),
        r.rejected.to_string(),
        r.removed.to_string(),
    ]
}

/// Why a run of export `export` did not succeed, as its history keeps it: without the
/// export's name in front (the history is the export's), emails masked.
pub(crate) fn failure_of(export: &str, r: &RunRecord) -> Option<String> {
    let error = r.error.as_deref()?;
    let error = error
        .strip_prefix(&format!("export `{export}`: "))
        .unwrap_or(error);
    Some(crate::text::mask_emails(error))
}

/// The runs said under an export's table: the newest few (the JSON output has all).
const FAILURES_SHOWN: usize = 5;

/// The history as tables, one per export, oldest run first; then why the latest runs that
/// did not succeed did not.
pub(crate) fn render(h: &History) -> String {
    let mut out = String::new();
    for (name, runs) in &h.exports {
        out.push_str(&format!("export {name}: {} run(s)\n", runs.len()));
        if runs.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = runs.iter().map(run_cells).collect();
        out.push_str(&crate::text::indent(
            &table(&RUN_COLUMNS, &rows, &RUN_NUMBERS),
            "  ",
        ));
        let failed: Vec<(&RunRecord, String)> = runs
            .iter()
            .rev()
            .filter_map(|r| Some((r, failure_of(name, r)?)))
            .collect();
        if failed.is_empty() {
            continue;
        }
        out.push_str("  why runs did not succeed, newest first:\n");
        for (r, why) in failed.iter().take(FAILURES_SHOWN) {
            let why = why.replace('\n', "\n      ");
            out.push_str(&format!("    {}  {why}\n", utc(r.finished_at)));
        }
        if failed.len() > FAILURES_SHOWN {
            out.push_str(&format!(
                "    and {} more such run(s) (`--output json` has every run's error)\n",
                failed.len() - FAILURES_SHOWN
            ));
        }
    }
    out
}

/// Unix seconds as a UTC date and time.
pub(crate) fn utc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}
