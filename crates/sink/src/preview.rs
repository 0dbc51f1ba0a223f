//! The preview sink behind `pipeline plan`: encodes every contact as a run would (so a
//! filter sees them all), sends and writes nothing, and keeps the first few contacts.

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::encoder::{BodyEncoder, ContactFilter};
use crate::{ContactStream, ExportTarget, Sink, SinkError, SinkReport};

/// Counts the bodies a run would send and keeps a sample of the contacts.
pub struct PreviewSink {
    rows: usize,
    sample: Vec<RecordBatch>,
    filter: Option<Box<dyn ContactFilter>>,
}

impl PreviewSink {
    /// Keeps the first `rows` contacts.
    pub fn new(rows: usize) -> Self {
        Self {
            rows,
            sample: Vec::new(),
            filter: None,
        }
    }

    /// Counts only the contacts `filter` admits.
    pub fn with_filter(mut self, filter: Box<dyn ContactFilter>) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The first contacts of the stream (all of them, sent or not).
    pub fn sample(&self) -> &[RecordBatch] {
        &self.sample
    }
}

impl Sink for PreviewSink {
    fn write_all<'a>(
        &'a mut self,
        target: &'a ExportTarget,
        mut contacts: ContactStream,
    ) -> BoxFuture<'a, Result<SinkReport, SinkError>> {
        Box::pin(async move {
            let mut report = SinkReport::default();
            let mut encoder = BodyEncoder::new(&target.list_ids, target.fields.clone())
                .with_filter(self.filter.take(), &target.fields);
            let mut kept = 0;
            let mut count = |body: crate::encoder::Body| {
                report.requests += 1;
                report.contacts += body.contacts as u64;
                report.bytes += body.bytes.len() as u64;
                Ok(())
            };
            while let Some(batch) = contacts.next().await {
                let batch = batch.map_err(SinkError::Upstream)?;
                if kept < self.rows {
                    let take = (self.rows - kept).min(batch.num_rows());
                    self.sample.push(batch.slice(0, take));
                    kept += take;
                }
                encoder.push_batch(&batch, &mut count)?;
            }
            if let Some(body) = encoder.finish() {
                count(body)?;
            }
            Ok(report)
        })
    }
}
