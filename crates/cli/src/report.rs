//! `pipeline report`: one self-contained HTML page of a pipeline's run history. Charts are
//! inline SVG drawn here (no script, no stylesheet or font from the network): contacts the
//! export keeps over time, changes per run, rejects by reason, and the wait for import
//! jobs; then the last run's details and every charted run, with why each run that did
//! not succeed did not. Emails in error messages are masked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pipeline_sync::RunRecord;
use serde_json::{Value, json};

use crate::history::{History, RUN_COLUMNS, RUN_NUMBERS, failure_of, run_cells, utc};
use crate::output::Outcome;
use crate::{Exit, Failure};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 28.0;

/// The page written, for the command's output.
pub struct Report {
    pub path: PathBuf,
    pub exports: usize,
    pub runs: usize,
}

impl Outcome for Report {
    fn exit(&self) -> Exit {
        Exit::Success
    }

    fn to_json(&self, exit: Exit) -> Value {
        json!({
            "status": exit.status(),
            "exit_code": exit.code(),
            "report": self.path,
            "exports": self.exports,
            "runs": self.runs,
        })
    }
}

pub(crate) fn render_written(r: &Report) -> String {
    format!(
        "wrote {} ({} export(s), {} run(s))\n",
        r.path.display(),
        r.exports,
        r.runs
    )
}

/// Writes the page for `history` of the pipeline `file` to `out`, owner-only.
pub(crate) fn write(file: &Path, history: &History, out: &Path) -> Result<Report, Failure> {
    if !matches!(
        pipeline_spec::place_of(&out.to_string_lossy()),
        Ok(pipeline_spec::Place::Local)
    ) {
        return Err(Failure {
            exit: Exit::Config,
            message: format!(
                "--out {}: the page is written on this machine only: give a local file",
                out.display()
            ),
        });
    }
    if let Some(advice) = pipeline_spec::unexpanded(out) {
        return Err(Failure {
            exit: Exit::Config,
            message: format!("--out {}: {advice}", out.display()),
        });
    }
    let page = page(file, history);
    pipeline_sink::private_fs::replace_private_file(out, |f| {
        use std::io::Write;
        f.write_all(page.as_bytes())
    })
    .map_err(|e| Failure {
        exit: Exit::RunFailed,
        message: format!("cannot write the report {}: {e}", out.display()),
    })?;
    Ok(Report {
        path: out.to_owned(),
        exports: history.exports.len(),
        runs: history.exports.iter().map(|(_, runs)| runs.len()).sum(),
    })
}

