//! Live progress on a terminal: one line that says what a run is doing (reading the
//! sources, sorting, uploading, waiting for import jobs, removing leavers) with its counts
//! and the time spent, redrawn in place. It listens to the `pipeline::progress` events the
//! libraries emit; it is installed only when standard error is a terminal and the output
//! is a table, so pipes, files and `--output json` never see it.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target progress events travel on.
const TARGET: &str = "pipeline::progress";

/// The display, as a tracing layer.
pub struct Progress {
    bar: ProgressBar,
    state: Mutex<State>,
}

/// What the line shows, gathered from the events.
#[derive(Default)]
struct State {
    export: String,
    phase: &'static str,
    read: u64,
    total: u64,
    contacts: u64,
    planned: u64,
    /// Most bodies the planned contacts fill (unchanged ones are not sent).
    planned_bodies: u64,
    uploaded: u64,
    bodies: u64,
    finished: u64,
    started: u64,
    removed: u64,
    leavers: u64,
    rate_waits: u64,
}

/// One event's fields.
#[derive(Default)]
struct Fields {
    export: Option<String>,
    phase: Option<String>,
    numbers: Vec<(&'static str, u64)>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.numbers.push((field.name(), value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.numbers.push((field.name(), value.max(0) as u64));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "phase" => self.phase = Some(value.to_owned()),
            "export" => self.export = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "export" {
            self.export = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl Progress {
    /// A display drawing on standard error.
    pub fn on_stderr() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(125));
        Self {
            bar,
            state: Mutex::new(State::default()),
        }
    }

    /// The line itself, to write around and to clear.
    pub fn bar(&self) -> ProgressBar {
        self.bar.clone()
    }
}

impl State {
    fn absorb(&mut self, fields: Fields) {
        if let Some(export) = fields.export
            && export != self.export
        {
            *self = State {
                export,
                ..State::default()
            };
        }
        let number = |name: &str| {
            fields
                .numbers
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, v)| *v)
        };
        match fields.phase.as_deref() {
            Some("reading") => {
                self.phase = "reading";
                self.read = number("read");
                self.total = number("total");
            }
            Some("sorting") => {
                self.phase = "sorting";
                self.contacts = number("contacts");
            }
            Some("sending") => {
                self.phase = "uploading";
                self.planned = number("planned");
                self.planned_bodies = self.planned.div_ceil(number("per_request").max(1));
            }
            Some("uploading") => {
                self.phase = "uploading";
                self.bodies += 1;
                self.uploaded += number("contacts");
            }
            Some("waiting") => {
                self.phase = "waiting";
                self.finished = number("finished");
                self.started = number("started");
            }
            Some("removing") => {
                self.phase = "removing";
                self.removed = number("removed");
                self.leavers = number("leavers");
            }
            Some("rate_limited") => self.rate_waits += 1,
            _ => {}
        }
    }

    fn line(&self) -> String {
        let mut line = match self.phase {
            "reading" if self.total > 0 => format!(
                "{}: reading sources, {} of {} rows ({}%)",
                self.export,
                self.read.min(self.total),
                self.total,
                self.read.min(self.total) * 100 / self.total
            ),
            // A query on a cluster: its scans run on the executors, out of sight.
            "reading" if self.read == 0 => format!("{}: selecting contacts", self.export),
            "reading" => format!("{}: reading sources, {} rows", self.export, self.read),
            "sorting" => format!(
                "{}: selecting, {} distinct contacts, sorting",
                self.export, self.contacts
            ),
            "uploading" => format!(
                "{}: uploading, {} of at most {} {}, {} of {} contacts",
                self.export,
                self.bodies,
                self.planned_bodies,
                if self.planned_bodies == 1 {
                    "body"
                } else {
                    "bodies"
                },
                self.uploaded,
                self.planned
            ),
            "waiting" => format!(
                "{}: waiting for import jobs, {} of {} finished",
                self.export, self.finished, self.started
            ),
            "removing" => format!(
                "{}: removing leavers, {} of {}",
                self.export, self.removed, self.leavers
            ),
            _ => format!("{}: starting", self.export),
        };
        if self.rate_waits > 0 {
            line.push_str(&format!(
                "; waited {} time(s) for rate limits",
                self.rate_waits
            ));
        }
        line
    }
}

/// Only the progress events reach the display (a filter of its own, so the logs keep
/// theirs).
pub fn only_progress(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target() == TARGET
}

impl<S: Subscriber> Layer<S> for Progress {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = (state.phase, state.finished);
        state.absorb(fields);
        self.bar.set_message(state.line());
        // A new phase, or a job that ended, is drawn at once: the line is redrawn at most
        // 8 times a second otherwise, and a short phase would never show.
        if (state.phase, state.finished) != before {
            self.bar.force_draw();
        }
    }
}
