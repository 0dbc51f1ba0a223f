//! The engine: a DataFusion session over the pipeline's Parquet sources, its segments as
//! views, and each export as one query whose contacts stream into a sink.

mod blame;
mod counts;
mod cut;
mod error;
mod plan;
pub mod progress;
mod rejects;
pub mod rules;
mod run;
mod segments;
mod select;
mod sources;
pub mod store;
mod summary;
mod turns;
mod udf;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::execution::SessionState;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use pipeline_spec::Pipeline;

pub use error::EngineError;
pub use plan::{ExportQuery, META_COLUMNS, Probe};
pub use run::RunOptions;
pub use summary::{CapStatus, CapVerdict, ExportSummary, SegmentSummary};
pub use udf::contact_rules;

/// Where a pipeline with `engine.cluster` runs its export queries. Implemented outside
/// the engine (the `pipeline-cluster` crate), so that the engine does not carry a
/// distributed runtime.
pub trait Cluster: Send + Sync {
    /// A session whose queries run on the scheduler at `address` (`HOST:PORT`): planned
    /// here with `state` (the engine's settings; the contact rules are registered on the
    /// session after), executed there, their rows streamed back. Fails when the scheduler
    /// cannot be reached.
    fn connect<'a>(
        &'a self,
        address: &'a str,
        state: SessionState,
        pipeline: &'a Pipeline,
    ) -> futures::future::BoxFuture<'a, Result<SessionContext, String>>;
}

/// A pipeline opened for querying: sources registered, segments planned.
pub struct Engine {
    ctx: SessionContext,
    /// The sessions of the selection's three sorts (contacts, rejects, the distinct
    /// emails' count), each under its own share of the memory limit.
    sort_ctx: SessionContext,
    rejects_ctx: SessionContext,
    count_ctx: SessionContext,
    /// The contacts' and the rejects' sorts' shares of the memory limit, in bytes.
    sort_share: usize,
    rejects_share: usize,
    /// Most bytes the cap's cut may hold: half the contacts' sort share (see [`cut`]).
    cut_budget: usize,
    pipeline: Pipeline,
    segment_schemas: BTreeMap<String, SchemaRef>,
    /// Rows per source file, from the footers (for progress).
    footers: progress::FooterRows,
}

impl Engine {
    /// Builds the session, registers sources and segments. Reads Parquet footers, never
    /// the data; every problem found is reported at once. A pipeline with `engine.cluster`
    /// needs [`Engine::open_with`].
    pub async fn open(pipeline: &Pipeline) -> Result<Self, EngineError> {
        Self::open_with(pipeline, None).await
    }

