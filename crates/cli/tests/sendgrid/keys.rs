//! The API key: never in any output, log or file, wherever it is put; and connections
//! files kept apart from the pipeline file.

use super::*;

#[test]
fn the_key_never_appears_in_any_output_log_or_file() {
    let s = Setup::new(
        vec![],
        Faults {
            poisoned: ["ren@example.jp".to_string()].into(),
            ..Faults::default()
        },
    );
    let file = s.pipeline(EXPORT, "");
    let mut texts = Vec::new();
    for args in [
        vec!["run", file, "-vv", "--log-format", "json"],
        vec!["run", file, "--output", "json", "-vv"],
        vec!["check", file, "-vv"],
        vec!["validate", file],
        vec!["plan", file],
    ] {
        let run = s.run(&args, KEY);
        texts.push(run.stdout);
        texts.push(run.stderr);
    }
    let run = s.run(&["run", file], "SG.wrong-key-that-must-not-leak");
    texts.push(run.stdout.clone());
    assert!(
        !run.stderr.contains("SG.wrong-key-that-must-not-leak"),
        "{}",
        run.stderr
    );
    let mut paths = vec![s.dir.path().to_path_buf()];
    while let Some(p) = paths.pop() {
        if p.is_dir() {
            paths.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            texts.push(String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned());
        }
    }
    for t in texts {
        assert!(!t.contains(KEY), "the key leaked:\n{t}");
    }
}

/// Every file and output under `dir`, and `texts`, searched for `secret`.
fn assert_nowhere(dir: &std::path::Path, texts: &[String], secret: &str, placement: &str) {
    for t in texts {
        assert!(!t.contains(secret), "{placement}: the key leaked:\n{t}");
    }
    let mut paths = vec![dir.to_path_buf()];
    while let Some(p) = paths.pop() {
        if p.is_dir() {
            paths.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{placement}: the key leaked into {}",
                p.display()
            );
        }
    }
}

/// The key put by mistake in every field that takes a `${VAR}`, through its own variable
/// and through another holding the same value: no command prints it or writes it.
#[test]
fn a_key_in_the_wrong_field_is_never_echoed_or_written() {
    let s = Setup::new(vec![], Faults::default());
    let base = s.pipeline(EXPORT, "");
    let text = std::fs::read_to_string(s.dir.path().join(base)).unwrap();
    let endpoint = s.emulator.url();
    // Outside the folder the outputs are searched in.
    let secrets = tempfile::tempdir().unwrap();
    let placements: Vec<(&str, String)> = vec![
        ("list id", text.replace(LIST, "${SENDGRID_API_KEY}")),
        ("list id, other variable", text.replace(LIST, "${OTHER}")),
        ("endpoint", text.replace(&endpoint, "${SENDGRID_API_KEY}")),
        (
            "display name",
            text.replace(
                "    data_privacy_consent: true",
                "    display_name: ${OTHER}\n    data_privacy_consent: true",
            ),
        ),
        (
            "source path",
            text.replace("data/profiles.parquet", "data/${OTHER}.parquet"),
        ),
        (
            "segment SQL",
            text.replace(
                "lifetime_value > 5000",
                "first_name = '${SENDGRID_API_KEY}'",
            ),
        ),
        (
            "mapping",
            text.replace("first_name: first_name", "first_name: \"'${OTHER}'\""),
        ),
        (
            "order_by",
            text.replace("order_by: customer_id", "order_by: ${OTHER}"),
        ),
        // The key in a file is not known until it is read: the list id is refused for
        // its shape, and the message shows the reference, not the value.
        (
            "list id, key from a file",
            text.replace(
                "api_key: ${SENDGRID_API_KEY}",
                &format!("api_key_file: {}", secrets.path().join("key").display()),
            )
            .replace(LIST, "${OTHER}"),
        ),
        // ... and in a mapping, where a plan would show it as data: refused when the
        // pipeline is opened, the key file read.
        (
            "mapping, key from a file",
            text.replace(
                "api_key: ${SENDGRID_API_KEY}",
                &format!("api_key_file: {}", secrets.path().join("key").display()),
            )
            .replace("first_name: first_name", "first_name: \"'${OTHER}'\""),
        ),
    ];
    let key_file = secrets.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for (placement, yaml) in placements {
        std::fs::write(s.dir.path().join("p.yaml"), &yaml).unwrap();
        let mut texts = Vec::new();
        for args in [
            vec!["validate", "p.yaml"],
            vec!["validate", "p.yaml", "--output", "json"],
            vec!["plan", "p.yaml", "--show-emails"],
            vec!["run", "p.yaml", "--dry-run", "out", "-vv"],
            vec!["run", "p.yaml", "--output", "json", "-vv"],
            vec!["check", "p.yaml", "--output", "json"],
        ] {
            let run = pipeline(
                s.dir.path(),
                &args,
                &[("SENDGRID_API_KEY", KEY), ("OTHER", KEY)],
            );
            assert_ne!(run.code, 0, "{placement}: {args:?} must not pass");
            texts.push(run.stdout);
            texts.push(run.stderr);
        }
        assert_nowhere(s.dir.path(), &texts, KEY, placement);
    }
    assert!(s.upserted_emails().is_empty(), "nothing was sent");
}

