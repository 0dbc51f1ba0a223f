//! Live progress: shown on a terminal (the binary runs in a pseudo-terminal made by
//! `script`, from util-linux), never in a pipe or with `--output json`.

mod common;

use std::process::Command;

use common::account::*;

const EXPORT: &str = "    list_ids: [0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11]
    mapping:
      email: email
      first_name: first_name";

/// Runs `pipeline ARGS` in a pseudo-terminal in `s`'s folder; everything the terminal
/// showed (standard output and error together).
fn in_terminal(s: &Setup, args: &[&str]) -> (i32, String) {
    let mut line = String::from(env!("CARGO_BIN_EXE_pipeline"));
    for arg in args {
        line.push_str(&format!(" '{arg}'"));
    }
    let out = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .current_dir(s.dir.path())
        .env("SENDGRID_API_KEY", KEY)
        .env("PIPELINE_CONNECTIONS", "")
        .env_remove("PIPELINE_LOG")
        .output()
        .expect("`script` (util-linux) runs the binary in a pseudo-terminal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn progress_shows_on_a_terminal_and_nowhere_else() {
    // Import jobs take a while, as live ones do: the run waits for them.
    let s = Setup::new(700);
    write_profiles(s.dir.path(), &rows(120));
    let file = s.pipeline(EXPORT);

    let (code, screen) = in_terminal(&s, &["run", file]);
    assert_eq!(code, 0, "{screen}");
    for phase in [
        "daily: reading sources",
        "of 120 rows",
        "daily: selecting, 120 distinct contacts, sorting",
        "daily: uploading, 0 of at most 3 bodies, 0 of 120 contacts",
        "daily: waiting for import jobs, 0 of 3 finished",
        "daily: waiting for import jobs, 3 of 3 finished",
    ] {
        assert!(screen.contains(phase), "no `{phase}` in:\n{screen}");
    }
    // The line is cleared before the summary, which follows in full.
    assert!(screen.contains("changes: 120 new"), "{screen}");

    // Piped: the same run shows no progress at all.
    write_profiles(s.dir.path(), &rows(130));
    let piped = s.run(&["run", file]);
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(piped.stdout.contains("changes: 10 new"), "{}", piped.stdout);
    for text in [&piped.stdout, &piped.stderr] {
        assert!(!text.contains("reading sources"), "{text}");
        assert!(!text.contains("waiting for import jobs"), "{text}");
        assert!(!text.contains('\r'), "{text:?}");
    }

    // On a terminal, but with JSON output: none either.
    write_profiles(s.dir.path(), &rows(140));
    let (code, screen) = in_terminal(&s, &["run", file, "--output", "json"]);
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains("reading sources"), "{screen}");
    assert!(!screen.contains("waiting for import jobs"), "{screen}");
}
