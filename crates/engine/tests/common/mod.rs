//! What the engine's tests share.

use arrow::array::RecordBatch;
use futures::StreamExt;
use futures::future::BoxFuture;
use pipeline_sink::{ContactStream, ExportTarget, Sink, SinkError, SinkReport};

/// A sink that keeps the contact batches it is given.
#[derive(Default)]
pub struct Capture(pub Vec<RecordBatch>);

impl Sink for Capture {
    fn write_all<'a>(
        &'a mut self,
        _target: &'a ExportTarget,
        mut contacts: ContactStream,
    ) -> BoxFuture<'a, Result<SinkReport, SinkError>> {
        Box::pin(async move {
            let mut report = SinkReport::default();
            while let Some(batch) = contacts.next().await {
                let batch = batch.map_err(SinkError::Upstream)?;
                report.contacts += batch.num_rows() as u64;
                self.0.push(batch);
            }
            Ok(report)
        })
    }
}
