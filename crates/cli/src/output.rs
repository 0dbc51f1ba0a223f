//! What commands print: readable tables on a terminal, one JSON document with `--output json`.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use pipeline_engine::CapStatus;
use pipeline_sink::JobStatus;
use pipeline_spec::ExportMode;
use pipeline_spec::Pipeline;
use pipeline_sync::{RemovalOutcome, SyncedExport};
use serde_json::{Value, json};

use crate::text::{cell, indent, mask_emails, sample_json, sample_rows, table};
use crate::{Exit, Failure};

/// A command's successful result.
pub trait Outcome {
    /// The exit code the result calls for.
    fn exit(&self) -> Exit;
    /// The result as JSON, with the status and exit code.
    fn to_json(&self, exit: Exit) -> Value;
    /// What to say on stderr when the exit is not success.
    fn problem(&self, _exit: Exit) -> Option<String> {
        None
    }
}

/// `pipeline validate`'s result.
pub struct Validation {
    pub pipeline: Pipeline,
    /// Per connection, why its API key is not available now (a run will need it).
    pub key_notes: Vec<(String, Option<String>)>,
}

impl Outcome for Validation {
    fn exit(&self) -> Exit {
        Exit::Success
    }

    fn to_json(&self, exit: Exit) -> Value {
        let f = &self.pipeline.file;
        json!({
            "status": exit.status(),
            "exit_code": exit.code(),
            "file": self.pipeline.path,
            "connections": f.connections.keys().collect::<Vec<_>>(),
            "sources": f.sources.keys().collect::<Vec<_>>(),
            "segments": f.segments.keys().collect::<Vec<_>>(),
            "exports": f.exports.iter().map(|e| &e.name).collect::<Vec<_>>(),
            "notes": self.key_notes.iter().filter_map(|(_, n)| n.clone()).collect::<Vec<_>>(),
        })
    }
}

pub fn validation(v: &Validation) -> String {
    let f = &v.pipeline.file;
    let mut out = format!(
        "{} is valid: {} connection(s), {} source(s), {} segment(s), {} export(s)\n",
        v.pipeline.path.display(),
        f.connections.len(),
        f.sources.len(),
        f.segments.len(),
        f.exports.len()
    );
    for (_, note) in &v.key_notes {
        if let Some(note) = note {
            out.push_str(&format!("note: {note} (a dry run does not need it)\n"));
        }
    }
    out
}

/// One export's plan: its counts and the first contacts.
pub struct Plan {
    pub summary: SyncedExport,
    pub sample: Vec<RecordBatch>,
    /// Show sample emails masked (`a***@example.com`).
    pub mask_emails: bool,
}

/// `pipeline plan`'s result: the plans of the exports that could be planned, and the
/// failures of those that could not.
pub struct Plans {
    pub plans: Vec<Plan>,
    pub failures: Vec<(String, Failure)>,
}

impl Outcome for Plans {
    /// The first failed export's, else the gravest verdict.
    fn exit(&self) -> Exit {
        if let Some((_, failure)) = self.failures.first() {
            failure.exit
        } else {
            gravest(self.plans.iter().map(|p| &p.summary), &PLAN_VERDICTS)
        }
    }

    fn to_json(&self, exit: Exit) -> Value {
        let mut doc = json!({
            "status": exit.status(),
            "exit_code": exit.code(),
            "exports": self.plans.iter().map(|p| {
                let mut v = serde_json::to_value(&p.summary).unwrap_or(Value::Null);
                v["sample"] = Value::Array(sample_json(&p.sample, p.mask_emails));
                v
            }).collect::<Vec<_>>(),
        });
        add_failures(&mut doc, &self.failures);
        doc
    }

    fn problem(&self, _exit: Exit) -> Option<String> {
        let summaries = self.plans.iter().map(|p| &p.summary);
        let failed = self.failures.iter().map(|(_, f)| f.message.clone());
        let said: Vec<String> = failed
            .chain(verdict_problems(summaries, &PLAN_VERDICTS))
            .collect();
        (!said.is_empty()).then(|| said.join("\n"))
    }
}

/// The exports that failed, into a command's JSON document: each under `failed`, their
/// messages joined under `error`.
fn add_failures(doc: &mut Value, failures: &[(String, Failure)]) {
    if failures.is_empty() {
        return;
    }
    let messages: Vec<String> = failures
        .iter()
        .map(|(_, f)| crate::redact_message(&f.message))
        .collect();
    doc["error"] = json!(messages.join("\n"));
    doc["failed"] = failures
        .iter()
        .zip(&messages)
        .map(|((export, f), message)| {
            json!({
                "export": export,
                "status": f.exit.status(),
                "exit_code": f.exit.code(),
                "error": message,
            })
        })
        .collect();
}

