//! Incremental runs, mirror mode and resume around one export's run.
//!
//! A run, in order: take the export's lock; read the snapshot and the journal; follow the
//! import jobs an interrupted run left in the journal and fold the finished ones into the
//! snapshot; send only new and changed contacts, journaling every accepted body; follow
//! the jobs; fold them in; take leavers off the lists (mirror mode, within the guard);
//! save the snapshot. Plans and dry runs read the state and write nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pipeline_engine::{Engine, ExportQuery, ExportSummary, RunOptions};
use pipeline_sink::encoder::ContactFilter;
use pipeline_sink::sendgrid::{follow_jobs, remove_from_list};
use pipeline_sink::{JobReport, Sink, SinkReject};
use pipeline_spec::{Export, ExportMode, Pipeline};
use pipeline_state::{
    Diff, Entry, JournalBatch, JournalWriter, Known, RunLock, Snapshot, SnapshotMeta, StateDir,
    StateError, SyncReport, list_key, read_journal, rewrite_journal, unix_now,
};
use sendgrid_client::Client;

use crate::{Exit, Failure};

impl From<StateError> for Failure {
    fn from(e: StateError) -> Self {
        let exit = match e {
            StateError::Busy { .. } => Exit::Busy,
            StateError::Corrupt { .. } => Exit::Config,
            StateError::Io { .. } => Exit::RunFailed,
        };
        Self {
            exit,
            message: e.to_string(),
        }
    }
}

/// How a run treats the export's state.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Where the export's state folder is; `None`: the pipeline's `state_dir`.
    pub state_root: Option<PathBuf>,
    pub full_refresh: bool,
    pub allow_mass_removal: bool,
}

/// The export's state as read at the start of a plan, dry run or run.
struct Loaded {
    snapshot: Snapshot,
    /// Accepted bodies not yet folded into the snapshot.
    in_flight: Vec<JournalBatch>,
    report: SyncReport,
    /// The snapshot's endpoint or fields differ from this run's: it must be rewritten.
    meta_changed: bool,
}

fn mode_name(mode: ExportMode) -> &'static str {
    match mode {
        ExportMode::Upsert => "upsert",
        ExportMode::Mirror => "mirror",
    }
}

/// Reads the export's state. A snapshot of another SendGrid endpoint is set aside: its
/// contacts say nothing about this account.
fn load(
    state: StateDir,
    export: &Export,
    query: &ExportQuery,
    endpoint: &str,
    options: &SyncOptions,
) -> Result<Loaded, Failure> {
    let mut report = SyncReport {
        mode: mode_name(export.mode),
        state_dir: state.dir.clone(),
        full_refresh: options.full_refresh,
        removal: "none",
        max_removal_share: export.max_removal_share,
        ..Default::default()
    };
    let mut snapshot = Snapshot::load(&state.snapshot())?.unwrap_or_default();
    let mut in_flight = read_journal(&state.journal())?;
    let had_state = !snapshot.entries.is_empty() || !in_flight.is_empty();
    if had_state && !snapshot.meta.endpoint.is_empty() && snapshot.meta.endpoint != endpoint {
        report.notes.push(format!(
            "the state was written for {}, this run goes to {endpoint}: every contact is sent and the old state is replaced",
            snapshot.meta.endpoint
        ));
        snapshot = Snapshot::default();
        in_flight.clear();
    }
    let fields: Vec<String> = query.fields.iter().map(|f| f.qualified_name()).collect();
    let dropped: Vec<&str> = snapshot
        .meta
        .fields
        .iter()
        .filter(|f| !fields.contains(f))
        .map(String::as_str)
        .collect();
    if !dropped.is_empty() {
        report.notes.push(format!(
            "field(s) no longer mapped: {}; SendGrid keeps the values it has for them",
            dropped.join(", ")
        ));
    }
    let meta = SnapshotMeta {
        endpoint: endpoint.to_owned(),
        fields,
    };
    let meta_changed = snapshot.meta != meta;
    snapshot.meta = meta;
    Ok(Loaded {
        snapshot,
        in_flight,
        report,
        meta_changed,
    })
}

/// The export's state folder.
fn state_dir(pipeline: &Pipeline, export: &Export, options: &SyncOptions) -> StateDir {
    StateDir::new(match &options.state_root {
        Some(root) => root.join(&export.name),
        None => pipeline.state_dir(&export.name),
    })
}

/// What SendGrid holds or is importing, compared with this run's contacts.
fn diff_for(
    snapshot: &Snapshot,
    in_flight: &[JournalBatch],
    export: &Export,
    options: &SyncOptions,
) -> Diff {
    Diff::new(
        Known::new(snapshot, in_flight),
        &export.list_ids,
        options.full_refresh,
    )
}

/// Runs the export through `sink`. Mirror mode keeps the emails of rejected rows: they
/// are still members and must not be taken off the lists.
async fn run_through(
    engine: &Engine,
    export: &Export,
    query: &ExportQuery,
    sink: &mut dyn Sink,
    run_options: RunOptions,
) -> Result<ExportSummary, Failure> {
    let options = RunOptions {
        collect_rejected_emails: export.mode == ExportMode::Mirror,
        ..run_options
    };
    Ok(engine.run_export(query, sink, &options).await?)
}

