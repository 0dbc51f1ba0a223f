//! The commands that open a pipeline: `validate`, `plan`, `run` and `check`.

use std::path::{Path, PathBuf};

use pipeline_engine::{Engine, RunOptions};
use pipeline_sendgrid::suppressions::SuppressionStage;
use pipeline_sink::dry_run::DryRunSink;
use pipeline_sink::preview::{PreviewSink, Sample};
use pipeline_spec::Pipeline;
use pipeline_sync::{ExportSync, SyncOptions, SyncedExport};

use crate::redact::progress;
use crate::{Exit, Failure, history, interrupt, local, open, output, remote};

pub(crate) async fn validate(file: &Path) -> Result<output::Validation, Failure> {
    let (pipeline, engine) = open(file).await?;
    engine.plan_exports(&[]).await?;
    let key_notes = pipeline
        .file
        .connections
        .iter()
        .map(|(name, c)| {
            let found =
                pipeline_spec::resolve_api_key(name, c, pipeline.key_base_dir(name), &|v| {
                    std::env::var(v).ok()
                });
            (name.clone(), found.err())
        })
        .collect();
    Ok(output::Validation {
        pipeline,
        key_notes,
    })
}

/// The pipeline and its engine with the exports' named lists resolved to ids: the engine
/// takes the ids too, so that every part sees the same ones.
async fn resolve_lists(
    mut pipeline: Pipeline,
    mut engine: Engine,
    only: &[String],
    local: Option<&local::LocalEmulator>,
    mode: remote::Resolve,
) -> Result<(Pipeline, Engine, Vec<remote::NamedList>), Failure> {
    if pipeline.file.exports.iter().all(|e| e.lists.is_empty()) {
        return Ok((pipeline, engine, Vec::new()));
    }
    // The SQL, mappings and orderings are checked before SendGrid is asked anything: a
    // mistake in the file is said first, and no list is created for a run it stops.
    engine.plan_exports(only).await?;
    let named = remote::resolve_named_lists(&mut pipeline, only, local, mode).await?;
    // A list named in one export and given by its id in another is the same list.
    if let Some((_, message)) = pipeline_spec::mirror_conflicts(&pipeline.file).first() {
        return Err(Failure {
            exit: Exit::Config,
            message: format!("{message} (one names the list, the other gives its id)"),
        });
    }
    engine.take_list_ids(&pipeline);
    Ok((pipeline, engine, named))
}

/// Says in an export's summary how its named lists were resolved.
fn note_named_lists(summary: &mut SyncedExport, named: &[remote::NamedList]) {
    let Some(sync) = summary.sync.as_mut() else {
        return;
    };
    for list in named.iter().filter(|l| l.export == summary.summary.export) {
        let (name, id) = (&list.name, &list.id);
        sync.notes.push(match list.outcome {
            remote::ListOutcome::ToBeCreated => {
                format!("list `{name}` does not exist yet: a run creates it (create_missing_lists)")
            }
            remote::ListOutcome::Found => format!("list `{name}` is {id} (found by name)"),
            remote::ListOutcome::Created => format!("list `{name}` is {id} (created by name)"),
        });
    }
}

/// What `pipeline plan` shows beside the counts.
pub(crate) struct Shown {
    pub(crate) rows: usize,
    pub(crate) show_emails: bool,
    pub(crate) suppressions: bool,
}

/// Puts what the suppression stage counted in an export's summary.
fn note_suppressions(summary: &mut SyncedExport, stage: Option<&SuppressionStage>) {
    if let (Some(sync), Some(stage)) = (summary.sync.as_mut(), stage) {
        sync.suppressed = Some(stage.counts());
        sync.suppressed_skipped = stage.skips();
    }
}

pub(crate) async fn plan(
    file: &Path,
    only: &[String],
    shown: Shown,
    options: &SyncOptions,
) -> Result<output::Plans, Failure> {
    folder_argument("--state-dir", options.state_root.as_deref())?;
    let (pipeline, engine) = open(file).await?;
    let (pipeline, engine, named) =
        resolve_lists(pipeline, engine, only, None, remote::Resolve::Preview).await?;
    let queries = engine.plan_exports(only).await?;
    let mut plans = Vec::new();
    let mut failures = Vec::new();
    for query in &queries {
        progress(&format!("Planning export {}…", query.export));
        let export = pipeline
            .export(&query.export)
            .expect("planned from the pipeline");
        let work = async {
            let sync = ExportSync::new(&pipeline, query, options)?;
            let mut suppression =
                remote::suppression_stage(&pipeline, export, None, shown.suppressions).await?;
            // The sample sees every contact, sent or not; the preview counts what would be
            // sent.
            let mut sample = Sample::new(shown.rows);
            let endpoint = remote::endpoint_of(&pipeline, &query.export);
            let mut tap = (&mut sample, suppression.as_mut());
            let mut summary = sync
                .preview(
                    &engine,
                    &endpoint,
                    Some(&mut tap),
                    &mut PreviewSink,
                    RunOptions::default(),
                )
                .await?;
            note_named_lists(&mut summary, &named);
            note_suppressions(&mut summary, suppression.as_ref());
            if shown.suppressions
                && export.mapping.email.is_none()
                && let Some(sync) = summary.sync.as_mut()
            {
                sync.notes.push(
                    "suppressions not checked: the export maps no email, and SendGrid's suppression lists hold addresses".into(),
                );
            }
            Ok::<_, Failure>(output::Plan {
                summary,
                sample: sample.batches(),
                mask_emails: !shown.show_emails,
            })
        };
        match work.await {
            Ok(plan) => plans.push(plan),
            // One export's failure does not hide the others' plans.
            Err(failure) => {
                failures.push((query.export.clone(), named_failure(failure, &query.export)))
            }
        }
    }
    Ok(output::Plans { plans, failures })
}

