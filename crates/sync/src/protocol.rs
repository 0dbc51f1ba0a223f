//! The sync protocol of one export, owned by [`ExportSync`]. A run, in order:
//!
//! 1. take the export's lock (before any read, so two runs never interleave);
//! 2. read the snapshot and the journal; a snapshot of another endpoint is set aside;
//! 3. follow the import jobs an interrupted run left in the journal and [`fold`] the
//!    finished ones into the snapshot;
//! 4. send only new and changed contacts (the [`Diff`] stage in front of the sink),
//!    journaling every accepted body;
//! 5. fold this run's finished jobs in, keeping unfinished ones in the journal;
//! 6. mirror mode: take leavers off the lists, within the guard, only after uploads that
//!    all finished cleanly; then save the snapshot.
//!
//! Plans and dry runs ([`ExportSync::preview`]) read the state and write nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pipeline_engine::{Engine, EngineError, ExportQuery, ExportSummary, RunOptions};
use pipeline_sendgrid::{SendgridSink, follow_jobs};
use pipeline_sink::preview::PreviewSink;
use pipeline_sink::{JobReport, JobStatus, Sink, SinkReject, Stage, Staged};
use pipeline_spec::{
    Classified, ErrorKind, Export, ExportMode, Pipeline, Place, check_storage, place_of,
};
use sendgrid_client::Client;

use crate::mirror::{Removals, remove_from_list};
use crate::{
    Diff, JournalBatch, Known, RemoteState, RemovalOutcome, Snapshot, SnapshotMeta, StateDir,
    StateError, SyncReport, SyncedExport, fold, read_journal, remember_refusals,
};

/// How a run treats the export's state.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Where the export's state folder is; `None`: the pipeline's `state_dir`.
    pub state_root: Option<PathBuf>,
    pub full_refresh: bool,
    pub allow_mass_removal: bool,
}

impl SyncOptions {
    /// The state folder of export `name`.
    pub fn state_of(&self, pipeline: &Pipeline, name: &str) -> Result<StateDir, StateError> {
        let dir = match &self.state_root {
            Some(root) => root.join(name),
            None => pipeline.state_dir(name),
        };
        let text = dir.to_string_lossy();
        let store_error = |message: String| StateError::Store {
            context: format!("the state folder {text}"),
            message,
        };
        match place_of(&text).map_err(store_error)? {
            Place::Local => Ok(StateDir::new(dir.clone())),
            Place::Remote { cloud, url } => {
                let settings = &pipeline.file.state_storage;
                if let Some((key, message)) = check_storage(&text, settings).into_iter().next() {
                    let at = key
                        .map_or_else(|| "state_storage".into(), |k| format!("state_storage.{k}"));
                    return Err(store_error(format!("{at} {message}")));
                }
                let store =
                    pipeline_engine::store::open(cloud, &url, settings).map_err(store_error)?;
                Ok(StateDir::in_store(
                    RemoteState::new(store, url)?,
                    std::time::Duration::from_secs(pipeline.file.state_lease_secs),
                ))
            }
        }
    }
}

/// Why a synced run stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// SendGrid failed while resuming an interrupted run or removing leavers.
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
}

impl Classified for SyncError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::State(e) => e.kind(),
            Self::Engine(e) => e.kind(),
            Self::Remote { kind, .. } => *kind,
        }
    }
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

/// One export's run with its state.
pub struct ExportSync<'a> {
    pipeline: &'a Pipeline,
    export: &'a Export,
    query: &'a ExportQuery,
    state: StateDir,
    options: &'a SyncOptions,
}

impl<'a> ExportSync<'a> {
    /// The sync of `query`'s export of `pipeline`.
    pub fn new(
        pipeline: &'a Pipeline,
        query: &'a ExportQuery,
        options: &'a SyncOptions,
    ) -> Result<Self, SyncError> {
        let export = pipeline.export(&query.export).ok_or_else(|| {
            EngineError::Internal(format!("export `{}` was planned but is gone", query.export))
        })?;
        let state = options.state_of(pipeline, &export.name)?;
        Ok(Self {
            pipeline,
            export,
            query,
            state,
            options,
        })
    }