/// Leavers by list, the guard's verdict, and the largest share.
struct Removals {
    by_list: BTreeMap<String, Vec<String>>,
    leavers: Vec<String>,
    share: f64,
}

fn plan_removals(diff: &Diff, export: &Export, summary: &ExportSummary) -> Removals {
    let protected: HashSet<&str> = summary.rejected_emails.iter().map(String::as_str).collect();
    let leavers: Vec<(String, Arc<str>)> = diff
        .leavers()
        .into_iter()
        .filter(|(email, _)| !protected.contains(email.as_str()))
        .collect();
    let mut by_list: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut share: f64 = 0.0;
    for list in &export.list_ids {
        let emails: Vec<String> = leavers
            .iter()
            .filter(|(_, lists)| lists.split(',').any(|l| l == list))
            .map(|(e, _)| e.clone())
            .collect();
        let on_list = diff.known_on_list(list);
        if on_list > 0 {
            share = share.max(emails.len() as f64 / on_list as f64);
        }
        if !emails.is_empty() {
            by_list.insert(list.clone(), emails);
        }
    }
    Removals {
        by_list,
        leavers: leavers.into_iter().map(|(e, _)| e).collect(),
        share,
    }
}

fn note_removals(report: &mut SyncReport, removals: &Removals, allow: bool) -> bool {
    report.leavers = removals.leavers.len() as u64;
    report.removal_share = (removals.share * 10_000.0).round() / 10_000.0;
    let refused = removals.share > report.max_removal_share && !allow;
    if refused {
        report.removal = "refused";
    }
    refused
}

/// `pipeline plan` and `--dry-run`: the diff against the state, nothing written to it.
/// `make_sink` gets the incremental filter; the sink comes back with the summary.
pub async fn preview<S: Sink>(
    engine: &Engine,
    pipeline: &Pipeline,
    query: &ExportQuery,
    make_sink: impl FnOnce(Box<dyn ContactFilter>) -> S,
    run_options: RunOptions,
    options: &SyncOptions,
) -> Result<(ExportSummary, S), Failure> {
    let export = pipeline.export(&query.export).expect("planned");
    let endpoint = endpoint_of(pipeline, export);
    let state = state_dir(pipeline, export, options);
    let Loaded {
        snapshot,
        in_flight,
        mut report,
        ..
    } = load(state, export, query, &endpoint, options)?;
    let diff = diff_for(&snapshot, &in_flight, export, options);
    let mut sink = make_sink(diff.filter());
    let mut summary = run_through(engine, export, query, &mut sink, run_options).await?;
    report.counts = diff.counts();
    report.resumed_jobs = in_flight.len() as u64;
    report.snapshot_contacts = snapshot.entries.len() as u64;
    if export.mode == ExportMode::Mirror && !summary.cap.exceeded() {
        let removals = plan_removals(&diff, export, &summary);
        if !note_removals(&mut report, &removals, options.allow_mass_removal)
            && !removals.leavers.is_empty()
        {
            report.removal = "planned";
        }
    }
    summary.sync = Some(report);
    Ok((summary, sink))
}

/// The base URL the export's connection sends to.
fn endpoint_of(pipeline: &Pipeline, export: &Export) -> String {
    let connection = &pipeline.file.connections[&export.connection];
    sendgrid_client::base_url_for(connection.endpoint.as_deref().unwrap_or("global"))
}