/// `failure` of export `export`, its message naming the export if it does not.
fn named_failure(mut failure: Failure, export: &str) -> Failure {
    if !failure.message.contains(&format!("export `{export}`")) {
        failure
            .message
            .insert_str(0, &format!("export `{export}`: "));
    }
    failure
}

/// Refuses, before anything runs, a folder argument that names a file (the run would
/// otherwise select its contacts and then fail to write beside them), or a store it
/// cannot be in.
pub(crate) fn folder_argument(flag: &str, dir: Option<&Path>) -> Result<(), Failure> {
    let Some(dir) = dir else {
        return Ok(());
    };
    // `--state-dir s3:/bucket` (one slash short), `s3://` (no bucket): said before any
    // work, as a mistake in the command. Only the state may live in a store: the other
    // folders were written on this machine under a name that looked like a URL.
    let refused = match pipeline_spec::place_of(&dir.to_string_lossy()) {
        Err(message) => Some(message),
        Ok(pipeline_spec::Place::Remote { .. }) if flag != "--state-dir" => Some(
            "its files are written on this machine only: give a local folder (a store's URL \
             is for the state: --state-dir, or the file's state_dir)"
                .to_owned(),
        ),
        // Not from a shell, which would have replaced them: a folder of that name.
        Ok(_) => pipeline_spec::unexpanded(dir),
    };
    if let Some(message) = refused {
        return Err(Failure {
            exit: Exit::Config,
            message: format!("{flag} {}: {message}", dir.display()),
        });
    }
    if dir.exists() && !dir.is_dir() {
        return Err(Failure {
            exit: Exit::Config,
            message: format!(
                "{flag} {} is a file, not a folder: give a folder (one that does not exist yet \
                 is created)",
                dir.display()
            ),
        });
    }
    Ok(())
}

