//! The `pipeline` command line: `run`, `validate`, `check`, `plan`, `history` and `schema`.
//!
//! All logic lives in the library crates; this crate parses arguments, prints summaries
//! and maps every outcome to an [`Exit`] code.

mod cluster;
mod commands;
mod exit;
mod history;
mod interrupt;
mod local;
mod output;
mod progress;
mod redact;
mod remote;
mod report;
mod text;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use pipeline_engine::Engine;
use pipeline_spec::{Classified, ErrorKind, Pipeline};
use pipeline_sync::SyncOptions;

use commands::{Shown, check, plan, run, validate};
pub use exit::Exit;
pub(crate) use redact::{RedactedStderr, Stream, emit, hide, hide_key, redact_message};

/// Export customer segments from Parquet profile tables into SendGrid Marketing lists.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log detail (-v debug, -vv trace); logs never show full emails below debug.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// A connections file whose connections the pipeline uses by name (default:
    /// $PIPELINE_CONNECTIONS, else ~/.config/pipeline/connections.yaml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub connections: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A readable table.
    Table,
    /// One JSON document on stdout, for orchestrators and notebooks.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the exports: select, validate, dedupe, cap, and send (or write) the contacts.
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// Write the exact SendGrid request bodies into DIR instead of sending them.
        #[arg(long, value_name = "DIR")]
        dry_run: Option<PathBuf>,
        /// Run only this export (repeatable: `--export a --export b`).
        #[arg(long, value_name = "NAME")]
        export: Vec<String>,
        /// Where rejects files go (default: the dry-run folder, else `rejects/` beside the file).
        #[arg(long, value_name = "DIR")]
        rejects_dir: Option<PathBuf>,
        /// Summary format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Send to a SendGrid emulator started in this process (no key needed), and show
        /// what landed on the lists. Its state lives only as long as the run.
        #[arg(long, conflicts_with = "dry_run")]
        local_emulator: bool,
        /// Send every contact, changed or not (the state is still updated).
        #[arg(long)]
        full_refresh: bool,
        /// Let mirror mode remove more of a list than the export's max_removal_share.
        #[arg(long)]
        allow_mass_removal: bool,
        /// The folder of the exports' state (default: the file's state_dir, else `.state`
        /// beside the file).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Check each connection and export against SendGrid: key, permissions, lists, custom fields.
    Check {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Check against a SendGrid emulator started in this process.
        #[arg(long)]
        local_emulator: bool,
    },
    /// Check the file without touching the network: schema, references, SQL, mapping types.
    Validate {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Show what a run would do: counts per segment, rejects, the cap verdict, sample contacts.
    Plan {
        file: PathBuf,
        /// Plan only this export (repeatable).
        #[arg(long, value_name = "NAME")]
        export: Vec<String>,
        /// How many sample contacts to show.
        #[arg(long, default_value_t = 10)]
        rows: usize,
        /// Show sample emails in full instead of masked.
        #[arg(long)]
        show_emails: bool,
        /// Count the selected contacts on the account's suppression lists (unsubscribed,
        /// bounced, blocked, spam reports, invalid); needs the API key.
        #[arg(long)]
        suppressions: bool,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// The folder of the exports' state, as for `run`.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Show the last runs of each export: when, how it ended, what it selected and sent,
    /// and what SendGrid made of it.
    History {
        file: PathBuf,
        /// Only this export (repeatable).
        #[arg(long, value_name = "NAME")]
        export: Vec<String>,
        /// How many of the latest runs to show.
        #[arg(long, default_value_t = 20, value_parser = at_least_one)]
        last: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// The folder of the exports' state, as for `run`.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Write one self-contained HTML page of the exports' run history: charts of the
    /// contacts kept, changes per run, rejects by reason and import waits, and the last
    /// run's details.
    Report {
        file: PathBuf,
        /// The HTML file to write.
        #[arg(long, value_name = "FILE", default_value = "report.html")]
        out: PathBuf,
        /// Only this export (repeatable).
        #[arg(long, value_name = "NAME")]
        export: Vec<String>,
        /// How many of the latest runs to chart.
        #[arg(long, default_value_t = 100, value_parser = at_least_one)]
        last: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// The folder of the exports' state, as for `run`.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Print the JSON Schema of the pipeline file, for editors.
    Schema,
    /// Print the shell's completion script: `pipeline completions bash >
    /// ~/.local/share/bash-completion/completions/pipeline`, or for zsh into a folder of
    /// `$fpath` as `_pipeline`, or for fish into ~/.config/fish/completions/pipeline.fish.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run a process of a Ballista cluster that runs export queries (`engine.cluster`; see
    /// docs/cluster.md).
    #[cfg(feature = "cluster")]
    Cluster {
        #[command(subcommand)]
        role: cluster::Role,
    },
}

/// Parses the process arguments, runs, and returns the exit code.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Config
            } else {
                Exit::Success
            }
            .into();
        }
    };
    // Progress is for a person at a terminal: not for pipes, JSON output or JSON logs.
    let shows_progress = matches!(
        cli.command,
        Command::Run {
            output: OutputFormat::Table,
            ..
        } | Command::Plan {
            output: OutputFormat::Table,
            ..
        }
    ) && cli.log_format == LogFormat::Text
        && std::io::stderr().is_terminal();
    init_logging(cli.log_format, cli.verbose, shows_progress);
    let _ = CONNECTIONS.set(cli.connections.clone());
    // Workers get the main thread's stack: plans and expressions are walked recursively
    // on them too (long AND/OR chains are refused before that, with a message).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Internal.into();
        }
    };
    let format = output_format(&cli.command);
    // A run stops at its export's next step and records the interruption in the export's
    // history; it is given a moment to. Anything else stops where it is.
    let grace = match cli.command {
        Command::Run { .. } => std::time::Duration::from_secs(5),
        _ => std::time::Duration::ZERO,
    };
    let resumable = matches!(
        cli.command,
        Command::Run {
            dry_run: None,
            local_emulator: false,
            ..
        }
    );
    let exit = runtime.block_on(async {
        interrupt::listen();
        let command = execute(cli.command);
        tokio::pin!(command);
        tokio::select! {
            exit = &mut command => Some(exit),
            _ = interrupt::signalled() => tokio::time::timeout(grace, command).await.ok(),
        }
    });
    match exit {
        Some(exit) => exit.into(),
        None => {
            // The command's future is gone: its lock released, its partial files removed.
            // Its tasks stop with the runtime; a blocking read may not, and is not waited
            // for long.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            fail(format, interrupt::failure(resumable)).into()
        }
    }
}

