//! The cluster's processes: a Ballista scheduler and executors that know the contact
//! rules and open the pipeline's object stores.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::extension::{
    SessionConfigExt, ballista_aggregate_functions, ballista_scalar_functions,
    ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

use crate::stores::StoreOptions;

/// How often an executor tells the scheduler it is alive, and how long the scheduler waits
/// without hearing from one before it moves the executor's tasks elsewhere. Ballista's
/// defaults (60 s and 180 s) leave a query waiting minutes for a lost executor.
const HEARTBEAT_SECS: u64 = 5;
const EXECUTOR_TIMEOUT_SECS: u64 = 20;

/// Where a scheduler listens (the arguments of `pipeline cluster scheduler`).
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerOptions {
    /// The address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    pub bind: SocketAddr,
}

/// Where an executor listens, and which scheduler it serves (the arguments of `pipeline
/// cluster executor`).
#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorOptions {
    /// The scheduler to serve.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// The host to listen on.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub bind_host: String,
    /// The host name the scheduler and pipelines reach this executor at (default: the
    /// bind host).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// The port that serves query results (Arrow Flight).
    #[arg(long, default_value_t = 50051)]
    pub port: u16,
    /// The port that takes tasks from the scheduler (gRPC).
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long, value_name = "N")]
    pub concurrent_tasks: Option<usize>,
    /// Memory the tasks may hold together, in MiB; they spill to disk beyond it
    /// (default: most of the machine's memory).
    #[arg(long, value_name = "MIB")]
    pub memory_limit_mib: Option<u64>,
    /// Where task outputs and spills are written (default: a new temporary folder).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// Runs a scheduler until the process is stopped.
pub async fn scheduler(options: SchedulerOptions) -> Result<(), String> {
    let mut config = SchedulerConfig::default()
        .with_hostname(options.bind.ip().to_string())
        .with_port(options.bind.port())
        .with_override_config_producer(Arc::new(session_config))
        .with_override_session_builder(Arc::new(session_state));
    config.executor_timeout_seconds = EXECUTOR_TIMEOUT_SECS;
    config.expire_dead_executor_interval_seconds = HEARTBEAT_SECS;
    config.no_executors_grace_period_seconds = EXECUTOR_TIMEOUT_SECS;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| format!("cannot start the scheduler: {e}"))?;
    eprintln!("pipeline cluster scheduler listening on {}", options.bind);
    start_server(cluster, options.bind, Arc::new(config))
        .await
        .map_err(|e| format!("the scheduler stopped: {e}"))
}

/// Runs an executor until the process is stopped; it waits for its scheduler to come up.
pub async fn executor(options: ExecutorOptions) -> Result<(), String> {
    let (scheduler_host, scheduler_port) = split_address(&options.scheduler)?;
    let defaults = ExecutorProcessConfig::default();
    let work_dir = match &options.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "pipeline-executor-{}-{}",
            options.port,
            std::process::id()
        )),
    };
    // Task outputs are the selected rows, personal data: the folder is the owner's only.
    pipeline_sink::private_fs::create_private_dir(&work_dir)
        .map_err(|e| format!("cannot create the work folder {}: {e}", work_dir.display()))?;
    let temp_dir = work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        external_host: options.external_host.clone(),
        port: options.port,
        grpc_port: options.grpc_port,
        scheduler_host,
        scheduler_port,
        // Wait for the scheduler rather than fail when started first.
        scheduler_connect_timeout_seconds: 60,
        vcores: options.concurrent_tasks.unwrap_or(defaults.vcores),
        work_dir: Some(work_dir.display().to_string()),
        print_thread_info: false,
        // The scheduler removes a job's outputs five minutes after it ends; an output the
        // scheduler never cleared (it was restarted) goes after an hour.
        job_data_clean_up_interval_seconds: 300,
        job_data_ttl_seconds: 3600,
        executor_heartbeat_interval_seconds: HEARTBEAT_SECS,
        memory_pool_size: options.memory_limit_mib.map(|m| m << 20),
        override_config_producer: Some(Arc::new(session_config)),
        override_runtime_producer: Some(Arc::new(move |config: &SessionConfig| {
            runtime(config, &temp_dir)
        })),
        override_function_registry: Some(Arc::new(functions())),
        ..defaults
    };
    eprintln!(
        "pipeline cluster executor on {}:{} (tasks on port {}), serving the scheduler at {}",
        options.bind_host, options.port, options.grpc_port, options.scheduler
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| format!("the executor stopped: {e}"))
}

fn split_address(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{address}` is not HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| format!("`{address}` is not HOST:PORT: `{port}` is not a port"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

/// A session's settings, with room for the stores a query carries.
fn session_config() -> SessionConfig {
    SessionConfig::new_with_ballista().with_option_extension(StoreOptions::default())
}

/// The runtime of a query: its stores opened, spills under `work_dir`.
fn runtime(
    config: &SessionConfig,
    work_dir: &std::path::Path,
) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_object_store_registry(StoreOptions::from_config(config).registry()?)
        .with_temp_file_path(work_dir)
        .build_arc()
}

/// The scheduler's session for a query: the default one, with the contact rules and the
/// query's stores.
fn session_state(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(StoreOptions::from_config(&config).registry()?)
        .build_arc()?;
    let mut scalars = ballista_scalar_functions();
    scalars.extend(pipeline_engine::contact_rules().into_iter().map(Arc::new));
    Ok(SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
        .with_scalar_functions(scalars)
        .with_aggregate_functions(ballista_aggregate_functions())
        .with_window_functions(ballista_window_functions())
        .build())
}

/// The functions an executor knows: DataFusion's and the contact rules.
fn functions() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    for rule in pipeline_engine::contact_rules() {
        registry
            .scalar_functions
            .insert(rule.name().to_owned(), Arc::new(rule));
    }
    registry
}
