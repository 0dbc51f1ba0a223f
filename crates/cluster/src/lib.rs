//! Cluster mode: each export's selection query on an Apache DataFusion Ballista cluster.
//!
//! - [`Ballista`] is the client side. The engine plans an export's query here, as for a
//!   local run; Ballista sends the plan to the scheduler, the executors run it, and its
//!   rows stream back into the same rules, dedupe, cap, diff and sink as a local run's.
//! - [`scheduler`] and [`executor`] run the cluster's processes (`pipeline cluster
//!   scheduler` and `pipeline cluster executor`): stock Ballista processes do not know the
//!   contact rules, which are DataFusion functions of ours, so these register them, and
//!   open the pipeline's object stores from the settings each query carries ([`stores`]).
//!
//! See docs/cluster.md.

mod server;
pub mod stores;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ballista_core::extension::SessionStateExt;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use pipeline_engine::store::innermost_cause;
use pipeline_spec::Pipeline;

pub use server::{ExecutorOptions, SchedulerOptions, executor, scheduler};
use stores::StoreOptions;

/// How long the scheduler has to answer before the run says it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a run (and `validate`, `check`) waits for the scheduler's first executor to
/// register: Ballista queues a query on a cluster that has none and waits for one without
/// end, and an executor started alongside the scheduler registers within seconds.
const EXECUTOR_WAIT: Duration = Duration::from_secs(30);

/// How often the scheduler is asked again while no executor has registered.
const EXECUTOR_POLL: Duration = Duration::from_millis(500);

/// The client of a Ballista cluster, for [`pipeline_engine::Engine::open_with`].
pub struct Ballista;

impl pipeline_engine::Cluster for Ballista {
    fn connect<'a>(
        &'a self,
        address: &'a str,
        state: SessionState,
        pipeline: &'a Pipeline,
    ) -> BoxFuture<'a, Result<SessionContext, String>> {
        Box::pin(async move {
            let stores = StoreOptions::of(pipeline)?;
            ready(address).await?;
            let config = state.config().clone().with_option_extension(stores);
            let state = SessionStateBuilder::new_from_existing(state)
                .with_config(config)
                .build()
                .upgrade_for_ballista(format!("http://{address}"))
                .map_err(|e| e.to_string())?;
            let cluster = Arc::clone(state.query_planner());
            let state = SessionStateBuilder::new_from_existing(state)
                .with_query_planner(Arc::new(EmptyRelations { cluster }))
                .build();
            Ok(SessionContext::new_with_state(state))
        })
    }
}

/// Plans a query that reads no table here, and every other on the cluster. Once a query
/// is optimised to no rows (a segment `WHERE false`, a filter on a partition column that
/// no partition has, a Delta version without files), it is an empty relation, which
/// Ballista plans as an `EmptyExec` of no columns: there is nothing to distribute, and it
/// runs here. An empty relation inside a plan that reads tables (`x IN (SELECT ... WHERE
/// false) OR ...`) would reach the scheduler without its columns (the plan's encoding
/// keeps none) and fail there on a missing column; it is refused here, saying what to do.
/// (Sent as a limit of none over a row of nulls, which keeps the columns, it sent
/// Ballista 55's scheduler into a loop of new stages.)
#[derive(Debug)]
struct EmptyRelations {
    cluster: Arc<dyn QueryPlanner + Send + Sync>,
}

#[async_trait::async_trait]
impl QueryPlanner for EmptyRelations {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let (mut reads, mut empty) = (false, false);
        // Subqueries read tables too, and `apply` does not descend into them.
        plan.apply_with_subqueries(|node| {
            match node {
                LogicalPlan::TableScan(_) => reads = true,
                LogicalPlan::EmptyRelation(e) if !e.produce_one_row => {
                    empty |= !e.schema.fields().is_empty();
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if !reads {
            return DefaultPhysicalPlanner::default()
                .create_physical_plan(plan, session)
                .await;
        }
        if empty {
            return Err(DataFusionError::Plan(
                "part of this query selects no rows once planned (a condition that is always \
                 false, such as `WHERE false` or a filter no partition matches, inside a \
                 query that also reads tables), which cluster mode cannot send: remove that \
                 part, or run this pipeline without `engine.cluster`"
                    .into(),
            ));
        }
        self.cluster.create_physical_plan(plan, session).await
    }
}

/// Whether a scheduler of this pipeline's Ballista answers at `address` with an executor
/// registered. Ballista itself connects only when a query runs, and `validate` and
/// `check` must say sooner that it is not there. The scheduler serves `GET /readyz` on its
/// port next to its gRPC services, naming itself in the `server` header
/// (`ballista/VERSION`) and answering 503 until an executor has registered.
async fn ready(address: &str) -> Result<(), String> {
    let start = "start one with `pipeline cluster scheduler` (docs/cluster.md), or fix the address";
    let not_scheduler = "point `engine.cluster` at the scheduler's `--bind` address, not at an \
                         executor's port or another service (docs/cluster.md)";
    // Ballista's own connections go straight to the scheduler; so does this one, whatever
    // proxy the environment names.
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot ask the scheduler at {address}: {e}"))?;
    let url = format!("http://{address}/readyz");
    let deadline = Instant::now() + EXECUTOR_WAIT;
    let mut waiting = false;
    loop {
        let response = match client.get(&url).send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() => {
                return Err(format!(
                    "no scheduler answers at {address} ({}); {start}",
                    innermost_cause(&e)
                ));
            }
            Err(e) if e.is_timeout() => {
                return Err(format!(
                    "no scheduler answered at {address} within {} s; {start}",
                    CONNECT_TIMEOUT.as_secs()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "something at {address} accepts connections but does not answer as a \
                     scheduler does ({}); {not_scheduler}",
                    innermost_cause(&e)
                ));
            }
        };
        let status = response.status();
        let server = response
            .headers()
            .get(reqwest::header::SERVER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Some(version) = server.strip_prefix("ballista/") else {
            let named = if server.is_empty() {
                String::new()
            } else {
                format!(", server `{server}`")
            };
            return Err(format!(
                "the server at {address} is not a Ballista scheduler (it answered HTTP {}{named}); \
                 {not_scheduler}",
                status.as_u16()
            ));
        };
        ballista_core::version::check_compatibility(
            Some(ballista_core::BALLISTA_VERSION),
            Some(version),
        )
        .map_err(|e| {
            format!(
                "the scheduler at {address}: {e} Run the scheduler and executors from this \
                 pipeline's binary (`pipeline cluster scheduler`, docs/cluster.md)"
            )
        })?;
        if status.is_success() {
            return Ok(());
        }
        let said = response.text().await.unwrap_or_default();
        let said = said.trim();
        if status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err(format!(
                "the scheduler at {address} answered HTTP {} when asked whether it is ready \
                 (`{said}`); see its log",
                status.as_u16()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the scheduler at {address} has no executor ({said}) after {} s; start one with \
                 `pipeline cluster executor --scheduler {address}` (docs/cluster.md)",
                EXECUTOR_WAIT.as_secs()
            ));
        }
        if !waiting {
            tracing::info!(
                "waiting up to {} s for an executor to register with the scheduler at {address} ({said})",
                EXECUTOR_WAIT.as_secs()
            );
            waiting = true;
        }
        tokio::time::sleep(EXECUTOR_POLL).await;
    }
}
