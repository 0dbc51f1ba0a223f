//! Running an export: stream the members once, count them, send rejected rows to the
//! rejects file and valid rows to a sort, apply the profile cap, and hand each email's
//! first contact to a sink in the export's order.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use arrow::compute::{cast, filter_record_batch, not};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use futures::StreamExt;
use pipeline_sink::{ExportTarget, Sink};
use pipeline_spec::OnCapExceeded;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Engine;
use crate::counts::Counts;
use crate::cut::Cut;
use crate::error::EngineError;
use crate::plan::{ExportQuery, META_COLUMNS, meta};
use crate::rejects::{Reject, RejectsWriter};
use crate::rules::RejectReason;
use crate::select::{ContactCount, EmailSet, SortInput, export_order, rejects_columns};
use crate::summary::{CapVerdict, ExportSummary};
use crate::turns::Turns;

/// What a selection keeps and writes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Folder for the rejects file (`<export>.rejects.jsonl`); `None` writes no file.
    pub rejects_dir: Option<PathBuf>,
    /// Keep the normalised emails of rejected rows (mirror mode must not remove a member
    /// only because this run could not send it).
    pub collect_rejected_emails: bool,
}

/// An export's members, streamed once: counted, rejects on their way to the file, and the
/// valid rows in a sort. The contacts come out of [`Scanned::emit`].
struct Scanned {
    counts: Counts,
    /// Distinct emails of the valid rows (the contacts before the cap).
    total: u64,
    /// The valid rows in the export's order.
    contacts: mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
    /// The columns of the sorted valid rows that fill the SendGrid fields, with their names.
    fields: Vec<(usize, String)>,
    truncated_at: usize,
    rejects: Option<JoinHandle<Result<RejectsWriter, EngineError>>>,
}

/// The query's columns that valid rows keep: all but the rejects file's.
fn valid_columns(schema: &Schema) -> Vec<usize> {
    (0..schema.fields().len())
        .filter(|i| ![meta::KEY, meta::RAW_EMAIL, meta::REASON, meta::DETAIL].contains(i))
        .collect()
}

/// What to do about a failure on the data that the message names well enough to say:
/// a whole number too large for a signed 64-bit one (an unsigned column past
/// 9,223,372,036,854,775,807) cannot be sent as a whole number.
fn what_to_do(message: &str) -> &'static str {
    if message.contains("Can't cast value") && message.contains("to type Int64") {
        "; a number this large cannot be sent as a whole number: map `CAST(... AS DOUBLE)` to \
         send it as a number (exact up to 2^53), or `CAST(... AS VARCHAR)` into a Text field"
    } else if message.contains("Encountered non UTF-8 data") {
        "; a value of a byte column that its source reads as text (`binary_as_string: true`) \
         is not UTF-8: convert the column to UTF-8 where the table is written (text kept in \
         Latin-1 or another older encoding is the usual cause), or leave it out of the \
         segment's columns and the mapping"
    } else {
        ""
    }
}

