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

use std::time::Duration;

use ballista_core::extension::SessionStateExt;
use datafusion::execution::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use pipeline_spec::Pipeline;

pub use server::{ExecutorOptions, SchedulerOptions, executor, scheduler};
use stores::StoreOptions;

/// How long the scheduler has to accept a connection before the run says it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
            reachable(address).await?;
            let config = state.config().clone().with_option_extension(stores);
            let state = SessionStateBuilder::new_from_existing(state)
                .with_config(config)
                .build()
                .upgrade_for_ballista(format!("http://{address}"))
                .map_err(|e| e.to_string())?;
            Ok(SessionContext::new_with_state(state))
        })
    }
}

/// Whether a scheduler accepts connections at `address`: Ballista itself connects only
/// when a query runs, and `validate` and `check` must say sooner that it is not there.
async fn reachable(address: &str) -> Result<(), String> {
    let hint = "start one with `pipeline cluster scheduler` (docs/cluster.md), or fix the address";
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("no scheduler answers at {address} ({e}); {hint}")),
        Err(_) => Err(format!(
            "no scheduler answered at {address} within {} s; {hint}",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}
