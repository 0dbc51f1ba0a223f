//! Running an export's selection a segment at a time: DataFusion starts every partition of
//! a plan at once, so an export of several segments (a `UNION ALL` of their queries) would
//! scan them all together. A hash join keeps the table it built in its plan node, so each
//! segment's table still lives until the plan is dropped (docs/performance.md, "Several
//! segments past the cap").

use std::ops::Range;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::{RecordBatchReceiverStream, RecordBatchStreamAdapter};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;

/// Streams all of `plan`'s partitions. Under a `UNION ALL` (an export of several segments)
/// the union's inputs run in turn, each with its partitions side by side: one segment's
/// scan buffers at a time, where DataFusion would start them all.
pub(crate) fn execute_by_input(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream, DataFusionError> {
    let groups = union_partitions(&plan);
    if groups.len() < 2 {
        return datafusion::physical_plan::execute_stream(plan, context);
    }
    let schema = plan.schema();
    let turns = futures::stream::iter(groups).flat_map(move |partitions| {
        let mut builder = RecordBatchReceiverStream::builder(plan.schema(), partitions.len());
        for partition in partitions {
            let (plan, context, output) = (plan.clone(), context.clone(), builder.tx());
            builder.spawn(async move {
                let mut batches = plan.execute(partition, context)?;
                while let Some(batch) = batches.next().await {
                    let failed = batch.is_err();
                    // A closed output means the run stopped reading: nothing more to do.
                    if output.send(batch).await.is_err() || failed {
                        break;
                    }
                }
                Ok(())
            });
        }
        builder.build()
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, turns)))
}

/// `plan`'s output partitions grouped by the union input each comes from, when the plan
/// is a union under operators that pass each partition through on its own; one group
/// otherwise.
fn union_partitions(plan: &Arc<dyn ExecutionPlan>) -> Vec<Range<usize>> {
    let all = 0..plan.output_partitioning().partition_count();
    let mut node = plan;
    loop {
        if let Some(union) = node.downcast_ref::<UnionExec>() {
            let mut start = 0;
            return union
                .inputs()
                .iter()
                .map(|input| {
                    let end = start + input.output_partitioning().partition_count();
                    std::mem::replace(&mut start, end)..end
                })
                .collect();
        }
        let passes_through = node.is::<ProjectionExec>() || node.is::<FilterExec>();
        match node.children().as_slice() {
            [child] if passes_through => node = child,
            _ => return vec![all],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use datafusion::physical_plan::displayable;
    use futures::TryStreamExt;

    use crate::Engine;

    /// An export of two segments is a union whose inputs run in turn, and every row of
    /// both comes back.
    #[tokio::test]
    async fn each_segment_of_an_export_runs_in_its_own_turn() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, false),
        ]));
        let emails = ["a@example.com", "b@example.com", "c@example.com"];
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(emails.to_vec())),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(dir.path().join("t.parquet")).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let text = r#"
version: 1
connections:
  m: { type: sendgrid, api_key: "${K}", data_privacy_consent: true }
sources:
  t: { format: parquet, path: t.parquet }
segments:
  a: SELECT * FROM t WHERE id > 1
  b: SELECT * FROM t WHERE id < 3
exports:
  - name: x
    connection: m
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    segments: [a, b]
    mapping:
      email: email
"#;
        let pipeline =
            pipeline_spec::parse(text, &dir.path().join("p.yaml"), &|_| Some("k".into())).unwrap();
        let engine = Engine::open(&pipeline).await.unwrap();
        let query = engine.plan_exports(None).await.unwrap().remove(0);
        let plan = engine
            .context()
            .sql(&query.sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();

        let turns = union_partitions(&plan);
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert_eq!(turns.len(), 2, "one turn per segment in\n{shown}");
        assert_eq!(turns[0].start, 0);
        assert_eq!(turns[0].end, turns[1].start);
        assert_eq!(turns[1].end, plan.output_partitioning().partition_count());
        let batches: Vec<RecordBatch> = execute_by_input(plan, engine.context().task_ctx())
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 4, "ids 2 and 3 from a, 1 and 2 from b");
    }
}
