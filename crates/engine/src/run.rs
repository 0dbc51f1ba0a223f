//! Running an export: stream the members, split rejects, duplicates and contacts, apply
//! the profile cap, and hand the contacts to a sink in the export's order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use pipeline_sink::{ExportTarget, Sink, SinkReport};
use pipeline_spec::OnCapExceeded;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::Engine;
use crate::error::EngineError;
use crate::plan::{ExportQuery, META_COLUMNS, meta};
use crate::rejects::{Reject, RejectsWriter};
use crate::rules::RejectReason;
use crate::segments::query_only;
use crate::select::{Encoders, KEYS_IN_MEMORY, Selector};

/// What a selection keeps and writes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Folder for the rejects file (`<export>.rejects.jsonl`); `None` writes no file.
    pub rejects_dir: Option<PathBuf>,
    /// Keep the normalised emails of rejected rows (mirror mode must not remove a member
    /// only because this run could not send it).
    pub collect_rejected_emails: bool,
}

/// Counts for one segment of an export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SegmentSummary {
    pub segment: String,
    /// Rows the segment's query returned.
    pub rows: u64,
    pub rejected: u64,
    /// Rows whose email an earlier row (by `order_by`) already supplied.
    pub duplicates: u64,
    /// Contacts this segment supplied after dedupe, before the cap.
    pub contacts: u64,
}

/// Where an export's contacts stand against its profile cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapStatus {
    /// At most `max_profiles` contacts.
    Within,
    /// Over the cap with `on_cap_exceeded: fail`: nothing sent.
    Exceeded,
    /// Over the cap with `on_cap_exceeded: truncate`: the first `max_profiles` sent.
    Truncated,
}

/// The profile cap's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapVerdict {
    pub max_profiles: u64,
    pub on_cap_exceeded: OnCapExceeded,
    pub status: CapStatus,
    /// Contacts over the cap: dropped when truncated, the excess when exceeded.
    pub over_by: u64,
}

impl CapVerdict {
    /// The verdict for `total` distinct contacts.
    pub fn new(total: u64, max_profiles: u64, on_cap_exceeded: OnCapExceeded) -> Self {
        let status = if total <= max_profiles {
            CapStatus::Within
        } else if on_cap_exceeded == OnCapExceeded::Fail {
            CapStatus::Exceeded
        } else {
            CapStatus::Truncated
        };
        Self {
            max_profiles,
            on_cap_exceeded,
            status,
            over_by: total.saturating_sub(max_profiles),
        }
    }

    pub fn exceeded(&self) -> bool {
        self.status == CapStatus::Exceeded
    }
}

/// What happened to one export.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub export: String,
    pub list_ids: Vec<String>,
    /// Member rows over all segments, before dedupe.
    pub rows: u64,
    pub segments: Vec<SegmentSummary>,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub duplicates: u64,
    /// Contacts with at least one field cut to SendGrid's limit.
    pub truncated_contacts: u64,
    /// Valid, distinct contacts before the cap.
    pub contacts: u64,
    pub cap: CapVerdict,
    /// Contacts handed to the sink.
    pub sent: u64,
    pub sink: Option<SinkReport>,
    pub rejects_file: Option<PathBuf>,
    pub allowed_rejects: u64,
    /// Normalised emails of the rejected rows, when asked for.
    #[serde(skip)]
    pub rejected_emails: Vec<String>,
}

impl ExportSummary {
    /// More rejects than the export tolerates.
    pub fn rejects_over_threshold(&self) -> bool {
        self.rejected > self.allowed_rejects
    }
}

/// The outcome of selecting an export's contacts.
pub struct Selection {
    pub summary: ExportSummary,
    /// Contact batches (columns named by SendGrid field), within the cap.
    pub contacts: Vec<RecordBatch>,
    /// The rejects file, still open for the sink's rejects.
    rejects: Option<RejectsWriter>,
}

/// Where kept contacts go while the query runs.
enum Keep {
    /// Held until the end (the cap verdict must be known before anything is sent).
    Buffer(Vec<RecordBatch>),
    /// Handed to a sink as they come.
    Channel(mpsc::Sender<Result<RecordBatch, ArrowError>>),
}

impl Engine {
    /// Runs the export's query to the end, counting and keeping contacts as options say.
    /// Memory: the scan, the contacts kept (at most the cap) and a few dozen bytes per
    /// distinct email.
    pub async fn select(
        &self,
        query: &ExportQuery,
        options: &RunOptions,
    ) -> Result<Selection, EngineError> {
        let mut keep = Keep::Buffer(Vec::new());
        let (summary, rejects) = self.select_into(query, options, &mut keep).await?;
        let Keep::Buffer(contacts) = keep else {
            unreachable!("buffered above")
        };
        Ok(Selection {
            summary,
            contacts,
            rejects,
        })
    }

