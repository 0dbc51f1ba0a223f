//! Running an export's selection a segment at a time. DataFusion starts every partition of
//! a plan at once, and a hash join keeps the table it built in its plan node for as long
//! as the plan lives (docs/performance.md, "Several segments past the cap"). So each
//! segment of an export is a physical plan of its own, planned from
//! [`ExportQuery::segment_sql`]: the plans run one after another, each with its
//! partitions side by side, and each is dropped, with what its joins built, once its rows
//! are through. On a cluster the export's whole query stays one plan (see
//! [`Turns::plan`]).

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::plan::ExportQuery;
use crate::segments::query_only;

/// An export's selection: one physical plan per segment, not yet run, and the columns of
/// the rows they return.
pub(crate) struct Turns {
    pub(crate) schema: SchemaRef,
    pub(crate) plans: Vec<Arc<dyn ExecutionPlan>>,
}

impl Turns {
    /// Plans each segment's query of `query`. Its rows take the column types of the whole
    /// export's query (a `UNION ALL` of the segments, whose types are the common ones).
    /// On a cluster (`on_cluster`) the export's query is one plan: its executors share the
    /// scans of every segment at once, and no join table is held here.
    pub(crate) async fn plan(
        ctx: &SessionContext,
        query: &ExportQuery,
        on_cluster: bool,
    ) -> Result<Self, DataFusionError> {
        let queries = match on_cluster {
            true => std::slice::from_ref(&query.sql),
            false => query.segment_sql.as_slice(),
        };
        let mut plans = Vec::with_capacity(queries.len());
        for sql in queries {
            let df = ctx.sql_with_options(sql, query_only()).await?;
            plans.push(df.create_physical_plan().await?);
        }
        let schema = match plans.as_slice() {
            [one] => one.schema(),
            _ => {
                // The analysed plan: the SQL planner gives a union its first input's
                // types, and type coercion then widens them to the common ones.
                let union = ctx
                    .sql_with_options(&query.sql, query_only())
                    .await?
                    .into_optimized_plan()?;
                // Nullable throughout: a column one segment never leaves empty may be
                // empty in another.
                let fields = union
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true));
                Arc::new(Schema::new(fields.collect::<Vec<_>>()))
            }
        };
        Ok(Self { schema, plans })
    }

    /// Streams the plans' rows, one plan after another; each plan is dropped once its rows
    /// are through.
    pub(crate) fn execute(self, context: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let turns = futures::stream::iter(self.plans).flat_map(move |plan| {
            let schema = schema.clone();
            match execute_stream(plan.clone(), context.clone()) {
                // The turn's stream holds its plan, whose scans count the rows read for
                // the progress display, until its last row.
                Ok(rows) => rows
                    .map(move |batch| {
                        let _turn = &plan;
                        batch.and_then(|b| conform(&schema, &b))
                    })
                    .boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema, turns))
    }
}

/// `batch` in `schema`'s column types; a value the type cannot hold is an error, never a
/// null.
fn conform(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, DataFusionError> {
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(
            |(column, field)| match column.data_type() == field.data_type() {
                true => Ok(column.clone()),
                false => cast_with_options(column, field.data_type(), &strict),
            },
        )
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    use crate::Engine;

    /// An export of two segments runs as two plans, one after the other: the first plan
    /// is gone (with anything its joins built) before the second one's rows come, and
    /// every row of both comes back, in the export query's column types.
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
        // The two segments' `order_by` values differ in type: every batch comes in their
        // common type.
        let text = r#"
version: 1
connections:
  m: { type: sendgrid, api_key: "${K}", data_privacy_consent: true }
sources:
  t: { format: parquet, path: t.parquet }
segments:
  a: SELECT *, CAST(id AS INT) AS rank FROM t WHERE id > 1
  b: SELECT *, id AS rank FROM t WHERE id < 3
exports:
  - name: x
    connection: m
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    segments: [a, b]
    mapping:
      email: email
    order_by: rank
    max_profiles: 10
"#;
        let pipeline =
            pipeline_spec::parse(text, &dir.path().join("p.yaml"), &|_| Some("k".into())).unwrap();
        let engine = Engine::open(&pipeline).await.unwrap();
        let query = engine.plan_exports(&[]).await.unwrap().remove(0);
        let turns = Turns::plan(engine.context(), &query, false).await.unwrap();
        assert_eq!(turns.plans.len(), 2, "one plan per segment");
        let first = Arc::downgrade(&turns.plans[0]);
        let schema = turns.schema.clone();
        let rank = schema.field_with_name("__o0").unwrap().data_type().clone();
        assert_eq!(rank, DataType::Int64, "the common type of Int32 and Int64");

        let mut rows = turns.execute(engine.context().task_ctx());
        let mut seen = Vec::new();
        while let Some(batch) = rows.next().await {
            let batch = batch.unwrap();
            assert_eq!(batch.schema(), schema);
            let segment = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let ranks = batch.column_by_name("__o0").unwrap();
            let ranks = ranks.as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..batch.num_rows() {
                if segment.value(i) == 1 {
                    assert!(first.upgrade().is_none(), "segment a's plan is dropped");
                }
                seen.push((segment.value(i), ranks.value(i)));
            }
        }
        seen.sort();
        assert_eq!(seen, [(0, 2), (0, 3), (1, 1), (1, 2)]);
    }
}
