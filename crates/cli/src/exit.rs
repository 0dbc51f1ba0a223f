//! Exit codes: distinct and documented, so orchestrators can branch on them.

use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything done.
    Success = 0,
    /// A bug in pipeline: please report it.
    Internal = 1,
    /// Bad arguments or pipeline file (YAML, SQL, mapping, sources, key): fix and rerun.
    Config = 2,
    /// An export has more contacts than its cap and `on_cap_exceeded: fail`: nothing sent.
    CapExceeded = 3,
    /// The run failed while selecting or sending (data, disk, SendGrid).
    RunFailed = 4,
    /// Finished, but more contacts were rejected than `allowed_rejects`.
    Rejects = 5,
    /// Another run of the same export holds its lock: nothing done.
    Busy = 6,
    /// Mirror mode would remove more of a list than `max_removal_share`: the changes were
    /// sent, the removals were not. Check the segments, or rerun with `--allow-mass-removal`.
    RemovalRefused = 7,
    /// An export would add more contacts it never synced than its `max_new_contacts`:
    /// nothing was sent for it.
    NewContactsRefused = 8,
    /// Stopped by SIGINT (Ctrl-C), as a shell counts it (128 + 2). A run's accepted
    /// uploads are in its journal: the next run finishes it.
    Interrupted = 130,
    /// Stopped by SIGTERM (128 + 15), as an orchestrator stops a task.
    Terminated = 143,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn status(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Internal => "internal_error",
            Exit::Config => "config_error",
            Exit::CapExceeded => "cap_exceeded",
            Exit::RunFailed => "run_failed",
            Exit::Rejects => "finished_with_rejects",
            Exit::Busy => "already_running",
            Exit::RemovalRefused => "mass_removal_refused",
            Exit::NewContactsRefused => "new_contacts_refused",
            Exit::Interrupted | Exit::Terminated => "interrupted",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}