fn page(file: &Path, history: &History) -> String {
    let title = format!("pipeline report: {}", file.display());
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n\
         <p>Times are UTC; a red point is a run that did not succeed.</p>\n",
        escape(&title),
        escape(&title)
    );
    for (export, runs) in &history.exports {
        html.push_str(&section(export, runs));
    }
    html.push_str("</body></html>\n");
    html
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222}\
h2{margin-top:32px;border-bottom:1px solid #ccc}\
.charts{display:flex;flex-wrap:wrap;gap:16px}\
svg{background:#fafafa;border:1px solid #ddd}\
svg text{font-size:11px;fill:#444}\
table{border-collapse:collapse;margin-top:12px}\
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}\
td.n{text-align:right}td.why{white-space:pre-wrap;max-width:40em}\
tr.bad td{background:#fdecea}.legend{font-size:12px}";

fn section(export: &str, runs: &[RunRecord]) -> String {
    let mut out = format!("<section><h2>export {}</h2>\n", escape(export));
    if runs.is_empty() {
        out.push_str("<p>No runs yet.</p></section>\n");
        return out;
    }
    let labels = run_labels(runs);
    out.push_str("<div class=\"charts\">\n");
    let contacts = kept_on_lists(runs);
    let outcomes: Vec<&str> = runs.iter().map(|r| r.outcome.as_str()).collect();
    out.push_str(&line_chart(
        "Contacts the export keeps on its lists",
        &labels,
        &contacts,
        &outcomes,
    ));
    let changes: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| vec![r.new as f64, r.changed as f64, r.removed as f64])
        .collect();
    out.push_str(&bar_chart(
        "Changes per run",
        &[
            ("new", "#4e79a7"),
            ("changed", "#f28e2b"),
            ("removed", "#e15759"),
        ],
        &labels,
        &changes,
    ));
    let mut reasons: std::collections::BTreeMap<&str, u64> = Default::default();
    for r in runs {
        for (reason, n) in &r.rejected_by_reason {
            *reasons.entry(reason.as_str()).or_default() += n;
        }
    }
    let reasons: Vec<(String, Vec<f64>)> = reasons
        .into_iter()
        .map(|(k, v)| (k.to_owned(), vec![v as f64]))
        .collect();
    let (reason_labels, reason_values): (Vec<String>, Vec<Vec<f64>>) = reasons.into_iter().unzip();
    out.push_str(&bar_chart(
        "Rejected contacts by reason, all runs",
        &[("rejected", "#76b7b2")],
        &reason_labels,
        &reason_values,
    ));
    let waits: Vec<Vec<f64>> = runs.iter().map(|r| vec![r.import_wait_secs]).collect();
    out.push_str(&bar_chart(
        "Seconds waiting for import jobs",
        &[("seconds", "#59a14f")],
        &labels,
        &waits,
    ));
    out.push_str("</div>\n");
    out.push_str(&last_run(export, runs.last().expect("not empty")));
    out.push_str(&runs_table(export, runs));
    out.push_str("</section>\n");
    out
}

/// What each run left its export keeping on its lists. A run that failed before its
/// summary has no figures (its record holds zeros): it changed nothing the state records,
/// so the run before's count stands for it.
fn kept_on_lists(runs: &[RunRecord]) -> Vec<f64> {
    let mut kept = 0;
    runs.iter()
        .map(|r| {
            let no_figures = r.error.is_some() && r.selected == 0 && r.state_contacts == 0;
            if !no_figures {
                kept = r.state_contacts;
            }
            kept as f64
        })
        .collect()
}

/// Each run's label under the charts: `MM-DD HH:MM` of its end (UTC), with the seconds
/// when two runs ended in the same minute, and a count after the first of runs that
/// ended in the same second (`18:28:29 (2)`).
fn run_labels(runs: &[RunRecord]) -> Vec<String> {
    let ends = |chars: usize| -> Vec<String> {
        runs.iter()
            .map(|r| utc(r.finished_at).chars().skip(5).take(chars).collect())
            .collect()
    };
    let minutes = ends(11);
    if !minutes.windows(2).any(|w| w[0] == w[1]) {
        return minutes;
    }
    let seconds = ends(14);
    let mut repeat = 1;
    (0..seconds.len())
        .map(|i| {
            repeat = if i > 0 && seconds[i] == seconds[i - 1] {
                repeat + 1
            } else {
                1
            };
            match repeat {
                1 => seconds[i].clone(),
                n => format!("{} ({n})", seconds[i]),
            }
        })
        .collect()
}

/// Every charted run, newest first, as `pipeline history` shows them, with why each run
/// that did not succeed did not.
fn runs_table(export: &str, runs: &[RunRecord]) -> String {
    let mut out = String::from("<h3>Runs, newest first</h3><table>\n<tr>");
    for column in RUN_COLUMNS.iter().chain(&["why"]) {
        let _ = write!(out, "<th>{}</th>", escape(column));
    }
    out.push_str("</tr>\n");
    for r in runs.iter().rev() {
        let failed = r.outcome != "success";
        out.push_str(if failed { "<tr class=\"bad\">" } else { "<tr>" });
        for (i, cell) in run_cells(r).iter().enumerate() {
            let class = if RUN_NUMBERS.contains(&i) {
                " class=\"n\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        let why = failure_of(export, r).unwrap_or_default();
        let _ = writeln!(out, "<td class=\"why\">{}</td></tr>", escape(&why));
    }
    out.push_str("</table>\n");
    out
}

fn last_run(export: &str, r: &RunRecord) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("started", utc(r.started_at)),
        (
            "duration",
            format!("{} s", (r.finished_at - r.started_at).max(0)),
        ),
        (
            "outcome",
            format!("{} (exit code {})", r.outcome, r.exit_code),
        ),
        ("selected", r.selected.to_string()),
        ("new", r.new.to_string()),
        ("changed", r.changed.to_string()),
        ("unchanged", r.unchanged.to_string()),
        ("sent", r.sent.to_string()),
        ("created", r.created.to_string()),
        ("updated", r.updated.to_string()),
        ("errored", r.errored.to_string()),
        ("rejected", r.rejected.to_string()),
        ("removed", r.removed.to_string()),
        ("import jobs", r.job_ids.join(", ")),
        ("version", r.version.clone()),
    ];
    if let Some(why) = failure_of(export, r) {
        rows.push(("why", why));
    }
    let mut out = String::from("<h3>Last run</h3><table>\n");
    for (name, value) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    out.push_str("</table>\n");
    out
}

/// The largest value, rounded up to a number that reads well on an axis.
fn axis_max(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.fold(0.0_f64, f64::max);
    if max <= 0.0 {
        return 1.0;
    }
    let step = 10f64.powf(max.log10().floor());
    (max / step).ceil() * step
}

fn frame(title: &str, max: f64) -> String {
    let plot_bottom = HEIGHT - BOTTOM;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         role=\"img\" aria-label=\"{t}\"><text x=\"{LEFT}\" y=\"16\" style=\"font-size:13px;font-weight:bold\">{t}</text>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{plot_bottom}\" stroke=\"#888\"/>\
         <line x1=\"{LEFT}\" y1=\"{plot_bottom}\" x2=\"{}\" y2=\"{plot_bottom}\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{plot_bottom}\" text-anchor=\"end\">0</text>",
        WIDTH - 8.0,
        LEFT - 4.0,
        TOP + 4.0,
        number(max),
        LEFT - 4.0,
        t = escape(title),
    )
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() < 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// Labels under the x axis, at most about eight of them.
fn x_labels(labels: &[String], x_of: impl Fn(usize) -> f64) -> String {
    let every = labels.len().div_ceil(8).max(1);
    let mut out = String::new();
    for (i, label) in labels.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x_of(i),
            HEIGHT - BOTTOM + 14.0,
            escape(label)
        );
    }
    out
}