impl Engine {
    /// Streams the export's members once: counts rows and rejects per segment, writes the
    /// rejects (when `options` asks), and sorts the valid rows by the export's order.
    /// Memory: the query's own, the distinct emails, and the sorts' share of the pool.
    async fn scan(
        &self,
        query: &ExportQuery,
        options: &RunOptions,
    ) -> Result<Scanned, EngineError> {
        let exec = |e: &dyn std::fmt::Display| self.execution_error(query, e);
        // The query's own failures: on a cluster, the cluster's.
        let select = |e: &dyn std::fmt::Display| self.select_error(query, e);
        let on_cluster = self.pipeline().file.engine.cluster.is_some();
        let turns = Turns::plan(self.context(), query, on_cluster)
            .await
            .map_err(|e| select(&e))?;
        let watching = crate::progress::watch(&turns.plans, &self.footers, &query.export);
        let mut stream = turns.execute(self.context().task_ctx());
        let schema = stream.schema();
        let keep = valid_columns(&schema);
        let valid_schema: SchemaRef = Arc::new(schema.project(&keep).map_err(|e| exec(&e))?);
        let rejects_at = rejects_columns(&schema);
        let mut contacts = SortInput::new(
            "contacts",
            self.sort_context(),
            valid_schema.clone(),
            export_order(query, &valid_schema, false),
            self.sort_share(),
        );
        let mut rejected_rows = match &options.rejects_dir {
            Some(dir) => {
                let writer = RejectsWriter::create(dir, &query.export, query.key.name())?;
                let rejects_schema = Arc::new(schema.project(&rejects_at).map_err(|e| exec(&e))?);
                let order = export_order(query, &rejects_schema, true);
                let sort = SortInput::new(
                    "rejected rows",
                    self.rejects_context(),
                    rejects_schema,
                    order,
                    self.rejects_share(),
                );
                Some((sort, writer))
            }
            None => None,
        };
        let mut rejects_open = true;

        let mut counts = Counts::new(query, options.collect_rejected_emails);
        let mut count = ContactCount::start(
            self.count_context(),
            query.segments.len(),
            &query.order_descending,
            &valid_schema,
        )
        .await
        .map_err(|e| exec(&e))?;
        let email_at = keep
            .iter()
            .position(|c| *c == META_COLUMNS)
            .expect("the email is a valid column");
        let cap = self.export_by_name(&query.export).max_profiles;
        let mut cut =
            Cut::new(query, &valid_schema, cap, self.cut_budget()).map_err(|e| exec(&e))?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| select(&e))?;
            let rejected = counts.absorb(&batch)?;
            if rejected.true_count() > 0
                && rejects_open
                && let Some((sort, _)) = &mut rejected_rows
            {
                let rows = batch
                    .project(&rejects_at)
                    .and_then(|b| filter_record_batch(&b, &rejected))
                    .map_err(|e| exec(&e))?;
                // Once the rejects' sort stopped, its error comes out of its output, which
                // the writer reports.
                rejects_open = sort.send(rows).await.map_err(|e| exec(&e))?;
            }
            let valid = filter_record_batch(&batch, &not(&rejected).map_err(|e| exec(&e))?)
                .and_then(|b| b.project(&keep))
                .map_err(|e| exec(&e))?;
            if valid.num_rows() == 0 {
                continue;
            }
            let valid_emails = EmailSet::keys(&text(valid.column(email_at))?);
            if !count
                .add(&valid_emails, &valid)
                .await
                .map_err(|e| exec(&e))?
            {
                // The count stopped: its error comes out of its end, below.
                break;
            }
            let valid = match cut.as_mut() {
                None => valid,
                Some(c) => match c.apply(&valid, &valid_emails).map_err(|e| exec(&e))? {
                    Some(kept) if kept.num_rows() == 0 => continue,
                    Some(kept) => kept,
                    // Past its budget, the cut lets every row through from here on.
                    None => {
                        cut = None;
                        valid
                    }
                },
            };
            if !contacts.send(valid).await.map_err(|e| exec(&e))? {
                // The sort stopped: its error comes out of its output.
                break;
            }
        }
        // Ending the inputs lets the sorts finish.
        let rejects = match rejected_rows {
            Some((sort, writer)) => {
                let sorted = sort.finish().await.map_err(|e| exec(&e))?;
                Some(tokio::spawn(write_rejects(sorted, writer, query.clone())))
            }
            None => None,
        };
        let contacts = contacts.finish().await.map_err(|e| exec(&e))?;
        if let Some(watching) = watching {
            watching.abort();
        }
        // The scan is done with its memory; the count's merge comes next.
        release_freed_memory();
        let counted = count.finish().await.map_err(|e| exec(&e))?;
        for (segment, contacts) in counts.segments.iter_mut().zip(counted.by_segment) {
            segment.contacts = contacts;
            segment.duplicates = segment.rows - segment.rejected - contacts;
        }
        let total = counted.total;
        tracing::trace!(target: "pipeline::progress", export = %query.export, phase = "sorting", contacts = total);
        let fields = query
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (email_at + i, f.name.clone()))
            .collect();
        let truncated_at = keep
            .iter()
            .position(|c| *c == meta::TRUNCATED)
            .expect("the truncated flag is a valid column");
        Ok(Scanned {
            counts,
            total,
            contacts,
            fields,
            truncated_at,
            rejects,
        })
    }

    /// A failure of the selection query: on a cluster, the cluster's (an executor lost, a
    /// scheduler gone), and the run stops before any contact is sent.
    fn select_error(&self, query: &ExportQuery, e: &dyn std::fmt::Display) -> EngineError {
        match &self.pipeline().file.engine.cluster {
            Some(cluster) => EngineError::Cluster(format!(
                "export `{}`: the selection on the cluster `{cluster}` failed, and no contact was sent: {}",
                query.export,
                crate::error::failure_text(&e)
            )),
            None => self.execution_error(query, e),
        }
    }

    fn execution_error(&self, query: &ExportQuery, e: &dyn std::fmt::Display) -> EngineError {
        let memory_limit = self.pipeline().file.engine.memory_limit_mib;
        let mut message = crate::error::failure_text(&e);
        if message.contains("Not enough memory") || message.contains("Resources exhausted") {
            message = crate::error::memory_advice(message, memory_limit);
        }
        EngineError::Execution {
            export: query.export.clone(),
            message,
        }
    }

    /// Selects the export's contacts and, unless the cap forbids it, streams them through
    /// `sink` in the export's order. With `on_cap_exceeded: truncate` the sink starts (checks
    /// its lists and fields) while the query runs; with `fail` nothing may reach SendGrid
    /// before the total is known, so the sink starts after the members have streamed.
    pub async fn run_export(
        &self,
        query: &ExportQuery,
        sink: &mut dyn Sink,
        options: &RunOptions,
    ) -> Result<ExportSummary, EngineError> {
        match self.select_and_sink(query, sink, options).await {
            Err(EngineError::Execution { export, message }) => {
                let at = self.blame(query, &message).await;
                let mut message = at.map_or(message.clone(), |at| format!("{at}: {message}"));
                message.push_str(what_to_do(&message));
                Err(EngineError::Execution { export, message })
            }
            other => other,
        }
    }

    /// The run of [`Engine::run_export`], before a failure on the data is pinned down.
    async fn select_and_sink(
        &self,
        query: &ExportQuery,
        sink: &mut dyn Sink,
        options: &RunOptions,
    ) -> Result<ExportSummary, EngineError> {
        let export = self.export_by_name(&query.export);
        let target = ExportTarget {
            export: query.export.clone(),
            list_ids: export.list_ids.clone(),
            fields: query.fields.clone(),
            contacts_per_request: export.contacts_per_request,
        };
        let cap_of = |scanned: &Scanned| {
            CapVerdict::new(scanned.total, export.max_profiles, export.on_cap_exceeded)
        };
        let (tx, mut rx) = mpsc::channel(4);
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        // With `fail`, the members stream before the sink starts: over the cap, nothing is
        // sent and nothing written.
        let scanned = match export.on_cap_exceeded {
            OnCapExceeded::Truncate => None,
            OnCapExceeded::Fail => {
                let mut scanned = self.scan(query, options).await?;
                let cap = cap_of(&scanned);
                if cap.exceeded() {
                    drop(tx);
                    let emitted = scanned.emit(self, query, &cap, None).await;
                    let (summary, rejects) = self.summarise(query, scanned, cap, emitted).await?;
                    if let Some(writer) = rejects {
                        writer.discard();
                    }
                    return Ok(summary);
                }
                Some(scanned)
            }
        };
        let selecting = async {
            let mut scanned = match scanned {
                Some(scanned) => scanned,
                None => self.scan(query, options).await?,
            };
            let cap = cap_of(&scanned);
            let emitted = scanned.emit(self, query, &cap, Some(tx)).await;
            self.summarise(query, scanned, cap, emitted).await
        };
        let (selected, result) = tokio::join!(selecting, sink.write_all(&target, stream));
        let (mut summary, rejects) = selected?;
        let mut rejects = rejects;
        // The rejects found so far are kept even when the sink fails.
        if let Ok(report) = &result {
            for r in &report.rejects {
                if let Some(writer) = rejects.as_mut() {
                    writer.write(&Reject {
                        segment: None,
                        key: None,
                        identifier: Some(&r.email),
                        reason: r.reason,
                        detail: Some(&r.message),
                    })?;
                }
                summary.rejected += 1;
                *summary
                    .rejected_by_reason
                    .entry(r.reason.to_owned())
                    .or_default() += 1;
            }
        }
        if let Some(writer) = rejects {
            summary.rejects_file = writer.finish()?;
        }
        let report = result.map_err(|source| EngineError::Sink {
            export: query.export.clone(),
            source,
        })?;
        summary.sent = report.contacts;
        summary.sink = Some(report);
        Ok(summary)
    }

    /// The export's summary once its contacts were emitted, and its rejects file.
    async fn summarise(
        &self,
        query: &ExportQuery,
        scanned: Scanned,
        cap: CapVerdict,
        emitted: Result<u64, EngineError>,
    ) -> Result<(ExportSummary, Option<RejectsWriter>), EngineError> {
        let export = self.export_by_name(&query.export);
        let rejects = match scanned.rejects {
            Some(writing) => Some(writing.await.map_err(|e| {
                EngineError::Internal(format!("the rejects writer stopped: {e}"))
            })??),
            None => None,
        };
        let truncated = emitted?;
        let counts = scanned.counts;
        let summary = ExportSummary {
            export: query.export.clone(),
            list_ids: export.list_ids.clone(),
            rows: counts.segments.iter().map(|s| s.rows).sum(),
            rejected: counts.by_reason.values().sum(),
            rejected_by_reason: counts
                .by_reason
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            invalid_emails: counts.email_flaws,
            duplicates: counts.segments.iter().map(|s| s.duplicates).sum(),
            segments: counts.segments,
            truncated_contacts: truncated,
            contacts: scanned.total,
            cap,
            sent: 0,
            sink: None,
            rejects_file: None,
            allowed_rejects: export.allowed_rejects,
            rejected_emails: counts.rejected_emails.unwrap_or_default(),
        };
        Ok((summary, rejects))
    }
}