/// A real run of one export with its state: resume, send the changes, fold, mirror.
pub async fn run(
    engine: &Engine,
    pipeline: &Pipeline,
    query: &ExportQuery,
    client: Client,
    run_options: RunOptions,
    options: &SyncOptions,
) -> Result<ExportSummary, Failure> {
    let export = pipeline.export(&query.export).expect("planned");
    let endpoint = client.base_url().to_owned();
    let state = state_dir(pipeline, export, options);
    state.create()?;
    // The lock comes before any read, so two runs never interleave.
    let lock = RunLock::acquire(&state.lock(), &export.name)?;
    let Loaded {
        mut snapshot,
        in_flight,
        mut report,
        meta_changed,
    } = load(state.clone(), export, query, &endpoint, options)?;
    if let Some(holder) = &lock.recovered_from {
        report.notes.push(format!(
            "recovered the lock of an interrupted run ({holder}); its accepted uploads are resumed"
        ));
    }
    let timeout = Duration::from_secs(export.import_timeout_secs);

    // 1. Finish what an interrupted run started.
    let mut resumed: Vec<JobReport> = in_flight
        .iter()
        .map(|b| JobReport {
            job_id: b.job_id.clone(),
            status: "accepted".into(),
            requested: b.contacts.len() as u64,
            resumed: true,
            ..Default::default()
        })
        .collect();
    let mut resume_rejects = Vec::new();
    if !resumed.is_empty() {
        tracing::info!(export = %export.name, jobs = resumed.len(), "Resuming the import jobs of an interrupted run");
        resume_rejects = follow_jobs(&client, &mut resumed, timeout)
            .await
            .map_err(|e| Failure {
                exit: Exit::RunFailed,
                message: format!("export `{}`: resuming an interrupted run: {e}", export.name),
            })?;
        report.resumed_jobs = resumed.len() as u64;
        report.resumed_contacts = in_flight.iter().map(|b| b.contacts.len() as u64).sum();
    }
    let statuses: HashMap<String, String> = resumed
        .iter()
        .map(|j| (j.job_id.clone(), j.status.clone()))
        .collect();
    let still_in_flight = fold(&mut snapshot, in_flight, &statuses, &resume_rejects);
    if !resumed.is_empty() || meta_changed {
        snapshot.save(&state.snapshot())?;
    }
    rewrite_journal(&state.journal(), &still_in_flight)?;

    // 2. Send what changed, journaling each accepted body.
    let diff = diff_for(&snapshot, &still_in_flight, export, options);
    let journal = Arc::new(JournalWriter::open(&state.journal())?);
    let concurrency = pipeline.file.connections[&export.connection].concurrency;
    let mut sink = crate::remote::sendgrid_sink(client.clone(), concurrency, export, query)
        .with_filter(diff.filter())
        .with_journal(journal);
    let mut summary = run_through(engine, export, query, &mut sink, run_options).await?;
    report.counts = diff.counts();
    if summary.cap.exceeded() {
        report.snapshot_contacts = snapshot.entries.len() as u64;
        summary.sync = Some(report);
        return Ok(summary);
    }

    // 3. Fold this run's accepted bodies in; keep the unfinished ones for the next run.
    let sink_report = summary
        .sink
        .as_ref()
        .expect("a finished run has a sink report");
    let mut statuses = statuses;
    for j in &sink_report.jobs {
        statuses.insert(j.job_id.clone(), j.status.clone());
    }
    let mut rejects = resume_rejects;
    rejects.extend(sink_report.rejects.iter().cloned());
    let journaled = read_journal(&state.journal())?;
    let unfinished = fold(&mut snapshot, journaled, &statuses, &rejects);
    snapshot.save(&state.snapshot())?;
    rewrite_journal(&state.journal(), &unfinished)?;
    tracing::debug!(
        contacts = snapshot.entries.len(),
        unfinished = unfinished.len(),
        "Saved the state"
    );

    // 4. Mirror: take the leavers off the lists, if the upload finished cleanly.
    if export.mode == ExportMode::Mirror {
        let removals = plan_removals(&diff, export, &summary);
        let refused = note_removals(&mut report, &removals, options.allow_mass_removal);
        let clean = unfinished.is_empty()
            && sink_report
                .jobs
                .iter()
                .all(|j| matches!(j.status.as_str(), "completed" | "errored"));
        let remove = !refused && !removals.leavers.is_empty();
        if remove && !clean {
            report.removal = "skipped";
            report
                .notes
                .push("leavers stay on the lists until a run whose uploads all finish".into());
        } else if remove {
            for (list, emails) in &removals.by_list {
                let removal = remove_from_list(&client, list, emails)
                    .await
                    .map_err(|e| Failure {
                        exit: Exit::RunFailed,
                        message: format!(
                            "export `{}`: taking leavers off list {list}: {e}. Rerun to finish; nothing is deleted",
                            export.name
                        ),
                    })?;
                report.removed += removal.removed;
                report.not_found += removal.not_found;
            }
            for email in &removals.leavers {
                snapshot.entries.remove(email);
            }
            snapshot.save(&state.snapshot())?;
            report.removal = "done";
        }
    }
    report.snapshot_contacts = snapshot.entries.len() as u64;
    summary.sync = Some(report);
    drop(lock);
    Ok(summary)
}

/// Folds accepted bodies whose jobs finished into the snapshot (minus the contacts the
/// job's errors name); drops those whose jobs failed (they are sent again); returns the
/// ones still running.
fn fold(
    snapshot: &mut Snapshot,
    batches: Vec<JournalBatch>,
    statuses: &HashMap<String, String>,
    rejects: &[SinkReject],
) -> Vec<JournalBatch> {
    let errored: HashSet<(&str, &str)> = rejects
        .iter()
        .filter_map(|r| Some((r.job_id.as_deref()?, r.email.as_str())))
        .collect();
    let now = unix_now();
    let mut unfinished = Vec::new();
    for batch in batches {
        match statuses.get(&batch.job_id).map(String::as_str) {
            Some("completed" | "errored") => {
                let lists = list_key(&batch.list_ids);
                snapshot.entries.reserve(batch.contacts.len());
                for (email, hash) in batch.contacts {
                    if !errored.is_empty()
                        && errored.contains(&(batch.job_id.as_str(), email.as_str()))
                    {
                        continue;
                    }
                    snapshot.entries.insert(
                        email,
                        Entry {
                            hash: hash.0,
                            lists: lists.clone(),
                            synced_at: now,
                        },
                    );
                }
            }
            Some("failed") => {}
            _ => unfinished.push(batch),
        }
    }
    unfinished
}
