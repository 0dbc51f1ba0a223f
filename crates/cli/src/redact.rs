//! What no output shows as it is: API keys everywhere, and the values `${VAR}` brought
//! into the file in every message; and the two streams every output goes through.

use std::io::IsTerminal;

use crate::{PROGRESS, above_progress};

/// What no output shows as it is: every API key read (as `***`).
static HIDDEN_KEYS: std::sync::LazyLock<std::sync::Mutex<pipeline_spec::Redactions>> =
    std::sync::LazyLock::new(Default::default);

/// What no message shows as it is: the values `${VAR}` references brought into the
/// pipeline file (shown as the reference). Results on stdout keep them, so a list id
/// from the environment reads as itself there; a key among them is caught when keys are
/// read (see [`open`]).
static HIDDEN_VALUES: std::sync::LazyLock<std::sync::Mutex<pipeline_spec::Redactions>> =
    std::sync::LazyLock::new(Default::default);

fn lock(
    registry: &std::sync::Mutex<pipeline_spec::Redactions>,
) -> std::sync::MutexGuard<'_, pipeline_spec::Redactions> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hides `redactions` from every message from now on.
pub(crate) fn hide(redactions: &pipeline_spec::Redactions) {
    lock(&HIDDEN_VALUES).extend(redactions);
}

/// Hides an API key from every output from now on.
pub(crate) fn hide_key(key: &str) {
    lock(&HIDDEN_KEYS).add(key, "***");
}

/// `message` with every hidden key and `${VAR}` value replaced.
pub(crate) fn redact_message(message: &str) -> String {
    let keys = lock(&HIDDEN_KEYS).redact(message).into_owned();
    lock(&HIDDEN_VALUES).redact(&keys).into_owned()
}

/// Standard error for the logs, with the hidden values replaced as in every message. Each
/// log event arrives in one write.
pub(crate) struct RedactedStderr;

impl std::io::Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = redact_message(&String::from_utf8_lossy(buf));
        above_progress(|| std::io::stderr().lock().write_all(text.as_bytes()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Stream {
    /// Results: keys hidden.
    Out,
    /// Messages: keys and `${VAR}` values hidden.
    Err,
}

/// Writes `text` with the hidden values replaced. A closed pipe (`pipeline plan | head`)
/// ends the output quietly, as ripgrep does: the command's exit code stands.
pub(crate) fn emit(stream: Stream, text: &str) {
    use std::io::Write;
    let written = match stream {
        Stream::Out => {
            if let Some(bar) = PROGRESS.get() {
                bar.finish_and_clear();
            }
            let text = lock(&HIDDEN_KEYS).redact(text).into_owned();
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
        Stream::Err => {
            let text = redact_message(text);
            above_progress(|| std::io::stderr().lock().write_all(text.as_bytes()))
        }
    };
    // Nothing can be reported about a failed write to the only places reports go.
    drop(written);
}

pub(crate) fn progress(message: &str) {
    if std::io::stderr().is_terminal() {
        emit(Stream::Err, &format!("{message}\n"));
    }
}