impl Scanned {
    /// Reads the valid rows back in the export's order: each email's first row is its
    /// contact; the first `max_profiles` contacts go to `keep` unless the cap failed the
    /// export. Returns how many of those had a field cut.
    async fn emit(
        &mut self,
        engine: &Engine,
        query: &ExportQuery,
        cap: &CapVerdict,
        keep: Option<mpsc::Sender<Result<RecordBatch, ArrowError>>>,
    ) -> Result<u64, EngineError> {
        let exec = |e: &dyn std::fmt::Display| engine.execution_error(query, e);
        let mut keep = keep.filter(|_| !cap.exceeded());
        if keep.is_some() {
            let planned = self.total.min(cap.max_profiles);
            let per_request = engine.export_by_name(&query.export).contacts_per_request as u64;
            tracing::trace!(target: "pipeline::progress", export = %query.export, phase = "sending", planned, per_request);
        }
        let mut kept = 0u64;
        let mut truncated = 0u64;
        // The emails of the contacts sent: at most `max_profiles` of them.
        let mut seen = EmailSet::default();
        let (email_at, _) = self.fields[0];
        let mut untrimmed = true;
        while let Some(batch) = self.contacts.recv().await {
            let Some(tx) = keep.as_ref().filter(|_| kept < cap.max_profiles) else {
                break;
            };
            let batch = batch.map_err(|e| exec(&e))?;
            if std::mem::take(&mut untrimmed) {
                // The scan and the sort's input are done with their memory.
                release_freed_memory();
            }
            let flags = batch.column(self.truncated_at).as_boolean_opt();
            let emails = text(batch.column(email_at))?;
            let mut chosen = Vec::with_capacity(batch.num_rows());
            for (row, email) in emails.iter().enumerate() {
                let send =
                    kept < cap.max_profiles && email.is_some_and(|e| seen.first(EmailSet::key(e)));
                if send {
                    kept += 1;
                    truncated += u64::from(flags.is_some_and(|f| f.value(row)));
                }
                chosen.push(send);
            }
            let chosen = BooleanArray::from(chosen);
            if chosen.true_count() == 0 {
                continue;
            }
            let contacts = filter_record_batch(&batch, &chosen)
                .and_then(|b| self.contacts_of(&b))
                .map_err(|e| exec(&e))?;
            // A closed channel means the sink stopped; its error is reported.
            if tx.send(Ok(contacts)).await.is_err() {
                keep = None;
            }
        }
        // The rest of the sorted rows are not needed: the sort stops.
        self.contacts.close();
        Ok(truncated)
    }

