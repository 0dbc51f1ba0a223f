//! `pipeline cluster scheduler` and `pipeline cluster executor`: the processes of a
//! Ballista cluster that runs export queries (`engine.cluster`, docs/cluster.md). Built
//! with the `cluster` feature; without it a pipeline that names a cluster is refused.

#[cfg(feature = "cluster")]
pub use with::*;

/// The cluster client the engine sends export queries to, in a build that has one.
pub fn client() -> Option<&'static dyn pipeline_engine::Cluster> {
    #[cfg(feature = "cluster")]
    return Some(&pipeline_cluster::Ballista);
    #[cfg(not(feature = "cluster"))]
    None
}

#[cfg(feature = "cluster")]
mod with {
    use clap::Subcommand;
    use pipeline_cluster::{ExecutorOptions, SchedulerOptions};

    use crate::Exit;

    #[derive(Debug, Subcommand)]
    pub enum Role {
        /// Run a scheduler: it plans the export queries pipelines send and hands their
        /// tasks to executors.
        Scheduler(SchedulerOptions),
        /// Run an executor: it takes tasks from the scheduler, reads the sources and
        /// serves the rows.
        Executor(ExecutorOptions),
    }

    /// Runs the process until it is stopped.
    pub async fn serve(role: Role) -> Exit {
        let result = match role {
            Role::Scheduler(options) => pipeline_cluster::scheduler(options).await,
            Role::Executor(options) => pipeline_cluster::executor(options).await,
        };
        match result {
            Ok(()) => Exit::Success,
            Err(message) => {
                eprintln!("error: {message}");
                Exit::RunFailed
            }
        }
    }
}