/// A connections file kept apart from the pipeline, owner-writable only, with the key in a
/// file beside it; the pipeline names the connection and has none of its own.
fn connections_setup(s: &Setup, allowed: &str, mode: u32) -> (tempfile::TempDir, String) {
    let admin = tempfile::tempdir().unwrap();
    std::fs::write(admin.path().join("sendgrid.key"), KEY).unwrap();
    let file = admin.path().join("connections.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1
connections:
  marketing:
    type: sendgrid
    api_key_file: sendgrid.key
    endpoint: {}
    data_privacy_consent: true
{allowed}",
            s.emulator.url()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(admin.path().join("sendgrid.key"), private).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let text = pipeline_yaml(SEGMENTS, EXPORT);
    let start = text.find("connections:").unwrap();
    let end = text.find("sources:").unwrap();
    write(s.dir.path(), &format!("{}{}", &text[..start], &text[end..]));
    (admin, file.display().to_string())
}

#[test]
fn a_connections_file_kept_apart_supplies_the_connection() {
    let s = Setup::new(vec![], Faults::default());
    let (_admin, connections) = connections_setup(&s, "    allowed_exports: [newsletter]\n", 0o644);
    let run = pipeline(
        s.dir.path(),
        &["run", "p.yaml", "--connections", &connections],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.emulator.list_emails(LIST), EXPECTED);
    // Found through the environment too.
    let check = pipeline(
        s.dir.path(),
        &["check", "p.yaml"],
        &[("PIPELINE_CONNECTIONS", &connections)],
    );
    assert_eq!(check.code, 0, "{}", check.stdout);
}

#[test]
fn a_connections_file_others_can_write_or_that_forbids_the_use_is_refused() {
    let s = Setup::new(vec![], Faults::default());
    let validate = |connections: &str| {
        pipeline(
            s.dir.path(),
            &["validate", "p.yaml", "--connections", connections],
            &[],
        )
    };
    let (_admin, connections) = connections_setup(&s, "", 0o664);
    let run = validate(&connections);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "connections file {connections} can be written by others (mode 664): run `chmod go-w {connections}`"
        )),
        "{}",
        run.stderr
    );

    let (_admin, connections) = connections_setup(&s, "    allowed_exports: [weekly]\n", 0o600);
    let run = validate(&connections);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "exports[0].connection: connection `marketing` (from {connections}) may not be used by export `newsletter`: it allows weekly"
        )),
        "{}",
        run.stderr
    );

    let (_admin, connections) =
        connections_setup(&s, "    allowed_pipelines: [\"pipelines/*.yaml\"]\n", 0o600);
    let run = validate(&connections);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("connection `marketing` (from ")
            && run.stderr.contains("may not be used by the pipeline ")
            && run.stderr.contains("pipelines/*.yaml"),
        "{}",
        run.stderr
    );
    assert!(s.upserted_emails().is_empty());

    // A pipeline may use the connection, not redefine it.
    let (_admin, connections) = connections_setup(&s, "", 0o600);
    std::fs::write(s.dir.path().join("p.yaml"), pipeline_yaml(SEGMENTS, EXPORT)).unwrap();
    let run = validate(&connections);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "connection `marketing` is defined by the connections file {connections}: the pipeline may use it, not redefine it"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_key_missing_for_a_later_export_stops_the_run_before_the_first_sends() {
    let s = Setup::new(vec![], Faults::default());
    let url = s.emulator.url();
    let text = pipeline_yaml(SEGMENTS, EXPORT)
        .replace(
            "    data_privacy_consent: true\n",
            &format!(
                "    data_privacy_consent: true\n    endpoint: {url}\n  archive:\n    type: sendgrid\n    api_key: ${{ARCHIVE_API_KEY}}\n    data_privacy_consent: true\n    endpoint: {url}\n"
            ),
        )
        + &format!(
            "\n  - name: archive\n    connection: archive\n    list_ids: [{LIST}]\n{EXPORT}\n"
        );
    let file = write(s.dir.path(), &text);
    let run = s.run(&["run", file], KEY);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "connections.archive.api_key: environment variable ARCHIVE_API_KEY is not set"
        ),
        "{}",
        run.stderr
    );
    assert!(s.upserted_emails().is_empty(), "{:?}", s.upserted_emails());
    assert!(s.emulator.list_emails(LIST).is_empty());
}
