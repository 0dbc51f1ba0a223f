//! The sinks behind `pipeline plan`: [`PreviewSink`] encodes every contact it gets as a run
//! would, sends and writes nothing, and counts the bodies; [`Sample`] is a stage that keeps
//! the first few contacts of the stream that passes through it.

use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::encoder::{BodyEncoder, bodies, next_body};
use crate::{ContactStream, ExportTarget, Sink, SinkError, SinkReport, Stage};

/// Counts the bodies a run would send.
#[derive(Debug, Default)]
pub struct PreviewSink;

impl Sink for PreviewSink {
    fn write_all<'a>(
        &'a mut self,
        target: &'a ExportTarget,
        contacts: ContactStream,
    ) -> BoxFuture<'a, Result<SinkReport, SinkError>> {
        Box::pin(async move {
            let mut report = SinkReport::default();
            let encoder = BodyEncoder::for_target(target);
            let mut bodies = bodies(contacts, encoder);
            while let Some(body) = next_body(&mut bodies, &mut report.rejects).await {
                let body = body?;
                report.requests += 1;
                report.contacts += body.contacts as u64;
                report.bytes += body.bytes.len() as u64;
            }
            Ok(report)
        })
    }
}

/// Keeps the first `rows` contacts of the stream it sees.
#[derive(Debug, Clone)]
pub struct Sample {
    rows: usize,
    kept: Arc<Mutex<Vec<RecordBatch>>>,
}

impl Sample {
    pub fn new(rows: usize) -> Self {
        Self {
            rows,
            kept: Arc::default(),
        }
    }

    /// The contacts kept so far.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Stage for Sample {
    fn apply(&mut self, _target: &ExportTarget, contacts: ContactStream) -> ContactStream {
        let (rows, kept) = (self.rows, self.kept.clone());
        let mut seen = 0;
        contacts
            .inspect(move |batch| {
                if let Ok(batch) = batch
                    && seen < rows
                {
                    let take = (rows - seen).min(batch.num_rows());
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    kept.push(batch.slice(0, take));
                    seen += take;
                }
            })
            .boxed()
    }
}