/// A line of `values`, one point per run; the points of runs whose outcome was not
/// `success` drawn in red, their outcome in the point's title.
fn line_chart(title: &str, labels: &[String], values: &[f64], outcomes: &[&str]) -> String {
    let max = axis_max(values.iter().copied());
    let plot_w = WIDTH - LEFT - 16.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let x_of = |i: usize| {
        if values.len() < 2 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + 36.0 + (plot_w - 72.0) * i as f64 / (values.len() - 1) as f64
        }
    };
    let y_of = |v: f64| HEIGHT - BOTTOM - plot_h * v / max;
    let mut out = frame(title, max);
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x_of(i), y_of(*v)))
        .collect();
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"#4e79a7\" stroke-width=\"2\" points=\"{}\"/>",
        points.join(" ")
    );
    for (i, (v, outcome)) in values.iter().zip(outcomes).enumerate() {
        let (fill, radius, note) = match *outcome {
            "success" => ("#4e79a7", 3, String::new()),
            other => ("#e15759", 5, format!(" ({other})")),
        };
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{radius}\" fill=\"{fill}\"><title>{}: {}{}</title></circle>",
            x_of(i),
            y_of(*v),
            escape(&labels[i]),
            number(*v),
            escape(&note)
        );
    }
    out.push_str(&x_labels(labels, x_of));
    out.push_str("</svg>\n");
    out
}

/// Grouped bars: one group per label, one bar per series.
fn bar_chart(title: &str, series: &[(&str, &str)], labels: &[String], rows: &[Vec<f64>]) -> String {
    let max = axis_max(rows.iter().flatten().copied());
    let plot_w = WIDTH - LEFT - 16.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let group = plot_w / rows.len().max(1) as f64;
    let bar = (group * 0.8 / series.len() as f64).min(40.0);
    let x_of = |i: usize| LEFT + group * (i as f64 + 0.5);
    let mut out = frame(title, max);
    if rows.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">none</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    for (i, values) in rows.iter().enumerate() {
        let start = x_of(i) - bar * series.len() as f64 / 2.0;
        for (j, ((name, color), v)) in series.iter().zip(values).enumerate() {
            let h = plot_h * v / max;
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{} {}: {}</title></rect>",
                start + bar * j as f64,
                HEIGHT - BOTTOM - h,
                bar.max(1.0),
                h,
                escape(&labels[i]),
                escape(name),
                number(*v)
            );
        }
    }
    out.push_str(&x_labels(labels, x_of));
    if series.len() > 1 {
        for (j, (name, color)) in series.iter().enumerate() {
            let x = WIDTH - 90.0;
            let y = TOP + 4.0 + 14.0 * j as f64;
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>",
                y - 9.0,
                x + 14.0,
                y,
                escape(name)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_axes_round_up() {
        assert_eq!(
            escape("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(axis_max([0.0].into_iter()), 1.0);
        assert_eq!(axis_max([7.0, 3.0].into_iter()), 7.0);
        assert_eq!(axis_max([1234.0].into_iter()), 2000.0);
    }

    fn ended(finished_at: i64) -> RunRecord {
        RunRecord {
            finished_at,
            outcome: "success".into(),
            ..Default::default()
        }
    }

    #[test]
    fn labels_name_one_run_each() {
        // 2026-12-07 18:28:00 UTC and on.
        let at = 1_796_668_080;
        let runs = [ended(at), ended(at + 3600)];
        assert_eq!(run_labels(&runs), ["12-07 18:28", "12-07 19:28"]);
        let runs = [
            ended(at),
            ended(at + 5),
            ended(at + 5),
            ended(at + 5),
            ended(at + 9),
        ];
        assert_eq!(
            run_labels(&runs),
            [
                "12-07 18:28:00",
                "12-07 18:28:05",
                "12-07 18:28:05 (2)",
                "12-07 18:28:05 (3)",
                "12-07 18:28:09"
            ]
        );
    }

    #[test]
    fn a_run_that_failed_before_its_summary_keeps_the_count_of_the_run_before() {
        let kept = |n: u64| RunRecord {
            state_contacts: n,
            selected: n,
            ..ended(0)
        };
        let stopped = RunRecord {
            outcome: "run_failed".into(),
            error: Some("reading the list failed".into()),
            ..ended(0)
        };
        let emptied = RunRecord {
            outcome: "rejects".into(),
            error: Some("rejected".into()),
            selected: 3,
            ..ended(0)
        };
        assert_eq!(
            kept_on_lists(&[stopped.clone(), kept(30), stopped, kept(24), emptied]),
            [0.0, 30.0, 30.0, 24.0, 0.0]
        );
    }
}