pub fn plans(plans: &[Plan]) -> String {
    let mut out = String::new();
    for p in plans {
        out.push_str(&summary_table(&p.summary, Stage::Planned));
        let rows = sample_rows(&p.sample, p.mask_emails);
        if let Some((headers, _)) = rows.first() {
            out.push_str(&format!("  first {} contact(s):\n", rows.len()));
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|(_, r)| r.iter().map(|v| cell(v)).collect())
                .collect();
            out.push_str(&indent(&table(&headers, &body, &[]), "    "));
        }
        out.push('\n');
    }
    out
}

/// `pipeline run`'s result.
pub struct RunOutcome {
    /// The exports that ran to their end, in the file's order.
    pub summaries: Vec<SyncedExport>,
    /// The exports that failed: the others ran all the same (unless a signal stopped the
    /// run, which is then the last).
    pub failures: Vec<(String, Failure)>,
    /// The bodies went to files (`--dry-run`), not to SendGrid.
    pub dry_run: bool,
    /// With `--local-emulator`: the emails on each list afterwards.
    pub landed: Option<BTreeMap<String, Vec<String>>>,
}

/// The exits a run's summaries can choose, gravest first.
const VERDICTS: [Exit; 5] = [
    Exit::CapExceeded,
    Exit::NewContactsRefused,
    Exit::RunFailed,
    Exit::RemovalRefused,
    Exit::Rejects,
];

/// The exits a plan's summaries can choose, gravest first: the cap and the new-contact
/// guard (a plan sends nothing, so no import job, removal or reject verdict).
const PLAN_VERDICTS: [Exit; 2] = [Exit::CapExceeded, Exit::NewContactsRefused];

/// The exit code of a run with these exports' results, the gravest first.
pub fn run_exit(summaries: &[SyncedExport]) -> Exit {
    gravest(summaries, &VERDICTS)
}

/// The first of `verdicts` that some summary shows, else success.
fn gravest<'a>(
    summaries: impl IntoIterator<Item = &'a SyncedExport> + Clone,
    verdicts: &[Exit],
) -> Exit {
    verdicts
        .iter()
        .copied()
        .find(|&verdict| summaries.clone().into_iter().any(|s| shows(s, verdict)))
        .unwrap_or(Exit::Success)
}

/// Whether export `s`'s summary shows `verdict`.
fn shows(s: &SyncedExport, verdict: Exit) -> bool {
    match verdict {
        Exit::CapExceeded => s.cap.exceeded(),
        // The new-contact guard stopped (or, in a plan, would stop) the export.
        Exit::NewContactsRefused => s.sync.as_ref().is_some_and(|y| y.new_contacts_refused),
        Exit::RunFailed => !unfinished_jobs(s).is_empty(),
        Exit::RemovalRefused => s.sync.as_ref().is_some_and(|y| y.removal_refused()),
        Exit::Rejects => s.rejects_over_threshold(),
        _ => false,
    }
}

/// Import jobs that failed or had not ended at the timeout.
fn unfinished_jobs(s: &SyncedExport) -> Vec<String> {
    s.sink
        .iter()
        .flat_map(|r| &r.jobs)
        .filter(|j| matches!(j.status, JobStatus::Failed | JobStatus::Pending))
        .map(|j| format!("{} ({}, {} contacts)", j.job_id, j.status, j.requested))
        .collect()
}

impl Outcome for RunOutcome {
    /// A signal's, else the first failed export's, else the gravest of the summaries'.
    fn exit(&self) -> Exit {
        let stopped = self
            .failures
            .iter()
            .find(|(_, f)| matches!(f.exit, Exit::Interrupted | Exit::Terminated));
        match stopped.or(self.failures.first()) {
            Some((_, failure)) => failure.exit,
            None => run_exit(&self.summaries),
        }
    }

    fn to_json(&self, exit: Exit) -> Value {
        let mut doc = json!({
            "status": exit.status(),
            "exit_code": exit.code(),
            "exports": self.summaries,
        });
        add_failures(&mut doc, &self.failures);
        if let Some(landed) = &self.landed {
            doc["landed"] = json!(landed);
        }
        doc
    }

