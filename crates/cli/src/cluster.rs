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
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use clap::Subcommand;
    use pipeline_cluster::{ExecutorOptions, SchedulerOptions};

    use crate::Exit;

    #[derive(Debug, Subcommand)]
    pub enum Role {
        /// Run a scheduler: it plans the export queries pipelines send and hands their
        /// tasks to executors.
        Scheduler {
            /// The address to listen on.
            #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
            bind: SocketAddr,
        },
        /// Run an executor: it takes tasks from the scheduler, reads the sources and
        /// serves the rows.
        Executor {
            /// The scheduler to serve.
            #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
            scheduler: String,
            /// The host to listen on.
            #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
            bind_host: String,
            /// The host name the scheduler and pipelines reach this executor at (default:
            /// the bind host).
            #[arg(long, value_name = "HOST")]
            external_host: Option<String>,
            /// The port that serves query results (Arrow Flight).
            #[arg(long, default_value_t = 50051)]
            port: u16,
            /// The port that takes tasks from the scheduler (gRPC).
            #[arg(long, default_value_t = 50052)]
            grpc_port: u16,
            /// Tasks run at once (default: the machine's cores).
            #[arg(long, value_name = "N")]
            concurrent_tasks: Option<usize>,
            /// Memory the tasks may hold together, in MiB; they spill to disk beyond it
            /// (default: most of the machine's memory).
            #[arg(long, value_name = "MIB")]
            memory_limit_mib: Option<u64>,
            /// Where task outputs and spills are written (default: a new temporary folder).
            #[arg(long, value_name = "DIR")]
            work_dir: Option<PathBuf>,
        },
    }

    /// Runs the process until it is stopped.
    pub async fn serve(role: Role) -> Exit {
        let result = match role {
            Role::Scheduler { bind } => {
                pipeline_cluster::scheduler(SchedulerOptions { bind }).await
            }
            Role::Executor {
                scheduler,
                bind_host,
                external_host,
                port,
                grpc_port,
                concurrent_tasks,
                memory_limit_mib,
                work_dir,
            } => {
                pipeline_cluster::executor(ExecutorOptions {
                    scheduler,
                    bind_host,
                    external_host,
                    port,
                    grpc_port,
                    concurrent_tasks,
                    memory_limit_mib,
                    work_dir,
                })
                .await
            }
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