pub(crate) async fn run(
    file: &Path,
    dry_run: Option<&Path>,
    only: &[String],
    rejects_dir: Option<PathBuf>,
    local_emulator: bool,
    mut options: SyncOptions,
) -> Result<output::RunOutcome, Failure> {
    folder_argument("--dry-run", dry_run)?;
    folder_argument("--rejects-dir", rejects_dir.as_deref())?;
    folder_argument("--state-dir", options.state_root.as_deref())?;
    let (pipeline, engine) = open(file).await?;
    let queries = engine.plan_exports(only).await?;
    let local = if local_emulator {
        Some(local::LocalEmulator::start(&pipeline, &queries).await?)
    } else {
        None
    };
    let mode = match dry_run {
        Some(_) => remote::Resolve::Preview,
        None => remote::Resolve::Run,
    };
    let (pipeline, engine, named) =
        resolve_lists(pipeline, engine, only, local.as_ref(), mode).await?;
    let queries = engine.plan_exports(only).await?;
    // Every export's key is read before the first export runs: a key missing for the
    // second export stops the run before the first sends anything.
    if dry_run.is_none() {
        for query in &queries {
            let export = pipeline
                .export(&query.export)
                .expect("planned from the pipeline");
            remote::client_for(&pipeline, &export.connection, local.as_ref())?;
        }
    }
    // The in-process emulator forgets everything when the run ends, so must its state.
    let _local_state = match &local {
        Some(_) => {
            let dir = tempfile::tempdir().map_err(|e| Failure {
                exit: Exit::RunFailed,
                message: format!("cannot create a temporary state folder: {e}"),
            })?;
            options.state_root = Some(dir.path().to_owned());
            Some(dir)
        }
        None => None,
    };
    let rejects_dir = rejects_dir
        .or_else(|| dry_run.map(Path::to_path_buf))
        .unwrap_or_else(|| pipeline.base_dir().join("rejects"));
    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    for query in &queries {
        let export = pipeline
            .export(&query.export)
            .expect("planned from the pipeline");
        progress(&format!("Running export {}…", query.export));
        tracing::info!(export = %query.export, "Selecting contacts");
        let run_options = RunOptions {
            rejects_dir: Some(rejects_dir.clone()),
            ..RunOptions::default()
        };
        let started = pipeline_sync::unix_now();
        let work = async {
            let sync = ExportSync::new(&pipeline, query, &options)?;
            // With skip_suppressed the dry run leaves out what the run would: it reads the
            // suppression lists too.
            let mut suppression =
                remote::suppression_stage(&pipeline, export, local.as_ref(), false).await?;
            let tap = suppression
                .as_mut()
                .map(|s| s as &mut dyn pipeline_sink::Stage);
            let mut summary = match dry_run {
                Some(dir) => {
                    let endpoint = remote::endpoint_of(&pipeline, &query.export);
                    let mut sink = DryRunSink::new(dir);
                    sync.preview(&engine, &endpoint, tap, &mut sink, run_options)
                        .await?
                }
                None => {
                    let client = remote::client_for(&pipeline, &export.connection, local.as_ref())?;
                    let concurrency = pipeline.file.connections[&export.connection].concurrency;
                    let sink = remote::sendgrid_sink(client.clone(), concurrency, export, query);
                    sync.run(&engine, &client, tap, sink, run_options).await?
                }
            };
            note_named_lists(&mut summary, &named);
            note_suppressions(&mut summary, suppression.as_ref());
            Ok(summary)
        };
        // Stopped by a signal, the export's work is dropped (its lock released, its
        // partial files removed) and the interruption goes into its history.
        let result: Result<SyncedExport, Failure> = tokio::select! {
            result = work => result,
            _ = interrupt::signalled() => {
                Err(interrupt::failure(dry_run.is_none() && local.is_none()))
            }
        };
        // Every real run leaves a line in the export's history, failed ones too. A stopped
        // export's line counts what its journal holds; an upload of it still finishing is
        // not journaled after that (the export ends here; the next export's journal,
        // opened after, takes records).
        if result.is_err() {
            pipeline_sync::close_journals();
        }
        if dry_run.is_none() {
            match options.state_of(&pipeline, &query.export) {
                Ok(state) => history::record(&state, started, &result).await,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot record the run in the export's history")
                }
            }
        }
        let mut failure = match result {
            Ok(summary) => {
                tracing::info!(
                    export = %summary.export,
                    contacts = summary.contacts,
                    sent = summary.sent,
                    rejected = summary.rejected,
                    duplicates = summary.duplicates,
                    "Export finished"
                );
                summaries.push(summary);
                continue;
            }
            Err(failure) => failure,
        };
        let stopped = matches!(failure.exit, Exit::Interrupted | Exit::Terminated);
        // Which export failed, when the message does not say (a signal stops the run).
        if !stopped {
            failure = named_failure(failure, &query.export);
        }
        tracing::error!(export = %query.export, "Export failed");
        failures.push((query.export.clone(), failure));
        // One export's failure does not stop the others (they share nothing but the
        // file); a signal stops the run.
        if stopped {
            break;
        }
    }
    let landed = local.map(|l| l.landed(&summaries));
    Ok(output::RunOutcome {
        summaries,
        failures,
        dry_run: dry_run.is_some(),
        landed,
    })
}

pub(crate) async fn check(
    file: &Path,
    local_emulator: bool,
) -> Result<Vec<output::Verdict>, Failure> {
    let (pipeline, engine) = open(file).await?;
    let queries = engine.plan_exports(&[]).await?;
    let local = if local_emulator {
        Some(local::LocalEmulator::start(&pipeline, &queries).await?)
    } else {
        None
    };
    let (mut verdicts, usable) = remote::check_connections(&pipeline, local.as_ref()).await;
    // Each export's list names resolve through its connection, once that passed; a name
    // that does not resolve is a failed check, not a stop. Check runs no query, so the
    // engine is not opened again with the resolved ids.
    let mut resolved = pipeline.clone();
    for export in &pipeline.file.exports {
        if export.lists.is_empty() || !usable.contains_key(&export.connection) {
            continue;
        }
        let outcome = remote::resolve_named_lists(
            &mut resolved,
            std::slice::from_ref(&export.name),
            local.as_ref(),
            remote::Resolve::Preview,
        )
        .await;
        let named = match outcome {
            Ok(named) => named,
            Err(f) => {
                let subject = format!("export {} lists by name", export.name);
                let prefix = format!("export `{}`: ", export.name);
                let message = f.message.strip_prefix(&prefix).unwrap_or(&f.message);
                verdicts.push(output::Verdict::fail(subject, message.to_owned()));
                continue;
            }
        };
        for list in &named {
            let subject = format!("export {} list `{}`", list.export, list.name);
            verdicts.push(match list.outcome {
                remote::ListOutcome::ToBeCreated => output::Verdict::pass(
                    subject,
                    "missing; the run creates it (create_missing_lists)".into(),
                ),
                _ => output::Verdict::pass(subject, format!("is {}", list.id)),
            });
        }
    }
    // A list named in one export and given by its id in another is the same list.
    for (i, message) in pipeline_spec::mirror_conflicts(&resolved.file) {
        let subject = format!("export {} mode", resolved.file.exports[i].name);
        verdicts.push(output::Verdict::fail(subject, message));
    }
    verdicts.extend(remote::check_exports(&resolved, &queries, &usable).await);
    Ok(verdicts)
}