fn init_logging(format: LogFormat, verbose: u8, shows_progress: bool) {
    use tracing_subscriber::prelude::*;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PIPELINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,pipeline={default}")));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(|| RedactedStderr)
        .with_target(false);
    let display = shows_progress.then(|| {
        let display = progress::Progress::on_stderr();
        let _ = PROGRESS.set(display.bar());
        display.with_filter(tracing_subscriber::filter::filter_fn(
            progress::only_progress,
        ))
    });
    let registry = tracing_subscriber::registry().with(display);
    // `try_init` also takes the records of the `log` crate (its `tracing-log` feature):
    // DataFusion, Ballista and deltalake log through it, under the same filter
    // (`PIPELINE_LOG=warn,datafusion=debug`).
    let _ = match format {
        LogFormat::Text => registry
            .with(
                logs.with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry.with(logs.json().with_filter(filter)).try_init(),
    };
}

/// The progress line, when one is shown: log lines and messages are written around it,
/// and it is cleared before the results.
static PROGRESS: std::sync::OnceLock<indicatif::ProgressBar> = std::sync::OnceLock::new();

/// Writes to standard error without tearing the progress line.
fn above_progress(write: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
    match PROGRESS.get() {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Runs one command and reports its outcome on stdout/stderr.
pub async fn execute(command: Command) -> Exit {
    match command {
        #[cfg(feature = "cluster")]
        Command::Cluster { role } => cluster::serve(role).await,
        Command::Schema => {
            emit(
                Stream::Out,
                &format!("{:#}\n", pipeline_spec::json_schema()),
            );
            Exit::Success
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pipeline", &mut script);
            emit(Stream::Out, &String::from_utf8_lossy(&script));
            Exit::Success
        }
        Command::History {
            file,
            export,
            last,
            output,
            state_dir,
        } => {
            let result = history::of_file(&file, state_dir, &export, last).await;
            finish(output, result, history::render)
        }
        Command::Report {
            file,
            out,
            export,
            last,
            output,
            state_dir,
        } => {
            let result = history::of_file(&file, state_dir, &export, last)
                .await
                .and_then(|history| report::write(&file, &history, &out));
            finish(output, result, report::render_written)
        }
        Command::Validate { file, output } => {
            let result = validate(&file).await;
            finish(output, result, output::validation)
        }
        Command::Plan {
            file,
            export,
            rows,
            show_emails,
            suppressions,
            output,
            state_dir,
        } => {
            let options = SyncOptions {
                state_root: state_dir,
                ..Default::default()
            };
            let shown = Shown {
                rows,
                show_emails,
                suppressions,
            };
            let result = plan(&file, &export, shown, &options).await;
            finish(output, result, |plans| output::plans(&plans.plans))
        }
        Command::Run {
            file,
            dry_run,
            export,
            rejects_dir,
            output,
            local_emulator,
            full_refresh,
            allow_mass_removal,
            state_dir,
        } => {
            let options = SyncOptions {
                state_root: state_dir,
                full_refresh,
                allow_mass_removal,
            };
            let result = run(
                &file,
                dry_run.as_deref(),
                &export,
                rejects_dir,
                local_emulator,
                options,
            )
            .await;
            finish(output, result, output::run)
        }
        Command::Check {
            file,
            output,
            local_emulator,
        } => {
            let result = check(&file, local_emulator).await;
            finish(output, result, |v| output::checks(v))
        }
    }
}

/// A count of runs: 1 or more (`--last 0` would show every export with no runs).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("give 1 or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("give a whole number, 1 or more".into()),
    }
}

/// The format a command writes its outcome in.
fn output_format(command: &Command) -> OutputFormat {
    match command {
        Command::Run { output, .. }
        | Command::Check { output, .. }
        | Command::Validate { output, .. }
        | Command::Plan { output, .. }
        | Command::History { output, .. }
        | Command::Report { output, .. } => *output,
        _ => OutputFormat::Table,
    }
}

/// A command's failure: what to print and which exit code.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    /// A library error: its kind picks the exit code, its text is the message.
    fn of(kind: ErrorKind, error: &dyn std::fmt::Display) -> Self {
        let exit = match kind {
            ErrorKind::Config => Exit::Config,
            ErrorKind::Data | ErrorKind::Remote | ErrorKind::Io => Exit::RunFailed,
            ErrorKind::Busy => Exit::Busy,
            ErrorKind::Internal => Exit::Internal,
        };
        Self {
            exit,
            message: error.to_string(),
        }
    }
}

