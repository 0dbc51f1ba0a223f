//! `validate`, `plan`, `schema` and `completions`, and a run over a generated table.

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn validate_accepts_the_quickstart_and_notes_a_missing_key() {
    let run = pipeline(&repo(), &["validate", "pipelines/quickstart.yaml"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("pipelines/quickstart.yaml is valid: 1 connection(s), 2 source(s), 2 segment(s), 1 export(s)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("environment variable SENDGRID_API_KEY is not set"),
        "{}",
        run.stdout
    );
    let run = pipeline(
        &repo(),
        &["validate", "pipelines/quickstart.yaml"],
        &[("SENDGRID_API_KEY", "SG.k")],
    );
    assert!(!run.stdout.contains("note:"), "{}", run.stdout);
}

#[test]
fn plan_shows_counts_verdict_and_masked_sample_and_writes_nothing() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let run = pipeline(dir.path(), &["plan", file, "--rows", "3"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected_counts = "  segment     rows  rejected  duplicates  contacts
  vip           10         2           3         5
  high_value    17         5           4         8
  total         27         7           7        13
";
    assert!(run.stdout.contains(expected_counts), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("rejected: invalid_email 4 (no `@` 2, a domain without a dot 1, more than one `@` 1), missing_email 3"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("cap: 13 of 100000 (within)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("first 3 contact(s)"), "{}", run.stdout);
    assert!(run.stdout.contains("a***@example.com"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("ada.lovelace@"),
        "emails are masked: {}",
        run.stdout
    );
    assert!(!dir.path().join("out").exists());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("rejects"))
    );

    let run = pipeline(
        dir.path(),
        &[
            "plan",
            file,
            "--rows",
            "2",
            "--show-emails",
            "--output",
            "json",
        ],
        &[],
    );
    let plan = &run.json()["exports"][0];
    assert_eq!(plan["contacts"], 13);
    assert_eq!(
        plan["sample"],
        json!([
            {"email": "ada.lovelace@example.com", "first_name": "Ada"},
            {"email": "grace.hopper@example.com", "first_name": "Grace"},
        ])
    );
    assert_eq!(
        plan["invalid_emails"],
        json!({"no `@`": 2, "a domain without a dot": 1, "more than one `@`": 1})
    );

    // The sample's fields as a request body carries them: numbers as numbers, lists as
    // lists, a field without a value left out.
    let export = EXPORT.replace(
        "first_name: first_name",
        "first_name: first_name\n      last_name: CAST(NULL AS VARCHAR)\n      alternate_emails: \"make_array('Ada.Work@Example.com')\"\n      custom_fields: { ltv: lifetime_value }",
    );
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, &export));
    let run = pipeline(
        dir.path(),
        &["plan", file, "--rows", "1", "--output", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.json()["exports"][0]["sample"],
        json!([{
            "email": "a***@example.com",
            "first_name": "Ada",
            "alternate_emails": ["a***@example.com"],
            "ltv": 12500.0,
        }])
    );
}

#[test]
fn plan_exits_with_the_cap_code_when_a_run_would_fail() {
    let dir = sample_dir();
    let file = write(
        dir.path(),
        &pipeline_yaml(SEGMENTS, &format!("{EXPORT}\n    max_profiles: 12\n")),
    );
    let run = pipeline(dir.path(), &["plan", file], &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("cap: EXCEEDED by 1 (13 contacts, cap 12); nothing would be sent"),
        "{}",
        run.stdout
    );
}

#[test]
fn schema_is_a_json_schema_of_the_file() {
    let run = pipeline(&repo(), &["schema"], &[]);
    assert_eq!(run.code, 0);
    let schema: Value = run.json();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(
        schema["required"],
        // Connections may come from a connections file instead.
        json!(["version", "sources", "segments", "exports"])
    );
    assert!(schema["$defs"]["Mapping"]["properties"]["custom_fields"].is_object());
}

/// A generated table with memberships: the bodies match the golden files, and the
/// contacts are exactly what an independent reading of the generated rows predicts.
#[test]
fn generated_table_dry_run_matches_golden_and_reference() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 3000;
    pipeline_datagen::write_profiles(&pipeline_datagen::Profiles {
        rows,
        out: dir.path().join("data"),
        files: 3,
        member_share: 0.05,
        seed: 11,
    })
    .unwrap();
    let text = pipeline_yaml("  members: SELECT p.* FROM profiles p JOIN memberships m ON m.customer_id = p.customer_id WHERE m.segment_name IN ('vip', 'winback')", "    segments: [members]
    mapping:
      email: email
      first_name: first_name
      city: city
      custom_fields: { ltv: lifetime_value }
    order_by: customer_id
    allowed_rejects: 1000")
    .replace("data/profiles.parquet", "data/profiles/");
    let file = write(dir.path(), &text);
    let run = pipeline(
        dir.path(),
        &["run", file, "--dry-run", "out", "--output", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let body =
        std::fs::read_to_string(dir.path().join("out/newsletter/request-000001.json")).unwrap();
    assert_golden("generated-3000/newsletter/request-000001.json", &body);

    // Reference: members by id, first row per lower-cased trimmed email, valid only.
    let mut member_ids = std::collections::BTreeSet::new();
    let memberships = read_memberships(&dir.path().join("data/segment_memberships.parquet"));
    for (id, seg) in memberships {
        if seg == "vip" || seg == "winback" {
            member_ids.insert(id);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut expected = Vec::new();
    for id in member_ids {
        let p = pipeline_datagen::generated_profile(11, id as u64 - 1);
        let Some(email) = p.email else { continue };
        let email = email.trim().to_lowercase();
        let valid = email.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && !l.contains(' ') && d.contains('.') && !d.contains('@')
        });
        if valid && seen.insert(email.clone()) {
            expected.push(email);
        }
    }
    assert_eq!(
        emails(&contacts(&dir.path().join("out/newsletter"))),
        expected
    );
    assert_eq!(run.json()["exports"][0]["contacts"], expected.len());
}

fn read_memberships(path: &std::path::Path) -> Vec<(i64, String)> {
    // Read with the parquet crate directly: reading through the binary would be circular.
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let file = std::fs::File::open(path).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let segs = batch.column(1).as_string::<i32>();
        for i in 0..batch.num_rows() {
            out.push((ids.value(i), segs.value(i).to_owned()));
        }
    }
    out
}

/// Every command with a known key: the key is in no output and no written file.
#[test]
fn the_api_key_never_appears_anywhere() {
    let key = "SG.known-test-key-5f2d9c1b7e";
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let env = [("SENDGRID_API_KEY", key)];
    let mut outputs = Vec::new();
    for args in [
        vec!["validate", file, "-vv"],
        vec!["plan", file, "--show-emails", "--log-format", "json", "-vv"],
        vec!["run", file, "--dry-run", "out", "--output", "json", "-vv"],
        vec!["schema"],
    ] {
        let run = pipeline(dir.path(), &args, &env);
        outputs.push(run.stdout);
        outputs.push(run.stderr);
    }
    let mut files = vec![dir.path().to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            outputs.push(String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned());
        }
    }
    assert!(outputs.len() > 12);
    for text in outputs {
        assert!(!text.contains(key), "the key leaked into:\n{text}");
    }
}

#[test]
fn logs_are_json_on_stderr_without_emails_and_progress_stays_off_a_pipe() {
    let dir = sample_dir();
    let file = write(dir.path(), &pipeline_yaml(SEGMENTS, EXPORT));
    let run = pipeline(
        dir.path(),
        &["run", file, "--dry-run", "out", "--log-format", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "Export finished" && l["fields"]["contacts"] == 13)
    );
    assert!(
        !run.stderr.contains('@'),
        "no email at info level: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Running export"),
        "progress only on a terminal"
    );
    assert!(
        run.stdout.starts_with("export newsletter"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_bash_completion_script_completes_commands_and_flags() {
    let run = pipeline(&repo(), &["completions", "bash"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pipeline.bash");
    std::fs::write(&script, &run.stdout).unwrap();
    // Bash loads the script and asks its function what completes a word, as on a Tab.
    let complete = |words: &str| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 _pipeline pipeline \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 echo \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(complete("pipeline ru"), "run");
    assert_eq!(complete("pipeline run --dry"), "--dry-run");
    assert_eq!(complete("pipeline plan --sh"), "--show-emails");

    let refused = pipeline(&repo(), &["completions", "tcsh"], &[]);
    assert_eq!(refused.code, 2);
    assert!(
        refused
            .stderr
            .contains("[possible values: bash, elvish, fish, powershell, zsh]"),
        "{}",
        refused.stderr
    );
}

#[test]
fn export_repeats_to_run_several_exports_and_refuses_a_name_the_file_lacks() {
    let dir = sample_dir();
    let more = ["weekly", "monthly"]
        .iter()
        .map(|name| {
            format!(
                "\n  - name: {name}\n    connection: marketing\n    list_ids: [{LIST}]\n{EXPORT}"
            )
        })
        .collect::<String>();
    let file = write(
        dir.path(),
        &format!("{}{more}", pipeline_yaml(SEGMENTS, EXPORT)),
    );
    let run = pipeline(
        dir.path(),
        &[
            "run",
            file,
            "--dry-run",
            "out",
            "--export",
            "monthly",
            "--export",
            "newsletter",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut ran: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ran.sort();
    assert_eq!(ran, ["monthly", "newsletter"]);

    let run = pipeline(
        dir.path(),
        &[
            "plan", file, "--export", "weekly", "--export", "monthy", "--output", "json",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "no export named `monthy` (did you mean `monthly`?); the file declares: newsletter, weekly, monthly"
        ),
        "{}",
        run.stderr
    );
    let run = pipeline(
        dir.path(),
        &[
            "plan", file, "--export", "weekly", "--export", "monthly", "--output", "json",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let planned: Vec<Value> = serde_json::from_str::<Value>(&run.stdout).unwrap()["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export"].clone())
        .collect();
    assert_eq!(planned, [json!("weekly"), json!("monthly")]);
}