    /// The contact columns of sorted valid rows, named by SendGrid field.
    fn contacts_of(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = self
            .fields
            .iter()
            .map(|(at, name)| {
                let column = batch.column(*at).clone();
                (Field::new(name, column.data_type().clone(), true), column)
            })
            .unzip();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
    }
}

/// Writes the rejected rows, as their sort hands them over, to `writer`.
async fn write_rejects(
    mut sorted: mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
    mut writer: RejectsWriter,
    query: ExportQuery,
) -> Result<RejectsWriter, EngineError> {
    let failed = |e: DataFusionError| EngineError::Execution {
        export: query.export.clone(),
        message: format!(
            "sorting the rejected rows failed: {}",
            crate::error::failure_text(&e)
        ),
    };
    let segments = &query.segments;
    while let Some(batch) = sorted.recv().await {
        let batch = batch.map_err(failed)?;
        let seg = batch
            .column(meta::SEGMENT)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| internal("no segment index"))?;
        let key = text(batch.column(meta::KEY))?;
        let raw = text(batch.column(meta::RAW_EMAIL))?;
        let reason = text(batch.column(meta::REASON))?;
        let detail = text(batch.column(meta::DETAIL))?;
        for row in 0..batch.num_rows() {
            let code = reason
                .is_valid(row)
                .then(|| RejectReason::from_code(reason.value(row)))
                .flatten()
                .ok_or_else(|| internal("an unknown reject reason"))?;
            writer.write(&Reject {
                segment: segments.get(seg.value(row) as usize).map(String::as_str),
                key: key.is_valid(row).then(|| key.value(row)),
                identifier: raw.is_valid(row).then(|| raw.value(row)),
                reason: code.code(),
                detail: detail.is_valid(row).then(|| detail.value(row)),
            })?;
        }
    }
    Ok(writer)
}

pub(crate) fn internal(what: &str) -> EngineError {
    EngineError::Internal(format!("the export query returned {what}"))
}

/// A text column as plain UTF-8 (the query may hand out views).
pub(crate) fn text(column: &ArrayRef) -> Result<StringArray, EngineError> {
    let column = cast(column, &DataType::Utf8).map_err(|_| internal("a non-text column"))?;
    Ok(column.as_string::<i32>().clone())
}

/// Gives the memory the scan and the sort freed back to the system before the contacts are
/// written. glibc keeps freed memory for reuse, and a scan leaves tens of MiB of it over
/// its arenas, which would otherwise add to the peak while the bodies are built.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: malloc_trim only hands unused pages of the allocator's arenas back.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}