    async fn select_into(
        &self,
        query: &ExportQuery,
        options: &RunOptions,
        keep: &mut Keep,
    ) -> Result<(ExportSummary, Option<RejectsWriter>), EngineError> {
        let export = self.export_by_name(&query.export);
        let memory_limit = self.pipeline().file.engine.memory_limit_mib;
        let exec = |e: &dyn std::fmt::Display| {
            let mut message = crate::segments::clean_sql_error(&e.to_string());
            if message.contains("Not enough memory") || message.contains("Resources exhausted") {
                message = format!(
                    "the query needs more memory than engine.memory_limit_mib ({memory_limit} MiB) allows; \
                     raise it in the pipeline file. DataFusion said: {message}"
                );
            }
            EngineError::Execution {
                export: query.export.clone(),
                message,
            }
        };
        let df = self
            .context()
            .sql_with_options(&query.sql, query_only())
            .await
            .map_err(|e| exec(&e))?;
        let mut stream = df.execute_stream().await.map_err(|e| exec(&e))?;

        let mut rejects = match &options.rejects_dir {
            Some(dir) => Some(RejectsWriter::create(dir, &query.export)?),
            None => None,
        };
        let mut counts = Counts::new(&query.segments);
        if options.collect_rejected_emails {
            counts.rejected_emails = Some(Vec::new());
        }
        let encoders = Encoders::new(query, &stream.schema()).map_err(|e| exec(&e))?;
        let mut selector = Selector::new(
            export.max_profiles,
            KEYS_IN_MEMORY,
            encoders.segment_bytes(),
        );
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| exec(&e))?;
            counts.absorb(&batch, query, &encoders, &mut selector, &mut rejects)?;
        }
        drop(stream);

        let total = selector.distinct();
        for (s, contacts) in counts
            .segments
            .iter_mut()
            .zip(selector.contacts_by_segment(query.segments.len()))
        {
            s.contacts = contacts;
            s.duplicates = s.rows - s.rejected - contacts;
        }
        let cap = CapVerdict::new(total, export.max_profiles, export.on_cap_exceeded);
        if !cap.exceeded() {
            let batch_size = self.pipeline().file.engine.batch_size;
            let mut kept = selector
                .finish()
                .map_err(|e| e.into_engine(&query.export))?;
            // The scan and the email map are gone; their memory need not count twice.
            release_freed_memory();
            while let Some(contacts) = kept.next_batch(&encoders, batch_size) {
                let contacts = contacts.map_err(|e| e.into_engine(&query.export))?;
                match keep {
                    Keep::Buffer(all) => all.push(contacts),
                    // A closed channel means the sink stopped; its error is reported.
                    Keep::Channel(tx) => {
                        if tx.send(Ok(contacts)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            counts.truncated = kept.truncated;
        }

        if cap.exceeded() {
            // Over the cap with `fail`, nothing is written.
            if let Some(writer) = rejects.take() {
                writer.discard();
            }
        }
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
            duplicates: counts.segments.iter().map(|s| s.duplicates).sum(),
            segments: counts.segments,
            truncated_contacts: counts.truncated,
            contacts: total,
            cap,
            sent: 0,
            sink: None,
            rejects_file: None,
            allowed_rejects: export.allowed_rejects,
            rejected_emails: counts.rejected_emails.unwrap_or_default(),
        };
        Ok((summary, rejects))
    }

    /// Selects the export's contacts and, unless the cap forbids it, streams them through
    /// `sink`. With `on_cap_exceeded: truncate` the sink starts (checks its lists and
    /// fields) while the query runs; with `fail` nothing may reach SendGrid before the total
    /// is known, so the sink starts after the selection.
    pub async fn run_export(
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
        };
        let (mut summary, mut rejects, result) =
            if export.on_cap_exceeded == OnCapExceeded::Truncate {
                let (tx, mut rx) = mpsc::channel(4);
                let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
                let mut keep = Keep::Channel(tx);
                let selecting = async {
                    let selected = self.select_into(query, options, &mut keep).await;
                    // Closing the channel ends the sink's stream.
                    keep = Keep::Buffer(Vec::new());
                    selected
                };
                let (selected, result) = tokio::join!(selecting, sink.write_all(&target, stream));
                let (summary, rejects) = selected?;
                (summary, rejects, result)
            } else {
                let Selection {
                    summary,
                    contacts,
                    rejects,
                } = self.select(query, options).await?;
                if summary.cap.exceeded() {
                    return Ok(summary);
                }
                let stream = futures::stream::iter(contacts.into_iter().map(Ok)).boxed();
                (summary, rejects, sink.write_all(&target, stream).await)
            };
        // The rejects found so far are kept even when the sink fails.
        if let Ok(report) = &result {
            for r in &report.rejects {
                if let Some(writer) = rejects.as_mut() {
                    writer.write(&Reject {
                        segment: None,
                        key: None,
                        email: Some(&r.email),
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
}

struct Counts {
    segments: Vec<SegmentSummary>,
    by_reason: BTreeMap<&'static str, u64>,
    truncated: u64,
    rejected_emails: Option<Vec<String>>,
}

impl Counts {
    fn new(segments: &[String]) -> Self {
        Self {
            segments: segments
                .iter()
                .map(|s| SegmentSummary {
                    segment: s.clone(),
                    ..Default::default()
                })
                .collect(),
            by_reason: BTreeMap::new(),
            truncated: 0,
            rejected_emails: None,
        }
    }

    /// Counts one batch of members: rejects go to the rejects file, valid rows to the
    /// selector.
    fn absorb(
        &mut self,
        batch: &RecordBatch,
        query: &ExportQuery,
        encoders: &Encoders,
        selector: &mut Selector,
        rejects: &mut Option<RejectsWriter>,
    ) -> Result<(), EngineError> {
        let internal =
            |what: &str| EngineError::Internal(format!("the export query returned {what}"));
        let arrow =
            |e: ArrowError| EngineError::Internal(format!("encoding the export's order: {e}"));
        let as_utf8 = |i: usize| -> Result<ArrayRef, EngineError> {
            cast(batch.column(i), &DataType::Utf8).map_err(|_| internal("a non-text meta column"))
        };
        let seg = batch
            .column(meta::SEGMENT)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| internal("no segment index"))?;
        let reason = as_utf8(meta::REASON)?;
        let reason = reason.as_string::<i32>();
        let email = as_utf8(META_COLUMNS)?;
        let email = email.as_string::<i32>();
        let prefixes = encoders.prefixes(batch).map_err(arrow)?;

        // Rows whose whole order is needed: rejects, and rows that may become contacts.
        let mut needed: Vec<u32> = Vec::new();
        let mut hashes: Vec<u128> = Vec::new();
        let mut any_rejected = false;
        for row in 0..batch.num_rows() {
            let segment = seg.value(row);
            self.segments[segment as usize].rows += 1;
            if reason.is_valid(row) {
                any_rejected = true;
                needed.push(row as u32);
                hashes.push(0);
            } else {
                let hash = xxhash_rust::xxh3::xxh3_128(email.value(row).as_bytes());
                if selector
                    .note(hash, prefixes.row(row).data())
                    .map_err(|e| e.into_engine(&query.export))?
                {
                    needed.push(row as u32);
                    hashes.push(hash);
                }
            }
        }
        if needed.is_empty() {
            return Ok(());
        }
        let rests = encoders.rests(batch, &needed).map_err(arrow)?;
        let texts = if any_rejected {
            Some((
                as_utf8(meta::KEY)?,
                as_utf8(meta::RAW_EMAIL)?,
                as_utf8(meta::DETAIL)?,
            ))
        } else {
            None
        };
        let texts = texts.as_ref().map(|(key, raw, detail)| {
            (
                key.as_string::<i32>(),
                raw.as_string::<i32>(),
                detail.as_string::<i32>(),
            )
        });
        let mut key = Vec::new();
        for (i, (&row, &hash)) in needed.iter().zip(&hashes).enumerate() {
            let row = row as usize;
            let (prefix, rest) = (prefixes.row(row), rests.row(i));
            if !reason.is_valid(row) {
                selector
                    .offer(hash, prefix.data(), rest.data())
                    .map_err(|e| e.into_engine(&query.export))?;
                continue;
            }
            let (key_text, raw, detail) = texts.expect("a rejected row");
            let code = RejectReason::from_code(reason.value(row))
                .ok_or_else(|| internal("an unknown reject reason"))?;
            *self.by_reason.entry(code.code()).or_default() += 1;
            let segment = seg.value(row) as usize;
            self.segments[segment].rejected += 1;
            if let Some(emails) = self.rejected_emails.as_mut().filter(|_| raw.is_valid(row)) {
                let mut email = String::new();
                crate::rules::normalize_email_into(raw.value(row), &mut email);
                emails.push(email);
            }
            if let Some(writer) = rejects.as_mut() {
                key.clear();
                key.extend_from_slice(prefix.data());
                key.extend_from_slice(rest.data());
                writer.hold(
                    &key,
                    &Reject {
                        segment: Some(&query.segments[segment]),
                        key: key_text.is_valid(row).then(|| key_text.value(row)),
                        email: raw.is_valid(row).then(|| raw.value(row)),
                        reason: code.code(),
                        detail: detail.is_valid(row).then(|| detail.value(row)),
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Gives the memory the query freed back to the system before the contacts are written.
/// glibc keeps freed memory for reuse, and a scan leaves tens of MiB of it over its
/// arenas, which would otherwise add to the peak while the bodies are built.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: malloc_trim only hands unused pages of the allocator's arenas back.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}