    /// [`Engine::open`], with the export queries sent to `cluster` when the pipeline names
    /// one in `engine.cluster`.
    pub async fn open_with(
        pipeline: &Pipeline,
        cluster: Option<&dyn Cluster>,
    ) -> Result<Self, EngineError> {
        let settings = &pipeline.file.engine;
        let shares = Shares::of((settings.memory_limit_mib as usize) << 20);
        // The segment SQL's sorts (a window function's, say) run one per partition.
        let partitions = settings
            .partitions
            .unwrap_or_else(|| SessionConfig::new().target_partitions());
        let ctx = session(shares.query, settings.batch_size, partitions)?;
        let ctx = match (&settings.cluster, cluster) {
            (None, _) => ctx,
            (Some(written), Some(cluster)) => {
                let address = pipeline_spec::cluster_address(written)
                    .map_err(|e| EngineError::config(format!("engine.cluster: {e}")))?;
                cluster
                    .connect(&address, ctx.state(), pipeline)
                    .await
                    .map_err(|e| {
                        EngineError::Cluster(format!("engine.cluster (`{written}`): {e}"))
                    })?
            }
            (Some(_), None) => {
                return Err(EngineError::config(
                    "engine.cluster: this build of pipeline has no cluster mode; build it with \
                     `cargo build -p pipeline-cli --features cluster` (see docs/cluster.md), or \
                     remove `cluster` to run the selection here",
                ));
            }
        };
        // `batch_size` is the segment SQL's. The export's own sorts keep batches of at most
        // the default: when one spills, DataFusion merges what it holds into a run with
        // output batches of its batch size that it did not reserve room for, so larger
        // batches made it fail with "Resources exhausted" whatever the memory limit (an
        // export of all of 2M realistic profiles at `batch_size: 32768` and 32 MiB; of a
        // tenth of 10M at 32768 and 256 or 512 MiB, where 128 passed).
        let sort_batch = settings.batch_size.min(pipeline_spec::DEFAULT_BATCH_SIZE);
        // Each of the export's own sorts reads one stream and runs as one sort.
        let sort_ctx = session(shares.sort, sort_batch, 1)?;
        let rejects_ctx = session(shares.rejects, sort_batch, 1)?;
        let count_ctx = session(shares.count, sort_batch, 1)?;
        udf::register(&ctx);

        let (footers, mut problems) = sources::register_all(&ctx, pipeline).await;
        let (segment_schemas, segment_problems) = if problems.is_empty() {
            segments::register_all(&ctx, pipeline).await
        } else {
            // Segments cannot be planned against sources that failed to register.
            (BTreeMap::new(), Vec::new())
        };
        problems.extend(segment_problems);
        if !problems.is_empty() {
            return Err(EngineError::Config(problems));
        }
        Ok(Self {
            ctx,
            sort_ctx,
            rejects_ctx,
            count_ctx,
            sort_share: shares.sort,
            rejects_share: shares.rejects,
            cut_budget: shares.sort / 2,
            pipeline: pipeline.clone(),
            segment_schemas,
            footers,
        })
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Takes each export's `list_ids` from `resolved`: the file this engine was opened
    /// with, its lists named by name resolved to ids through SendGrid. The sources and
    /// segments stay registered as they are, so their footers are not read again.
    pub fn take_list_ids(&mut self, resolved: &Pipeline) {
        for export in &mut self.pipeline.file.exports {
            if let Some(theirs) = resolved.export(&export.name) {
                export.list_ids.clone_from(&theirs.list_ids);
            }
        }
    }

    /// Plans every export (or only `only`), checking mapping types; lists every problem.
    pub async fn plan_exports(&self, only: &[String]) -> Result<Vec<ExportQuery>, EngineError> {
        let exports = &self.pipeline.file.exports;
        if let Some(message) = self.pipeline.no_such_exports(only) {
            return Err(EngineError::config(message));
        }
        let mut planned = Vec::new();
        let mut problems = Vec::new();
        for (i, export) in exports.iter().enumerate() {
            if !pipeline_spec::is_selected(only, &export.name) {
                continue;
            }
            match plan::plan_export(&self.ctx, i, export, &self.segment_schemas).await {
                Ok(q) => planned.push(q),
                Err(p) => problems.extend(p),
            }
        }
        if problems.is_empty() {
            Ok(planned)
        } else {
            Err(EngineError::Config(problems))
        }
    }

    pub(crate) fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub(crate) fn sort_context(&self) -> &SessionContext {
        &self.sort_ctx
    }

    pub(crate) fn rejects_context(&self) -> &SessionContext {
        &self.rejects_ctx
    }

    pub(crate) fn count_context(&self) -> &SessionContext {
        &self.count_ctx
    }

    /// The contacts' sort's share of the memory limit, in bytes.
    pub(crate) fn sort_share(&self) -> usize {
        self.sort_share
    }

    /// The rejects' sort's share of the memory limit, in bytes.
    pub(crate) fn rejects_share(&self) -> usize {
        self.rejects_share
    }

    pub(crate) fn cut_budget(&self) -> usize {
        self.cut_budget
    }

    pub(crate) fn export_by_name(&self, name: &str) -> &pipeline_spec::Export {
        self.pipeline
            .export(name)
            .expect("planned exports come from the pipeline")
    }
}

/// How `engine.memory_limit_mib` is shared out, in bytes. The selection's own sorts hold
/// the member rows: the contacts' sort gets an eighth of the limit, the rejects' and the
/// distinct emails' count a sixteenth each (at least 8 MiB each, enough for a sort to hold
/// and merge a few batches), each in a pool of its own so that one sort's merge never
/// starves another's. The segment SQL keeps the rest (at least 8 MiB), and its hash joins,
/// which cannot spill, are never starved by the sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shares {
    pub(crate) query: usize,
    pub(crate) sort: usize,
    pub(crate) rejects: usize,
    pub(crate) count: usize,
}

impl Shares {
    pub(crate) fn of(limit: usize) -> Self {
        const FLOOR: usize = 8 << 20;
        let sort = (limit / 8).max(FLOOR);
        let rejects = (limit / 16).max(FLOOR);
        let count = (limit / 16).max(FLOOR);
        let query = limit.saturating_sub(sort + rejects + count).max(FLOOR);
        Self {
            query,
            sort,
            rejects,
            count,
        }
    }
}

