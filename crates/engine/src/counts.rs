//! An export's counts while its members stream: rows and rejects per segment, rejects by
//! reason, and (for mirror mode) the rejected rows' emails.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::is_not_null;
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use pipeline_spec::Identifier;

use crate::error::EngineError;
use crate::plan::{ExportQuery, meta};
use crate::rules::RejectReason;
use crate::run::{internal, text};
use crate::summary::SegmentSummary;

/// One export's counts, gathered batch by batch as its members stream.
pub(crate) struct Counts {
    pub(crate) segments: Vec<SegmentSummary>,
    pub(crate) by_reason: BTreeMap<&'static str, u64>,
    /// What is wrong with the invalid emails of an export keyed by email, by how it is
    /// said in the rejects file.
    pub(crate) email_flaws: BTreeMap<String, u64>,
    pub(crate) rejected_emails: Option<Vec<String>>,
    /// The export's identifier, as the rejected rows' values are normalised.
    key: Identifier,
}

impl Counts {
    pub(crate) fn new(query: &ExportQuery, collect_rejected_emails: bool) -> Self {
        Self {
            key: query.key,
            segments: query
                .segments
                .iter()
                .map(|s| SegmentSummary {
                    segment: s.clone(),
                    ..Default::default()
                })
                .collect(),
            by_reason: BTreeMap::new(),
            email_flaws: BTreeMap::new(),
            rejected_emails: collect_rejected_emails.then(Vec::new),
        }
    }

    /// Counts one batch of members; returns which rows are rejected.
    pub(crate) fn absorb(&mut self, batch: &RecordBatch) -> Result<BooleanArray, EngineError> {
        let seg = batch
            .column(meta::SEGMENT)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| internal("no segment index"))?;
        for s in seg.values() {
            let segment = self
                .segments
                .get_mut(*s as usize)
                .ok_or_else(|| internal("a segment index out of range"))?;
            segment.rows += 1;
        }
        let rejected =
            is_not_null(batch.column(meta::REASON)).map_err(|e| internal(&e.to_string()))?;
        if rejected.true_count() == 0 {
            return Ok(rejected);
        }
        let reason = text(batch.column(meta::REASON))?;
        let raw = text(batch.column(meta::RAW_EMAIL))?;
        let detail = text(batch.column(meta::DETAIL))?;
        for row in (0..batch.num_rows()).filter(|r| rejected.value(*r)) {
            let code = RejectReason::from_code(reason.value(row))
                .ok_or_else(|| internal("an unknown reject reason"))?;
            *self.by_reason.entry(code.code()).or_default() += 1;
            // The query says what is wrong with an invalid email in the detail.
            if code == RejectReason::InvalidEmail && detail.is_valid(row) {
                let flaw = detail.value(row);
                match self.email_flaws.get_mut(flaw) {
                    Some(n) => *n += 1,
                    None => {
                        self.email_flaws.insert(flaw.to_owned(), 1);
                    }
                }
            }
            self.segments[seg.value(row) as usize].rejected += 1;
            if let Some(emails) = self.rejected_emails.as_mut().filter(|_| raw.is_valid(row)) {
                let raw = raw.value(row);
                emails.push(match self.key {
                    Identifier::Email => {
                        let mut email = String::new();
                        crate::rules::normalize_email_into(raw, &mut email);
                        email
                    }
                    _ => raw.trim().to_owned(),
                });
            }
        }
        Ok(rejected)
    }
}