    /// Reads the export's state. A snapshot of another SendGrid endpoint is set aside:
    /// its contacts say nothing about this account.
    async fn load(&self, endpoint: &str) -> Result<Loaded, SyncError> {
        self.state.pull().await?;
        let export = self.export;
        let mut report = SyncReport {
            mode: export.mode,
            state_dir: self.state.location(),
            full_refresh: self.options.full_refresh,
            max_removal_share: export.max_removal_share,
            ..Default::default()
        };
        let mut snapshot = Snapshot::load(&self.state.snapshot())?.unwrap_or_default();
        let mut in_flight = read_journal(&self.state.journal())?;
        let had_state = !snapshot.entries.is_empty() || !in_flight.is_empty();
        if had_state && !snapshot.meta.endpoint.is_empty() && snapshot.meta.endpoint != endpoint {
            report.notes.push(format!(
                "the state was written for {}, this run goes to {endpoint}: every contact is sent and the old state is replaced",
                snapshot.meta.endpoint
            ));
            snapshot = Snapshot::default();
            in_flight.clear();
        }
        let file = self
            .pipeline
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if had_state && !snapshot.meta.file.is_empty() && snapshot.meta.file != file {
            if self.pipeline.base_dir().join(&snapshot.meta.file).is_file() {
                return Err(StateError::Shared {
                    path: self.state.location(),
                    export: export.name.clone(),
                    owner: snapshot.meta.file,
                    stem: self
                        .pipeline
                        .path
                        .file_stem()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    this: file,
                }
                .into());
            }
            report.notes.push(format!(
                "the state was written by runs of {}, which is not beside {file}: taken over as a renamed pipeline file's state",
                snapshot.meta.file
            ));
        }
        // The state's contacts are keyed by the first field it was written with.
        let key = self.query.key.name();
        let state_key = snapshot.meta.fields.first().map(String::as_str);
        if had_state && state_key.is_some_and(|k| k != key) {
            report.notes.push(format!(
                "the state keys contacts by {}, this export now keys them by {key}: every contact is sent and the old state is replaced (contacts only in the old state are not taken off the lists)",
                state_key.unwrap_or_default()
            ));
            snapshot = Snapshot::default();
            in_flight.clear();
        }
        let fields: Vec<String> = self
            .query
            .fields
            .iter()
            .map(|f| f.qualified_name())
            .collect();
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
            file,
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

    /// What SendGrid holds or is importing, compared with this run's contacts.
    fn diff(&self, snapshot: &Snapshot, in_flight: &[JournalBatch]) -> Diff {
        Diff::new(
            Known::new(snapshot, in_flight),
            &self.export.list_ids,
            self.options.full_refresh,
        )
    }

    /// Runs the export through `tap` (which sees every contact), `diff`, then `sink`.
    /// Mirror mode keeps the emails of rejected rows: they are still members and must not
    /// be taken off the lists.
    async fn select_and_send(
        &self,
        engine: &Engine,
        tap: Option<&mut dyn Stage>,
        diff: &Diff,
        sink: &mut dyn Sink,
        run_options: RunOptions,
    ) -> Result<ExportSummary, SyncError> {
        let options = RunOptions {
            collect_rejected_emails: self.export.mode == ExportMode::Mirror,
            ..run_options
        };
        let mut diffed = Staged {
            stage: diff.clone(),
            sink,
        };
        let mut tapped = Staged {
            stage: tap,
            sink: &mut diffed,
        };
        Ok(engine.run_export(self.query, &mut tapped, &options).await?)
    }

    /// `pipeline plan` and `--dry-run`: the diff against the state through `sink`,
    /// nothing written to the state. `endpoint` is the base URL the connection sends to;
    /// `tap` sees every contact, sent or not (the plan's sample).
    pub async fn preview(
        &self,
        engine: &Engine,
        endpoint: &str,
        tap: Option<&mut dyn Stage>,
        sink: &mut dyn Sink,
        run_options: RunOptions,
    ) -> Result<SyncedExport, SyncError> {
        let Loaded {
            snapshot,
            in_flight,
            mut report,
            ..
        } = self.load(endpoint).await?;
        let diff = self.diff(&snapshot, &in_flight);
        let summary = self
            .select_and_send(engine, tap, &diff, sink, run_options)
            .await?;
        report.counts = diff.counts();
        report.guard_new_contacts(self.export.max_new_contacts);
        report.resumed_jobs = in_flight.len() as u64;
        report.snapshot_contacts = snapshot.entries.len() as u64;
        if self.export.mode == ExportMode::Mirror && !summary.cap.exceeded() {
            let removals = Removals::plan(&diff, &self.export.list_ids, &summary.rejected_emails);
            if !removals.guard(&mut report, self.options.allow_mass_removal)
                && !removals.leavers.is_empty()
            {
                report.removal = RemovalOutcome::Planned;
            }
        }
        Ok(SyncedExport {
            summary,
            sync: Some(report),
        })
    }

    /// A real run of the export through `sink` (whose client is `client`): resume, send
    /// the changes, fold, mirror. `tap` sees every selected contact before the diff and
    /// may leave some out (the suppression stage); the count for `max_new_contacts` is
    /// made without it.
    pub async fn run(
        &self,
        engine: &Engine,
        client: &Client,
        tap: Option<&mut dyn Stage>,
        sink: SendgridSink,
        run_options: RunOptions,
    ) -> Result<SyncedExport, SyncError> {
        let export = self.export;
        let state = &self.state;
        state.create()?;
        let lock = state.lock(&export.name).await?;
        let Loaded {
            mut snapshot,
            in_flight,
            mut report,
            meta_changed,
        } = self.load(client.base_url()).await?;
        if let Some(holder) = lock.recovered_from() {
            report.notes.push(format!(
                "recovered the lock of an interrupted run ({holder}); its accepted uploads are resumed"
            ));
        }

        // 1. Finish what an interrupted run started.
        let (statuses, resume_rejects) = self.resume(client, &in_flight, &mut report).await?;
        let still_in_flight = fold(&mut snapshot, in_flight, &statuses, &resume_rejects);
        if !statuses.is_empty() || meta_changed {
            state.save_snapshot(&snapshot).await?;
        }
        state.rewrite_journal(&still_in_flight).await?;

        // 2. With a limit on new contacts, count them first: over it, nothing is sent.
        if let Some(max) = export.max_new_contacts {
            let counting = self.diff(&snapshot, &still_in_flight);
            let mut counted = self
                .select_and_send(
                    engine,
                    None,
                    &counting,
                    &mut PreviewSink,
                    RunOptions::default(),
                )
                .await?;
            report.counts = counting.counts();
            if !counted.cap.exceeded() && report.guard_new_contacts(Some(max)) {
                tracing::warn!(export = %export.name, new = report.counts.new, max, "More new contacts than max_new_contacts: nothing sent");
                counted.sent = 0;
                counted.sink = None;
                report.snapshot_contacts = snapshot.entries.len() as u64;
                return Ok(SyncedExport {
                    summary: counted,
                    sync: Some(report),
                });
            }
        }

        // 3. Send what changed, journaling each accepted body.
        let diff = self.diff(&snapshot, &still_in_flight);
        let journal = Arc::new(state.journal_writer()?);
        let mut sink = sink
            .with_journal(journal)
            .with_earlier_rejects(resume_rejects.clone());
        let summary = self
            .select_and_send(engine, tap, &diff, &mut sink, run_options)
            .await?;
        report.counts = diff.counts();
        report.max_new_contacts = export.max_new_contacts;
        if summary.cap.exceeded() {
            report.snapshot_contacts = snapshot.entries.len() as u64;
            return Ok(SyncedExport {
                summary,
                sync: Some(report),
            });
        }

        // 4. Fold this run's accepted bodies in; keep the unfinished ones for the next run.
        let jobs = summary.sink.as_ref().map_or(&[][..], |s| &s.jobs[..]);
        let mut statuses = statuses;
        statuses.extend(jobs.iter().map(|j| (j.job_id.clone(), j.fold_status())));
        note_unread_errors(jobs, &mut report);
        let mut rejects = resume_rejects;
        rejects.extend(summary.sink.iter().flat_map(|s| s.rejects.iter().cloned()));
        let journaled = read_journal(&state.journal())?;
        let unfinished = fold(&mut snapshot, journaled, &statuses, &rejects);
        remember_refusals(&mut snapshot, &rejects, &export.list_ids);
        for email in diff.unseen_refused() {
            snapshot.entries.remove(&email);
        }
        state.save_snapshot(&snapshot).await?;
        state.rewrite_journal(&unfinished).await?;
        tracing::debug!(
            contacts = snapshot.entries.len(),
            unfinished = unfinished.len(),
            "Saved the state"
        );

        // 5. Mirror: take the leavers off the lists, if the upload finished cleanly.
        if export.mode == ExportMode::Mirror {
            let clean = unfinished.is_empty() && jobs.iter().all(|j| j.status.imported());
            let removals = Removals::plan(&diff, &export.list_ids, &summary.rejected_emails);
            self.mirror(client, &removals, clean, &mut snapshot, &mut report)
                .await?;
        }
        report.snapshot_contacts = snapshot.entries.len() as u64;
        drop(lock);
        Ok(SyncedExport {
            summary,
            sync: Some(report),
        })
    }

    /// Follows the jobs of the bodies an interrupted run left in the journal; returns
    /// their statuses and the contacts their errors files name.
    async fn resume(
        &self,
        client: &Client,
        in_flight: &[JournalBatch],
        report: &mut SyncReport,
    ) -> Result<(HashMap<String, JobStatus>, Vec<SinkReject>), SyncError> {
        if in_flight.is_empty() {
            return Ok((HashMap::new(), Vec::new()));
        }
        let export = &self.export.name;
        let mut resumed: Vec<JobReport> = in_flight
            .iter()
            .map(|b| JobReport {
                job_id: b.job_id.clone(),
                status: JobStatus::Accepted,
                requested: b.contacts.len() as u64,
                resumed: true,
                ..Default::default()
            })
            .collect();
        tracing::info!(%export, jobs = resumed.len(), "Resuming the import jobs of an interrupted run");
        let timeout = Duration::from_secs(self.export.import_timeout_secs);
        let rejects = follow_jobs(client, &mut resumed, timeout, self.query.key.name())
            .await
            .map_err(|e| SyncError::Remote {
                kind: e.kind(),
                message: format!("export `{export}`: resuming an interrupted run: {e}"),
            })?;
        report.resumed_jobs = resumed.len() as u64;
        report.resumed_contacts = in_flight.iter().map(|b| b.contacts.len() as u64).sum();
        note_unread_errors(&resumed, report);
        let statuses = resumed
            .into_iter()
            .map(|j| (j.job_id.clone(), j.fold_status()))
            .collect();
        Ok((statuses, rejects))
    }

    /// Takes `removals` off the lists unless the guard refuses or the uploads did not
    /// all finish (`clean`). The snapshot forgets the leavers only once every list is done,
    /// so a failed removal is retried by the next run.
    async fn mirror(
        &self,
        client: &Client,
        removals: &Removals,
        clean: bool,
        snapshot: &mut Snapshot,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let refused = removals.guard(report, self.options.allow_mass_removal);
        if refused || removals.leavers.is_empty() {
            return Ok(());
        }
        if !clean {
            report.removal = RemovalOutcome::Skipped;
            report
                .notes
                .push("leavers stay on the lists until a run whose uploads all finish".into());
            return Ok(());
        }
        tracing::trace!(
            target: "pipeline::progress",
            phase = "removing",
            removed = 0u64,
            leavers = removals.leavers.len() as u64
        );
        for (list, emails) in &removals.by_list {
            let key = self.query.key;
            let removal = remove_from_list(client, list, key, emails).await.map_err(|e| {
                let e = pipeline_sendgrid::sink_error(e);
                SyncError::Remote {
                    kind: e.kind(),
                    message: format!(
                        "export `{}`: taking leavers off list {list}: {e}. Rerun to finish; nothing is deleted",
                        self.export.name
                    ),
                }
            })?;
            report.removed += removal.removed;
            report.not_found += removal.not_found;
            tracing::trace!(
                target: "pipeline::progress",
                phase = "removing",
                removed = report.removed + report.not_found,
                leavers = removals.leavers.len() as u64
            );
        }
        for email in &removals.leavers {
            snapshot.entries.remove(email);
        }
        self.state.save_snapshot(snapshot).await?;
        report.removal = RemovalOutcome::Done;
        Ok(())
    }
}

/// Says, for each job whose errors file could not be read, why its contacts are not
/// marked synced.
fn note_unread_errors(jobs: &[JobReport], report: &mut SyncReport) {
    for job in jobs {
        if let Some(why) = &job.errors_unread {
            report.notes.push(format!(
                "import job {} ({} contacts, {} errored): {why}; none of its contacts are marked synced, so the next run sends them again",
                job.job_id, job.requested, job.errored
            ));
        }
    }
}

#[cfg(test)]
mod tests;
