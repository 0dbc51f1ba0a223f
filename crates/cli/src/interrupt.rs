//! SIGINT (Ctrl-C) and SIGTERM (an orchestrator stopping a task): heard once, by whoever
//! waits for them, so that a run can stop at its export's next step and say so.

use std::sync::OnceLock;

use tokio::sync::watch;

use crate::{Exit, Failure};

/// The signal heard, once one is: the exit it stands for and its name.
type Heard = Option<(Exit, &'static str)>;

static HEARD: OnceLock<watch::Sender<Heard>> = OnceLock::new();

fn heard() -> &'static watch::Sender<Heard> {
    HEARD.get_or_init(|| watch::channel(None).0)
}

/// Starts listening, on the current runtime. Until then the signals end the process as
/// they always do.
pub(crate) fn listen() {
    tokio::spawn(async {
        let signal = next_signal().await;
        heard().send_replace(Some(signal));
    });
}

/// Waits until a signal is heard; returns at once if one was.
pub(crate) async fn signalled() -> (Exit, &'static str) {
    let mut seen = heard().subscribe();
    match seen.wait_for(Option::is_some).await {
        Ok(signal) => signal.unwrap_or((Exit::Interrupted, "SIGINT")),
        // The sender lives in a static: it is never dropped.
        Err(_) => std::future::pending().await,
    }
}

/// What stopping for the signal heard (or SIGINT) says: for a run that sends, that the
/// next run finishes what this one began.
pub(crate) fn failure(resumable: bool) -> Failure {
    let (exit, signal) = heard().borrow().unwrap_or((Exit::Interrupted, "SIGINT"));
    let then = if resumable {
        ": what SendGrid accepted so far is in each export's journal, and the next run \
         finishes the export without sending it again"
    } else {
        ""
    };
    Failure {
        exit,
        message: format!("interrupted by {signal}{then}"),
    }
}

/// Waits for SIGINT or SIGTERM.
async fn next_signal() -> (Exit, &'static str) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                _ = interrupt.recv() => (Exit::Interrupted, "SIGINT"),
                _ = terminate.recv() => (Exit::Terminated, "SIGTERM"),
            },
            // Without handlers the signals end the process as they always do.
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        match tokio::signal::ctrl_c().await {
            Ok(()) => (Exit::Interrupted, "Ctrl-C"),
            Err(_) => std::future::pending().await,
        }
    }
}
