//! What the engine's tests share.

use std::path::Path;

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

/// A pipeline in `dir` with top-level `engine` lines, the `sources` lines, and one export
/// `x` of the segment `a` (`segment`) with `mapping`, ordered by `id`.
pub fn pipeline(
    dir: &Path,
    engine: &str,
    sources: &str,
    segment: &str,
    mapping: &str,
) -> pipeline_spec::Pipeline {
    let text = format!(
        r#"
version: 1
{engine}
connections:
  m: {{ type: sendgrid, api_key: "${{K}}", data_privacy_consent: true }}
sources:
{sources}
segments:
  a: {segment}
exports:
  - name: x
    connection: m
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    segments: [a]
    mapping: {{ {mapping} }}
    order_by: id
"#
    );
    pipeline_spec::parse(&text, &dir.join("p.yaml"), &|_| Some("k".into())).unwrap()
}