/// A session whose operators share `limit` bytes, spilling to disk past their share, and
/// run in `partitions` partitions, each of which may run a sort of its own.
fn session(
    limit: usize,
    batch_size: usize,
    partitions: usize,
) -> Result<SessionContext, EngineError> {
    // A fair pool shares the limit among the sorts, joins and aggregates so one cannot
    // starve another; each spills to disk when it reaches its share.
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(limit),
        NonZeroUsize::new(3).expect("non-zero"),
    );
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .build_arc()
        .map_err(|e| EngineError::config(format!("cannot start the query engine: {e}")))?;
    // The sorts keep a quarter of the pool back for merging their spills, shared among
    // them: each sort keeps its part from its first batch on, so with a quarter each, four
    // partitions' sorts (a window function's on a machine of four cores or more) took the
    // whole pool and the segment failed at any limit. The merge of spilled runs takes as
    // many runs as its estimate lets fit in the pool, then needs more for the sort keys of
    // wide rows (the contacts' order runs over every field): with DataFusion's 10 MiB (or a
    // thirty-second of the pool) a two-segment export of 1M rows failed with "Resources
    // exhausted" at every memory limit from 256 MiB to 4 GiB.
    let config = SessionConfig::new()
        .set_usize(
            "datafusion.execution.sort_spill_reservation_bytes",
            limit / 4 / partitions.max(1),
        )
        .with_target_partitions(partitions.max(1))
        // Decode the filter columns first and the rest only for the rows that pass (late
        // materialisation): a segment keeps about 1% of a profile table.
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
        // A segment's join builds one hash table from the smaller side and streams the
        // profile table past it, instead of repartitioning both sides by key: on the
        // 100M-row table, the membership join took 9 s this way and 12 s repartitioned.
        .set_bool("datafusion.optimizer.repartition_joins", false)
        // `CAST(... AS VARCHAR)`, which every mapped text field goes through, gives `Utf8`,
        // not a view array: a view keeps the whole scan buffer its value sits in, and the
        // contacts' sort held (and reserved) those buffers for the rows the cap's cut let
        // through. Measured on the realistic 10M tables (release build, dry runs, three
        // interleaved pairs, the same bodies): the 10% filter 1.85-1.95 s against
        // 2.00-2.03 s and a few MiB less; the 1.4% filter and the membership join unchanged
        // to slightly faster.
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
        .with_batch_size(batch_size)
        .with_information_schema(false);
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::datasource::MemTable;

    use super::*;

    /// `engine.partitions` is the number of partitions the segment SQL runs in; without
    /// it, one per core.
    #[tokio::test]
    async fn the_segment_sql_runs_in_the_partitions_the_file_sets() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "email",
            DataType::Utf8,
            false,
        )]));
        let emails = arrow::array::StringArray::from(vec!["a@example.com"]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(emails)]).unwrap();
        let file = std::fs::File::create(dir.path().join("t.parquet")).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        for (setting, partitions) in [
            ("engine: { partitions: 3 }\n", 3),
            ("", SessionConfig::new().target_partitions()),
        ] {
            let text = format!(
                r#"version: 1
{setting}connections:
  m: {{ type: sendgrid, api_key: "${{K}}", data_privacy_consent: true }}
sources:
  t: {{ format: parquet, path: t.parquet }}
segments:
  a: SELECT * FROM t
exports:
  - name: x
    connection: m
    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    segments: [a]
    mapping: {{ email: email }}
"#
            );
            let pipeline =
                pipeline_spec::parse(&text, &dir.path().join("p.yaml"), &|_| Some("k".into()))
                    .unwrap();
            let engine = Engine::open(&pipeline).await.unwrap();
            let config = engine.context().copied_config();
            assert_eq!(config.target_partitions(), partitions, "{setting}");
        }
    }

    /// A segment whose SQL sorts in every partition (a window function's) on a machine of
    /// eight cores: the eight sorts' merge room together is the quarter of the share, so
    /// each one starts, and every row comes back numbered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sort_in_each_of_eight_partitions_fits_the_segment_sql_s_share() {
        let ctx = session(Shares::of(64 << 20).query, 8192, 8).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batches: Vec<RecordBatch> = (0..40)
            .map(|b| {
                let rows = (b * 8192)..((b + 1) * 8192);
                let g = Int64Array::from_iter_values(rows.clone().map(|i| i % 64));
                let v = Int64Array::from_iter_values(rows.map(|i| (i * 7919) % 100_003));
                RecordBatch::try_new(schema.clone(), vec![Arc::new(g), Arc::new(v)]).unwrap()
            })
            .collect();
        let table = MemTable::try_new(schema, vec![batches]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let sql = "SELECT g, row_number() OVER (PARTITION BY g ORDER BY v) AS rk FROM t";
        let rows = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let ranks: Vec<i64> = rows
            .iter()
            .flat_map(|b| {
                let rk = arrow::compute::cast(b.column(1), &DataType::Int64).unwrap();
                rk.as_primitive::<Int64Type>().values().to_vec()
            })
            .collect();
        assert_eq!(ranks.len(), 40 * 8192);
        // 64 groups of 5,120 rows, each numbered from 1 to 5,120.
        assert_eq!(ranks.iter().filter(|r| **r == 1).count(), 64);
        assert_eq!(ranks.iter().max(), Some(&5120));
        assert!(rows.iter().all(|b| b.column(0).null_count() == 0));
    }
}
