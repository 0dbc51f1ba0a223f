//! `pipeline report`: a page of the run history, self-contained, with its charts drawn,
//! checked in headless Chromium.
//!
//! `.ci/run` installs Chromium and sets `PIPELINE_CHROMIUM` to it and
//! `PIPELINE_REQUIRE_CHROMIUM=1`. Without `PIPELINE_CHROMIUM` the browser part says it
//! was skipped, unless `PIPELINE_REQUIRE_CHROMIUM` is set, when it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::account::*;
use common::mode;

const MIRROR: &str = "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    mode: mirror
    max_removal_share: 0.5
    allowed_rejects: 5
    mapping:
      email: email
      first_name: first_name";

/// Four runs: 30 new; 5 changed and 2 bad addresses; 4 leavers; a failed import job.
fn history(s: &Setup) -> &'static str {
    let file = s.pipeline(MIRROR);
    let mut data = rows(30);
    write_profiles(s.dir.path(), &data);
    assert_eq!(s.run(&["run", file]).code, 0);
    for r in &mut data[..5] {
        r.first_name.push('!');
    }
    data[10].email = "broken".into();
    data[11].email = "broken-too".into();
    write_profiles(s.dir.path(), &data);
    assert_eq!(s.run(&["run", file]).code, 0);
    for r in &mut data[20..24] {
        r.subscribed = false;
    }
    write_profiles(s.dir.path(), &data);
    assert_eq!(s.run(&["run", file]).code, 0);
    s.emulator.script(sendgrid_emulator::Faults {
        jobs: [sendgrid_emulator::Fault::FailJob].into(),
        ..Default::default()
    });
    data[0].first_name.push('?');
    write_profiles(s.dir.path(), &data);
    assert_eq!(s.run(&["run", file]).code, 4);
    file
}

#[test]
fn the_report_charts_the_history_in_one_self_contained_page() {
    let s = Setup::new(0);
    let file = history(&s);
    let run = s.run(&["report", file, "--out", "report.html"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("wrote report.html (1 export(s), 4 run(s))"),
        "{}",
        run.stdout
    );
    let path = s.dir.path().join("report.html");
    assert_eq!(mode(&path) & 0o777, 0o600);
    let html = std::fs::read_to_string(&path).unwrap();

    // Self-contained: nothing to fetch, nothing to run.
    assert!(!html.contains("<script"), "a script in the page");
    assert!(!html.contains("src="), "something to fetch");
    assert!(!html.contains("<link"), "something to fetch");
    assert!(!html.contains("@import"), "something to fetch");

    // Four charts for the one export; the history's figures are in them.
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(html.contains("Contacts the export keeps on its lists"));
    // Contacts kept: 30, then 28 (two became invalid), then 24.
    for kept in ["30</title>", "28</title>", "24</title>"] {
        assert!(html.contains(kept), "no point `{kept}`");
    }
    assert!(
        html.contains("new: 30</title>"),
        "the first run's new contacts"
    );
    assert!(
        html.contains("changed: 5</title>"),
        "the second run's changes"
    );
    assert!(
        html.contains("removed: 4</title>"),
        "the third run's leavers"
    );
    // Two bad addresses in each of the last three runs.
    assert!(html.contains("invalid_email rejected: 6</title>"));
    // The last run failed; its details say so.
    assert!(html.contains("run_failed (exit code 4)"), "{html}");
    // Its point is red and says so; every point's label names one run (the four runs end
    // within seconds of each other, so the labels carry the seconds when they must).
    let points: Vec<&str> = html
        .split("<circle ")
        .skip(1)
        .map(|c| c.split("</circle>").next().unwrap())
        .collect();
    assert_eq!(points.len(), 4, "{html}");
    assert!(
        points[3].contains("fill=\"#e15759\"") && points[3].ends_with(": 24 (run_failed)</title>"),
        "{}",
        points[3]
    );
    assert!(points[..3].iter().all(|p| p.contains("fill=\"#4e79a7\"")));
    let labels: std::collections::BTreeSet<&str> = points
        .iter()
        .map(|p| {
            p.split("<title>")
                .nth(1)
                .unwrap()
                .split(": ")
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(labels.len(), 4, "{points:?}");
    // The runs, newest first: the failed one first, with why.
    let (_, table) = html
        .split_once("<h3>Runs, newest first</h3>")
        .expect("a table of the runs");
    let rows: Vec<&str> = table.split("<tr").skip(2).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[0].starts_with(" class=\"bad\">"), "{}", rows[0]);
    assert!(
        rows[0].contains("<td>run_failed</td>")
            && rows[0].contains("<td class=\"why\">import jobs did not complete: "),
        "{}",
        rows[0]
    );
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.contains("<td>success</td>") && r.contains("<td class=\"why\"></td>")),
        "{table}"
    );

    // A folder that is not there is named, not the partial file it would have held.
    let run = s.run(&["report", file, "--out", "reports/report.html"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "error: cannot write the report reports/report.html: the folder reports does not exist"
        ),
        "{}",
        run.stderr
    );
}

fn chromium() -> Option<PathBuf> {
    match std::env::var_os("PIPELINE_CHROMIUM") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("PIPELINE_REQUIRE_CHROMIUM").is_some() => {
            panic!("PIPELINE_REQUIRE_CHROMIUM is set but PIPELINE_CHROMIUM does not name Chromium")
        }
        None => {
            eprintln!(
                "SKIPPED: set PIPELINE_CHROMIUM to a Chromium executable to render the report in a browser; .ci/run does"
            );
            None
        }
    }
}

/// Runs headless Chromium on `page` with `args`; its standard output.
fn headless(chromium: &Path, profile: &Path, page: &Path, args: &[&str]) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("Chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn headless_chromium_draws_the_charts() {
    let Some(chromium) = chromium() else {
        return;
    };
    let s = Setup::new(0);
    let file = history(&s);
    let run = s.run(&["report", file, "--out", "report.html"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let page = s.dir.path().join("report.html");
    let profile = s.dir.path().join("chromium-profile");

    // The browser's own document: the charts' shapes are there.
    let dom = headless(&chromium, &profile, &page, &["--dump-dom"]);
    assert_eq!(dom.matches("<svg").count(), 4, "{dom}");
    assert!(dom.matches("<rect").count() >= 4 * 3, "{dom}");
    assert!(dom.contains("<polyline"), "{dom}");

    // And a screenshot of it: a PNG of some substance.
    let shot = s.dir.path().join("report.png");
    headless(
        &chromium,
        &profile,
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1500",
            "--hide-scrollbars",
        ],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a {}-byte screenshot is blank",
        png.len()
    );
    if let Some(keep) = std::env::var_os("PIPELINE_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