    fn problem(&self, exit: Exit) -> Option<String> {
        let failed = self.failures.iter().map(|(_, f)| f.message.clone());
        // The summaries' own problems, every one of them, whatever the exit chosen.
        let verdicts = verdict_problems(&self.summaries, &VERDICTS);
        let said: Vec<String> = failed.chain(verdicts).collect();
        (exit != Exit::Success && !said.is_empty()).then(|| said.join("\n"))
    }
}

/// Every problem the summaries show, gravest first, one line per export and problem;
/// `None` when they show none.
pub fn run_problems(summaries: &[SyncedExport]) -> Option<String> {
    let said = verdict_problems(summaries, &VERDICTS);
    (!said.is_empty()).then(|| said.join("\n"))
}

/// What the summaries say went wrong, for each of `verdicts` that some summary shows: one
/// line per export that shows it.
fn verdict_problems<'a>(
    summaries: impl IntoIterator<Item = &'a SyncedExport> + Clone,
    verdicts: &[Exit],
) -> Vec<String> {
    verdicts
        .iter()
        .filter_map(|&verdict| {
            let lines: Vec<String> = summaries
                .clone()
                .into_iter()
                .filter(|s| shows(s, verdict))
                .filter_map(|s| export_problem(s, verdict))
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}

/// What export `s` says went wrong when its summary shows `verdict`.
fn export_problem(s: &SyncedExport, verdict: Exit) -> Option<String> {
    Some(match verdict {
        Exit::CapExceeded => format!(
            "export `{}` has {} contacts after dedupe and validation, {} over its cap of {}; nothing was written or sent. \
             Narrow the segments, raise max_profiles, or set on_cap_exceeded: truncate",
            s.export, s.contacts, s.cap.over_by, s.cap.max_profiles
        ),
        Exit::RunFailed => format!(
            "export `{}`: import jobs did not complete: {}. Upserts are idempotent: rerun the export",
            s.export,
            unfinished_jobs(s).join(", ")
        ),
        Exit::NewContactsRefused => {
            let y = s.sync.as_ref()?;
            format!(
                "export `{}`: {} new contact(s), more than max_new_contacts ({}): nothing was sent; narrow the segments or raise max_new_contacts",
                s.export,
                y.counts.new,
                y.max_new_contacts.unwrap_or_default()
            )
        }
        Exit::RemovalRefused => {
            let y = s.sync.as_ref()?;
            format!(
                "export `{}`: mirror mode would take {} contact(s), {:.1}% of a list, off its lists; the limit is {:.1}% (max_removal_share). \
                 The changes were sent, nothing was removed. Check the segments and sources, then rerun with --allow-mass-removal if the removals are right",
                s.export,
                y.leavers,
                y.removal_share * 100.0,
                y.max_removal_share * 100.0
            )
        }
        Exit::Rejects => format!(
            "export `{}`: {} contact(s) rejected, {} allowed (allowed_rejects); reasons and rows are in {}",
            s.export,
            s.rejected,
            s.allowed_rejects,
            s.rejects_file
                .as_ref()
                .map_or("the rejects file".into(), |p| p.display().to_string())
        ),
        _ => return None,
    })
}

pub fn run(outcome: &RunOutcome) -> String {
    let mut out: String = outcome
        .summaries
        .iter()
        .map(|s| {
            let stage = if outcome.dry_run {
                Stage::Wrote
            } else {
                Stage::Sent
            };
            summary_table(s, stage) + "\n"
        })
        .collect();
    if let Some(landed) = &outcome.landed {
        for (list, emails) in landed {
            out.push_str(&format!(
                "list {list} now holds {} contact(s):\n",
                emails.len()
            ));
            for e in emails {
                out.push_str(&format!("  {}\n", mask_emails(e)));
            }
        }
    }
    out
}

/// One verdict of `pipeline check`.
pub struct Verdict {
    pub subject: String,
    pub ok: bool,
    pub detail: String,
}

impl Verdict {
    pub fn pass(subject: String, detail: String) -> Self {
        Self {
            subject,
            ok: true,
            detail,
        }
    }

    pub fn fail(subject: String, detail: String) -> Self {
        Self {
            subject,
            ok: false,
            detail,
        }
    }
}

impl Outcome for Vec<Verdict> {
    fn exit(&self) -> Exit {
        if self.iter().all(|v| v.ok) {
            Exit::Success
        } else {
            Exit::RunFailed
        }
    }

    fn to_json(&self, exit: Exit) -> Value {
        json!({
            "status": exit.status(),
            "exit_code": exit.code(),
            "checks": self.iter().map(|v| json!({"subject": v.subject, "ok": v.ok, "detail": v.detail})).collect::<Vec<_>>(),
        })
    }

    fn problem(&self, exit: Exit) -> Option<String> {
        (exit != Exit::Success)
            .then(|| format!("{} check(s) failed", self.iter().filter(|v| !v.ok).count()))
    }
}

pub fn checks(verdicts: &[Verdict]) -> String {
    verdicts
        .iter()
        .map(|v| {
            format!(
                "{} {}: {}\n",
                if v.ok { "ok  " } else { "FAIL" },
                v.subject,
                v.detail
            )
        })
        .collect()
}

/// How far a summary's export went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `plan`: nothing written or sent.
    Planned,
    /// `run --dry-run`: the bodies written to files.
    Wrote,
    /// `run`: the bodies sent to SendGrid.
    Sent,
}

fn summary_table(s: &SyncedExport, stage: Stage) -> String {
    let ran = stage != Stage::Planned;
    let mut out = format!("export {} → {} list(s)\n", s.export, s.list_ids.len());
    let mut rows: Vec<Vec<String>> = s
        .segments
        .iter()
        .map(|g| {
            vec![
                g.segment.clone(),
                g.rows.to_string(),
                g.rejected.to_string(),
                g.duplicates.to_string(),
                g.contacts.to_string(),
            ]
        })
        .collect();
    rows.push(vec![
        "total".into(),
        s.rows.to_string(),
        s.rejected.to_string(),
        s.duplicates.to_string(),
        s.contacts.to_string(),
    ]);
    out.push_str(&indent(
        &table(
            &["segment", "rows", "rejected", "duplicates", "contacts"],
            &rows,
            &[1, 2, 3, 4],
        ),
        "  ",
    ));
    if s.rejected > 0 {
        let reasons: Vec<String> = s
            .rejected_by_reason
            .iter()
            .map(|(r, n)| match r.as_str() {
                "invalid_email" if !s.invalid_emails.is_empty() => {
                    format!("{r} {n} ({})", most_common(&s.invalid_emails, 3))
                }
                _ => format!("{r} {n}"),
            })
            .collect();
        out.push_str(&format!("  rejected: {}", reasons.join(", ")));
        if let Some(file) = &s.rejects_file {
            out.push_str(&format!(" (rows in {})", file.display()));
        }
        out.push('\n');
    }
    if s.truncated_contacts > 0 {
        out.push_str(&format!(
            "  truncated: {} contact(s) had a field cut to SendGrid's length limit\n",
            s.truncated_contacts
        ));
    }
    let cap = &s.cap;
    out.push_str(&match cap.status {
        CapStatus::Within => format!("  cap: {} of {} (within)\n", s.contacts, cap.max_profiles),
        CapStatus::Truncated => format!(
            "  cap: {} over the cap of {}; kept the first {} by order_by, dropped {}\n",
            cap.over_by, cap.max_profiles, cap.max_profiles, cap.over_by
        ),
        CapStatus::Exceeded => format!(
            "  cap: EXCEEDED by {} ({} contacts, cap {}); nothing {}\n",
            cap.over_by,
            s.contacts,
            cap.max_profiles,
            if ran {
                "was written or sent"
            } else {
                "would be sent"
            }
        ),
    });
    if let Some(sync) = &s.sync {
        out.push_str(&sync_lines(sync, ran));
    }
    if !ran {
        if let Some(sink) = &s.sink {
            out.push_str(&format!(
                "  would send: {} contact(s) in {} request(s), {} bytes\n",
                sink.contacts, sink.requests, sink.bytes
            ));
        }
    } else if let Some(sink) = s.sink.as_ref().filter(|_| stage == Stage::Sent) {
        out.push_str(&sent_lines(sink));
    } else if let Some(sink) = &s.sink {
        let folder = sink
            .outputs
            .first()
            .and_then(|p| p.parent())
            .map_or(String::new(), |p| format!(" in {}", p.display()));
        out.push_str(&format!(
            "  wrote: {} contact(s) in {} request bod{} ({} bytes){folder}\n",
            sink.contacts,
            sink.requests,
            if sink.requests == 1 { "y" } else { "ies" },
            sink.bytes
        ));
    }
    out
}

/// The `shown` most common of `counts` (ties in name order) with their counts, and how
/// many other kinds there are (`... 3, and 2 more kinds`).
fn most_common(counts: &BTreeMap<String, u64>, shown: usize) -> String {
    let mut by_count: Vec<(&String, &u64)> = counts.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    let mut parts: Vec<String> = (by_count.iter().take(shown))
        .map(|(what, n)| format!("{what} {n}"))
        .collect();
    match by_count.len().saturating_sub(shown) {
        0 => {}
        1 => parts.push("and 1 more kind".into()),
        more => parts.push(format!("and {more} more kinds")),
    }
    parts.join(", ")
}

/// What a run sent to SendGrid and what its import jobs did.
fn sent_lines(sink: &pipeline_sink::SinkReport) -> String {
    if sink.requests == 0 {
        return "  sent: nothing\n".to_owned();
    }
    let sum = |f: fn(&pipeline_sink::JobReport) -> u64| sink.jobs.iter().map(f).sum::<u64>();
    let mut out = format!(
        "  sent: {} contact(s) in {} request(s), {} import job(s); {} retried, {} rate-limited\n",
        sink.contacts,
        sink.requests,
        sink.jobs.len(),
        sink.retries,
        sink.rate_limited
    );
    out.push_str(&format!(
        "  imported: {} requested, {} created, {} updated, {} errored\n",
        sum(|j| j.requested),
        sum(|j| j.created),
        sum(|j| j.updated),
        sum(|j| j.errored)
    ));
    for j in &sink.jobs {
        out.push_str(&format!("    job {}: {}\n", j.job_id, j.status));
    }
    out
}

/// The incremental and mirror lines of an export's summary.
fn sync_lines(y: &pipeline_sync::SyncReport, ran: bool) -> String {
    let mut out = format!(
        "  changes: {} new, {} changed, {} unchanged{}\n",
        y.counts.new,
        y.counts.changed,
        y.counts.unchanged,
        if y.full_refresh {
            " (full refresh: all sent)"
        } else if y.counts.unchanged > 0 {
            " (not sent)"
        } else {
            ""
        }
    );
    if let Some(max) = y.max_new_contacts {
        out.push_str(&format!(
            "  new contacts: {} not yet synced by this export (max_new_contacts {max}){}\n",
            y.counts.new,
            match (y.new_contacts_refused, ran) {
                (true, true) =>
                    ": REFUSED, nothing was sent; narrow the segments or raise max_new_contacts",
                (true, false) => ": a run would send nothing",
                _ => "",
            }
        ));
    }
    if let Some(suppressed) = &y.suppressed {
        let total: u64 = suppressed.values().sum();
        let by_list: Vec<String> = suppressed.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push_str(&match (total, y.suppressed_skipped) {
            (0, _) => "  suppressed: none of the selected contacts is on SendGrid's suppression lists\n".to_owned(),
            (n, true) => format!(
                "  suppressed: {n} selected contact(s) on SendGrid's suppression lists ({}): left out (skip_suppressed)\n",
                by_list.join(", ")
            ),
            (n, false) => format!(
                "  suppressed: {n} selected contact(s) on SendGrid's suppression lists ({}): SendGrid will not email them; skip_suppressed leaves them out\n",
                by_list.join(", ")
            ),
        });
    }
    if y.counts.still_refused > 0 {
        out.push_str(&format!(
            "  refused: {} contact(s) SendGrid refused for good earlier, unchanged since: {} (change their data, or --full-refresh)\n",
            y.counts.still_refused,
            if y.full_refresh { "sent again" } else { "not sent" }
        ));
    }
    if y.resumed_jobs > 0 {
        out.push_str(&format!(
            "  resumed: {} import job(s) of an interrupted run{}\n",
            y.resumed_jobs,
            if ran {
                format!(", {} contact(s) not sent again", y.resumed_contacts)
            } else {
                " to follow".into()
            }
        ));
    }
    if y.mode == ExportMode::Mirror {
        let share = y.removal_share * 100.0;
        out.push_str(&match y.removal {
            RemovalOutcome::Done => format!(
                "  mirror: {} leaver(s) taken off the lists ({} removed, {} unknown to SendGrid); no contact deleted\n",
                y.leavers, y.removed, y.not_found
            ),
            RemovalOutcome::Planned => format!(
                "  mirror: {} leaver(s) {} taken off the lists ({share:.1}% of a list)\n",
                y.leavers,
                if ran { "are" } else { "would be" }
            ),
            RemovalOutcome::Refused => format!(
                "  mirror: REFUSED to take {} leaver(s) off the lists: {share:.1}% of a list, over the {:.1}% limit (--allow-mass-removal)\n",
                y.leavers,
                y.max_removal_share * 100.0
            ),
            RemovalOutcome::Skipped => format!(
                "  mirror: {} leaver(s) kept on the lists this time\n",
                y.leavers
            ),
            RemovalOutcome::None => "  mirror: no leavers\n".into(),
        });
    }
    for note in &y.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}