impl<E: Classified> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::of(e.kind(), &e)
    }
}

/// Prints a command's result and picks the exit code.
fn finish<T: output::Outcome>(
    format: OutputFormat,
    result: Result<T, Failure>,
    render: impl FnOnce(&T) -> String,
) -> Exit {
    match result {
        Ok(value) => {
            let exit = value.exit();
            match format {
                OutputFormat::Table => emit(Stream::Out, &render(&value)),
                OutputFormat::Json => emit(Stream::Out, &format!("{:#}\n", value.to_json(exit))),
            }
            if let Some(message) = value.problem(exit) {
                emit(Stream::Err, &format!("error: {message}\n"));
            }
            exit
        }
        Err(failure) => fail(format, failure),
    }
}

/// Reports a command's failure: on stderr, and on stdout too for JSON output.
fn fail(format: OutputFormat, failure: Failure) -> Exit {
    if format == OutputFormat::Json {
        let doc = serde_json::json!({
            "status": failure.exit.status(),
            "exit_code": failure.exit.code(),
            "error": redact_message(&failure.message),
        });
        emit(Stream::Out, &format!("{doc:#}\n"));
    }
    emit(Stream::Err, &format!("error: {}\n", failure.message));
    failure.exit
}

/// The `--connections` flag, set once by [`main`].
static CONNECTIONS: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// Loads the pipeline file with the connections file, if any; reads no data.
fn load(file: &Path) -> Result<Pipeline, Failure> {
    let flag = CONNECTIONS.get().and_then(|c| c.as_deref());
    let connections = pipeline_spec::connections::locate(flag);
    Ok(pipeline_spec::load_with(file, connections.as_deref())?)
}

async fn open(file: &Path) -> Result<(Pipeline, Engine), Failure> {
    let pipeline = load(file)?;
    hide(&pipeline.redactions);
    // Every key that can be read now is hidden from the start, and may not have come
    // into another field (a key in a file is not known when the file is parsed).
    for (name, connection) in &pipeline.file.connections {
        let env = |v: &str| std::env::var(v).ok();
        if let Ok(key) =
            pipeline_spec::resolve_api_key(name, connection, pipeline.key_base_dir(name), &env)
        {
            hide_key(key.expose());
            if pipeline.redactions.any_contains(key.expose()) {
                return Err(Failure {
                    exit: Exit::Config,
                    message: format!(
                        "connections.{name}: its API key also comes into another field of the file through a `${{VAR}}`: the key may only be a connection's api_key, so that it never reaches a field, a file or SendGrid"
                    ),
                });
            }
        }
    }
    let engine = Engine::open_with(&pipeline, cluster::client()).await?;
    Ok((pipeline, engine))
}
